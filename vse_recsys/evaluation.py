"""Ranking metrics for label ranking, with the paper's definitions.

The protocol (``docs/ALGORITHM.md``, "Evaluation protocol"): every image (row) with at least one
label in ``test_user_items`` is evaluated; its labels are ranked over the full label list with the
image's *training* labels removed, and the positions of its test labels in that ranking give the
metrics below. Results are means over the evaluated images.

Three entry points share one core and return the same keys:

- :func:`ranking_metrics` — a fitted model with ``user_factors`` / ``item_factors``
  (``VSEEns``, implicit's BPR / ALS / LMF, ...);
- :func:`factor_metrics` — raw factor matrices, score ``s(i, a) = u_i · v_a``;
- :func:`score_metrics` — any ``score_fn(image_ids) -> scores`` (LightFM, co-occurrence, ...).

Definitions
-----------
For an image with test labels ``T`` (``|T| = n_test``), training labels ``R`` and candidates
``C = all labels - R`` (negatives ``N = C - T``), let ``rank(p)`` (1-based) be the position of
test label ``p`` in the ranking of ``C`` by descending score:

``precision@k``
    ``hits@k / k`` where ``hits@k = #{p in T : rank(p) <= k}``. The denominator is always ``k``
    (the paper's definition), not implicit's ``min(k, n_test)``.
``recall@k``
    ``hits@k / n_test``.
``ndcg@k``
    Binary gains: ``DCG@k = sum over p in T with rank(p) <= k of 1 / log2(rank(p) + 1)``,
    divided by the ideal DCG, in which the ``min(k, n_test)`` test labels fill the top ranks.
``map``
    Mean over images of the average precision over the full ranking:
    ``AP = mean over p in T of precision at rank(p)`` =
    ``mean over p of #{q in T : rank(q) <= rank(p)} / rank(p)``.
``auc``
    Fraction of (test label, negative label) pairs ordered correctly,
    ``mean over p in T, n in N of [s(p) > s(n)] + 1/2 [s(p) = s(n)]``, averaged over images.
    An image with no negative (every non-training label is a test label) has no pair: its AUC is
    NaN and it is left out of the mean ``auc`` (but counted in every other metric).
``n_images``
    Number of evaluated images (rows with at least one test label).

Ties
----
Scores that tie are resolved so that neither luck nor label order can help a model:

- **Ranks** (precision, recall, NDCG, MAP) are *pessimistic*: a test label tied with negatives
  is ranked after all of them. Among tied test labels the order is by label index, which does
  not change any metric (they occupy the same set of positions either way). So
  ``rank(p) = 1 + #{n in N : s(n) >= s(p)} + #{q in T : s(q) > s(p), or s(q) = s(p) and q < p}``,
  and a model giving every label the same score gets the worst possible ranks.
- **AUC** gives a tied (test, negative) pair half credit — the expected value under a uniformly
  random tie-break — so constant scores give AUC exactly 0.5.

Scores may be ``+inf`` / ``-inf`` (they compare as usual); a NaN score raises ``ValueError``.

Implementation: images are scored in batches (``batch_size`` rows at a time, so memory is
``O(batch_size * n_labels)``); each test label's rank is found by *counting* the negatives that
score at least as high, one vectorised comparison per (image, test label) pair, which is
``O(n_labels)`` per pair — no sorting of the label list. Matrix products run in float32, as in
implicit.
"""

import contextlib
import numbers

import numpy as np
from tqdm.auto import tqdm

from ._validation import binary_csr, check_positive_int

__all__ = ["DEFAULT_K", "factor_metrics", "metric_names", "ranking_metrics", "score_metrics"]

#: Cut-offs used when ``K`` is not given (the paper reports @5 and @10).
DEFAULT_K = (5, 10)

#: Default number of images scored per batch (a float32 batch over 5,000 labels is ~40 MB).
DEFAULT_BATCH_SIZE = 2048


def metric_names(K=DEFAULT_K):
    """Metric keys, in the order the result dictionaries use.

    Parameters
    ----------
    K : int or sequence of int, default (5, 10)
        Cut-offs.

    Returns
    -------
    list of str
        ``precision@k``, ``recall@k`` and ``ndcg@k`` for each ``k`` (in the given order), then
        ``map`` and ``auc``. The summary dictionary adds ``n_images`` after these.

    Examples
    --------
    >>> metric_names((5, 10))
    ['precision@5', 'recall@5', 'ndcg@5', 'precision@10', 'recall@10', 'ndcg@10', 'map', 'auc']
    """
    names = []
    for k in _check_cutoffs(K):
        names += [f"precision@{k}", f"recall@{k}", f"ndcg@{k}"]
    return [*names, "map", "auc"]


def ranking_metrics(
    model,
    train_user_items,
    test_user_items,
    K=DEFAULT_K,
    *,
    batch_size=DEFAULT_BATCH_SIZE,
    return_per_image=False,
    num_threads=None,
    show_progress=False,
):
    """Evaluate a fitted matrix-factorisation model under the leave-one-out protocol.

    Parameters
    ----------
    model : object
        A fitted model exposing ``user_factors`` (n_images, f) and ``item_factors``
        (n_labels, f) whose dot products are the scores, or a model that scores an image from
        its training row (``EASE``: ``recalculate_user(ids, rows) @ item_factors.T``):
        ``VSEEns``, ``EASE``, implicit's
        ``BayesianPersonalizedRanking`` (its bias column is part of the factors),
        ``AlternatingLeastSquares``, ``LogisticMatrixFactorization``. An implicit GPU model is
        copied to the CPU first (``model.to_cpu()``). For a model without factors use
        :func:`score_metrics`.
    train_user_items : scipy.sparse matrix, shape (n_images, n_labels)
        The labels the model was trained on; they are removed from each image's ranking.
        Stored non-zero entries are labels, their values are ignored.
    test_user_items : scipy.sparse matrix, shape (n_images, n_labels)
        Held-out labels, disjoint from the training labels. Rows without any are skipped.
    K : int or sequence of int, default (5, 10)
        Cut-offs for ``precision@k``, ``recall@k`` and ``ndcg@k``.
    batch_size : int, default 2048
        Images scored at once; bounds memory to about ``batch_size * n_labels`` scores.
    return_per_image : bool, default False
        Also return each evaluated image's metrics (for paired comparisons between models).
    num_threads : int, optional
        Cap on the BLAS threads used for scoring (needs ``threadpoolctl``). Default: no cap.
    show_progress : bool, default False
        Show a tqdm progress bar over the evaluated images.

    Returns
    -------
    summary : dict
        ``{"precision@k", "recall@k", "ndcg@k" for each k, "map", "auc": float,
        "n_images": int}`` — see the module docstring for the definitions and tie rules.
    per_image : dict, only if ``return_per_image``
        ``"image_ids"``: int64 array of the evaluated rows (ascending), and for every metric key
        of ``summary`` except ``n_images`` a float64 array aligned with it (``auc`` is NaN for
        an image without negatives).

    Raises
    ------
    TypeError
        If the model has no ``user_factors`` / ``item_factors``, or an input is not sparse.
    ValueError
        If the model is not fitted, shapes disagree, train and test share an (image, label)
        pair, there is no test label, a score is NaN, or ``K`` / ``batch_size`` is invalid.

    See Also
    --------
    factor_metrics, score_metrics
    """
    if not (hasattr(model, "user_factors") and hasattr(model, "item_factors")):
        raise TypeError(
            f"{type(model).__name__} has no user_factors/item_factors; "
            "evaluate it with score_metrics(score_fn, ...) instead"
        )
    if getattr(model, "_scores_from_rows", False):  # EASE: an image's vector is its label row
        if model.item_factors is None:
            raise ValueError(f"{type(model).__name__} has no factors yet: fit it first")
        train, test = _check_user_items(train_user_items, test_user_items)  # (warns once)
        label_vectors_t = np.ascontiguousarray(np.asarray(model.item_factors, np.float32).T)
        return score_metrics(
            lambda ids: model.recalculate_user(ids, train[ids]) @ label_vectors_t,
            train,
            test,
            K,
            batch_size=batch_size,
            return_per_image=return_per_image,
            num_threads=num_threads,
            show_progress=show_progress,
        )
    if model.user_factors is None or model.item_factors is None:
        raise ValueError(f"{type(model).__name__} has no factors yet: fit it first")
    if not isinstance(model.user_factors, np.ndarray) and hasattr(model, "to_cpu"):
        model = model.to_cpu()  # implicit GPU models keep their factors on the device
    return factor_metrics(
        model.user_factors,
        model.item_factors,
        train_user_items,
        test_user_items,
        K,
        batch_size=batch_size,
        return_per_image=return_per_image,
        num_threads=num_threads,
        show_progress=show_progress,
    )


def factor_metrics(
    user_factors,
    item_factors,
    train_user_items,
    test_user_items,
    K=DEFAULT_K,
    *,
    batch_size=DEFAULT_BATCH_SIZE,
    return_per_image=False,
    num_threads=None,
    show_progress=False,
):
    """Evaluate raw factor matrices, scoring ``s(i, a) = user_factors[i] · item_factors[a]``.

    Scores are computed in float32 (factors of another dtype are converted once), one matrix
    product per batch. BLAS may round a product differently for different batch shapes, so
    near-tied scores — and the metrics, in their last digits — can change slightly with
    ``batch_size``.

    Parameters
    ----------
    user_factors : array_like, shape (n_images, f)
        One row per image.
    item_factors : array_like, shape (n_labels, f)
        One row per label.
    train_user_items, test_user_items, K, batch_size, return_per_image, num_threads, \
show_progress
        As in :func:`ranking_metrics`.

    Returns
    -------
    summary : dict
    per_image : dict, only if ``return_per_image``
        As in :func:`ranking_metrics`.

    Raises
    ------
    ValueError
        If the factor shapes do not match each other or the matrices, plus the cases listed in
        :func:`ranking_metrics`.
    """
    user_factors = np.asarray(user_factors, dtype=np.float32)
    # Transposed once, C-contiguous, so every batch is one plain GEMM.
    item_factors_t = np.ascontiguousarray(np.asarray(item_factors, dtype=np.float32).T)
    if user_factors.ndim != 2 or item_factors_t.ndim != 2:
        raise ValueError(
            f"factors must be 2-D, got user_factors {user_factors.shape} and "
            f"item_factors {item_factors_t.T.shape}"
        )
    if user_factors.shape[1] != item_factors_t.shape[0]:
        raise ValueError(
            f"user_factors has {user_factors.shape[1]} columns but item_factors has "
            f"{item_factors_t.shape[0]}; they must have the same number of factors"
        )
    train, test = _check_user_items(train_user_items, test_user_items)
    expected = (train.shape[0], train.shape[1])
    if (user_factors.shape[0], item_factors_t.shape[1]) != expected:
        raise ValueError(
            f"factors give {user_factors.shape[0]} images x {item_factors_t.shape[1]} labels, "
            f"but user_items has shape {expected}"
        )

    def score_batch(image_ids):
        return user_factors[image_ids] @ item_factors_t

    return _evaluate(
        score_batch, train, test, K, batch_size, return_per_image, num_threads, show_progress
    )


def score_metrics(
    score_fn,
    train_user_items,
    test_user_items,
    K=DEFAULT_K,
    *,
    batch_size=DEFAULT_BATCH_SIZE,
    return_per_image=False,
    num_threads=None,
    show_progress=False,
):
    """Evaluate any scorer given as a function of image ids.

    Parameters
    ----------
    score_fn : callable
        ``score_fn(image_ids) -> scores``: ``image_ids`` is an int64 array of rows (at most
        ``batch_size`` of them), ``scores`` an array of shape ``(len(image_ids), n_labels)``,
        higher meaning more relevant. Scores of training labels are ignored. The returned array
        is copied, so it may be a view of stored data. Float scores keep their dtype; integer
        scores are converted to float64.
    train_user_items, test_user_items, K, batch_size, return_per_image, num_threads, \
show_progress
        As in :func:`ranking_metrics`.

    Returns
    -------
    summary : dict
    per_image : dict, only if ``return_per_image``
        As in :func:`ranking_metrics`.

    Raises
    ------
    ValueError
        If ``score_fn`` returns the wrong shape, plus the cases listed in
        :func:`ranking_metrics`.

    Examples
    --------
    Rank labels by popularity in the training data:

    >>> import scipy.sparse as sp
    >>> train = sp.csr_matrix([[1, 1, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]])
    >>> test = sp.csr_matrix([[0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    >>> popularity = train.sum(axis=0).A1.astype(float)
    >>> result = score_metrics(lambda ids: np.tile(popularity, (len(ids), 1)), train, test, K=1)
    >>> result["precision@1"], round(result["auc"], 4)
    (0.3333333333333333, 0.5833)
    """
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable, got {type(score_fn).__name__}")
    train, test = _check_user_items(train_user_items, test_user_items)
    n_labels = train.shape[1]

    def score_batch(image_ids):
        scores = np.array(score_fn(image_ids))  # a copy: the core writes into it
        if scores.shape != (len(image_ids), n_labels):
            raise ValueError(
                f"score_fn returned shape {scores.shape} for {len(image_ids)} images, "
                f"expected ({len(image_ids)}, {n_labels})"
            )
        if not np.issubdtype(scores.dtype, np.floating):
            scores = scores.astype(np.float64)
        return scores

    return _evaluate(
        score_batch, train, test, K, batch_size, return_per_image, num_threads, show_progress
    )


# --------------------------------------------------------------------------------------------
# Shared core


def _evaluate(
    score_batch, train, test, K, batch_size, return_per_image, num_threads, show_progress
):
    """Score the evaluated images batch by batch and aggregate their metrics."""
    cutoffs = _check_cutoffs(K)
    batch_size = check_positive_int("batch_size", batch_size)
    names = metric_names(cutoffs)
    image_ids = np.flatnonzero(np.diff(test.indptr)).astype(np.int64)
    if image_ids.size == 0:
        raise ValueError("test_user_items has no test labels: there is nothing to evaluate")

    per_image = {name: np.empty(image_ids.size) for name in names}
    with (
        _thread_limit(num_threads),
        tqdm(
            total=image_ids.size, unit="image", desc="evaluate", disable=not show_progress
        ) as progress,
    ):
        for start in range(0, image_ids.size, batch_size):
            batch = image_ids[start : start + batch_size]
            scores = score_batch(batch)
            for name, values in _batch_metrics(scores, batch, train, test, cutoffs).items():
                per_image[name][start : start + batch.size] = values
            progress.update(batch.size)

    summary = {name: float(per_image[name].mean()) for name in names}
    auc = per_image["auc"]
    defined = ~np.isnan(auc)
    summary["auc"] = float(auc[defined].mean()) if defined.any() else float("nan")
    summary["n_images"] = int(image_ids.size)
    if return_per_image:
        return summary, {"image_ids": image_ids, **per_image}
    return summary


def _batch_metrics(scores, image_ids, train, test, cutoffs):
    """Per-image metrics for one batch; ``scores`` (len(image_ids), n_labels) is overwritten."""
    if np.isnan(scores).any():
        first = image_ids[np.isnan(scores).any(axis=1)][0]
        raise ValueError(
            f"the scores of image {first} contain NaN (diverged factors or a bad score_fn?)"
        )
    n_labels = scores.shape[1]
    train_rows, test_rows = train[image_ids], test[image_ids]
    n_train, n_test = np.diff(train_rows.indptr), np.diff(test_rows.indptr)
    n_negatives = n_labels - n_train - n_test

    pair_image = np.repeat(np.arange(image_ids.size), n_test)  # one entry per (image, test label)
    pair_label = test_rows.indices
    pair_score = scores[pair_image, pair_label]
    # NaN compares false with everything, so blanking the training and test labels leaves only
    # the negatives in the counts below — and still works for +-inf scores.
    scores[np.repeat(np.arange(image_ids.size), n_train), train_rows.indices] = np.nan
    scores[pair_image, pair_label] = np.nan

    negatives_above = np.empty(pair_image.size, dtype=np.int64)
    negatives_tied = np.empty(pair_image.size, dtype=np.int64)
    # Take the j-th test label of every image at once: one comparison of <= batch rows, and
    # none of the row copies for j = 0 in the usual one-test-label-per-image case.
    for j in range(int(n_test.max())):
        images = np.flatnonzero(n_test > j)
        pairs = test_rows.indptr[images] + j
        rows = scores if images.size == image_ids.size else scores[images]
        threshold = pair_score[pairs, None]
        negatives_above[pairs] = _count_true(rows > threshold)
        negatives_tied[pairs] = _count_true(rows == threshold)

    # Position among the image's own test labels: by score (descending), then label index.
    order = np.lexsort((pair_label, -pair_score, pair_image))
    positives_before = np.empty(pair_image.size, dtype=np.int64)
    positives_before[order] = np.arange(pair_image.size) - test_rows.indptr[pair_image[order]]
    rank = 1 + negatives_above + negatives_tied + positives_before  # pessimistic, 1-based

    def per_image_sum(values):
        return np.bincount(pair_image, weights=values, minlength=image_ids.size)

    metrics = {}
    discount = 1.0 / np.log2(rank + 1.0)
    for k in cutoffs:
        in_top_k = rank <= k
        hits = per_image_sum(in_top_k)
        ideal_dcg = _cumulative_discount(k)[np.minimum(n_test, k)]
        metrics[f"precision@{k}"] = hits / k
        metrics[f"recall@{k}"] = hits / n_test
        metrics[f"ndcg@{k}"] = per_image_sum(np.where(in_top_k, discount, 0.0)) / ideal_dcg
    # Precision at a test label's rank = (its position among the test labels + 1) / rank.
    metrics["map"] = per_image_sum((positives_before + 1) / rank) / n_test
    with np.errstate(divide="ignore", invalid="ignore"):  # no negatives -> NaN, documented
        pair_negatives = n_negatives[pair_image]
        pair_auc = (pair_negatives - negatives_above - 0.5 * negatives_tied) / pair_negatives
    metrics["auc"] = per_image_sum(pair_auc) / n_test
    return metrics


def _count_true(mask):
    """Row counts of a 2-D boolean array (summing its bytes beats ``np.count_nonzero(axis=1)``)."""
    return mask.view(np.uint8).sum(axis=1, dtype=np.int32)


def _cumulative_discount(k):
    """``[0, 1/log2(2), 1/log2(2) + 1/log2(3), ...]`` up to ``k`` terms: ideal DCG by count."""
    return np.concatenate(([0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))))


# --------------------------------------------------------------------------------------------
# Input checks


def _check_user_items(train_user_items, test_user_items):
    """Binary, canonical CSR copies of train and test, after shape and overlap checks."""
    train = binary_csr(train_user_items, "train_user_items", allow_empty=True, stacklevel=4)
    test = binary_csr(test_user_items, "test_user_items", allow_empty=True, stacklevel=4)
    if train.shape != test.shape:
        raise ValueError(
            f"train_user_items has shape {train.shape} but test_user_items has shape "
            f"{test.shape}; they must match (n_images, n_labels)"
        )
    overlap = train.multiply(test).tocoo()
    if overlap.nnz:
        raise ValueError(
            f"train_user_items and test_user_items share {overlap.nnz} (image, label) pairs, "
            f"e.g. image {overlap.row[0]}, label {overlap.col[0]}; a test label must not also "
            "be a training label"
        )
    return train, test


def _check_cutoffs(K):
    """``K`` as a tuple of distinct positive ints, order kept."""
    if isinstance(K, numbers.Integral):
        values = [K]
    else:
        try:
            values = list(K)
        except TypeError:
            raise ValueError(
                f"K must be a positive integer or a sequence of them, got {K!r}"
            ) from None
    if not values:
        raise ValueError("K must contain at least one cut-off")
    return tuple(dict.fromkeys(check_positive_int("each cut-off in K", k) for k in values))


def _thread_limit(num_threads):
    """Cap BLAS threads (scoring is one GEMM per batch; the counting is single-threaded)."""
    if num_threads is None:
        return contextlib.nullcontext()
    num_threads = check_positive_int("num_threads", num_threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError as error:
        raise ImportError("num_threads needs threadpoolctl: pip install threadpoolctl") from error
    return threadpool_limits(limits=num_threads, user_api="blas")
