"""``EASE``: the closed-form label–label model (Steck, WWW 2019), as an ``implicit`` model.

EASE learns a label–label weight matrix ``B`` (n_labels x n_labels) with a zero diagonal that
best rebuilds every image's labels from its other labels::

    B = argmin ||X - X B||² + λ ||B||²   subject to diag(B) = 0

whose solution is ``P = (XᵀX + λI)⁻¹``, ``B_ij = -P_ij / P_jj``, ``B_jj = 0``. The score of
label ``j`` for an image with label row ``x`` is ``(x B)_j``: every image, known or new, is
scored from its labels alone, so there is nothing to fold in, and one fit costs one Cholesky
factorisation of the Gram matrix (O(n_labels³) time, O(n_labels²) memory), nothing per image.

In implicit's terms the label vectors are the columns of ``B`` (``item_factors = Bᵀ``, row ``j``
says how much each label adds to label ``j``'s score) and an image's vector is its label row,
computed from ``user_items`` on every call (``recalculate_user`` is implied), so
``recommend``, ``similar_items``, ``save``/``load`` and implicit's evaluation work as for
implicit's own models. ``similar_users`` raises NotImplementedError: no image vectors are kept.

>>> import numpy as np, scipy.sparse as sp
>>> X = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=np.float32))
>>> model = EASE(regularization=1.0).fit(X, show_progress=False)
>>> float(model.item_factors[0, 0])  # the zero diagonal: a label never predicts itself
0.0
>>> ids, scores = model.recommend(3, X[3], N=1)  # label 1 alone suggests label 0
>>> int(ids[0])
0
"""

import time

import numpy as np
import scipy.linalg.lapack as lapack
import scipy.sparse
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from ._base import LabelModel
from ._npz import ModelFileError, read_model_file, read_params, source_name, write_model_file
from ._validation import binary_csr, check_number, scores_finite
from .memory import check_memory, estimate_ease_memory

__all__ = ["EASE"]

# Gram-matrix columns built per sparse product: bounds that product's scratch (see _gram)
_GRAM_BLOCK_ENTRIES = 1 << 22


class EASE(LabelModel):
    """EASE: a closed-form label–label ranking model (Steck, WWW 2019).

    Parameters
    ----------
    regularization : float
        λ, the L2 penalty on ``B`` (added to the Gram matrix's diagonal). Larger values trust
        co-occurrence less and popularity more; see the README for how sensitive MAP is to it
        and how to choose it (a sweep costs one factorisation per value).
    num_threads : int
        BLAS threads for the factorisation and threads for batch ``recommend``; 0 uses every
        core this process may run on.
    dtype : numpy dtype
        ``float32`` (default) or ``float64`` for the stored ``B``; the solve is always float64.

    Attributes
    ----------
    item_factors : ndarray, shape (n_labels, n_labels)
        ``Bᵀ``: row ``j`` holds the weights with which each label scores label ``j``.
    user_factors : None
        Images are scored from their label rows; nothing is stored per image.
    fit_seconds : float
        Wall-clock time of the last ``fit``.

    Notes
    -----
    Memory is O(n_labels²): about 12 bytes per label pair at the peak of ``fit`` (the float64
    Gram matrix and the stored ``B``), estimated before anything is allocated
    (:meth:`estimate_memory`); 100,000 labels would need about 120 GB, where ``VSEEns`` needs
    O(n_labels · factors).
    """

    _scores_from_rows = True

    def __init__(self, regularization=150.0, num_threads=0, dtype=np.float32):
        super().__init__(num_threads=num_threads)
        self.regularization = regularization
        self.dtype = np.dtype(dtype)
        self.fit_seconds = None

    # -- training ---------------------------------------------------------------------------

    def fit(self, user_items, show_progress=True, callback=None):
        """Solve for ``B`` from an (n_images, n_labels) sparse matrix of positive labels.

        Parameters
        ----------
        user_items : scipy.sparse CSR matrix
            Non-zero entries are an image's labels (values are not weights). Other sparse
            formats are converted with a warning; duplicates and stored zeros are reported.
        show_progress : bool
            Show a progress bar over the three steps (Gram matrix, factorisation, ``B``).
        callback : callable, optional
            ``callback(0, seconds, stats)`` once, after the solve (as VSEEns calls it after
            each epoch); ``stats`` holds ``n_labels``, ``nnz`` and ``seconds``.

        Raises
        ------
        vse_recsys.memory.InsufficientMemoryError (a MemoryError)
            Before anything is allocated, when :meth:`estimate_memory` exceeds the memory
            available; the message names the label count and suggests VSEEns.
        """
        self._check_params()
        if scipy.sparse.issparse(user_items) and len(user_items.shape) == 2:
            n_images, n_labels = user_items.shape
            check_memory(
                self.estimate_memory(n_images, n_labels, user_items.nnz),
                f"EASE.fit on {n_labels:,} labels",
                advice=f"EASE's memory grows with the square of the label count; for "
                f"{n_labels:,} labels use VSEEns, whose memory is O(n_labels x factors)",
            )
        user_items = binary_csr(user_items)
        started = time.perf_counter()
        with tqdm(total=3, disable=not show_progress, desc="EASE") as progress, \
                threadpool_limits(limits=self._threads(), user_api="blas"):
            gram = _gram(user_items)
            progress.update(1)
            gram[np.diag_indices_from(gram)] += float(self.regularization)
            inverse = _inverse_in_place(gram)
            progress.update(1)
            self.item_factors = _weights_from_inverse(inverse, self.dtype)
            del gram, inverse
            progress.update(1)
        self.user_factors = None
        self._user_norms = self._item_norms = None
        self.fit_seconds = time.perf_counter() - started
        if callback is not None:
            stats = dict(n_labels=user_items.shape[1], nnz=user_items.nnz,
                         seconds=self.fit_seconds)
            callback(0, self.fit_seconds, stats)
        return self

    def estimate_memory(self, n_images, n_labels, nnz):
        """Estimate the memory ``fit`` allocates (a :class:`vse_recsys.memory.MemoryEstimate`)."""
        return estimate_ease_memory(n_images, n_labels, nnz, itemsize=self.dtype.itemsize)

    def _check_params(self):
        check_number("regularization", self.regularization, low=0, strict=True)
        check_number("num_threads", self.num_threads, integer=True, low=0)
        if np.dtype(self.dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")

    # -- scoring ----------------------------------------------------------------------------

    def recalculate_user(self, userid, user_items):
        """An image's vector is its label row: ``user_items`` as a dense array (one row per
        userid; a scalar userid gives one vector)."""
        self._check_fitted()
        rows = binary_csr(user_items, allow_empty=True)
        if rows.shape[1] != self.item_factors.shape[0]:
            raise ValueError(
                f"user_items has {rows.shape[1]} columns but the model knows "
                f"{self.item_factors.shape[0]} labels"
            )
        vectors = rows.toarray().astype(self.item_factors.dtype, copy=False)
        return vectors[0] if np.isscalar(userid) else vectors

    def recommend(self, userid, user_items, N=10, filter_already_liked_items=True,
                  filter_items=None, recalculate_user=False, items=None):
        # dense label rows of a whole batch could be large (images x labels): score in slices
        if np.isscalar(userid) or len(userid) <= _RECOMMEND_BATCH:
            return super().recommend(userid, user_items, N, filter_already_liked_items,
                                     filter_items, recalculate_user, items)
        userid = np.asarray(userid)
        if user_items is None or user_items.shape[0] != len(userid):
            raise ValueError("user_items must contain 1 row for every user in userids")
        parts = [
            super(EASE, self).recommend(userid[start:start + _RECOMMEND_BATCH],
                                        user_items[start:start + _RECOMMEND_BATCH], N,
                                        filter_already_liked_items, filter_items,
                                        recalculate_user, items)
            for start in range(0, len(userid), _RECOMMEND_BATCH)
        ]
        return np.concatenate([ids for ids, _ in parts]), np.concatenate([s for _, s in parts])

    recommend.__doc__ = LabelModel.recommend.__doc__

    # -- persistence ------------------------------------------------------------------------

    def save(self, fileobj_or_path):
        """Save ``B`` and the parameters to a ``.npz`` file (no pickle), atomically for a path.

        As with ``numpy.savez``, a path without the ``.npz`` suffix gets it appended.
        """
        arrays = {
            "regularization": float(self.regularization),
            "num_threads": int(self.num_threads),
            "dtype": np.dtype(self.dtype).name,
        }
        if self.item_factors is not None:
            arrays["item_factors"] = self.item_factors
        write_model_file(fileobj_or_path, "EASE", arrays)

    @classmethod
    def load(cls, fileobj_or_path):
        """Load a model written by :meth:`save` (nothing is unpickled; every array is checked).

        Raises
        ------
        FileNotFoundError
            No such file.
        ModelFileError (a ValueError)
            A damaged file, a file of another kind (saying which), a newer format version, or
            weights that are not a finite square float matrix of the model's dtype.
        """
        arrays, _ = read_model_file(fileobj_or_path, "EASE")
        return cls._from_arrays(arrays, source_name(fileobj_or_path))

    @classmethod
    def _from_arrays(cls, arrays, name):
        def fail(problem):
            return ModelFileError(f"{name} is not a valid EASE model file: {problem}")

        known = {"regularization", "num_threads", "dtype"}
        unknown = sorted(set(arrays) - known - {"item_factors"})
        if unknown:
            raise fail(f"unknown entry {unknown[0]!r} (is it from a newer vse-recsys?)")
        try:
            model = cls(**read_params(arrays, known, fail))
            model._check_params()
        except (TypeError, ValueError) as error:
            if isinstance(error, ModelFileError):
                raise
            raise fail(f"bad parameter: {error}") from None
        if "item_factors" in arrays:
            weights = arrays["item_factors"]
            if weights.ndim != 2 or weights.shape[0] != weights.shape[1] or not weights.size:
                raise fail(f"item_factors must be a square matrix, got shape {weights.shape}")
            if np.dtype(weights.dtype.name) != model.dtype:
                raise fail(f"item_factors is {weights.dtype} but the model's dtype is "
                           f"{model.dtype}")
            if not np.isfinite(weights).all():
                raise fail("item_factors holds NaN or infinite values")
            weights = np.ascontiguousarray(weights, dtype=model.dtype)
            if not scores_finite(np.ones((1, weights.shape[1]), weights.dtype), weights):
                raise fail("the weights are so large that scores overflow")
            if np.any(np.diag(weights)):
                raise fail("the diagonal of B must be zero (a label never scores itself)")
            model.item_factors = weights
        return model


_RECOMMEND_BATCH = 4096  # images scored per slice: 4,096 x 20,000 labels x 4 bytes = 328 MB


def _gram(user_items):
    """XᵀX as a dense float64 array, from the sparse matrix (no dense copy of X).

    Built a block of columns at a time, so the sparse product's scratch stays near
    ``_GRAM_BLOCK_ENTRIES`` entries whatever the label count.
    """
    n_labels = user_items.shape[1]
    by_label = user_items.T.tocsr()  # labels x images: row a lists the images with label a
    by_label.data = by_label.data.astype(np.float64)
    columns = user_items.tocsc().astype(np.float64)
    gram = np.empty((n_labels, n_labels), dtype=np.float64)
    block = max(1, _GRAM_BLOCK_ENTRIES // max(1, n_labels))
    for start in range(0, n_labels, block):
        stop = min(n_labels, start + block)
        gram[:, start:stop] = (by_label @ columns[:, start:stop]).toarray()
    return gram


def _inverse_in_place(gram):
    """The inverse of a symmetric positive definite matrix, overwriting it (LAPACK potrf, potri).

    A C-ordered symmetric matrix is its own transpose, so its Fortran-ordered view is the same
    matrix and LAPACK works on it in place; potri fills one triangle, copied to the other.
    """
    fortran = gram.T  # a view
    factor, info = lapack.dpotrf(fortran, lower=False, clean=False, overwrite_a=True)
    if info != 0:
        raise FloatingPointError(
            f"the Gram matrix plus regularization is not positive definite (LAPACK dpotrf "
            f"info {info}); use a larger regularization"
        )
    inverse, info = lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise FloatingPointError(f"inverting the Gram matrix failed (LAPACK dpotri info {info})")
    # upper triangle of the Fortran view = lower triangle of the C-ordered array
    result = inverse.T
    block = 1024
    n = result.shape[0]
    for start in range(0, n, block):
        stop = min(n, start + block)
        result[start:stop, stop:] = result[stop:, start:stop].T
        rows = result[start:stop, start:stop]
        rows[np.triu_indices(stop - start, 1)] = rows.T[np.triu_indices(stop - start, 1)]
    return result


def _weights_from_inverse(inverse, dtype):
    """``Bᵀ`` from ``P``: row ``j`` is ``-P[j] / P[j, j]`` (``P`` symmetric), diagonal zero."""
    n = inverse.shape[0]
    diagonal = np.diag(inverse).copy()
    weights = np.empty((n, n), dtype=dtype)
    block = 1024
    for start in range(0, n, block):
        stop = min(n, start + block)
        weights[start:stop] = -inverse[start:stop] / diagonal[start:stop, None]
    weights[np.diag_indices(n)] = 0
    return weights
