"""``Annotator``: a fitted ``VSEEns`` tied to its image IDs, label IDs and names.

``VSEEns`` works with row and column positions, as every ``implicit`` model does. An
``Annotator`` keeps the maps to the original IDs and the training labels with it, so that it
can tag images by ID, tag new images given by some of their labels (fold-in), find similar
labels by name, and be saved to and loaded from one ``.npz`` file. It is what ``vse-recsys fit``
writes and ``vse-recsys tag`` / ``evaluate`` read.

>>> from vse_recsys.adapters import generate_image_labels
>>> data = generate_image_labels(n_images=500, n_labels=50, random_state=0)
>>> annotator = Annotator.from_dataset(data, factors=16, iterations=5, random_state=0)
>>> annotator = annotator.fit(show_progress=False)
>>> [len(t.labels) for t in annotator.tag([0, 1], N=3)]
[3, 3]

File format (``format_version`` 1)
----------------------------------
One ``.npz`` (numpy zip, no pickled objects), written atomically:

``format`` / ``format_version``
    ``"vse-recsys annotator"`` and ``1``. A file with a higher version is refused with a message
    saying so, never misread.
``model.<name>``
    Every array ``VSEEns.save`` writes (parameters and factors), prefixed.
``image_ids``, ``label_ids``
    int64 when every ID is an integer, else unicode strings.
``label_names``
    Unicode strings, aligned with ``label_ids``.
``train_indptr``, ``train_indices``
    The training labels (CSR structure, images x labels), so that an image's known labels are
    left out of its suggestions and evaluation ranks against the labels it was trained on.
"""

import difflib
import io
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._npz import ModelFileError, atomic_savez, npz_path, read_npz
from .model import VSEEns

__all__ = ["Annotator", "FORMAT_NAME", "FORMAT_VERSION", "ModelFileError", "Tags"]

FORMAT_NAME = "vse-recsys annotator"
#: Version of the file layout written by :meth:`Annotator.save`; readers refuse higher ones.
FORMAT_VERSION = 1
_MODEL_PREFIX = "model."
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")


class Tags(NamedTuple):
    """Suggested labels for one image.

    ``image`` is the image ID (for a new image, the ID it was given); ``known`` the IDs of the
    labels the image already has; ``labels``, ``names`` and ``scores`` the suggestions, best
    first.
    """

    image: object
    new: bool
    known: list
    labels: list
    names: list
    scores: list


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


class _IdMap:
    """IDs of one axis, stored as int64 (all integers) or unicode, with lookups by value.

    Lookups accept either spelling: for integer IDs the text ``"42"`` finds ``42`` (IDs typed
    on a command line are text); for text IDs a value is looked up as ``str(value)``.
    """

    def __init__(self, ids, what):
        self.what = what
        array = np.asarray(ids) if not isinstance(ids, np.ndarray) else ids
        if array.ndim != 1:
            raise ValueError(f"{what} IDs must be one-dimensional, got shape {array.shape}")
        kind = pd.api.types.infer_dtype(array, skipna=False) if array.size else "integer"
        if array.dtype.kind in "iu" or kind == "integer":
            self.ids = array.astype(np.int64)
        else:
            self.ids = np.array([str(value) for value in array], dtype=str)
        self.integer = self.ids.dtype.kind == "i"
        self.index = pd.Index(self.ids)
        if not self.index.is_unique:
            repeated = _plain(self.index[self.index.duplicated()][0])
            raise ValueError(f"{what} IDs must be unique, but {repeated!r} appears twice")

    def __len__(self):
        return len(self.ids)

    def _key(self, value):
        """The stored form of `value`, or None when it cannot be one of these IDs."""
        value = _plain(value)
        if self.integer:
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                return int(value)
            if isinstance(value, str) and _INTEGER.fullmatch(value):
                return int(value)
            if isinstance(value, float) and value.is_integer():
                return int(value)
            return None
        return str(value)

    def positions(self, values):
        """Positions of `values` (a sequence); -1 for each unknown one."""
        keys = [self._key(value) for value in values]
        known = [i for i, key in enumerate(keys) if key is not None]
        positions = np.full(len(keys), -1, dtype=np.int64)
        if known:
            found = self.index.get_indexer(pd.Index([keys[i] for i in known], dtype=object))
            positions[known] = found
        return positions

    def describe(self):
        """A short description of the IDs, for error messages."""
        if not len(self.ids):
            return f"the model has no {self.what}s"
        if self.integer:
            low, high = int(self.ids.min()), int(self.ids.max())
            contiguous = high - low + 1 == len(self.ids)
            span = f"{low}..{high}" if contiguous else f"between {low} and {high}"
            return f"the model's {len(self.ids):,} {self.what} IDs are integers {span}"
        examples = ", ".join(repr(str(v)) for v in self.ids[:3])
        return f"the model has {len(self.ids):,} {self.what}s, e.g. {examples}"


def _as_list(values):
    if isinstance(values, (str, bytes)) or np.ndim(values) == 0:
        return [values], True
    return list(values), False


class Annotator:
    """A ``VSEEns`` with the IDs of its images and labels, the label names and training labels.

    Parameters
    ----------
    model : VSEEns
        Fitted or not (see :meth:`fit`).
    label_ids : sequence
        One ID per label (column), unique.
    label_names : sequence, optional
        Display names aligned with `label_ids` (default: the IDs as text).
    image_ids : sequence, optional
        One ID per training image (row), unique (default ``0..n_images-1``).
    user_items : scipy.sparse matrix, optional
        The training labels, images x labels (non-zero = has label). Needed to leave an image's
        known labels out of its suggestions and by :meth:`fit`.

    Attributes
    ----------
    model : VSEEns
    image_ids, label_ids, label_names : numpy.ndarray
    user_items : scipy.sparse.csr_matrix or None
    """

    def __init__(self, model, label_ids, label_names=None, image_ids=None, user_items=None):
        if not isinstance(model, VSEEns):
            raise TypeError(f"model must be a VSEEns, got {type(model).__name__}")
        self.model = model
        self._labels = _IdMap(label_ids, "label")
        names = self._labels.ids if label_names is None else label_names
        self.label_names = np.array([str(_plain(name)) for name in names], dtype=str)
        if len(self.label_names) != len(self._labels):
            raise ValueError(
                f"label_names has {len(self.label_names)} entries for {len(self._labels)} labels"
            )
        self.user_items = None
        if user_items is not None:
            matrix = sp.csr_matrix(user_items, dtype=np.float32, copy=True)
            matrix.sum_duplicates()
            matrix.eliminate_zeros()
            matrix.data[:] = 1
            if matrix.shape[1] != len(self._labels):
                raise ValueError(
                    f"user_items has {matrix.shape[1]} columns for {len(self._labels)} labels"
                )
            self.user_items = matrix
        if image_ids is None:
            n_images = self._n_images_hint()
            image_ids = np.arange(n_images)
        self._images = _IdMap(image_ids, "image")
        if self.user_items is not None and self.user_items.shape[0] != len(self._images):
            raise ValueError(
                f"user_items has {self.user_items.shape[0]} rows for {len(self._images)} images"
            )
        self._names = None

    def _n_images_hint(self):
        if self.user_items is not None:
            return self.user_items.shape[0]
        if self.model.user_factors is not None:
            return self.model.user_factors.shape[0]
        return 0

    @classmethod
    def from_dataset(cls, dataset, model=None, **params):
        """An Annotator for an ``ImageLabels`` (any adapter's result); call :meth:`fit` next.

        `model` is a ``VSEEns`` (default: ``VSEEns(**params)``).
        """
        if model is None:
            model = VSEEns(**params)
        elif params:
            raise TypeError("pass either a model or VSEEns parameters, not both")
        return cls(
            model,
            dataset.label_ids,
            dataset.label_names,
            dataset.image_ids,
            dataset.user_items,
        )

    # -- properties ------------------------------------------------------------------------

    @property
    def image_ids(self):
        return self._images.ids

    @property
    def label_ids(self):
        return self._labels.ids

    @property
    def n_images(self):
        return len(self._images)

    @property
    def n_labels(self):
        return len(self._labels)

    # -- training ---------------------------------------------------------------------------

    def fit(self, show_progress=True, callback=None):
        """Fit the model on the training labels (``model.fit(user_items)``); returns self."""
        if self.user_items is None:
            raise ValueError("this Annotator has no training labels (user_items) to fit on")
        self.model.fit(self.user_items, show_progress=show_progress, callback=callback)
        return self

    def _check_fitted(self):
        model = self.model
        if model.user_factors is None or model.item_factors is None:
            raise ValueError("the model is not fitted yet: call fit() first")
        if model.item_factors.shape[0] != self.n_labels:
            raise ValueError(
                f"the model has {model.item_factors.shape[0]} labels, the Annotator "
                f"{self.n_labels}"
            )

    # -- lookups ----------------------------------------------------------------------------

    def image_index(self, images):
        """Row position(s) of image ID(s); KeyError naming the first unknown one."""
        values, scalar = _as_list(images)
        positions = self._images.positions(values)
        unknown = np.flatnonzero(positions < 0)
        if unknown.size:
            more = f" (and {unknown.size - 1} more)" if unknown.size > 1 else ""
            raise KeyError(
                f"unknown image ID {_plain(values[unknown[0]])!r}{more}: {self._images.describe()}"
            )
        return int(positions[0]) if scalar else positions

    def label_index(self, labels, *, missing="raise"):
        """Column position(s) of labels given by ID or, failing that, by (unique) name.

        ``missing="raise"`` (default) raises KeyError naming the first unknown label, with
        close matches; ``missing="ignore"`` gives -1 for unknown labels.
        """
        values, scalar = _as_list(labels)
        positions = self._labels.positions(values)
        unknown = np.flatnonzero(positions < 0)
        if unknown.size:
            names = self._name_index()
            found = names.get_indexer(pd.Index([str(_plain(values[i])) for i in unknown]))
            positions[unknown] = found  # -1 stays for names that are absent or ambiguous
            unknown = np.flatnonzero(positions < 0)
        if unknown.size and missing == "raise":
            raise KeyError(self._unknown_label_message(values, unknown))
        return int(positions[0]) if scalar else positions

    def _name_index(self):
        """Index of the label names that name exactly one label."""
        if self._names is None:
            names = pd.Series(np.arange(self.n_labels), index=self.label_names)
            unique = names[~names.index.duplicated(keep=False)]
            self._names = pd.Index(unique.index)
            self._name_positions = unique.to_numpy()
        return _NamePositions(self._names, self._name_positions)

    def _unknown_label_message(self, values, unknown):
        value = str(_plain(values[unknown[0]]))
        more = f" (and {unknown.size - 1} more)" if unknown.size > 1 else ""
        message = f"unknown label {value!r}{more}"
        if (self.label_names == value).sum() > 1:
            return message + f": several labels are named {value!r}; give the label ID instead"
        candidates = list(dict.fromkeys([*map(str, self.label_ids), *self.label_names]))
        close = []
        if len(candidates) < 50_000:  # difflib is slow on huge vocabularies
            close = difflib.get_close_matches(value, candidates, n=3)
        if close:
            return message + f"; did you mean {', '.join(map(repr, close))}?"
        return message + f": {self._labels.describe()}"

    def known_labels(self, image):
        """Label IDs of a training image (by ID)."""
        row = self.image_index(image)
        if self.user_items is None:
            return []
        return [_plain(v) for v in self.label_ids[self.user_items[row].indices]]

    # -- tagging ----------------------------------------------------------------------------

    def tag(self, images, N=10, include_known=False):
        """Top-`N` labels for training images given by ID; their known labels are left out.

        Returns a list of :class:`Tags`, one per image, in the order given.
        """
        self._check_fitted()
        N = _check_n(N)
        values, _ = _as_list(images)
        rows = self.image_index(values)
        known = self._known_rows(rows)
        return self._suggest(rows, self.image_ids[rows], known, N, include_known, new=False)

    def tag_new(self, labels, N=10, include_known=False, image_ids=None):
        """Top-`N` labels for new images, each given by some labels it has (fold-in).

        Parameters
        ----------
        labels : sequence of sequences
            For each new image, the IDs (or names) of labels it has.
        image_ids : sequence, optional
            IDs to report the new images under (default ``new-1``, ``new-2``, ...).

        The image vectors are computed by ``recommend(..., recalculate_user=True)``: the label
        vectors stay fixed, and the same labels always give the same suggestions.
        """
        self._check_fitted()
        N = _check_n(N)
        label_lists = [list(_as_list(group)[0]) for group in labels]
        if image_ids is None:
            image_ids = [f"new-{k + 1}" for k in range(len(label_lists))]
        if len(image_ids) != len(label_lists):
            raise ValueError(f"{len(image_ids)} image IDs for {len(label_lists)} new images")
        for image, group in zip(image_ids, label_lists):
            if not group:
                raise ValueError(f"new image {image!r} has no known label to start from")
        positions = [self.label_index(group) for group in label_lists]
        return self.tag_rows(self.rows_of(positions), N, include_known, image_ids)

    def rows_of(self, positions):
        """A CSR matrix (one row per list of label positions) in this model's label space."""
        indptr = np.concatenate([[0], np.cumsum([len(p) for p in positions])])
        indices = np.concatenate([np.asarray(p, dtype=np.int64) for p in positions] or [[]])
        matrix = sp.csr_matrix(
            (np.ones(len(indices), dtype=np.float32), indices.astype(np.int32), indptr),
            shape=(len(positions), self.n_labels),
        )
        matrix.sum_duplicates()
        matrix.data[:] = 1
        return matrix

    def tag_rows(self, rows, N=10, include_known=False, image_ids=None):
        """Like :meth:`tag_new`, with the known labels as a CSR matrix in label positions."""
        self._check_fitted()
        N = _check_n(N)
        rows = sp.csr_matrix(rows)
        if image_ids is None:
            image_ids = [f"new-{k + 1}" for k in range(rows.shape[0])]
        empty = np.flatnonzero(np.diff(rows.indptr) == 0)
        if empty.size:
            raise ValueError(
                f"new image {_plain(image_ids[empty[0]])!r} has no known label to start from"
            )
        return self._suggest(None, list(image_ids), rows, N, include_known, new=True)

    def _known_rows(self, rows):
        if self.user_items is None:
            return sp.csr_matrix((len(rows), self.n_labels), dtype=np.float32)
        return self.user_items[rows]

    def _suggest(self, rows, image_ids, known, N, include_known, new):
        count = len(image_ids)
        if count == 0:
            return []
        n = min(N, self.n_labels)
        userids = np.arange(count) if new else rows
        ids, scores = self.model.recommend(
            userids,
            known,
            N=n,
            filter_already_liked_items=not include_known,
            recalculate_user=new,
        )
        ids, scores = np.atleast_2d(ids), np.atleast_2d(scores)
        n_known = np.diff(known.indptr)
        results = []
        for k in range(count):
            valid = n if include_known else min(n, self.n_labels - int(n_known[k]))
            suggested = ids[k, :valid]
            known_ids = self.label_ids[known[k].indices]
            results.append(
                Tags(
                    image=_plain(image_ids[k]),
                    new=new,
                    known=[_plain(v) for v in known_ids],
                    labels=[_plain(v) for v in self.label_ids[suggested]],
                    names=[str(v) for v in self.label_names[suggested]],
                    scores=[float(v) for v in scores[k, :valid]],
                )
            )
        return results

    def similar_labels(self, label, N=10):
        """The `N` labels most similar to `label` (by ID or name), cosine of label vectors.

        Returns a list of (label ID, name, similarity), most similar first, without the label
        itself.
        """
        self._check_fitted()
        N = _check_n(N)
        position = self.label_index(label)
        n = min(N + 1, self.n_labels)
        ids, scores = self.model.similar_items(position, N=n)
        return [
            (_plain(self.label_ids[i]), str(self.label_names[i]), float(s))
            for i, s in zip(ids, scores)
            if i != position
        ][:N]

    # -- persistence ------------------------------------------------------------------------

    def save(self, path):
        """Write one ``.npz`` (no pickle), atomically; returns the path written.

        As ``VSEEns.save`` and ``numpy.savez``: a path without the ``.npz`` suffix gets it.
        """
        self._check_fitted()
        buffer = io.BytesIO()
        self.model.save(buffer)
        arrays = {_MODEL_PREFIX + name: value for name, value in read_npz(buffer).items()}
        arrays["format"] = np.array(FORMAT_NAME)
        arrays["format_version"] = np.array(FORMAT_VERSION, dtype=np.int64)
        arrays["image_ids"] = self.image_ids
        arrays["label_ids"] = self.label_ids
        arrays["label_names"] = self.label_names
        if self.user_items is not None:
            arrays["train_indptr"] = self.user_items.indptr.astype(np.int64)
            arrays["train_indices"] = self.user_items.indices.astype(np.int32)

        return atomic_savez(path, arrays)

    @classmethod
    def load(cls, path):
        """Read a file written by :meth:`save` (``vse-recsys fit``).

        Nothing is unpickled; every array is checked before the Annotator is built, so a
        damaged file fails here with its name and the problem.

        Raises
        ------
        FileNotFoundError
            No such file (``path`` and ``path + ".npz"`` are tried).
        ModelFileError
            Not a model file, a bare ``VSEEns.save`` file, a damaged file, or a file from a
            newer vse-recsys (``format_version`` above :data:`FORMAT_VERSION`).
        """
        path = Path(path)
        if not path.exists() and path.suffix != ".npz":
            with_suffix = npz_path(path)
            path = with_suffix if with_suffix.exists() else path
        arrays = read_npz(path)
        if "format_version" not in arrays:
            if "item_factors" in arrays:
                raise ModelFileError(
                    f"{path} is a bare VSEEns model (VSEEns.save) without image IDs and label "
                    f"names; load it with VSEEns.load, or save it with "
                    f"Annotator(model, label_ids, ...).save to use it here"
                )
            raise ModelFileError(
                f"{path} is not a vse-recsys model file: it has no format_version (an .npz "
                f"written by 'vse-recsys fit' or Annotator.save was expected)"
            )
        version = arrays["format_version"]
        if version.shape != () or version.dtype.kind not in "iu":
            raise ModelFileError(f"{path} has an unreadable format_version {version!r}")
        version = int(version)
        if version > FORMAT_VERSION:
            from . import __version__

            raise ModelFileError(
                f"{path} has model format version {version}, newer than this vse-recsys "
                f"({__version__}) can read (up to version {FORMAT_VERSION}); upgrade vse-recsys "
                f"to use it"
            )
        if version < 1:
            raise ModelFileError(f"{path} has an unknown model format version {version}")
        try:
            return cls._from_arrays(arrays, str(path))
        except ModelFileError:
            raise
        except (KeyError, ValueError, TypeError, IndexError) as error:
            reason = error.args[0] if error.args else type(error).__name__
            raise ModelFileError(f"{path} is damaged or incomplete: {reason}") from None

    @classmethod
    def _from_arrays(cls, arrays, name):
        model_arrays = {
            key[len(_MODEL_PREFIX) :]: value
            for key, value in arrays.items()
            if key.startswith(_MODEL_PREFIX)
        }
        for key in ("user_factors", "item_factors"):
            if key not in model_arrays:
                raise KeyError(f"no model {key}")
        model = VSEEns._from_arrays(model_arrays, name)
        for key in ("image_ids", "label_ids", "label_names"):
            _checked_1d(arrays, key, "iuU", "integers or strings")
        for what, factors in (("image", model.user_factors), ("label", model.item_factors)):
            if factors.shape[0] != len(arrays[f"{what}_ids"]):
                raise ValueError(
                    f"{factors.shape[0]} {what} vectors for {len(arrays[f'{what}_ids'])} "
                    f"{what} IDs"
                )
        user_items = None
        if "train_indptr" in arrays or "train_indices" in arrays:
            user_items = _training_labels(arrays)
        annotator = cls(
            model, arrays["label_ids"], arrays["label_names"], arrays["image_ids"], user_items
        )
        annotator._check_fitted()
        return annotator


def _checked_1d(arrays, key, kinds, what):
    """``arrays[key]``, which must exist and be 1-D of a numpy kind in ``kinds``."""
    if key not in arrays:
        raise KeyError(f"no {key}")
    array = arrays[key]
    if array.ndim != 1 or array.dtype.kind not in kinds:
        raise ValueError(
            f"{key} must be a 1-D array of {what}, got {array.dtype} of shape {array.shape}"
        )
    return array


def _training_labels(arrays):
    """The saved training labels as a checked CSR matrix (``train_indptr``, ``train_indices``)."""
    indptr = _checked_1d(arrays, "train_indptr", "iu", "integers")
    indices = _checked_1d(arrays, "train_indices", "iu", "integers")
    n_labels = len(arrays["label_ids"])
    if len(indptr) == 0:
        raise ValueError("train_indptr is empty")
    if indices.size and (indices.min() < 0 or indices.max() >= n_labels):
        raise ValueError(f"train_indices holds labels outside 0..{n_labels - 1}")
    shape = (len(indptr) - 1, n_labels)
    user_items = sp.csr_matrix(
        (np.ones(len(indices), dtype=np.float32), indices, indptr), shape=shape
    )
    user_items.check_format(full_check=True)
    return user_items


class _NamePositions:
    """``get_indexer`` over unique label names, giving label positions."""

    def __init__(self, names, positions):
        self.names, self.positions = names, positions

    def get_indexer(self, values):
        found = self.names.get_indexer(values)
        return np.where(found >= 0, self.positions[np.maximum(found, 0)], -1)


def _check_n(N):
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise ValueError(f"N must be a positive integer, got {N!r}")
    return int(N)
