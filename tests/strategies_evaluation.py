"""Hypothesis strategies for the ranking-metric tests: small splits, factors and score matrices.

Sizes are tiny on purpose: the tests compare against a pure-Python reference, and ties — the
hard part — are common only when few distinct score values are drawn.
"""

import numpy as np
import scipy.sparse as sp
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

NONE, TRAIN, TEST = 0, 1, 2

# Scores with many exact ties and both infinities (they must rank like any other value).
tie_heavy_scores = st.one_of(
    st.sampled_from([-np.inf, -1.0, 0.0, 0.5, 1.0, np.inf]),
    st.floats(-10, 10, allow_nan=False, width=32),
)

cutoffs = st.lists(st.integers(1, 12), min_size=1, max_size=3)

batch_sizes = st.integers(1, 5)


@st.composite
def label_splits(draw, n_images, n_labels):
    """Disjoint binary ``(train, test)`` CSR matrices with at least one test label."""
    state = draw(hnp.arrays(np.int8, (n_images, n_labels), elements=st.sampled_from([0, 1, 2])))
    if not (state == TEST).any():
        state.flat[draw(st.integers(0, state.size - 1))] = TEST
    return sp.csr_matrix(state == TRAIN, dtype=np.float32), sp.csr_matrix(
        state == TEST, dtype=np.float32
    )


@st.composite
def shapes(draw):
    """``(n_images, n_labels)``."""
    return draw(st.integers(1, 7)), draw(st.integers(1, 9))


@st.composite
def factor_problems(draw):
    """``(user_factors, item_factors, train, test)`` with small-integer float32 factors.

    Integer factors make every score exact in float32 (so the reference sees the same scores
    whatever the matrix-product blocking) and make ties frequent.
    """
    n_images, n_labels = draw(shapes())
    n_factors = draw(st.integers(1, 3))
    entries = st.integers(-2, 2).map(float)
    user_factors = draw(hnp.arrays(np.float32, (n_images, n_factors), elements=entries))
    item_factors = draw(hnp.arrays(np.float32, (n_labels, n_factors), elements=entries))
    train, test = draw(label_splits(n_images, n_labels))
    return user_factors, item_factors, train, test


@st.composite
def score_problems(draw):
    """``(scores, train, test)``: a float64 score matrix with ties and infinities."""
    n_images, n_labels = draw(shapes())
    scores = draw(hnp.arrays(np.float64, (n_images, n_labels), elements=tie_heavy_scores))
    train, test = draw(label_splits(n_images, n_labels))
    return scores, train, test
