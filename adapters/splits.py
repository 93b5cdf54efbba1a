"""Train/test splits of an image × label matrix, by image (every image keeps training labels)."""

import numpy as np
import scipy.sparse as sp

from .._validation import resolve_random_state
from .dataset import ImageLabels

__all__ = ["leave_one_out_split", "train_test_split"]


def _canonical_csr(data):
    """A canonical CSR copy of an ImageLabels' matrix or of any sparse matrix."""
    matrix = data.user_items if isinstance(data, ImageLabels) else data
    if not sp.issparse(matrix):
        raise TypeError(
            f"data must be an ImageLabels or a scipy.sparse matrix, got {type(data).__name__}"
        )
    matrix = sp.csr_matrix(matrix, copy=True)
    matrix.sum_duplicates()  # each (image, label) pair is one entry ...
    matrix.eliminate_zeros()  # ... and stored zeros are no pairs
    return matrix


def _split_entries(matrix, to_test):
    """Two CSR matrices of the matrix's shape: entries where `to_test` is False / True."""
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))

    def part(mask):
        indptr = np.zeros(matrix.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows[mask], minlength=matrix.shape[0]), out=indptr[1:])
        return sp.csr_matrix((matrix.data[mask], matrix.indices[mask], indptr), shape=matrix.shape)

    return part(~to_test), part(to_test)


def leave_one_out_split(data, random_state=None):
    """The paper's protocol: one random label of each image with >= 2 labels is held out.

    Parameters
    ----------
    data : ImageLabels or scipy.sparse matrix, shape (n_images, n_labels)
    random_state : None, int, numpy.random.Generator or numpy.random.RandomState

    Returns
    -------
    train, test : scipy.sparse.csr_matrix
        Same shape and values as the input. Each image with at least two labels has exactly one
        test label; images with fewer keep all theirs in train. Disjoint, and their sum is the
        input (duplicate entries summed, stored zeros dropped).
    """
    matrix = _canonical_csr(data)
    rng = resolve_random_state(random_state)
    counts = np.diff(matrix.indptr)
    eligible = np.flatnonzero(counts >= 2)
    # one uniform position inside each eligible row
    offsets = np.floor(rng.random(len(eligible)) * counts[eligible]).astype(np.int64)
    to_test = np.zeros(matrix.nnz, dtype=bool)
    to_test[matrix.indptr[eligible] + np.minimum(offsets, counts[eligible] - 1)] = True
    return _split_entries(matrix, to_test)


def train_test_split(data, test_fraction=0.2, random_state=None):
    """Hold out about `test_fraction` of each image's labels, keeping at least one in train.

    An image with ``c >= 2`` labels gets ``min(c - 1, floor(test_fraction * c + u))`` test labels,
    ``u`` uniform in [0, 1) (randomised rounding, so the expected number is
    ``test_fraction * c`` unless capped), chosen uniformly among its labels. Images with one
    label keep it in train.

    Parameters
    ----------
    data : ImageLabels or scipy.sparse matrix, shape (n_images, n_labels)
    test_fraction : float, default 0.2
        In (0, 1).
    random_state : None, int, numpy.random.Generator or numpy.random.RandomState

    Returns
    -------
    train, test : scipy.sparse.csr_matrix
        Same shape; disjoint; their sum is the input.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    matrix = _canonical_csr(data)
    rng = resolve_random_state(random_state)
    counts = np.diff(matrix.indptr)
    n_test = np.floor(test_fraction * counts + rng.random(len(counts))).astype(np.int64)
    n_test = np.where(counts >= 2, np.minimum(n_test, counts - 1), 0)
    # a random rank for each entry inside its row; the n_test lowest ranks go to test
    rows = np.repeat(np.arange(matrix.shape[0]), counts)
    order = np.lexsort((rng.random(matrix.nnz), rows))
    rank = np.empty(matrix.nnz, dtype=np.int64)
    rank[order] = np.arange(matrix.nnz) - matrix.indptr[rows[order]]
    return _split_entries(matrix, rank < n_test[rows])
