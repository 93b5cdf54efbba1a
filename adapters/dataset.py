"""The dataset type every adapter returns: a binary image × label matrix with its IDs.

Conventions shared by all readers
---------------------------------
- **Rows and columns.** Every image (label) that the source mentions gets a row (column), even
  when all of its entries were dropped on purpose (verified negatives, low ratings); sources that
  list images explicitly (MULAN ARFF, the official NUS-WIDE layout) keep images with no label as
  empty rows. Pair-list sources only know the images that appear in them. Use
  :meth:`ImageLabels.drop_empty_images` to remove empty rows.
- **Order.** IDs are sorted when they are mutually comparable (so a shuffled file gives the same
  matrix), else kept in order of first appearance; readers whose format fixes an order (ARFF
  attribute order, a label list file) keep that order.
- **Nothing dropped silently.** Every input row that does not become a separate matrix entry is
  counted in :attr:`ImageLabels.dropped` under a reason (``"duplicates"`` merged,
  ``"negatives"``, ``"below_min_rating"``, ...), and :meth:`ImageLabels.summary` shows them.
"""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._ids import IdIndex, as_id_array, numeric_if_integers, plain

__all__ = ["ImageLabels", "DatasetSummary"]


def _unique_ids(ids, count, what):
    """Validate an ID array for ``count`` rows/columns: right length, no repeats."""
    ids = as_id_array(ids, what)
    if count is not None and len(ids) != count:
        raise ValueError(f"{what} has {len(ids)} entries but the matrix has {count}")
    IdIndex(ids, what.removesuffix("_ids"), "dataset", name=what)  # raises naming a repeat
    return ids


def _label_name_array(label_names, label_ids, *, aligned):
    """Display names for ``label_ids`` from None, a mapping, or a sequence aligned with them.

    A mapping may leave labels out: those are named by their ID.
    """
    if label_names is None:
        return label_ids
    if isinstance(label_names, (dict, pd.Series)):
        mapping = pd.Series(label_names, dtype=object)
        names = np.array(mapping.reindex(pd.Index(label_ids)), dtype=object)
        missing = pd.isna(names)
        names[missing] = label_ids[missing]
        return names
    if not aligned:
        raise ValueError(
            "label_names as a sequence needs label_ids to say which label each name belongs "
            "to; pass a mapping {label_id: name} instead"
        )
    return as_id_array(label_names, "label_names")


# -- lookups ------------------------------------------------------------------------------------


def _at(ids, index, what):
    """``ids[index]`` with a clear error for positions out of range."""
    index = np.asarray(index)
    if index.dtype.kind not in "iu":
        raise TypeError(f"{what} index must be an integer, got {index.dtype}")
    if index.size and (index.min() < 0 or index.max() >= len(ids)):
        bad = index.min() if index.min() < 0 else index.max()
        raise IndexError(f"{what} index {bad} is out of range 0..{len(ids) - 1}")
    return ids[index]


# -- the dataset --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSummary:
    """Counts describing an :class:`ImageLabels`; ``str()`` gives a readable block."""

    n_images: int
    n_labels: int
    n_pairs: int
    density: float
    labels_per_image_mean: float
    labels_per_image_median: float
    labels_per_image_max: int
    images_without_labels: int
    images_with_2plus_labels: int
    labels_without_images: int
    n_negatives: int | None = None
    dropped: dict = field(default_factory=dict)
    source: str | None = None

    def __str__(self):
        lines = [f"ImageLabels from {self.source}" if self.source else "ImageLabels"]
        lines.append(
            f"  images: {self.n_images:,} ({self.images_without_labels:,} without labels, "
            f"{self.images_with_2plus_labels:,} with >= 2)"
        )
        lines.append(f"  labels: {self.n_labels:,} ({self.labels_without_images:,} never used)")
        lines.append(f"  pairs:  {self.n_pairs:,} (density {self.density:.4%})")
        lines.append(
            f"  labels per image: mean {self.labels_per_image_mean:.2f}, median "
            f"{self.labels_per_image_median:g}, max {self.labels_per_image_max:,}"
        )
        if self.n_negatives is not None:
            lines.append(f"  verified negatives kept: {self.n_negatives:,}")
        if self.dropped:
            reasons = ", ".join(f"{count:,} {reason}" for reason, count in self.dropped.items())
            lines.append(f"  input rows not kept as entries: {reasons}")
        return "\n".join(lines)


class ImageLabels:
    """Binary image × label data: a CSR matrix plus the IDs of its rows and columns.

    Parameters
    ----------
    user_items : sparse matrix or array_like, shape (n_images, n_labels)
        Positive entries mark "image has label" (values other than 1 are kept as weights).
        Converted to a canonical float32 CSR matrix: duplicate entries are summed and explicit
        zeros removed, each counted in `dropped`. Negative or non-finite values raise.
    image_ids : array_like, optional
        Original image IDs in row order (default ``0..n_images-1``). Must be unique.
    label_ids : array_like, optional
        Label IDs in column order (default ``0..n_labels-1``). Must be unique.
    label_names : array_like or mapping, optional
        Display names, aligned with `label_ids` or as ``{label_id: name}`` (labels missing from
        the mapping are named by their ID). Default: the label IDs.
    negatives : sparse matrix, optional
        Verified negative (image, label) pairs, same shape (Open Images keeps these).
    dropped : dict, optional
        Counts of input rows not kept as separate entries, by reason.
    source : str, optional
        Where the data came from (a path), shown by :meth:`summary`.
    copy : bool, default True
        Copy `user_items` before canonicalising it (readers pass False for matrices they own).

    Attributes
    ----------
    user_items : scipy.sparse.csr_matrix
        float32, shape (n_images, n_labels), sorted indices, no duplicates, no explicit zeros.
    image_ids, label_ids, label_names : numpy.ndarray
    negatives : scipy.sparse.csr_matrix or None
    dropped : dict of str to int
    source : str or None
    """

    def __init__(
        self,
        user_items,
        image_ids=None,
        label_ids=None,
        label_names=None,
        *,
        negatives=None,
        dropped=None,
        source=None,
        copy=True,
    ):
        self.dropped = dict(dropped or {})
        self.user_items = self._canonical(user_items, copy, self.dropped)
        n_images, n_labels = self.user_items.shape
        self.image_ids = _unique_ids(
            np.arange(n_images) if image_ids is None else image_ids, n_images, "image_ids"
        )
        self.label_ids = _unique_ids(
            np.arange(n_labels) if label_ids is None else label_ids, n_labels, "label_ids"
        )
        self.label_names = _label_name_array(label_names, self.label_ids, aligned=True)
        if len(self.label_names) != n_labels:
            raise ValueError(f"label_names has {len(self.label_names)} entries, need {n_labels}")
        self.negatives = None
        if negatives is not None:
            self.negatives = self._canonical(negatives, copy, {})
            self.negatives.data[:] = 1
            if self.negatives.shape != self.user_items.shape:
                raise ValueError(
                    f"negatives has shape {self.negatives.shape}, user_items "
                    f"{self.user_items.shape}"
                )
        self.source = None if source is None else str(source)
        self._images = self._labels = None  # IdIndex of each axis, built on first lookup

    @staticmethod
    def _canonical(matrix, copy, dropped):
        """Canonical float32 CSR; merged duplicates and removed zeros are counted in `dropped`."""
        if sp.issparse(matrix):
            stored = matrix.nnz  # before conversion, which would merge a COO's duplicates
            matrix = sp.csr_matrix(matrix, dtype=np.float32, copy=copy)
        else:
            matrix = sp.csr_matrix(np.asarray(matrix, dtype=np.float32))
            stored = matrix.nnz
        matrix.sum_duplicates()
        if not np.isfinite(matrix.data).all() or (matrix.data < 0).any():
            raise ValueError("entries must be finite and non-negative (1 = image has label)")
        if stored != matrix.nnz:
            dropped["duplicates"] = dropped.get("duplicates", 0) + int(stored - matrix.nnz)
        zeros = int(matrix.nnz - np.count_nonzero(matrix.data))
        if zeros:
            matrix.eliminate_zeros()
            dropped["zero_weight"] = dropped.get("zero_weight", 0) + zeros
        return matrix

    # -- construction from pairs ----------------------------------------------------------------

    @classmethod
    def from_pairs(
        cls,
        images,
        labels,
        weights=None,
        *,
        binary=True,
        image_ids=None,
        label_ids=None,
        label_names=None,
    ):
        """Build a dataset from parallel sequences of (image ID, label ID) pairs.

        Parameters
        ----------
        images, labels : iterable of hashable
            One entry per pair; any hashable IDs (ints, strings, ...). Missing IDs (None, NaN)
            raise ValueError.
        weights : iterable of float, optional
            One non-negative weight per pair. Pairs of weight 0 are dropped (counted in
            ``dropped["zero_weight"]``).
        binary : bool, default True
            If True every kept pair becomes a 1 and duplicate pairs are merged; if False the
            weights (default 1) of duplicate pairs are summed. Either way the number of merged
            duplicates is in ``dropped["duplicates"]`` (an attribute, not a warning).
        image_ids, label_ids : array_like, optional
            The full ID lists, in row/column order. IDs listed but absent from the pairs become
            empty rows/columns; a pair whose ID is not listed raises ValueError. Default: the
            distinct IDs in the pairs, sorted when comparable (see module notes).
        label_names : mapping or array_like, optional
            ``{label_id: name}``, or names aligned with `label_ids`.

        Returns
        -------
        ImageLabels
        """
        images = as_id_array(images, "images")
        labels = as_id_array(labels, "labels")
        if len(images) != len(labels):
            raise ValueError(f"images has {len(images)} entries but labels has {len(labels)}")
        keep = None
        if weights is not None:
            weights = np.asarray(as_id_array(weights, "weights"), dtype=np.float64)
            if len(weights) != len(images):
                raise ValueError(f"weights has {len(weights)} entries, pairs {len(images)}")
            bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
            if bad.size:
                first = plain(weights[bad[0]])
                raise ValueError(f"weight {first!r} of pair {bad[0]} is not a finite number >= 0")
            keep = weights != 0
        collector = _PairCollector(image_ids, label_ids)
        collector.add(images, labels, None if binary else weights, keep=keep)
        result = collector.build(binary=binary)
        dropped = {"duplicates": result.duplicates["positives"]}
        if keep is not None:
            dropped["zero_weight"] = int(len(keep) - np.count_nonzero(keep))
        return cls(
            result.matrices["positives"],
            result.image_ids,
            result.label_ids,
            _label_name_array(label_names, result.label_ids, aligned=label_ids is not None),
            dropped=dropped,
            copy=False,
        )

    @classmethod
    def from_dataframe(
        cls,
        df,
        image_col="image",
        label_col="label",
        weight_col=None,
        *,
        binary=True,
        image_ids=None,
        label_ids=None,
        label_names=None,
    ):
        """Build a dataset from a DataFrame with one row per (image, label) pair.

        Parameters
        ----------
        df : pandas.DataFrame
        image_col, label_col : str
            Columns holding the image and label IDs (defaults match :meth:`to_pairs`).
        weight_col : str, optional
            Column of non-negative weights (see :meth:`from_pairs`).
        binary, image_ids, label_ids, label_names
            As for :meth:`from_pairs`.

        Returns
        -------
        ImageLabels
        """
        wanted = [image_col, label_col] + ([weight_col] if weight_col is not None else [])
        missing = [column for column in wanted if column not in df.columns]
        if missing:
            raise ValueError(
                f"DataFrame has no column {missing[0]!r}; its columns are {list(df.columns)}"
            )
        return cls.from_pairs(
            df[image_col],
            df[label_col],
            None if weight_col is None else df[weight_col],
            binary=binary,
            image_ids=image_ids,
            label_ids=label_ids,
            label_names=label_names,
        )

    def to_pairs(self):
        """The positive pairs as a DataFrame, in row-major order.

        Returns
        -------
        pandas.DataFrame
            Columns ``image`` and ``label`` (original IDs) and ``weight`` (float32, 1 for binary
            data); ``ImageLabels.from_dataframe(ds.to_pairs(), weight_col="weight",
            binary=False)`` rebuilds the same matrix.
        """
        rows = np.repeat(np.arange(self.n_images), self.labels_per_image)
        return pd.DataFrame(
            {
                "image": self.image_ids[rows],
                "label": self.label_ids[self.user_items.indices],
                "weight": self.user_items.data.copy(),
            }
        )

    # -- sizes ----------------------------------------------------------------------------------

    @property
    def n_images(self):
        """Number of rows (images)."""
        return self.user_items.shape[0]

    @property
    def n_labels(self):
        """Number of columns (labels)."""
        return self.user_items.shape[1]

    @property
    def n_pairs(self):
        """Number of positive (image, label) pairs."""
        return int(self.user_items.nnz)

    @property
    def density(self):
        """Fraction of the matrix that is positive (0 for an empty matrix)."""
        cells = self.n_images * self.n_labels
        return self.n_pairs / cells if cells else 0.0

    @property
    def labels_per_image(self):
        """Number of labels of each image (int array, row order)."""
        return np.diff(self.user_items.indptr)

    @property
    def images_per_label(self):
        """Number of images of each label (int array, column order): label popularity."""
        return np.bincount(self.user_items.indices, minlength=self.n_labels)

    def summary(self):
        """Counts describing the dataset, including dropped input rows.

        Returns
        -------
        DatasetSummary
            ``print(ds.summary())`` gives a readable block.
        """
        per_image = self.labels_per_image
        return DatasetSummary(
            n_images=self.n_images,
            n_labels=self.n_labels,
            n_pairs=self.n_pairs,
            density=self.density,
            labels_per_image_mean=float(per_image.mean()) if per_image.size else 0.0,
            labels_per_image_median=float(np.median(per_image)) if per_image.size else 0.0,
            labels_per_image_max=int(per_image.max()) if per_image.size else 0,
            images_without_labels=int(np.count_nonzero(per_image == 0)),
            images_with_2plus_labels=int(np.count_nonzero(per_image >= 2)),
            labels_without_images=int(np.count_nonzero(self.images_per_label == 0)),
            n_negatives=None if self.negatives is None else int(self.negatives.nnz),
            dropped=dict(self.dropped),
            source=self.source,
        )

    def __repr__(self):
        return (
            f"<ImageLabels: {self.n_images:,} images x {self.n_labels:,} labels, "
            f"{self.n_pairs:,} pairs>"
        )

    # -- lookups --------------------------------------------------------------------------------

    def image_index(self, ids, *, missing="raise"):
        """Row position(s) of image ID(s): an int for one ID, an int array for a sequence.

        Integer IDs may be given as text (``"42"``; see :mod:`vse_recsys.adapters._ids`).
        ``missing="raise"`` raises KeyError naming the first unknown ID; ``"ignore"`` gives -1.
        """
        if self._images is None:
            self._images = IdIndex(self.image_ids, "image", "dataset")
        return self._images.locate(ids, missing)

    def label_index(self, ids, *, missing="raise"):
        """Column position(s) of label ID(s), as :meth:`image_index` does for images."""
        if self._labels is None:
            self._labels = IdIndex(self.label_ids, "label", "dataset")
        return self._labels.locate(ids, missing)

    def image_id(self, index):
        """Image ID(s) at row position(s); IndexError when out of range."""
        return _at(self.image_ids, index, "image")

    def label_id(self, index):
        """Label ID(s) at column position(s); IndexError when out of range."""
        return _at(self.label_ids, index, "label")

    # -- subsets --------------------------------------------------------------------------------

    def subset(self, images=None, labels=None):
        """A new dataset restricted to some images (rows) and/or labels (columns).

        Parameters
        ----------
        images, labels : array_like of int or bool, optional
            Positions or boolean masks; None keeps all. Order is as given.

        Returns
        -------
        ImageLabels
            With the matching IDs, names and negatives; `dropped` and `source` carried over.
        """
        rows = slice(None) if images is None else np.asarray(images)
        columns = slice(None) if labels is None else np.asarray(labels)

        def cut(matrix):
            return matrix[rows][:, columns].tocsr()

        return ImageLabels(
            cut(self.user_items),
            self.image_ids[rows],
            self.label_ids[columns],
            self.label_names[columns],
            negatives=None if self.negatives is None else cut(self.negatives),
            dropped=self.dropped,
            source=self.source,
            copy=False,
        )

    def drop_empty_images(self):
        """A new dataset without the images that have no label (counted as ``"empty_images"``)."""
        has_labels = self.labels_per_image > 0
        result = self.subset(images=has_labels)
        empty = int(self.n_images - np.count_nonzero(has_labels))
        result.dropped["empty_images"] = result.dropped.get("empty_images", 0) + empty
        return result


# -- pairs to matrices, chunk by chunk ----------------------------------------------------------

@dataclass
class _Built:
    """What :meth:`_PairCollector.build` returns."""

    image_ids: np.ndarray
    label_ids: np.ndarray
    matrices: dict  # target -> canonical float32 CSR matrix
    duplicates: dict  # target -> number of merged duplicate pairs


def _order_if_comparable(ids):
    """Positions that sort ``ids``; first-appearance order when they cannot be compared."""
    try:
        return np.argsort(ids, kind="stable")
    except TypeError:  # mixed types such as ints and strings
        return np.arange(len(ids))


class _IdAxis:
    """The IDs of one axis (images or labels), met chunk by chunk.

    Each chunk is factorised on arrival, so memory holds int32 codes plus each chunk's distinct
    IDs, not the ID of every pair; the final order is fixed once, by :meth:`finish`. When the
    caller gave the IDs, codes are final positions right away.
    """

    def __init__(self, name, given_ids):
        self.name = name
        self.given = None if given_ids is None else _unique_ids(given_ids, None, f"{name}_ids")
        self.index = None if self.given is None else pd.Index(self.given)
        self.chunks = []  # distinct IDs of each chunk, in code order

    def encode(self, values, keep, first_pair):
        """Codes of ``values[keep]`` and their chunk number (None: codes are final positions)."""
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        missing = np.flatnonzero(codes < 0)
        if missing.size:
            raise ValueError(f"{self.name} ID of pair {first_pair + missing[0]} is missing")
        kept = (codes if keep is None else codes[keep]).astype(np.int32)
        if self.given is None:
            self.chunks.append(np.asarray(uniques))
            return kept, len(self.chunks) - 1
        positions = self.index.get_indexer(uniques)
        unknown = np.flatnonzero(positions < 0)
        if unknown.size:
            value = plain(uniques[unknown[0]])
            pair = first_pair + np.flatnonzero(codes == unknown[0])[0]
            raise ValueError(
                f"{self.name} {value!r} (pair {pair}) is not among the given {self.name}_ids"
            )
        return positions[kept], None

    def finish(self, numeric_ids):
        """The final IDs and, per chunk, the map from chunk codes to final positions."""
        if self.given is not None:
            return self.given, []
        raw = pd.unique(np.concatenate(self.chunks)) if self.chunks else np.empty(0, object)
        ids = numeric_if_integers(raw) if numeric_ids else raw
        order = _order_if_comparable(ids)
        position = np.empty(len(ids), dtype=np.int64)
        position[order] = np.arange(len(ids))
        raw_index = pd.Index(raw)  # chunks are looked up as they came, before any conversion
        return ids[order], [position[raw_index.get_indexer(chunk)] for chunk in self.chunks]


class _PairCollector:
    """Gather (image, label[, weight]) pairs in chunks, then build CSR matrices.

    Several matrices over the same rows and columns (``into="positives"``, ``"negatives"``) can
    be gathered at once. Every pair passed to :meth:`add` registers its image and label, even
    when it is not kept as an entry, so those get a row / column.
    """

    def __init__(self, image_ids=None, label_ids=None):
        self._images = _IdAxis("image", image_ids)
        self._labels = _IdAxis("label", label_ids)
        self._parts = []  # (into, (image codes, chunk), (label codes, chunk), weights)
        self._seen = 0

    def add(self, images, labels, weights=None, *, keep=None, into="positives"):
        """Register the IDs of every pair; keep the pairs where `keep` is True in `into`."""
        images, labels = as_id_array(images, "images"), as_id_array(labels, "labels")
        image_codes = self._images.encode(images, keep, self._seen)
        label_codes = self._labels.encode(labels, keep, self._seen)
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float32)
            weights = weights if keep is None else weights[keep]
        self._parts.append((into, image_codes, label_codes, weights))
        self._seen += len(images)

    def build(self, *, binary=True, numeric_ids=False):
        """Fix the ID order and build one canonical float32 CSR matrix per target.

        `numeric_ids` turns IDs read as text into int64 when all of them are canonical integers.
        Memory stays near 20 bytes per pair at the peak (int32 rows and columns, float32
        values, and the CSR matrix they become), whatever the number of chunks: each chunk's
        codes are turned into positions and dropped as the positions are filled in.
        """
        image_ids, image_maps = self._images.finish(numeric_ids)
        label_ids, label_maps = self._labels.finish(numeric_ids)
        shape = (len(image_ids), len(label_ids))
        index = np.int32 if max(shape) < 2**31 else np.int64

        def positions(codes, chunk, maps):
            return codes if chunk is None else maps[chunk][codes]

        matrices, duplicates = {}, {}
        for into in dict.fromkeys(["positives", *(part[0] for part in self._parts)]):
            parts = [part for part in self._parts if part[0] == into]
            count = sum(len(rows) for _, (rows, _), _, _ in parts)
            rows, cols = np.empty(count, index), np.empty(count, index)
            data = np.ones(count, np.float32)
            start = 0
            for _, (row_codes, image_chunk), (col_codes, label_chunk), weights in parts:
                stop = start + len(row_codes)
                rows[start:stop] = positions(row_codes, image_chunk, image_maps)
                cols[start:stop] = positions(col_codes, label_chunk, label_maps)
                if weights is not None:
                    data[start:stop] = weights
                start = stop
            self._parts = [part for part in self._parts if part[0] != into]  # codes freed
            matrix = sp.coo_matrix((data, (rows, cols)), shape=shape)
            del rows, cols, data
            matrix = matrix.tocsr()  # sums duplicates
            if binary:
                matrix.data[:] = 1
            matrices[into] = matrix
            duplicates[into] = int(count - matrix.nnz)
        return _Built(image_ids, label_ids, matrices, duplicates)
