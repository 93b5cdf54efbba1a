"""Tests for ``leave_one_out_split`` and ``train_test_split``: the split invariants."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from strategies import binary_matrices, seeds

from vse_recsys.adapters import ImageLabels, leave_one_out_split, train_test_split

SPLITS = {
    "leave_one_out": leave_one_out_split,
    "fraction": lambda data, random_state=None: train_test_split(data, 0.3, random_state),
}


def check_partition(matrix, train, test):
    """Same shape, CSR, disjoint, and train + test == matrix (values kept)."""
    assert isinstance(train, sp.csr_matrix) and isinstance(test, sp.csr_matrix)
    assert train.shape == test.shape == matrix.shape
    assert train.multiply(test).nnz == 0
    assert train.nnz + test.nnz == matrix.nnz
    assert abs(train + test - matrix).sum() == 0
    assert train.has_canonical_format and test.has_canonical_format


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
@given(matrix=binary_matrices(), seed=seeds)
def test_split_is_a_seeded_partition(split, matrix, seed):
    train, test = split(matrix, random_state=seed)
    check_partition(matrix, train, test)
    again = split(matrix, random_state=seed)
    assert (again[0] != train).nnz == 0 and (again[1] != test).nnz == 0
    # every image keeps at least one training label
    counts = np.diff(matrix.indptr)
    assert (np.diff(train.indptr)[counts > 0] >= 1).all()


@given(matrix=binary_matrices(), seed=seeds)
def test_leave_one_out_holds_out_one_label_per_image_with_two(matrix, seed):
    train, test = leave_one_out_split(matrix, random_state=seed)
    counts = np.diff(matrix.indptr)
    assert np.diff(test.indptr).tolist() == (counts >= 2).astype(int).tolist()


@given(matrix=binary_matrices(max_images=40), seed=seeds, fraction=st.floats(0.05, 0.95))
def test_fractional_split_holds_out_about_the_fraction(matrix, seed, fraction):
    train, test = train_test_split(matrix, fraction, random_state=seed)
    check_partition(matrix, train, test)
    counts = np.diff(matrix.indptr)
    held = np.diff(test.indptr)
    # randomised rounding: floor or ceil of fraction * count, capped to leave one in train
    low = np.where(counts >= 2, np.minimum(np.floor(fraction * counts), counts - 1), 0)
    high = np.where(counts >= 2, np.minimum(np.ceil(fraction * counts), counts - 1), 0)
    assert ((held >= low) & (held <= high)).all()


def test_fractional_split_matches_the_fraction_on_average():
    matrix = sp.csr_matrix(np.ones((2000, 10), dtype=np.float32))
    _, test = train_test_split(matrix, 0.25, random_state=0)
    assert test.nnz / matrix.nnz == pytest.approx(0.25, abs=0.01)


def test_the_held_out_label_is_uniform_within_an_image():
    matrix = sp.csr_matrix(np.ones((4000, 4), dtype=np.float32))
    _, test = leave_one_out_split(matrix, random_state=1)
    share = np.bincount(test.indices, minlength=4) / 4000
    assert np.allclose(share, 0.25, atol=0.03)


def test_accepts_image_labels_other_formats_and_all_seed_kinds():
    data = ImageLabels.from_pairs([0, 0, 0, 1, 1], [0, 1, 2, 0, 1])
    train, test = leave_one_out_split(data, random_state=np.random.RandomState(3))
    check_partition(data.user_items, train, test)
    assert test.nnz == 2
    coo = data.user_items.tocoo()
    for seed in (None, 7, np.random.default_rng(7), np.random.RandomState(7)):
        check_partition(data.user_items, *train_test_split(coo, 0.5, random_state=seed))
    first = leave_one_out_split(data, random_state=np.random.RandomState(5))[1]
    second = leave_one_out_split(data, random_state=np.random.RandomState(5))[1]
    assert (first != second).nnz == 0


def test_duplicates_and_stored_zeros_in_the_input():
    matrix = sp.csr_matrix(
        (np.array([1, 1, 0, 1], dtype=np.float32), np.array([0, 0, 1, 2]), np.array([0, 4])),
        shape=(1, 3),
    )
    train, test = leave_one_out_split(matrix, random_state=0)
    assert (train + test).toarray().tolist() == [[2, 0, 1]]  # duplicates summed, zero dropped


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: leave_one_out_split(np.eye(3)), TypeError, "ImageLabels or a scipy.sparse"),
        (
            lambda: train_test_split(sp.eye(3), 1.0),
            ValueError,
            r"test_fraction must be in \(0, 1\)",
        ),
        (lambda: train_test_split(sp.eye(3), 0), ValueError, "test_fraction"),
        (lambda: leave_one_out_split(sp.eye(3), "seed"), TypeError, "random_state must be"),
    ],
)
def test_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()
