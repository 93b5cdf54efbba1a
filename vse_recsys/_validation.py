"""Input checks shared by the models, the Annotator, the evaluation and the adapters.

One home for each rule: the binary CSR matrix every model trains on and scores from
(:func:`binary_csr`), the structure of a sparse matrix (:func:`check_sparse_structure`), seeds
(:func:`resolve_random_state`), numbers and ids given as parameters, and whether factors can
give an infinite score (:func:`scores_finite`). Nothing here imports a model.
"""

import math
import numbers
import warnings

import numpy as np
import scipy.sparse
from implicit.utils import ParameterWarning

__all__ = [
    "InputWarning",
    "NotSparseError",
    "binary_csr",
    "check_ids",
    "check_number",
    "check_seed",
    "check_sparse_structure",
    "max_row_norm",
    "resolve_random_state",
    "scores_finite",
]

#: Largest seed a model file can store (an int64); larger ones are refused before training.
MAX_SEED = 2**63 - 1


class InputWarning(ParameterWarning, UserWarning):
    """Input was converted or cleaned (another sparse format, duplicates, stored zeros).

    A subclass of implicit's ``ParameterWarning``, which implicit's own models give for the same
    conversions, so that one filter silences both, and of ``UserWarning``.
    """


class NotSparseError(TypeError, ValueError):
    """Something other than a scipy.sparse matrix where one is needed.

    Both a TypeError (the wrong kind of object) and a ValueError (a bad value of a parameter),
    as numpy's ``AxisError`` is both an IndexError and a ValueError: callers catching either
    family see it.
    """


def binary_csr(matrix, name="user_items", *, allow_empty=False, stacklevel=3, copy=False):
    """Validate a sparse images x labels matrix and return it as canonical binary CSR.

    The one canonicaliser of the package (models, Annotator, evaluation): other sparse formats
    are converted (with an :class:`InputWarning`), duplicate entries merged and explicit zeros
    dropped (each with an InputWarning saying how many), indices sorted and int32, every value 1.
    The input is never modified. A matrix that is canonical already (CSR, sorted int32 indices
    without duplicates, float32 ones) is returned as it is, unless ``copy``: training on
    hundreds of millions of pairs need not hold them twice.

    Parameters
    ----------
    matrix : scipy.sparse matrix or array
    name : str
        How to name the matrix in messages.
    allow_empty : bool
        Accept a matrix without rows or without positives (folding in images that have no
        known label, a test matrix).
    stacklevel : int
        Of the warnings, as for ``warnings.warn`` (default: the caller's caller).

    Raises
    ------
    NotSparseError
        ``matrix`` is not a scipy.sparse matrix.
    ValueError
        No labels (or, unless ``allow_empty``, no images or no positives), negative, NaN or
        infinite values, values that are not numbers, index arrays inconsistent with the shape.
    """
    if not scipy.sparse.issparse(matrix):
        raise NotSparseError(
            f"{name} must be a scipy.sparse CSR matrix of shape (n_images, n_labels), got "
            f"{type(matrix).__name__}; convert with scipy.sparse.csr_matrix({name})"
        )
    if len(matrix.shape) != 2:
        raise ValueError(f"{name} must be 2-D, got shape {matrix.shape}")
    if matrix.format != "csr":
        warnings.warn(
            f"{name} is a {matrix.format.upper()} matrix; converting it to CSR (pass CSR to "
            f"avoid the copy)",
            InputWarning,
            stacklevel=stacklevel,
        )
    n_images, n_labels = matrix.shape
    if n_labels == 0 or (n_images == 0 and not allow_empty):
        raise ValueError(f"{name} has shape {matrix.shape}: need at least one image and one label")
    if n_labels >= 2**31 - 1:
        raise ValueError(f"too many labels ({n_labels}); at most 2**31 - 2 are supported")
    check_sparse_structure(matrix, name)
    _check_values(_stored_values(matrix), name)
    if not copy and _is_canonical_binary(matrix) and (allow_empty or matrix.nnz):
        return matrix
    binary = _ones_where_stored(matrix)
    stored = matrix.nnz  # with duplicates, also of a COO matrix that conversion merged
    binary.sum_duplicates()
    if binary.nnz != stored:
        warnings.warn(
            f"{name} has {stored - binary.nnz} duplicate (image, label) entries; they were "
            f"merged",
            InputWarning,
            stacklevel=stacklevel,
        )
    zeros = binary.nnz - np.count_nonzero(binary.data)
    if zeros:
        binary.eliminate_zeros()
        warnings.warn(
            f"{name} has {zeros} explicitly stored zeros; they are not positives and were "
            f"dropped",
            InputWarning,
            stacklevel=stacklevel,
        )
    if binary.nnz == 0 and not allow_empty:
        raise ValueError(f"{name} has no positive entries: nothing to train on")
    binary.indices = binary.indices.astype(np.int32, copy=False)
    binary.data[:] = 1
    return binary


def _is_canonical_binary(matrix):
    """A CSR matrix in exactly the form binary_csr makes (read-only checks, O(nnz))."""
    return (
        matrix.format == "csr"
        and np.asarray(matrix.indices).dtype == np.int32
        and np.asarray(matrix.data).dtype == np.float32
        and len(matrix.indices) == len(matrix.data) == matrix.nnz
        and matrix.has_canonical_format  # sorted, no duplicates (scipy checks, then caches)
        and bool((np.asarray(matrix.data) == 1).all())
    )


def _stored_values(matrix):
    """The values as stored: converting COO or CSC to CSR sums duplicates, which could hide a
    negative or NaN entry (CSR/CSC arrays may also be longer than the stored entries)."""
    if matrix.format in ("csr", "csc", "coo", "bsr"):
        return np.asarray(matrix.data).reshape(-1)[: matrix.nnz]
    return scipy.sparse.csr_matrix(matrix).data


def _check_values(data, name):
    if data.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold numbers, got dtype {data.dtype}")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise ValueError(
            f"{name} has {np.count_nonzero(~np.isfinite(data))} NaN or infinite values; entries "
            f"must be finite and positive (1 for 'image has label')"
        )
    if (data < 0).any():
        raise ValueError(
            f"{name} has {np.count_nonzero(data < 0)} negative values; entries must be positive "
            f"(1 for 'image has label'), negatives are not supported"
        )


def _ones_where_stored(matrix):
    """A CSR copy with 1 for every stored non-zero (explicit zeros stay 0).

    Values are made 1 before duplicates are summed (converting a COO matrix sums them), so the
    sum cannot overflow: two uint8 entries of 128 would wrap to 0 and lose the label.
    """
    if matrix.format in ("csr", "csc", "coo", "bsr"):
        binary = matrix.copy()
        binary.data = (np.asarray(binary.data) != 0).astype(np.float32)
        return scipy.sparse.csr_matrix(binary)  # shares binary's arrays when it is CSR
    # LIL, DOK and DIA cannot hold duplicates
    result = scipy.sparse.csr_matrix(matrix, dtype=np.float32, copy=True)
    result.data = (result.data != 0).astype(np.float32)
    return result


def check_sparse_structure(matrix, name):
    """Refuse a CSR/CSC/COO matrix whose index arrays are inconsistent with its shape.

    scipy checks them only when the matrix is built, so arrays changed afterwards (or built with
    ``check_format`` skipped) can hold out-of-range indices, which would make scipy's
    conversions and the compiled kernels read and write outside the arrays. Only reads the
    arrays; raises ValueError saying what is wrong.
    """
    problem = None
    if matrix.format in ("csr", "csc"):
        major, minor = matrix.shape if matrix.format == "csr" else matrix.shape[::-1]
        indptr, indices = np.asarray(matrix.indptr), np.asarray(matrix.indices)
        if indptr.ndim != 1 or indices.ndim != 1 or indptr.dtype.kind not in "iu":
            problem = "indptr and indices must be 1-d integer arrays"
        elif len(indptr) != major + 1:
            problem = f"indptr has {len(indptr)} entries for {major} rows (needs {major + 1})"
        elif indptr[0] != 0 or (major and (np.diff(indptr) < 0).any()):
            problem = "indptr must start at 0 and never decrease"
        elif indptr[-1] > min(len(indices), len(np.asarray(matrix.data))):
            problem = f"indptr ends at {indptr[-1]} but only {len(indices)} indices are stored"
        else:
            problem = _index_problem(indices[: indptr[-1]], minor, "indices")
    elif matrix.format == "coo":
        problem = _index_problem(np.asarray(matrix.row), matrix.shape[0], "row indices")
        problem = problem or _index_problem(np.asarray(matrix.col), matrix.shape[1], "col indices")
    if problem:
        raise ValueError(
            f"{name} is not a valid {matrix.format.upper()} matrix of shape {matrix.shape}: "
            f"{problem}. Was an index array changed after the matrix was built?"
        )


def _index_problem(indices, count, what):
    if indices.dtype.kind not in "iu":
        return f"{what} must be integers, got {indices.dtype}"
    if indices.size and (indices.min() < 0 or indices.max() >= count):
        bad = indices.min() if indices.min() < 0 else indices.max()
        return f"{what} hold {bad}, outside 0..{count - 1}"
    return None


# -- seeds --------------------------------------------------------------------------------------


def check_seed(random_state, name="random_state"):
    """Refuse what cannot seed a model or be saved with it; returns ``random_state``.

    None, a numpy ``Generator`` or ``RandomState``, or an int seed ``0 <= seed <= 2**63 - 1``
    (an int64, so a model file can store it). Bools are refused: ``True`` is not a seed.
    """
    if random_state is None or isinstance(
        random_state, (np.random.Generator, np.random.RandomState)
    ):
        return random_state
    if isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral):
        raise TypeError(
            f"{name} must be None, an int, a numpy Generator or RandomState, got "
            f"{type(random_state).__name__}"
        )
    if not 0 <= random_state <= MAX_SEED:
        raise ValueError(
            f"{name} must be a seed from 0 to 2**63 - 1, got {random_state}: a model file "
            f"stores the seed as an int64"
        )
    return random_state


def resolve_random_state(random_state, name="random_state"):
    """A ``numpy.random.Generator`` from a seed accepted by :func:`check_seed`.

    A Generator is used as is (so the caller's stream advances); a RandomState seeds a new
    Generator from one draw, so a seeded RandomState still gives reproducible results.
    """
    check_seed(random_state, name)
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**63 - 1, dtype=np.int64))
    return np.random.default_rng(None if random_state is None else int(random_state))


# -- parameters and ids -------------------------------------------------------------------------


def check_number(name, value, *, integer=False, low=None, strict=False):
    """Refuse a parameter that is not a finite number (an integer with ``integer``), or is
    below ``low`` (at or below it with ``strict``). Bools are no numbers here."""
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kind) or not np.isfinite(value):
        expected = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    if low is not None and (value <= low if strict else value < low):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {value!r}")


def check_positive_int(name, value):
    """``value`` as an int, refusing anything but an integer >= 1 (bools included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_ids(name, ids, count, what):
    """Refuse row or column ids that are not integers in ``0..count - 1`` (IndexError)."""
    ids = np.asarray(ids)
    if ids.size == 0:
        return
    if ids.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integer ids, got dtype {ids.dtype}")
    low, high = ids.min(), ids.max()
    if low < 0 or high >= count:
        bad = low if low < 0 else high
        raise IndexError(f"{name} {bad} is out of range: the model has {count} {what} (0..{count - 1})")


# -- factors ------------------------------------------------------------------------------------


def max_row_norm(array):
    """The largest Euclidean row norm, in float64 (NaN if any value is NaN)."""
    if array.size == 0:
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        return math.sqrt(np.einsum("ij,ij->i", array, array, dtype=np.float64).max())


def scores_finite(users, items):
    """True when every score ``users[i] @ items[a]`` is finite in the factors' precision.

    By Cauchy-Schwarz ``|u . v| <= |u| |v|``, so bounding the product of the largest row norms
    by half the dtype's largest value (room for rounding) rules out NaN, infinite and
    overflowing scores at once.
    """
    bound = max_row_norm(users) * max_row_norm(items)
    return bool(bound < float(np.finfo(items.dtype).max) / 2)  # False for NaN
