"""What every vse-recsys model shares beyond implicit's base classes.

:class:`ParamsMixin` gives scikit-learn's parameter protocol (``get_params`` / ``set_params``)
from the constructor's own arguments; :class:`LabelModel` is implicit's matrix-factorisation
interface (``recommend``, ``similar_items``, ``similar_users``, ANN wrappers, evaluation) with
the argument checks both models need: an image's scores are ``user_vector @ item_factors.T``,
where the user vector is stored (``user_factors``) or computed from the image's labels
(``recalculate_user``; always, for a model with ``_scores_from_rows``).
"""

import inspect
import os

import numpy as np
import scipy.sparse
from implicit.cpu.matrix_factorization_base import MatrixFactorizationBase
from implicit.cpu.topk import topk

from ._validation import binary_csr, check_ids, check_positive_int

__all__ = ["LabelModel", "ParamsMixin"]

_SIMILAR_NOTES = """
        Notes
        -----
        Similarity is the cosine of the vectors. As for ``recommend``, ``N`` larger than the
        candidates returns each once, and filtered ones end a row at score
        ``-numpy.finfo(dtype).max`` when fewer than ``N`` remain. A vector of zeros (a label
        never trained) is similar to nothing: cosine 0. An item or user comes first in its own
        list.
        """


class ParamsMixin:
    """``get_params`` / ``set_params`` as in scikit-learn.

    The parameters are the constructor's arguments, each stored under its own name by
    ``__init__`` (as scikit-learn requires), so ``type(model)(**model.get_params())`` is an
    unfitted model with the same settings.
    """

    @classmethod
    def _param_names(cls):
        signature = inspect.signature(cls.__init__)
        return [name for name in signature.parameters if name != "self"]

    def get_params(self, deep=True):
        """The constructor's arguments as they are set now (``deep`` is accepted and ignored:
        a model holds no estimators)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set constructor arguments by name; an unknown name is a ValueError. Returns self."""
        names = self._param_names()
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no parameter {unknown[0]!r}; its parameters are "
                f"{', '.join(names)}"
            )
        for name, value in params.items():
            setattr(self, name, value)
        return self


class LabelModel(ParamsMixin, MatrixFactorizationBase):
    """implicit's matrix-factorisation model interface with the checks every model here needs.

    ``N`` larger than the number of labels returns each label once (implicit would pad with
    label 0); ids out of range, repeated ``items``, both ``items`` and ``filter_items`` are
    errors saying so; ``user_items`` rows are read as in ``fit`` (stored zeros are no labels,
    any sparse format).
    """

    #: True for a model that scores every image from its label row (no stored image vectors)
    _scores_from_rows = False

    # -- prediction -------------------------------------------------------------------------

    def recommend(
        self,
        userid,
        user_items,
        N=10,
        filter_already_liked_items=True,
        filter_items=None,
        recalculate_user=False,
        items=None,
    ):
        self._check_fitted()
        recalculate_user = recalculate_user or self._scores_from_rows
        # images scored from their labels need not be in the model, but ids are integers
        count = np.iinfo(np.int64).max if recalculate_user else self.user_factors.shape[0]
        check_ids("userid", userid, count, "images")
        if user_items is not None and scipy.sparse.issparse(user_items):
            if user_items.shape[1] != self.item_factors.shape[0]:
                raise ValueError(
                    f"user_items has {user_items.shape[1]} columns but the model knows "
                    f"{self.item_factors.shape[0]} labels; pass the rows of the training matrix"
                )
            # as in fit: one 1 per label, explicit zeros are no labels (and any format works)
            user_items = binary_csr(user_items, allow_empty=True)
        n_labels = self.item_factors.shape[0]
        if filter_items is not None:
            check_ids("filter_items", filter_items, n_labels, "labels")
        if items is not None:
            items = _check_subset(items, filter_items, n_labels, "items")
        N = _check_top_n(N, n_labels if items is None else len(items))
        if filter_already_liked_items or recalculate_user:
            if not isinstance(user_items, scipy.sparse.csr_matrix):
                raise ValueError("user_items needs to be a CSR sparse matrix")
            if user_items.shape[0] != (1 if np.isscalar(userid) else len(userid)):
                raise ValueError("user_items must contain 1 row for every user in userids")
        vectors = np.atleast_2d(self._user_factor(userid, user_items, recalculate_user))
        labels = self.item_factors
        if items is not None:
            items = np.sort(items)
            labels = labels[items]
        # implicit's topk filters each row's known labels in Python, under the GIL (about 0.1
        # ms an image); _top_n does it for a block of images at once
        known = user_items if filter_already_liked_items else None
        ids, scores = _top_n(vectors, labels, N, known, filter_items, items)
        if items is not None:
            ids = items[ids]
        if np.isscalar(userid):
            return ids[0], scores[0]
        return ids, scores

    recommend.__doc__ = (MatrixFactorizationBase.recommend.__doc__ or "") + """
        Notes
        -----
        ``N`` larger than the number of labels (or of ``items``) returns every label once,
        not ``N`` entries. As in implicit, when filtering leaves fewer than ``N`` labels, each
        row ends with the filtered labels at score ``-numpy.finfo(model.dtype).max``: keep the
        entries whose score is above that. Explicitly stored zeros in ``user_items`` are not
        labels (as in ``fit``) and are not filtered.
        """

    def similar_items(
        self, itemid, N=10, recalculate_item=False, item_users=None, filter_items=None, items=None
    ):
        self._check_fitted()
        if recalculate_item:
            raise NotImplementedError(
                f"{type(self).__name__} cannot compute a label's vector from its images "
                f"(recalculate_item): label vectors are only learned in fit"
            )
        check_ids("itemid", itemid, self.item_factors.shape[0], "labels")
        return self._similar(self.item_factors, itemid, N, filter_items, items, "items")

    similar_items.__doc__ = (MatrixFactorizationBase.similar_items.__doc__ or "") + _SIMILAR_NOTES

    def similar_users(self, userid, N=10, filter_users=None, users=None):
        self._check_fitted()
        if self.user_factors is None:
            raise NotImplementedError(
                f"{type(self).__name__} keeps no image vectors (it scores an image from its "
                f"labels), so it has no similar_users; compare images by their label rows"
            )
        check_ids("userid", userid, self.user_factors.shape[0], "images")
        return self._similar(self.user_factors, userid, N, filter_users, users, "users")

    similar_users.__doc__ = (MatrixFactorizationBase.similar_users.__doc__ or "") + _SIMILAR_NOTES

    # -- what implicit's CPU models have and these do not ---------------------------------

    def to_gpu(self):
        """Not available: vse-recsys trains and scores on the CPU only (its kernels are C)."""
        raise NotImplementedError(
            f"{type(self).__name__} has no GPU version: it trains and scores on the CPU (use "
            f"num_threads for more cores); implicit's own models have GPU versions"
        )

    def to_cpu(self):
        """The model itself (it is a CPU model)."""
        return self

    def partial_fit_items(self, itemids, item_users):
        """Not available: label vectors are learned from every image at once in ``fit``.

        A label's vector depends on all the images that have it and on every other label (the
        negatives it was ranked against), so it cannot be fitted from its own column alone as
        ALS can; add the label's pairs to the data and fit again.
        """
        raise NotImplementedError(
            f"{type(self).__name__} cannot fit a label from its own images (partial_fit_items): "
            f"label vectors are learned in fit against every other label; add the label's "
            f"pairs to the data and fit again"
        )

    def _similar(self, factors, query_ids, N, filter_ids, subset, what):
        """Cosine top-N among the rows of ``factors`` for the rows ``query_ids``.

        A zero row (a label never trained) is similar to nothing (cosine 0, also its own list),
        so no norm is divided by zero; a row comes first in its own list (its cosine is 1,
        which rounding can make a hair below that of a parallel row).
        """
        count = factors.shape[0] if subset is None else np.size(subset)
        N = _check_top_n(N, count)
        if subset is not None:
            subset = _check_subset(subset, filter_ids, factors.shape[0], what)
        if filter_ids is not None:
            check_ids(f"filter_{what}", filter_ids, factors.shape[0], what)
            filter_ids = np.unique(np.asarray(filter_ids, dtype=np.int32))
        norms = np.sqrt(np.einsum("ij,ij->i", factors, factors, dtype=np.float64))
        norms[self._untrained_rows(factors)] = 0  # similar to nothing, whatever else they hold
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        query = np.atleast_2d(factors[query_ids] * scale[query_ids, None].astype(factors.dtype))
        candidates = factors if subset is None else factors[subset]
        candidate_norms = (norms if subset is None else norms[subset]).astype(factors.dtype)
        candidate_norms[candidate_norms == 0] = np.inf  # score / inf = 0: similar to nothing
        # one more than asked: a row whose own id was pushed out by ties still has N others
        ids, scores = topk(candidates, query, min(N + 1, count), item_norms=candidate_norms,
                           filter_items=filter_ids, num_threads=self.num_threads)
        if subset is not None:
            ids = subset[ids]
        allowed = np.ones(factors.shape[0], dtype=bool)
        if subset is not None:
            allowed[:] = False
            allowed[subset] = True
        if filter_ids is not None:
            allowed[filter_ids] = False
        self_scores = (norms[np.atleast_1d(query_ids)] > 0).astype(scores.dtype)  # cos(v, v)
        ids, scores = _own_id_first(ids, scores, np.atleast_1d(query_ids), self_scores,
                                    allowed, N)
        if np.isscalar(query_ids):
            return ids[0], scores[0]
        return ids, scores

    def _untrained_rows(self, factors):
        """Rows of ``factors`` that no training pair ever moved towards anything (a mask)."""
        return ~factors.any(axis=1)

    def _threads(self):
        if self.num_threads:
            return int(self.num_threads)
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1


    def _check_fitted(self):
        if self.item_factors is None or (self.user_factors is None and not self._scores_from_rows):
            raise ValueError(
                f"this {type(self).__name__} model is not fitted yet: call fit(user_items) first"
            )



#: scores computed at once by _top_n (16 MiB of float32): a block of images, all labels
_SCORE_BLOCK = 1 << 22


def _top_n(vectors, labels, N, known=None, excluded=None, subset=None):
    """The ``N`` best labels (rows of ``labels``) for each row of ``vectors``: (ids, scores),
    best first, ties by label id.

    ``known`` (CSR, a row per vector, columns over all labels) and ``excluded`` (label ids)
    are scored ``-finfo(dtype).max``, as in implicit, so they come last when fewer than ``N``
    others remain. With ``subset`` (sorted label ids; then no ``excluded``), ``labels`` are
    those labels' rows and the ids returned are positions in ``subset``.
    """
    n_rows, n_labels = vectors.shape[0], labels.shape[0]
    dtype = np.result_type(vectors.dtype, labels.dtype)
    lowest = -np.finfo(dtype).max
    ids = np.empty((n_rows, N), dtype=np.int32)
    scores = np.empty((n_rows, N), dtype=dtype)
    columns = None
    if subset is not None and known is not None:  # a label's position in the subset, or -1
        columns = np.full(known.shape[1], -1, np.int64)
        columns[subset] = np.arange(len(subset))
    step = max(1, _SCORE_BLOCK // max(1, n_labels))
    for start in range(0, n_rows, step):
        stop = min(n_rows, start + step)
        block = vectors[start:stop] @ labels.T
        if known is not None:
            rows = known[start:stop]
            row_of = np.repeat(np.arange(stop - start), np.diff(rows.indptr))
            cols = rows.indices if columns is None else columns[rows.indices]
            keep = cols >= 0
            block[row_of[keep], cols[keep]] = lowest
        if excluded is not None:
            block[:, excluded] = lowest
        if N < n_labels:
            best = _n_largest(block, N)
        else:
            best = np.broadcast_to(np.arange(n_labels), block.shape)
        best_scores = np.take_along_axis(block, best, axis=1)
        # by score, then by label id: the same order whatever the block
        order = np.lexsort((best, -best_scores), axis=1)
        ids[start:stop] = np.take_along_axis(best, order, axis=1)
        scores[start:stop] = np.take_along_axis(best_scores, order, axis=1)
    return ids, scores


def _n_largest(block, N):
    """Column ids of the ``N`` largest entries of each row (unordered; of tied entries at the
    cut, the lowest ids). argpartition alone would take any of the tied ones, so the same row
    could give other labels in another block."""
    n_columns = block.shape[1]
    cut = np.partition(block, n_columns - N, axis=1)[:, n_columns - N, None]
    above = block > cut
    tied = block == cut
    wanted = N - above.sum(axis=1, keepdims=True)  # the tied entries to take, by id
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= wanted))
    return np.nonzero(chosen)[1].reshape(block.shape[0], N)


def _check_top_n(N, count):
    """``N`` as an int, at most ``count`` (implicit would pad with id 0 at score 0)."""
    return min(check_positive_int("N", N), int(count))


def _check_subset(subset, excluded, count, what):
    """The ids a call ranks (``items=`` / ``users=``), checked."""
    check_ids(what, subset, count, what)
    if excluded is not None:
        raise ValueError(f"give either {what} (ids to rank) or filter_{what}, not both")
    subset = np.asarray(subset)
    if subset.size == 0 or subset.ndim != 1:
        raise ValueError(f"{what} must be a non-empty 1-d list of ids to rank")
    if len(np.unique(subset)) != len(subset):
        raise ValueError(f"{what} has repeated ids; each can be ranked once")
    return subset


def _own_id_first(ids, scores, query_ids, self_scores, allowed, N):
    """Each row's own id first (when it may be listed at all), then the others, N in all.

    A vector's cosine with itself is the largest there is, but rounding can put parallel
    vectors a hair above it, or ties can push it out of the top ``N``. A filtered-out own id
    is listed only when ``N`` asks for every candidate: last, at the filtered ids' score.
    """
    lowest = -np.finfo(scores.dtype).max
    out_ids = np.empty((len(query_ids), N), dtype=ids.dtype)
    out_scores = np.empty((len(query_ids), N), dtype=scores.dtype)
    for row, query in enumerate(query_ids):
        others = ids[row] != query
        row_ids, row_scores = ids[row][others], scores[row][others]
        if allowed[query]:
            row_ids = np.concatenate([[query], row_ids])
            row_scores = np.concatenate([[self_scores[row]], row_scores])
        elif len(row_ids) < N:
            row_ids = np.concatenate([row_ids, [query]])
            row_scores = np.concatenate([row_scores, [lowest]])
        out_ids[row], out_scores[row] = row_ids[:N], row_scores[:N]
    return out_ids, out_scores
