"""Generated image–label data with a planted low-rank structure and Zipf label popularity."""

import numpy as np
import scipy.sparse as sp

from .._validation import check_number, resolve_random_state
from .dataset import ImageLabels

__all__ = ["generate_image_labels"]

_BLOCK_DRAWS = 1 << 21  # label draws made at a time: bounds memory whatever the size


def _categorical(rng, cumulative, groups):
    """One draw per entry of `groups` from row ``groups[i]`` of the row-wise CDFs `cumulative`.

    All rows are searched at once: row r's CDF is shifted to (r, r + 1], so the flattened array
    is increasing and one ``searchsorted`` serves every row.
    """
    n_rows, n_columns = cumulative.shape
    shifted = (cumulative + np.arange(n_rows)[:, None]).ravel()
    found = np.searchsorted(shifted, groups + rng.random(len(groups)), side="right")
    return np.minimum(found - groups * n_columns, n_columns - 1)


def _cdf(weights):
    cumulative = np.cumsum(weights, axis=1)
    return cumulative / cumulative[:, -1:]


def generate_image_labels(
    n_images=2000,
    n_labels=500,
    labels_per_image=5.0,
    factors=16,
    zipf_exponent=1.0,
    noise=0.2,
    random_state=None,
    *,
    label_spread=0.05,
):
    """Generate a realistic image–label dataset that a factorisation model can learn.

    The planted structure is a topic model of rank `factors`: label ``j`` has a popularity
    ``p_j ∝ rank_j ** -zipf_exponent`` (ranks a random permutation of the labels) and a latent
    vector ``w_j`` of topic memberships (Dirichlet(`label_spread`), so each label belongs mostly
    to a few topics); image ``i`` has a latent vector ``u_i`` of standard normal topic
    affinities. Image ``i`` gets ``k_i = 1 + Poisson(labels_per_image - 1)`` distinct labels (at
    least 1, mean `labels_per_image`), drawn without replacement from

    ``P(j | i) ∝ p_j · sum_t w_jt · exp(u_it / noise)``,

    a popularity term times a rank-`factors` score. Averaged over images every topic is equally
    likely, so label frequencies follow the Zipf popularity (except the very top labels, which
    saturate: a label appears at most once per image); each image's labels concentrate on its
    favourite topics, which a model can learn from its other labels.

    Sampling draws a topic then a label (vectorised, ``O(log n_labels)`` per draw, never
    ``n_images * n_labels`` work; 200,000 × 5,000 at 5 labels per image takes seconds). Labels
    are drawn with replacement and repeats skipped, which is sampling without replacement. An
    image gets ``3 k_i + 10`` draws, so it ends with fewer than ``k_i`` labels only when its
    distribution has too few likely labels: tiny `n_labels`, or extreme `noise` and
    `label_spread` that tie each image to one topic and each topic to one label.

    Parameters
    ----------
    n_images, n_labels : int
        Matrix shape (both >= 1).
    labels_per_image : float, default 5.0
        Mean number of labels per image (>= 1).
    factors : int, default 16
        Number of latent topics: the rank of the planted structure.
    zipf_exponent : float, default 1.0
        Popularity skew; 0 gives uniform popularity.
    noise : float, default 0.2
        Temperature of each image's topic choice: small concentrates an image on one topic
        (easy to learn), large spreads it over all (labels then follow popularity only).
    random_state : None, int, numpy.random.Generator or numpy.random.RandomState
        Seed; the same seed gives the same dataset.
    label_spread : float, default 0.05
        Dirichlet concentration of the label memberships: small puts each label in one topic.

    Returns
    -------
    ImageLabels
        Binary, image IDs ``0..n_images-1``, label IDs ``0..n_labels-1``.
    """
    check_number("n_images", n_images, low=1, integer=True)
    check_number("n_labels", n_labels, low=1, integer=True)
    check_number("labels_per_image", labels_per_image, low=1)
    check_number("factors", factors, low=1, integer=True)
    check_number("zipf_exponent", zipf_exponent, low=0)
    check_number("noise", noise, low=0, strict=True)
    check_number("label_spread", label_spread, low=0, strict=True)
    rng = resolve_random_state(random_state)

    popularity = (rng.permutation(n_labels) + 1.0) ** -float(zipf_exponent)
    popularity /= popularity.sum()
    membership = rng.dirichlet(np.full(factors, float(label_spread)), size=n_labels)
    # P(label | topic) ∝ p_j w_jt; a topic's mass m_t = sum_j p_j w_jt. A small label_spread
    # can leave a topic with no label at all (mass 0): such a topic is never drawn.
    topic_mass = popularity @ membership
    live = topic_mass > 0
    label_cdf = _cdf((popularity[:, None] * membership[:, live]).T)
    log_mass = np.log(topic_mass[live])
    affinity = rng.standard_normal((n_images, factors))
    if not live.all():
        affinity = affinity[:, live]
    per_image = np.minimum(1 + rng.poisson(labels_per_image - 1, size=n_images), n_labels)
    # draws per image: enough to find k_i distinct labels unless the distribution is degenerate
    draws = 3 * per_image + 10

    # the matrix is built as CSR directly (labels per image and int32 columns, block by block):
    # 4 bytes a pair instead of the 16 of (row, column) int64 lists, at 300M pairs
    counts, cols = [], []
    ends = np.cumsum(draws)
    start = 0
    while start < n_images:
        stop = max(start + 1, int(np.searchsorted(ends, ends[start] + _BLOCK_DRAWS)))
        stop = min(stop, n_images)
        # P(t | i) ∝ m_t exp(u_it / noise), so P(j | i) = sum_t P(t | i) p_j w_jt / m_t;
        # in logs, less the row maximum, so that exp neither overflows nor gives all zeros
        log_weights = log_mass + affinity[start:stop] / noise
        topic_weights = np.exp(log_weights - log_weights.max(axis=1, keepdims=True))
        image = np.repeat(np.arange(stop - start), draws[start:stop])
        topic = _categorical(rng, _cdf(topic_weights), image)
        label = _categorical(rng, label_cdf, topic)
        block_rows, block_cols = _first_distinct(image, label, per_image[start:stop], n_labels)
        counts.append(np.bincount(block_rows, minlength=stop - start))
        cols.append(block_cols.astype(np.int32))
        start = stop

    indptr = np.zeros(n_images + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts), out=indptr[1:])
    del counts
    indices = np.concatenate(cols)
    del cols
    index_type = np.int32 if indptr[-1] <= np.iinfo(np.int32).max else np.int64
    matrix = sp.csr_matrix(
        (np.ones(len(indices), dtype=np.float32), indices.astype(index_type, copy=False),
         indptr.astype(index_type, copy=False)),
        shape=(n_images, n_labels),
    )
    matrix.sort_indices()  # (each image's labels come in draw order)
    return ImageLabels(matrix, copy=False)


def _first_distinct(image, label, per_image, n_labels):
    """The first ``per_image[i]`` distinct labels among the (row-contiguous) draws of image i."""
    _, first = np.unique(image * n_labels + label, return_index=True)
    first.sort()  # back to draw order, which is grouped by image
    rows = image[first]
    rank = np.arange(len(first)) - np.searchsorted(rows, rows)
    keep = rank < per_image[rows]
    return rows[keep], label[first[keep]]
