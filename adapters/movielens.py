"""MovieLens ratings as implicit user × item data (users play images, movies play labels)."""

from pathlib import Path

import numpy as np

from ._tables import TableReader, format_errors, open_text
from .dataset import ImageLabels, _PairCollector

__all__ = ["read_movielens"]

# layout -> (TableReader arguments, (user, item, rating) columns)
_LAYOUTS = {
    # ml-100k u.data: user \t item \t rating \t timestamp, no header
    "tab": (dict(sep="\t", header=False, n_fields=4), (0, 1, 2)),
    # ml-1m / ml-10m ratings.dat: user::item::rating::timestamp. Splitting on ":" keeps pandas'
    # fast C parser (it has no multi-character separators); the fields land in columns 0, 2, 4, 6
    "dat": (dict(sep=":", header=False, n_fields=7), (0, 2, 4)),
    # ml-20m / ml-25m / latest ratings.csv: header userId,movieId,rating,timestamp
    "csv": (dict(sep=",", header=True), ("userId", "movieId", "rating")),
}
_FILES = ("u.data", "ratings.dat", "ratings.csv")


def _find_file(path):
    path = Path(path)
    if not path.is_dir():
        return path
    for name in _FILES:
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"no MovieLens ratings file ({', '.join(_FILES)}) in {path}")


def _detect_layout(path):
    if path.name == "u.data" or path.suffix == ".data":
        return "tab"
    if path.suffix in (".dat", ".csv"):
        return path.suffix[1:]
    with format_errors(path), open_text(path) as handle:
        first = handle.readline()
    return "dat" if "::" in first else "tab" if "\t" in first else "csv"


def read_movielens(path, min_rating=4, *, layout="auto", chunksize=None):
    """Read MovieLens ratings; ratings >= `min_rating` become positive (user, item) pairs.

    Every user and item in the file gets a row / column, also those with no rating kept (so
    ml-100k gives 943 × 1,682 whatever the threshold); the ratings below the threshold are
    counted in ``dropped["below_min_rating"]``.

    Parameters
    ----------
    path : path-like
        A ratings file, or a folder holding ``u.data``, ``ratings.dat`` or ``ratings.csv``.
    min_rating : float or None, default 4
        Lowest rating that counts as positive; None keeps every rating.
    layout : {"auto", "tab", "dat", "csv"}
        ``"tab"``: ml-100k ``u.data`` (tab-separated, no header); ``"dat"``: ml-1m/10m
        ``ratings.dat`` (``::``-separated); ``"csv"``: ml-20m/25m ``ratings.csv`` (with header).
        ``"auto"`` decides from the file name, else from the first line.
    chunksize : int, optional
        Rows read at a time.

    Returns
    -------
    ImageLabels
        Rows are user IDs, columns movie IDs (both int64, sorted); binary values.

    Raises
    ------
    DatasetFormatError
        A malformed line, a rating that is no number, or an ID that is no integer or too large
        to be kept exactly (with the file and line).
    """
    path = _find_file(path)
    if layout == "auto":
        layout = _detect_layout(path)
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be 'auto' or one of {sorted(_LAYOUTS)}, got {layout!r}")
    options, (user_col, item_col, rating_col) = _LAYOUTS[layout]
    table = TableReader(path, [user_col, item_col, rating_col], chunksize=chunksize, **options)
    collector = _PairCollector()
    below = 0
    for frame in table.chunks():
        ratings = table.numbers(frame, rating_col, what="rating")
        keep = None if min_rating is None else ratings >= min_rating
        if keep is not None:
            below += int(len(keep) - np.count_nonzero(keep))
        collector.add(
            table.numbers(frame, user_col, integer=True, what="user ID"),
            table.numbers(frame, item_col, integer=True, what="item ID"),
            keep=keep,
        )
    built = collector.build()
    return ImageLabels(
        built.matrices["positives"],
        built.image_ids,
        built.label_ids,
        dropped={"below_min_rating": below, "duplicates": built.duplicates["positives"]},
        source=path,
        copy=False,
    )
