"""Open Images image-level labels (``*-annotations-human-imagelabels.csv`` and the like)."""

import warnings

import numpy as np

from ._tables import TableReader
from .dataset import ImageLabels, _PairCollector

__all__ = ["read_openimages", "read_openimages_class_names"]


def read_openimages_class_names(path):
    """Map label MIDs to display names from a class-descriptions CSV.

    Accepts both the headerless ``class-descriptions.csv`` (v4–v6: ``/m/011k07,Tortoise``) and
    ``oidv7-class-descriptions.csv`` (header ``LabelName,DisplayName``).

    Returns
    -------
    dict of str to str
    """
    table = TableReader(path, [0, 1], text=[0, 1], sep=",", header=False, n_fields=2)
    names = {}
    for frame in table.chunks():
        mids = table.ids(frame, 0, "label MID")
        display = table.ids(frame, 1, "display name")
        names.update(zip(mids.tolist(), display.tolist()))
    if names.get("LabelName") == "DisplayName":  # the v7 header line
        del names["LabelName"]
    return names


def read_openimages(
    labels_csv,
    class_descriptions_csv=None,
    *,
    keep_negatives=False,
    min_confidence=0.5,
    chunksize=None,
):
    """Read Open Images image-level labels.

    The CSV has a header with at least ``ImageID``, ``LabelName`` and ``Confidence`` (the
    ``Source`` column is ignored). Human-verified files hold confidence 1 (label present) or 0
    (verified absent); machine-generated ones hold scores in between.

    - ``Confidence >= min_confidence``: a positive pair.
    - ``Confidence == 0``: a verified negative. Kept in the ``negatives`` matrix when
      `keep_negatives`, else counted in ``dropped["negatives"]``.
    - in between: counted in ``dropped["low_confidence"]``.

    Every image and label in the file gets a row / column, also those with only negatives.

    Parameters
    ----------
    labels_csv : path-like
        E.g. ``oidv6-train-annotations-human-imagelabels.csv`` (optionally compressed), read in
        chunks.
    class_descriptions_csv : path-like, optional
        Display names for the label MIDs (see :func:`read_openimages_class_names`). Labels it
        does not name keep their MID as name (with a warning saying how many).
    keep_negatives : bool, default False
    min_confidence : float, default 0.5
        Lowest confidence that counts as positive (must be > 0).
    chunksize : int, optional
        Rows read at a time.

    Returns
    -------
    ImageLabels
        Image IDs and label MIDs as strings, sorted; ``negatives`` set if `keep_negatives`.
    """
    if not min_confidence > 0:
        raise ValueError(f"min_confidence must be > 0 (0 marks negatives), got {min_confidence}")
    columns = ["ImageID", "LabelName", "Confidence"]
    table = TableReader(labels_csv, columns, text=columns[:2], sep=",", chunksize=chunksize)
    collector = _PairCollector()
    n_negatives = n_low = 0
    for frame in table.chunks():
        images = table.ids(frame, "ImageID", "ImageID")
        labels = table.ids(frame, "LabelName", "LabelName")
        confidence = table.numbers(frame, "Confidence", minimum=0, what="Confidence")
        positive = confidence >= min_confidence
        negative = confidence == 0
        n_negatives += int(np.count_nonzero(negative))
        n_low += int(len(confidence) - np.count_nonzero(positive | negative))
        collector.add(images, labels, keep=positive)
        if keep_negatives:
            collector.add(images[negative], labels[negative], into="negatives")
    built = collector.build()
    dropped = {"duplicates": built.duplicates["positives"], "low_confidence": n_low}
    if keep_negatives:
        dropped["duplicate_negatives"] = built.duplicates["negatives"]
    else:
        dropped["negatives"] = n_negatives
    names = None
    if class_descriptions_csv is not None:
        names = read_openimages_class_names(class_descriptions_csv)
        unnamed = sum(1 for mid in built.label_ids if mid not in names)
        if unnamed:
            warnings.warn(
                f"{unnamed} of {len(built.label_ids)} labels in {labels_csv} have no name in "
                f"{class_descriptions_csv}; their MID is used as name",
                stacklevel=2,
            )
    return ImageLabels(
        built.matrices["positives"],
        built.image_ids,
        built.label_ids,
        names,
        negatives=built.matrices.get("negatives"),
        dropped=dropped,
        source=labels_csv,
        copy=False,
    )
