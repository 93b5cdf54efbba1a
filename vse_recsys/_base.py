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

from ._validation import binary_csr, check_ids

__all__ = ["LabelModel", "ParamsMixin"]


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
        if not recalculate_user:  # images scored from their labels need not be in the model
            check_ids("userid", userid, self.user_factors.shape[0], "images")
        if user_items is not None and scipy.sparse.issparse(user_items):
            if user_items.shape[1] != self.item_factors.shape[0]:
                raise ValueError(
                    f"user_items has {user_items.shape[1]} columns but the model knows "
                    f"{self.item_factors.shape[0]} labels; pass the rows of the training matrix"
                )
            # as in fit: one 1 per label, explicit zeros are no labels (and any format works)
            user_items = binary_csr(user_items, allow_empty=True)
        if filter_items is not None:
            check_ids("filter_items", filter_items, self.item_factors.shape[0], "labels")
        if items is not None:
            check_ids("items", items, self.item_factors.shape[0], "labels")
            if filter_items is not None:
                raise ValueError("give either items (labels to rank) or filter_items, not both")
            if np.size(items) == 0 or np.ndim(items) != 1:
                raise ValueError("items must be a non-empty 1-d list of label ids to rank")
            if len(np.unique(items)) != len(items):
                raise ValueError("items has repeated label ids; each label can be ranked once")
        if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
            raise ValueError(f"N must be a positive integer, got {N!r}")
        # implicit pads rows beyond the last label with label 0 and score 0; never ask for more
        N = min(int(N), self.item_factors.shape[0] if items is None else len(items))
        return super().recommend(
            userid,
            user_items,
            N=N,
            filter_already_liked_items=filter_already_liked_items,
            filter_items=filter_items,
            recalculate_user=recalculate_user,
            items=items,
        )

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
        if not recalculate_item:
            check_ids("itemid", itemid, self.item_factors.shape[0], "labels")
        return super().similar_items(itemid, N, recalculate_item, item_users, filter_items, items)

    similar_items.__doc__ = MatrixFactorizationBase.similar_items.__doc__

    def similar_users(self, userid, N=10, filter_users=None, users=None):
        self._check_fitted()
        if self.user_factors is None:
            raise NotImplementedError(
                f"{type(self).__name__} keeps no image vectors (it scores an image from its "
                f"labels), so it has no similar_users; compare images by their label rows"
            )
        check_ids("userid", userid, self.user_factors.shape[0], "images")
        return super().similar_users(userid, N, filter_users, users)

    similar_users.__doc__ = MatrixFactorizationBase.similar_users.__doc__


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

