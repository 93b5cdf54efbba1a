"""Generic pair tables: CSV, TSV (optionally compressed) or Parquet, one row per pair."""

import numpy as np
from tqdm.auto import tqdm

from ._tables import TableReader
from .dataset import ImageLabels, _PairCollector

__all__ = ["read_pairs"]


def read_pairs(
    path,
    image_col,
    label_col,
    weight_col=None,
    sep=None,
    chunksize=1_000_000,
    *,
    header=True,
    binary=True,
    show_progress=False,
):
    """Read (image, label[, weight]) pairs from a CSV/TSV/Parquet file, chunk by chunk.

    Memory stays near the size of the result: each chunk is reduced to integer codes before the
    next is read.

    Parameters
    ----------
    path : path-like
        ``.csv``, ``.tsv``/``.tab``, any of these gzip/bz2/xz-compressed, ``.parquet`` (needs
        pyarrow), or a folder of Parquet part files (a dataset as Spark or Dask write it, read
        part by part). Other text files: the separator is guessed from the first line.
    image_col, label_col : str or int
        Column names, or 0-based positions when ``header=False``.
    weight_col : str or int, optional
        Column of non-negative weights; rows of weight 0 are dropped (``dropped["zero_weight"]``).
    sep : str, optional
        Field separator; guessed from the suffix or first line when None.
    chunksize : int, default 1_000_000
        Rows read at a time.
    header : bool, default True
        Whether the first line names the columns.
    binary : bool, default True
        As in :meth:`ImageLabels.from_pairs`: 1 per distinct pair, or summed weights.
    show_progress : bool, default False
        A progress bar over the rows (with a total for Parquet, whose metadata counts them).

    Returns
    -------
    ImageLabels
        IDs that are all canonical integers become int64, others stay strings; both sorted.

    Raises
    ------
    DatasetFormatError
        Empty file, missing column, malformed line, missing ID or bad weight (with its line).
    """
    columns = [image_col, label_col] + ([] if weight_col is None else [weight_col])
    table = TableReader(
        path, columns, text=[image_col, label_col], sep=sep, header=header, chunksize=chunksize
    )
    collector = _PairCollector()
    zero_weight = 0
    # (shown only for reads that take a while, so that small files and their errors stay
    # one line)
    with tqdm(total=table.rows, unit="pair", unit_scale=True, desc="read", delay=2,
              disable=not show_progress) as progress:
        for frame in table.chunks():
            progress.update(len(frame))
            keep = weights = None
            if weight_col is not None:
                weights = table.numbers(frame, weight_col, minimum=0, what="weight")
                keep = weights != 0
                zero_weight += int(len(keep) - np.count_nonzero(keep))
            collector.add(
                table.ids(frame, image_col, "image ID"),
                table.ids(frame, label_col, "label ID"),
                None if binary else weights,
                keep=keep,
            )
    built = collector.build(binary=binary, numeric_ids=True)
    dropped = {"duplicates": built.duplicates["positives"]}
    if weight_col is not None:
        dropped["zero_weight"] = zero_weight
    return ImageLabels(
        built.matrices["positives"],
        built.image_ids,
        built.label_ids,
        dropped=dropped,
        source=path,
        copy=False,
    )
