"""``Annotator``: a fitted model tied to its image IDs, label IDs and names.

A model works with row and column positions, as every ``implicit`` model does. An
``Annotator`` keeps the maps to the original IDs and the training labels with it, so that it
can tag images by ID, tag new images given by some of their labels, find similar labels by
name, evaluate on held-out pairs, and be saved to and loaded from one ``.npz`` file. It is what
``vse-recsys fit`` writes and ``vse-recsys tag`` / ``evaluate`` read: the command line parses
its options and makes one call here, and every mapping between IDs and positions happens here.

>>> from vse_recsys.adapters import generate_image_labels
>>> data = generate_image_labels(n_images=500, n_labels=50, random_state=0)
>>> annotator = Annotator.from_dataset(data, factors=16, iterations=5, random_state=0)
>>> annotator = annotator.fit(show_progress=False)
>>> [len(t.labels) for t in annotator.tag([0, 1], N=3)]
[3, 3]

File format
-----------
One ``.npz`` (numpy zip, no pickled objects), written atomically (``format`` is
``"vse-recsys annotator"``; ``format_version`` and how versions are read: :mod:`vse_recsys._npz`):

``model.<name>``
    Every array the model's ``save`` writes (its own ``format`` included), prefixed.
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
import itertools
import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._npz import ModelFileError, check_kind, kind_of, read_model_file, read_npz, write_model_file
from ._validation import binary_csr, check_positive_int
from .adapters import ImageLabels, leave_one_out_split
from .adapters._ids import IdIndex, plain, storable_ids
from .ease import EASE
from .model import VSEEns

__all__ = ["Annotator", "ModelFileError", "TAG_COLUMNS", "Tags", "tags_table"]

#: The columns of a table of suggestions (``vse-recsys tag``'s CSV, ``tag_parquet``'s parts)
TAG_COLUMNS = ("image", "rank", "label", "name", "score")

_MODEL_PREFIX = "model."
#: The models an Annotator can hold, by the kind their files name (see vse_recsys._npz).
MODEL_CLASSES = {"VSEEns": VSEEns, "EASE": EASE}


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


class Annotator:
    """A model with the IDs of its images and labels, the label names and training labels.

    Parameters
    ----------
    model : VSEEns or EASE
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
    model : VSEEns or EASE
    image_ids, label_ids, label_names : numpy.ndarray
    user_items : scipy.sparse.csr_matrix or None

    Notes
    -----
    Images are looked up by ID (:meth:`image_index`), labels by ID or, failing that, by a name
    that names one label only (:meth:`label_index`). Integer IDs may be given as text (``"42"``),
    as the command line gives them; the rule is :mod:`vse_recsys.adapters._ids`'s.
    """

    def __init__(self, model, label_ids, label_names=None, image_ids=None, user_items=None):
        if not isinstance(model, tuple(MODEL_CLASSES.values())):
            raise TypeError(
                f"model must be one of {', '.join(MODEL_CLASSES)}, got {type(model).__name__}"
            )
        self.model = model
        self._labels = IdIndex(storable_ids(label_ids, "label_ids"), "label", "model")
        names = self._labels.ids if label_names is None else label_names
        self.label_names = np.array([str(plain(name)) for name in names], dtype=str)
        if len(self.label_names) != len(self._labels):
            raise ValueError(
                f"label_names has {len(self.label_names)} entries for {len(self._labels)} labels"
            )
        self.user_items = None
        if user_items is not None:
            self.user_items = binary_csr(user_items, "user_items", allow_empty=True, copy=True)
            if self.user_items.shape[1] != len(self._labels):
                raise ValueError(
                    f"user_items has {self.user_items.shape[1]} columns for "
                    f"{len(self._labels)} labels"
                )
        if image_ids is None:
            image_ids = np.arange(self._n_images_hint())
        self._images = IdIndex(storable_ids(image_ids, "image_ids"), "image", "model")
        if self.user_items is not None and self.user_items.shape[0] != len(self._images):
            raise ValueError(
                f"user_items has {self.user_items.shape[0]} rows for {len(self._images)} images"
            )
        self._unique_names = None

    def _n_images_hint(self):
        if self.user_items is not None:
            return self.user_items.shape[0]
        if getattr(self.model, "user_factors", None) is not None:
            return self.model.user_factors.shape[0]
        return 0

    @classmethod
    def from_dataset(cls, dataset, model=None, **params):
        """An Annotator for an ``ImageLabels`` (any adapter's result); call :meth:`fit` next.

        `model` is a ``VSEEns`` or an ``EASE`` (default: ``VSEEns(**params)``).
        """
        if model is None:
            model = VSEEns(**params)
        elif params:
            raise TypeError("pass either a model or its parameters, not both")
        return cls(
            model, dataset.label_ids, dataset.label_names, dataset.image_ids, dataset.user_items
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
        if model.item_factors is None:
            raise ValueError("the model is not fitted yet: call fit() first")
        if model.item_factors.shape[0] != self.n_labels:
            raise ValueError(
                f"the model has {model.item_factors.shape[0]} labels, the Annotator "
                f"{self.n_labels}"
            )

    # -- lookups ----------------------------------------------------------------------------

    def image_index(self, images, *, missing="raise"):
        """Row position(s) of image ID(s): an int for one ID, an array for a sequence.

        ``missing="raise"`` (default) raises KeyError naming the first unknown one;
        ``missing="ignore"`` gives -1 for it.
        """
        return self._images.locate(images, missing)

    def label_index(self, labels, *, missing="raise", where=None):
        """Column position(s) of labels given by ID or, failing that, by (unique) name.

        ``missing="raise"`` (default) raises KeyError naming the first unknown label, with
        close matches (prefixed by ``where`` when given); ``missing="ignore"`` gives -1 for
        unknown labels.
        """
        scalar = np.ndim(labels) == 0 or isinstance(labels, (tuple, str, bytes))
        values = [labels] if scalar else list(labels)
        positions = self._labels.positions(values)
        unknown = np.flatnonzero(positions < 0)
        if unknown.size:
            positions[unknown] = self._positions_by_name([values[k] for k in unknown])
            unknown = np.flatnonzero(positions < 0)
        if unknown.size and missing == "raise":
            raise KeyError(self._unknown_label_message(values, unknown, where))
        return int(positions[0]) if scalar else positions

    def _positions_by_name(self, values):
        """Positions of the labels named ``values``; -1 for names that are absent or that name
        several labels."""
        if self._unique_names is None:
            names = pd.Series(np.arange(self.n_labels), index=self.label_names)
            self._unique_names = names[~names.index.duplicated(keep=False)]
        found = self._unique_names.index.get_indexer([str(plain(v)) for v in values])
        return np.where(found >= 0, self._unique_names.to_numpy()[np.maximum(found, 0)], -1)

    def _unknown_label_message(self, values, unknown, where=None):
        value = str(plain(values[unknown[0]]))
        more = f" (and {unknown.size - 1} more)" if unknown.size > 1 else ""
        message = f"{where + ': ' if where else ''}unknown label {value!r}{more}"
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
        return [plain(v) for v in self.label_ids[self.user_items[row].indices]]

    # -- tagging ----------------------------------------------------------------------------

    def tag(self, images, N=10, include_known=False):
        """Top-`N` labels for training images given by ID; their known labels are left out.

        Returns a list of :class:`Tags`, one per image, in the order given. Warns when some
        images had no label in training (their suggestions carry no information about them).
        """
        self._check_fitted()
        N = check_positive_int("N", N)
        values = [images] if np.ndim(images) == 0 else list(images)
        rows = self.image_index(values)
        known = self._known_rows(rows)
        empty = np.flatnonzero(np.diff(known.indptr) == 0)
        if empty.size and self.user_items is not None:
            warnings.warn(
                f"{empty.size:,} image(s) had no label in training (e.g. "
                f"{plain(values[empty[0]])!r}); their suggestions carry no information about "
                f"them"
            )
        return self._suggest(rows, self.image_ids[rows], known, N, include_known, new=False)

    def tag_new(self, labels, N=10, include_known=False, image_ids=None, skip_unknown=False):
        """Top-`N` labels for new images, each given by some labels it has.

        Parameters
        ----------
        labels : sequence of sequences, or ImageLabels
            For each new image, the IDs (or names) of labels it has; or an ``ImageLabels`` of
            the new images' (image, label) pairs (e.g. read from a file), whose image IDs name
            the results.
        image_ids : sequence, optional
            With a sequence of label lists: the IDs to report the new images under (default
            ``new-1``, ``new-2``, ...).
        skip_unknown : bool
            Leave out labels the model does not know, with a warning (and images left without
            any known label), instead of raising KeyError.

        The image vectors are computed by ``recommend(..., recalculate_user=True)`` from the
        labels alone: the same labels always give the same suggestions.
        """
        self._check_fitted()
        N = check_positive_int("N", N)
        if isinstance(labels, ImageLabels):
            image_ids, rows = self._rows_of_dataset(labels, skip_unknown)
        else:
            image_ids, rows = self._rows_of_lists(labels, image_ids, skip_unknown)
        return self.tag_rows(rows, N, include_known, image_ids)

    def suggest(self, images=(), new=(), *, N=10, include_known=False, skip_unknown=False):
        """Tags for training images by ID and for new images, in one call, in input order.

        ``images`` are training image IDs (as for :meth:`tag`); ``new`` is a sequence whose
        items are each either a list of labels (one new image; the lists are reported as
        ``new-1``, ``new-2``, ... in order) or an ``ImageLabels`` of new images' pairs (see
        :meth:`tag_new`). Returns the :class:`Tags` of ``images`` first, then those of ``new``.
        """
        results = self.tag(images, N, include_known) if len(images) else []
        numbered = 0  # label lists so far: they are new-1, new-2, ... across the whole input
        for is_dataset, group in itertools.groupby(new, lambda item: isinstance(item, ImageLabels)):
            group = list(group)
            if is_dataset:
                for dataset in group:
                    results += self.tag_new(dataset, N, include_known, skip_unknown=skip_unknown)
                continue
            ids = _new_ids(numbered, len(group))
            results += self.tag_new(group, N, include_known, ids, skip_unknown)
            numbered += len(group)
        return results

    def tag_rows(self, rows, N=10, include_known=False, image_ids=None):
        """Like :meth:`tag_new`, with the known labels as a CSR matrix in label positions."""
        self._check_fitted()
        N = check_positive_int("N", N)
        rows = binary_csr(rows, "rows", allow_empty=True)
        if rows.shape[1] != self.n_labels:
            raise ValueError(f"rows has {rows.shape[1]} columns for {self.n_labels} labels")
        if image_ids is None:
            image_ids = _new_ids(0, rows.shape[0])
        self._check_rows(rows, image_ids)
        return self._suggest(None, list(image_ids), rows, N, include_known, new=True)

    @staticmethod
    def _check_rows(rows, image_ids):
        empty = np.flatnonzero(np.diff(rows.indptr) == 0)
        if empty.size:
            raise ValueError(
                f"new image {plain(image_ids[empty[0]])!r} has no known label to start from"
            )

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

    def _rows_of_lists(self, label_lists, image_ids, skip_unknown):
        """Rows (CSR) of new images given as lists of labels, and their IDs."""
        label_lists = [[group] if np.ndim(group) == 0 else list(group) for group in label_lists]
        if image_ids is None:
            image_ids = _new_ids(0, len(label_lists))
        if len(image_ids) != len(label_lists):
            raise ValueError(f"{len(image_ids)} image IDs for {len(label_lists)} new images")
        positions = []
        for image, group in zip(image_ids, label_lists):
            where = f"new image {plain(image)!r}"
            if not group:
                raise ValueError(f"{where} has no known label to start from")
            found = self.label_index(group, missing="ignore")
            unknown = [label for label, position in zip(group, found) if position < 0]
            if unknown and not skip_unknown:
                self.label_index(unknown, where=where)  # raises, naming the first
            if unknown:
                warnings.warn(f"{where}: left out {len(unknown)} unknown label(s): "
                              f"{', '.join(repr(plain(v)) for v in unknown[:5])}")
                if len(unknown) == len(group):
                    raise ValueError(f"{where}: no label the model knows")
            positions.append(found[found >= 0])
        return list(image_ids), self.rows_of(positions)

    def _rows_of_dataset(self, dataset, skip_unknown):
        """Rows (CSR) of the new images of an ImageLabels in this model's label space."""
        where = dataset.source or "the new images"
        columns = self.label_index(dataset.label_ids, missing="ignore")
        unknown = np.flatnonzero(columns < 0)
        if unknown.size and not skip_unknown:
            self.label_index(dataset.label_ids[unknown], where=where)  # raises, naming the first
        pairs = dataset.user_items.tocoo()
        keep = columns[pairs.col] >= 0
        if unknown.size:
            warnings.warn(
                f"{where}: left out {int(np.count_nonzero(~keep)):,} pair(s) with "
                f"{unknown.size:,} unknown label(s), e.g. {plain(dataset.label_ids[unknown[0]])!r}"
            )
        rows = sp.csr_matrix(
            (np.ones(int(keep.sum()), dtype=np.float32),
             (pairs.row[keep], columns[pairs.col[keep]])),
            shape=(dataset.n_images, self.n_labels),
        )
        image_ids = [plain(image) for image in dataset.image_ids]
        empty = np.flatnonzero(np.diff(rows.indptr) == 0)
        if empty.size:
            # with unknown labels skipped (or images without pairs): nothing to start from
            warnings.warn(f"{where}: left out {empty.size:,} image(s) without any label the "
                          f"model knows, e.g. {image_ids[empty[0]]!r}")
            kept = np.flatnonzero(np.diff(rows.indptr) > 0)
            rows, image_ids = rows[kept], [image_ids[k] for k in kept]
        return image_ids, rows

    def _known_rows(self, rows):
        if self.user_items is None:
            return sp.csr_matrix((len(rows), self.n_labels), dtype=np.float32)
        return self.user_items[rows]

    def tag_new_table(self, labels, N=10, include_known=False, skip_unknown=False):
        """:meth:`tag_new` for an ``ImageLabels`` of new images, as a table: one row per
        (image, suggested label), the columns of :data:`TAG_COLUMNS` (as :func:`tags_table`
        makes of ``tag_new``'s results), built from arrays without a Python object per image:
        for millions of images (what :mod:`vse_recsys.distributed` tags)."""
        self._check_fitted()
        N = check_positive_int("N", N)
        image_ids, rows = self._rows_of_dataset(labels, skip_unknown)
        self._check_rows(rows, image_ids)
        ids, scores, valid = self._ranked(None, rows, N, include_known, new=True)
        keep = np.arange(ids.shape[1]) < valid[:, None]
        suggested = ids[keep]
        frame = pd.DataFrame({
            "image": np.repeat(np.asarray(image_ids), valid),
            "rank": np.nonzero(keep)[1].astype(np.int64) + 1,
            "label": self.label_ids[suggested],
            "name": self.label_names[suggested].astype(str).astype(object),
            "score": scores[keep].astype(np.float64),
        }, columns=list(TAG_COLUMNS))
        return _typed_tags(frame, np.asarray(image_ids).dtype, self.label_ids.dtype)

    def _ranked(self, rows, known, N, include_known, new):
        """(ids, scores, valid): the model's top labels for training images ``rows`` or new
        images (``new``) with the labels ``known`` (CSR), and how many of each row are real
        suggestions (the rest are filtered labels)."""
        n = min(N, self.n_labels)
        count = known.shape[0]
        userids = np.arange(count) if new else rows
        ids, scores = self.model.recommend(
            userids,
            known,
            N=n,
            filter_already_liked_items=not include_known,
            recalculate_user=new,
        )
        ids, scores = np.atleast_2d(ids), np.atleast_2d(scores)
        valid = np.full(count, n) if include_known else np.minimum(
            n, self.n_labels - np.diff(known.indptr))
        return ids, scores, valid

    def _suggest(self, rows, image_ids, known, N, include_known, new):
        count = len(image_ids)
        if count == 0:
            return []
        ids, scores, valid_counts = self._ranked(rows, known, N, include_known, new)
        results = []
        for k in range(count):
            valid = int(valid_counts[k])
            suggested = ids[k, :valid]
            results.append(
                Tags(
                    image=plain(image_ids[k]),
                    new=new,
                    known=[plain(v) for v in self.label_ids[known[k].indices]],
                    labels=[plain(v) for v in self.label_ids[suggested]],
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
        N = check_positive_int("N", N)
        position = self.label_index(label)
        n = min(N + 1, self.n_labels)
        ids, scores = self.model.similar_items(position, N=n)
        return [
            (plain(self.label_ids[i]), str(self.label_names[i]), float(s))
            for i, s in zip(ids, scores)
            if i != position
        ][:N]

    # -- evaluation -------------------------------------------------------------------------

    def held_out(self, pairs, *, skip_unknown=False):
        """Held-out (image, label) pairs of training images as a CSR matrix over this model's
        images and labels, for :func:`vse_recsys.evaluation.ranking_metrics`.

        ``pairs`` is an ``ImageLabels`` (e.g. read from a file). A pair whose image or label
        the model does not know raises KeyError (or, with ``skip_unknown``, is left out with a
        warning); a pair that is a training label raises ValueError, since it was trained on.
        """
        if self.user_items is None:
            raise ValueError("this Annotator holds no training labels; held-out pairs need them")
        where = pairs.source or "the test pairs"
        rows = self.image_index(pairs.image_ids, missing="ignore")
        columns = self.label_index(pairs.label_ids, missing="ignore")
        matrix = pairs.user_items.tocoo()
        keep = (rows[matrix.row] >= 0) & (columns[matrix.col] >= 0)
        if not keep.all():
            if not skip_unknown:
                self._images.raise_unknown(pairs.image_ids, rows, where)
                message = self._unknown_label_message(
                    pairs.label_ids, np.flatnonzero(columns < 0), where)
                raise KeyError(
                    message + (" " if message.endswith("?") else ". ") + "A model ranks only "
                    "the labels of the data it was fitted on: skip_unknown=True (--skip-unknown) "
                    "leaves such pairs out (an image whose test labels are all unknown is then "
                    "not evaluated), or evaluate by leave-one-out on the whole data "
                    "(evaluate_leave_one_out, --leave-one-out), which fits with every label and "
                    "so ranks one seen only in held-out pairs too")
            warnings.warn(f"{where}: left out {int(np.count_nonzero(~keep)):,} pair(s) whose "
                          f"image or label the model does not know")
        test = sp.csr_matrix(
            (np.ones(int(keep.sum()), dtype=np.float32),
             (rows[matrix.row[keep]], columns[matrix.col[keep]])),
            shape=self.user_items.shape,
        )
        if test.nnz == 0:
            raise ValueError(f"{where} has no pair of a training image and a known label")
        overlap = self.user_items.multiply(test).tocoo()
        if overlap.nnz:
            raise ValueError(
                f"{where}: {overlap.nnz:,} test pair(s) are training labels of the model, e.g. "
                f"image {plain(self.image_ids[overlap.row[0]])!r} label "
                f"{plain(self.label_ids[overlap.col[0]])!r}; test pairs must be held out of the "
                f"data the model was fitted on (or evaluate by leave-one-out)"
            )
        return test

    def evaluate(self, pairs, K=(5, 10), *, skip_unknown=False, show_progress=False):
        """The paper's metrics of this model on held-out pairs (see :meth:`held_out`)."""
        from .evaluation import ranking_metrics

        self._check_fitted()
        test = self.held_out(pairs, skip_unknown=skip_unknown)
        return ranking_metrics(self.model, self.user_items, test, K=K, show_progress=show_progress)

    def evaluate_leave_one_out(self, dataset, K=(5, 10), *, random_state=0, show_progress=False):
        """Metrics of a FRESH model with this model's parameters, by leave-one-out on ``dataset``.

        One random label of each image with two or more is held out (seeded by
        ``random_state``), a new model with this model's parameters is fitted on the rest and
        evaluated on the held-out labels. This model's own vectors cannot be evaluated this
        way: they were trained on the labels that would be held out.

        Returns ``(metrics, n_held_out)``.
        """
        from .evaluation import ranking_metrics

        train, test = leave_one_out_split(dataset, random_state=random_state)
        if test.nnz == 0:
            raise ValueError("no image has two labels: nothing to hold out")
        model = type(self.model)(**self.model.get_params())
        model.fit(train, show_progress=show_progress)
        metrics = ranking_metrics(model, train, test, K=K, show_progress=show_progress)
        return metrics, int(test.nnz)

    # -- persistence ------------------------------------------------------------------------

    def save(self, path):
        """Write one ``.npz`` (no pickle), atomically; returns the path written.

        As ``VSEEns.save`` and ``numpy.savez``: a path without the ``.npz`` suffix gets it.
        """
        self._check_fitted()
        buffer = io.BytesIO()
        self.model.save(buffer)
        arrays = {_MODEL_PREFIX + name: value for name, value in read_npz(buffer).items()}
        arrays["image_ids"] = self.image_ids
        arrays["label_ids"] = self.label_ids
        arrays["label_names"] = self.label_names
        if self.user_items is not None:
            arrays["train_indptr"] = self.user_items.indptr.astype(np.int64)
            arrays["train_indices"] = self.user_items.indices.astype(np.int32)
        return write_model_file(path, "Annotator", arrays)

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
            Not a model file, a bare model file (``VSEEns.save``: the message says how to use
            it), another tool's file, a damaged file, or a file from a newer vse-recsys.
        """
        arrays, _ = read_model_file(path, "Annotator")
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
        kind = kind_of(model_arrays)
        if kind not in MODEL_CLASSES:
            raise ModelFileError(f"{name} holds no model an Annotator can use ({kind or 'unknown'})")
        check_kind(model_arrays, kind, f"{name} (its model)")
        model_arrays.pop("format", None)
        model_arrays.pop("format_version", None)
        for key in ("user_factors", "item_factors"):
            if key not in model_arrays and not (key == "user_factors" and kind == "EASE"):
                raise KeyError(f"no model {key}")
        model = MODEL_CLASSES[kind]._from_arrays(model_arrays, name)
        for key in ("image_ids", "label_ids", "label_names"):
            _checked_1d(arrays, key, "iuU", "integers or strings")
        vectors = [("image", model.user_factors), ("label", model.item_factors)]
        for what, factors in vectors:
            if factors is not None and factors.shape[0] != len(arrays[f"{what}_ids"]):
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


def tags_table(results, image_dtype=None, label_dtype=None):
    """A list of :class:`Tags` as a table: one row per (image, suggested label), the columns
    of :data:`TAG_COLUMNS`, best first within an image. ``image_dtype`` / ``label_dtype`` fix
    those columns' types (so that an empty table has them too)."""
    rows = [(tags.image, rank, label, name, score)
            for tags in results
            for rank, (label, name, score) in enumerate(
                zip(tags.labels, tags.names, tags.scores), start=1)]
    return _typed_tags(pd.DataFrame(rows, columns=list(TAG_COLUMNS)), image_dtype, label_dtype)


def _typed_tags(frame, image_dtype, label_dtype):
    """The tags table's column types: int64 IDs when the IDs are integers, else text."""
    types = {"rank": np.int64, "name": object, "score": np.float64}
    for column, dtype in (("image", image_dtype), ("label", label_dtype)):
        if dtype is not None:
            types[column] = np.int64 if np.dtype(dtype).kind in "iu" else object
    return frame.astype(types)


def _new_ids(start, count):
    """The IDs new images given by their labels are reported under: new-1, new-2, ..."""
    return [f"new-{k + 1}" for k in range(start, start + count)]


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
