"""Tagging past one machine: a Parquet dataset of (image, label) pairs tagged on a Dask cluster.

Training is single-machine (see the README's "Scale" section); tagging is not: every image is
scored from its labels and the model alone (``Annotator.tag_new``: composed vectors, EASE, or a
fold-in on the image's own random stream), so the images can be split across any number of
workers and the result is the same as tagging them in one process.

:func:`tag_parquet` sends the model to every worker once (``Client.scatter(broadcast=True)``),
makes one Dask task per part file of the input dataset (``Client.map``, with Dask's retries),
and each task reads its part, tags its images and writes their top ``N`` labels as one Parquet
part file of the output, with the columns of ``vse-recsys tag``'s CSV output: ``image``,
``rank``, ``label``, ``name``, ``score``. Dask does the scheduling, the shipping and the retries;
a part is written under its input part's name through a temporary file and a rename, so a task
that is run again (a worker lost, a retry) replaces its output instead of adding to it.

The input must be **partitioned by image**: every pair of an image in the same part file, as
Spark's ``repartition("image")`` or Dask's ``set_index("image")`` write it; an image found in
two parts is an error (it would be tagged twice, from half of its labels each time).

Needs the ``dask`` extra: ``pip install "vse-recsys[dask]"``.
"""

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .adapters._ids import plain
from .adapters._tables import parquet_parts

__all__ = ["TagSummary", "tag_parquet"]


class TagSummary(dict):
    """What :func:`tag_parquet` did: ``parts``, ``images``, ``rows`` written, ``output``."""


def tag_parquet(annotator, pairs, output, *, N=10, include_known=False, skip_unknown=False,
                image_col="image", label_col="label", client=None, retries=3):
    """Tag every image of a Parquet dataset of (image, label) pairs, through Dask.

    Parameters
    ----------
    annotator : vse_recsys.annotator.Annotator or path-like
        The model with its label IDs and names (or a file written by ``vse-recsys fit``).
    pairs : path-like
        A folder of Parquet part files (as Spark and Dask write them) or one Parquet file, with
        columns ``image_col`` and ``label_col``, partitioned by image (see the module notes).
    output : path-like
        The folder to write the result parts to (created; its existing parts of the same
        names are replaced).
    N, include_known, skip_unknown
        As for ``Annotator.tag_new``.
    client : dask.distributed.Client, optional
        Where to run. Default: a ``LocalCluster`` of this machine, closed afterwards.
    retries : int
        Dask retries of a part whose task fails (a lost worker is rescheduled by Dask
        whatever this is).

    Returns
    -------
    TagSummary
        ``parts``, ``images``, ``rows`` written and ``output``.

    Raises
    ------
    ImportError
        Without dask[distributed] and pyarrow.
    ValueError
        No part files, an image in two parts, or a part a task could not tag (its error).
    """
    distributed = _dask()
    from .annotator import Annotator

    if not isinstance(annotator, Annotator):  # (a path: the file vse-recsys fit wrote)
        annotator = Annotator.load(annotator)
    parts = _part_files(pairs)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    own_client = client is None
    if own_client:
        client = distributed.Client(distributed.LocalCluster(processes=True))
    try:
        shipped = client.scatter(_for_tagging(annotator), broadcast=True)
        options = dict(N=N, include_known=include_known, skip_unknown=skip_unknown,
                       image_col=image_col, label_col=label_col)
        futures = client.map(_tag_part, parts, [str(output / _output_name(part)) for part in parts],
                             model=shipped, **options, retries=retries, pure=False)
        results = client.gather(futures)
    finally:
        if own_client:
            cluster = client.cluster
            client.close()
            cluster.close()
    images = np.concatenate([r["images"] for r in results]) if results else np.array([])
    if len(pd.unique(images)) != len(images):
        repeated = plain(pd.Index(images)[pd.Index(images).duplicated()][0])
        raise ValueError(
            f"image {repeated!r} is in more than one part of {pairs}: the pairs must be "
            f"partitioned by image (every pair of an image in one part file)"
        )
    return TagSummary(parts=len(parts), images=int(len(images)),
                      rows=int(sum(r["rows"] for r in results)), output=str(output))


def _dask():
    try:
        import dask.distributed as distributed
        import pyarrow  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "tagging on Dask needs dask[distributed] and pyarrow: pip install "
            "'vse-recsys[dask]'"
        ) from error
    return distributed


def _part_files(pairs):
    """The Parquet part files of a dataset folder (as the readers find them), or the one file
    given."""
    pairs = Path(pairs)
    if not pairs.exists():
        raise FileNotFoundError(f"pairs dataset {pairs} does not exist")
    if pairs.is_file():
        return [str(pairs)]
    parts = [str(part) for part in parquet_parts(pairs)]
    if not parts:
        raise ValueError(f"{pairs} holds no .parquet part files")
    return parts


def _output_name(part):
    """The output part for an input part: the same name (made unique by its parent folders,
    for hive-partitioned inputs such as ``day=1/part-0.parquet``)."""
    return "-".join(Path(part).parts[-3:]).replace("=", "_")


def _for_tagging(annotator):
    """The Annotator without its training labels: new images do not need them, and the
    workers receive less."""
    from .annotator import Annotator

    return Annotator(annotator.model, annotator.label_ids, annotator.label_names,
                     annotator.image_ids, None)


def _tag_part(part, target, *, model, N, include_known, skip_unknown, image_col, label_col):
    """One Dask task: tag the images of one part file and write their labels to ``target``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .adapters import ImageLabels

    table = pq.read_table(part, columns=[image_col, label_col]).to_pandas()
    data = ImageLabels.from_dataframe(table, image_col, label_col)
    data.source = part
    frame = model.tag_new_table(data, N=N, include_known=include_known,
                                skip_unknown=skip_unknown)
    # written beside the target and renamed into place: a task run again replaces its part
    descriptor, temporary = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=Path(target).parent)
    os.close(descriptor)
    try:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), temporary)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return {"images": data.image_ids, "rows": len(frame)}
