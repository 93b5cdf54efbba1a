"""Held-out labels for early stopping: a validation split of the training matrix and its MAP.

``VSEEns(early_stopping=True)`` holds out one random label of a random share of the images
that have two or more (``validation_fraction``, at most :data:`MAX_VALIDATION_IMAGES` images,
so that scoring them stays cheap next to an epoch), trains on the rest, and after every epoch
ranks every label for those images, leaving out their training labels: the mean reciprocal
rank of the held-out label is the validation MAP (one held-out label per image), the metric
``vse_recsys.evaluation`` reports.
"""

import numpy as np
import scipy.sparse as sp

from .evaluation import factor_metrics

__all__ = ["MAX_VALIDATION_IMAGES", "MAX_VALIDATION_SCORES", "held_out_images",
           "split_validation", "validation_map"]

#: Scores computed at once when scoring the held-out labels (16 MiB of float32)
SCORE_BLOCK = 1 << 22

#: Most images held out for early stopping; with more, the per-epoch check would cost more
#: than the little it gains in precision (10,000 images give MAP to about +-0.005).
MAX_VALIDATION_IMAGES = 10_000
#: Most scores the per-epoch check computes (held-out images x labels): past ~27,000 labels
#: fewer images are held out (never fewer than MIN_VALIDATION_IMAGES), so that the check stays
#: cheap next to an epoch. At 100,000 labels, 10,000 images took ~4 s an epoch against a 2.9 s
#: epoch (benchmarks/many_labels.py); 2,684 images give MAP to about +-0.01.
MAX_VALIDATION_SCORES = 1 << 28
#: Fewest images held out (when the data has that many with two labels, and holding one label
#: of each out stays within ``validation_fraction`` of the pairs): fewer give a MAP too noisy to
#: stop on (about +-0.03 with 100 images), and stopping early on noise costs more than the
#: held-out labels do. On movielens-100k (943 users, ~100 ratings each) holding out 471 users,
#: as the former floor of "half the images" did, stopped VSEEns() at epochs 14-35 on noise
#: (test MAP 0.140-0.146); all 943 (1 % of the pairs) stop it at 35-71 (0.148-0.151).
MIN_VALIDATION_IMAGES = 1_000


def split_validation(user_items, fraction, generator):
    """``(train, held_out)``: one random label of ``fraction`` of the images with two or more
    labels (at least :data:`MIN_VALIDATION_IMAGES`, or as many as there are, as long as that
    holds out at most ``fraction`` of the pairs; at most :data:`MAX_VALIDATION_IMAGES`, and
    with many labels at most :data:`MAX_VALIDATION_SCORES` scores: :func:`held_out_images`)
    moved from ``user_items`` (canonical binary CSR) into ``held_out``; ``held_out`` is None
    when no image has two labels.

    Built from the CSR arrays directly (a keep-mask and the shortened rows), about 9 bytes per
    pair beside the result, so that it fits beside a matrix of hundreds of millions of pairs.
    """
    counts = np.diff(user_items.indptr)
    eligible = np.flatnonzero(counts >= 2)
    wanted = held_out_images(len(eligible), user_items.nnz, user_items.shape[1], fraction)
    if wanted == 0:
        return user_items, None
    images = np.sort(generator.choice(eligible, size=wanted, replace=False))
    picked = user_items.indptr[images] + generator.integers(0, counts[images])
    keep = np.ones(user_items.nnz, dtype=bool)
    keep[picked] = False
    removed = np.zeros(user_items.shape[0] + 1, dtype=np.int64)
    removed[images + 1] = 1
    train = sp.csr_matrix(
        (user_items.data[keep], user_items.indices[keep],
         user_items.indptr - np.cumsum(removed)), shape=user_items.shape)
    held_indptr = np.zeros(user_items.shape[0] + 1, dtype=np.int64)
    held_indptr[images + 1] = 1
    held_out = sp.csr_matrix(
        (np.ones(wanted, dtype=np.float32), user_items.indices[picked], np.cumsum(held_indptr)),
        shape=user_items.shape)
    return train, held_out


def held_out_images(eligible, nnz, n_labels, fraction):
    """How many images :func:`split_validation` holds out, of ``eligible`` ones with two or
    more labels (``nnz`` pairs, ``n_labels`` labels); the memory estimate's count too."""
    wanted = max(int(round(fraction * eligible)),
                 min(MIN_VALIDATION_IMAGES, eligible, int(fraction * nnz)))
    most = min(MAX_VALIDATION_IMAGES,
               max(MIN_VALIDATION_IMAGES, MAX_VALIDATION_SCORES // max(1, n_labels)))
    return min(most, wanted)


def validation_map(image_vectors, item_factors, train, held_out, images):
    """MAP of the held-out labels of ``images`` (rows of ``held_out``), scored by
    ``image_vectors`` (one row per image of ``images``) against ``item_factors``, with each
    image's ``train`` labels left out of its ranking (ties counted against the held-out label,
    as in :mod:`vse_recsys.evaluation`)."""
    held_rows = held_out[images]
    if not (np.diff(held_rows.indptr) == 1).all():  # a user's own validation pairs
        return factor_metrics(image_vectors, item_factors, train[images], held_rows,
                              K=(1,))["map"]
    # one held-out label per image (what split_validation makes): its reciprocal rank, in
    # blocks of at most SCORE_BLOCK scores (4 bytes each, and a comparison's byte)
    train_rows = train[images]
    labels_t = np.ascontiguousarray(np.asarray(item_factors, dtype=np.float32).T)
    vectors = np.asarray(image_vectors, dtype=np.float32)
    step = max(1, min(len(images), SCORE_BLOCK // labels_t.shape[1]))
    block = np.empty((step, labels_t.shape[1]), dtype=np.float32)  # (reused: one block alive)
    total = 0.0
    for start in range(0, len(images), step):
        stop = min(len(images), start + step)
        scores = np.matmul(vectors[start:stop], labels_t, out=block[: stop - start])
        rows = np.arange(stop - start)
        held = scores[rows, held_rows.indices[start:stop]]
        known = train_rows[start:stop]
        scores[np.repeat(rows, np.diff(known.indptr)), known.indices] = -np.inf
        # (the held-out label ties with itself: one less)
        rank = (scores > held[:, None]).sum(axis=1) + (scores == held[:, None]).sum(axis=1)
        total += float(np.sum(1.0 / rank))
    return total / len(images)
