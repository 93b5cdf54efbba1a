"""Image and label IDs: what counts as an integer ID, and lookups by ID.

The one home of both rules, used by :class:`~vse_recsys.adapters.ImageLabels`, every reader,
and :class:`~vse_recsys.annotator.Annotator` (so the command line, which reads IDs as text,
finds the same IDs as Python code does).

**Integer IDs.** An ID read as text is an integer when it is written the canonical way — ``0``
or an optional ``-`` and digits without a leading zero — and fits in int64. ``"007"``,
``"+5"``, ``"-0"``, ``" 5"`` and ``"1e3"`` are text: turning them into numbers would merge IDs
that the source keeps apart (``"007"`` and ``"7"``) or lose how they were written.
A dataset whose IDs are all integers stores them as int64; lookups then accept the same value
as text (``"42"`` finds ``42``), by the same rule.
"""

import re

import numpy as np
import pandas as pd

__all__ = [
    "IdIndex", "as_id_array", "integer_id", "numeric_if_integers", "plain", "storable_ids",
]

_CANONICAL_INTEGER = re.compile(r"0|-?[1-9][0-9]*")
_INT64 = np.iinfo(np.int64)


def plain(value):
    """A numpy scalar as the Python value, so that messages show ``'a'``, not ``np.str_('a')``."""
    return value.item() if isinstance(value, np.generic) else value


def integer_id(value):
    """The int64 value an ID stands for when it is an integer ID, else None.

    Integers (not bools), floats with an integer value, and canonical integer text (see the
    module notes) within int64 qualify.
    """
    value = plain(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = int(value) if value.is_integer() else None
    elif isinstance(value, str):
        value = int(value) if _CANONICAL_INTEGER.fullmatch(value) else None
    elif not isinstance(value, int):
        return None
    if value is None or not _INT64.min <= value <= _INT64.max:
        return None
    return value


def numeric_if_integers(ids):
    """Text IDs (an object array of str) as int64 when every one is an integer ID, else as given.

    All or nothing: one ID that is not canonical integer text (``"007"``) keeps them all text,
    so that one axis never mixes the two.
    """
    if ids.dtype.kind != "O" or not len(ids):
        return ids
    text = pd.Series(ids, dtype=object)
    if not text.map(type).eq(str).all() or not text.str.fullmatch(_CANONICAL_INTEGER.pattern).all():
        return ids
    values = [int(value) for value in text]
    if min(values) < _INT64.min or max(values) > _INT64.max:
        return ids
    return np.array(values, dtype=np.int64)


def storable_ids(ids, what):
    """IDs as a model file stores them: int64 when every ID is an integer (a number, not
    text, within int64), else unicode text."""
    array = as_id_array(ids, what)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    values = [plain(value) for value in array]
    if all(isinstance(v, int) and integer_id(v) is not None for v in values):
        return np.array(values, dtype=np.int64)  # (also when there are none)
    return np.array([str(value) for value in values], dtype=str)


def as_id_array(values, what):
    """A 1-D numpy array from any iterable of IDs, without numpy's type coercion.

    ``np.asarray([0, "a"])`` would turn 0 into "0"; here mixed values stay Python objects,
    tuples stay single IDs, and only homogeneous ints, floats or strings get a typed array.
    """
    if isinstance(values, (pd.Series, pd.Index)):
        return values.to_numpy()
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"{what} must be one-dimensional, got shape {values.shape}")
        return values
    values = list(values)
    array = np.fromiter(values, dtype=object, count=len(values))
    kind = pd.api.types.infer_dtype(array, skipna=False)
    try:
        if kind == "integer":
            return array.astype(np.int64)
        if kind == "floating":
            return array.astype(np.float64)
    except OverflowError:  # ints beyond int64 stay Python ints
        pass
    return array


def _one_or_many(values):
    """``(list of values, True)`` for one ID (a scalar or a tuple), ``(list, False)`` for many."""
    if np.ndim(values) == 0 or isinstance(values, (tuple, str, bytes)):
        return [values], True
    return list(values), False


class IdIndex:
    """The IDs of one axis (images or labels) and lookups from ID to position.

    Parameters
    ----------
    ids : 1-D array
        The IDs in position order, unique (ValueError naming a repeated one otherwise).
    what : str
        ``"image"`` or ``"label"``, for messages.
    owner : str
        What holds the IDs (``"dataset"``, ``"model"``), for messages.
    name : str, optional
        How to call the ID array in the error about a repeated ID (default ``"<what> IDs"``).

    Lookups take an ID as the axis stores it or, for integer IDs, any spelling that
    :func:`integer_id` accepts (``"42"``, ``42.0``).
    """

    def __init__(self, ids, what, owner, name=None):
        self.ids = ids
        self.what = what
        self.owner = owner
        self.integer = ids.dtype.kind in "iu"
        self._index = pd.Index(ids)
        if not self._index.is_unique:
            repeated = plain(self._index[self._index.duplicated()][0])
            raise ValueError(
                f"{name or what + ' IDs'} must be unique, but {repeated!r} appears more than once"
            )

    def __len__(self):
        return len(self.ids)

    def positions(self, values):
        """Positions of a sequence of IDs as an int64 array; -1 for each unknown one."""
        values = list(values)
        if self.integer:
            keys = [integer_id(value) for value in values]
        else:
            keys = [plain(value) for value in values]
            if self.ids.dtype.kind == "U":  # stored as text: other values are looked up as text
                keys = [None if key is None else str(key) for key in keys]
        result = np.full(len(keys), -1, dtype=np.int64)
        known = [k for k, key in enumerate(keys) if key is not None]
        if known:
            found = self._index.get_indexer(pd.Index([keys[k] for k in known], dtype=object))
            result[known] = found
        return result

    def locate(self, values, missing="raise"):
        """Position(s) of ID(s): an int for one ID (a scalar or a tuple), an array for many.

        ``missing="raise"`` raises KeyError naming the first unknown ID; ``"ignore"`` gives -1.
        """
        listed, one = _one_or_many(values)
        found = self.positions(listed)
        if missing == "raise":
            self.raise_unknown(listed, found)
        return int(found[0]) if one else found

    def raise_unknown(self, values, positions, where=None):
        """KeyError naming the first of ``values`` whose position is -1 (nothing if none is)."""
        unknown = np.flatnonzero(np.asarray(positions) < 0)
        if not unknown.size:
            return
        more = f" (and {unknown.size - 1} more)" if unknown.size > 1 else ""
        prefix = f"{where}: " if where else ""
        raise KeyError(
            f"{prefix}unknown {self.what} ID {plain(values[unknown[0]])!r}{more}: "
            f"{self.describe()}"
        )

    def describe(self):
        """The IDs in a few words, for error messages."""
        if not len(self.ids):
            return f"the {self.owner} has no {self.what}s"
        if self.integer:
            low, high = int(self.ids.min()), int(self.ids.max())
            span = f"{low}..{high}" if high - low + 1 == len(self.ids) else f"between {low} and {high}"
            return f"the {self.owner}'s {len(self.ids):,} {self.what} IDs are integers {span}"
        examples = ", ".join(repr(plain(v)) for v in self.ids[:3])
        return f"the {self.owner} has {len(self.ids):,} {self.what}s, e.g. {examples}"
