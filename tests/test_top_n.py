"""recommend's top-N selection (vse_recsys._base._top_n) against a plain per-row reference."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

import vse_recsys._base as base
from vse_recsys._base import _top_n


def _reference(vectors, labels, N, known, excluded, subset):
    """Row by row: score every label, known / excluded ones at -max, the N best by score then
    label id (positions in subset when there is one)."""
    lowest = -np.finfo(vectors.dtype).max
    candidates = np.arange(labels.shape[0]) if subset is None else subset
    ids, scores = [], []
    for row in range(vectors.shape[0]):
        row_scores = (labels @ vectors[row]).astype(vectors.dtype)
        if known is not None:
            row_scores = row_scores.copy()
            for label in known[row].indices:
                hits = np.flatnonzero(candidates == label)
                row_scores[hits] = lowest
        if excluded is not None:
            row_scores[excluded] = lowest
        order = np.lexsort((np.arange(len(row_scores)), -row_scores))[:N]
        ids.append(order)
        scores.append(row_scores[order])
    return np.array(ids), np.array(scores)


@st.composite
def cases(draw):
    n_rows = draw(st.integers(1, 12))
    n_labels = draw(st.integers(1, 30))
    k = draw(st.integers(1, 4))
    # small integers: every product is exact, so blocked and per-row scores agree bit for bit,
    # and ties (common with so few values) test the order among equal scores
    values = st.integers(-2, 2)
    vectors = np.array(draw(st.lists(values, min_size=n_rows * k, max_size=n_rows * k)),
                       dtype=np.float32).reshape(n_rows, k)
    labels = np.array(draw(st.lists(values, min_size=n_labels * k, max_size=n_labels * k)),
                      dtype=np.float32).reshape(n_labels, k)
    mask = np.array(draw(st.lists(st.booleans(), min_size=n_rows * n_labels,
                                  max_size=n_rows * n_labels))).reshape(n_rows, n_labels)
    known = sp.csr_matrix(mask.astype(np.float32)) if draw(st.booleans()) else None
    subset = excluded = None
    if draw(st.booleans()):
        subset = np.array(sorted(draw(st.sets(st.integers(0, n_labels - 1), min_size=1))))
    elif draw(st.booleans()):
        excluded = np.array(sorted(draw(st.sets(st.integers(0, n_labels - 1)))), dtype=np.int64)
    count = n_labels if subset is None else len(subset)
    N = draw(st.integers(1, count))
    block = draw(st.sampled_from([1, 7, 1 << 22]))  # scores per block: several blocks, or one
    return vectors, labels, N, known, excluded, subset, block


@given(cases())
def test_top_n_is_the_per_row_ranking(case):
    vectors, labels, N, known, excluded, subset, block = case
    rows = labels if subset is None else labels[subset]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(base, "_SCORE_BLOCK", block)
        ids, scores = _top_n(vectors, rows, N, known, excluded, subset)
    expected_ids, expected_scores = _reference(vectors, rows, N, known, excluded, subset)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(scores, expected_scores)
    assert ids.dtype == np.int32 and scores.dtype == np.float32
