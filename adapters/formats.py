"""Every data format the package reads, by name: :func:`read_any` and the registry behind it.

The registry is the one place that knows which reader a format name means, which options each
reader takes and how a file or folder is recognised, so that Python code
(``read_any(path, format="auto", **options)``) and the command line (whose ``--format``
choices and per-format options are built from it) read data the same way.

Adding a format is one reader module plus one :class:`DataFormat` line in :data:`FORMATS`.

>>> sorted(FORMATS)[:3]
['movielens', 'mulan', 'nuswide']
>>> [option.name for option in FORMATS["pairs"].options]
['image_col', 'label_col', 'sep', 'header']
"""

from dataclasses import dataclass, field
from pathlib import Path

from ._tables import parquet_parts
from .errors import DatasetFormatError
from .movielens import read_movielens
from .mulan import find_mulan_xml, is_arff, read_mulan
from .nuswide import read_nuswide, read_nuswide_pairs, read_nuswide_tags
from .openimages import read_openimages
from .pairs import read_pairs

__all__ = ["DataFormat", "FORMATS", "FormatOption", "guess_format", "read_any"]

_MOVIELENS_FILES = ("u.data", "ratings.dat", "ratings.csv")


@dataclass(frozen=True)
class FormatOption:
    """One keyword option of a format's reader.

    ``name`` is the keyword (``image_col``); the command line spells it ``--image-col``, or,
    for a boolean that defaults to True, ``--no-<name>`` (``--no-header``).
    """

    name: str
    help: str
    default: object = None
    type: type = str
    choices: tuple = None
    metavar: str = None


@dataclass(frozen=True)
class DataFormat:
    """A named format: its reader ``read(path, **options)`` and the options it takes
    (``progress``: the reader takes ``show_progress``, a bar over the rows it reads)."""

    name: str
    description: str
    read: object
    options: tuple = field(default_factory=tuple)
    progress: bool = False


def _pair_columns(value, header):
    """A column option: a name, or without a header line a 0-based position given as text."""
    if header or isinstance(value, int):
        return value
    try:
        position = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"without a header line, columns are 0-based numbers; got {value!r}") from None
    if position < 0:
        raise ValueError(f"column numbers start at 0; got {position}")
    return position


def read_pair_table(path, image_col="image", label_col="label", sep=None, header=True,
                    show_progress=False):
    """:func:`read_pairs` with the command line's conventions: default column names ``image``
    and ``label``, and column numbers given as text (``"0"``) when there is no header."""
    return read_pairs(
        path,
        _pair_columns(image_col, header),
        _pair_columns(label_col, header),
        sep=sep,
        header=header,
        show_progress=show_progress,
    )


def _read_openimages(path, class_names=None):
    """:func:`read_openimages`, with the display-name file as the ``class_names`` option."""
    return read_openimages(path, class_names)


def _read_mulan_beside(path, xml=None):
    """:func:`read_mulan` with the XML label header found beside the ARFF file by default, or
    none (a MEKA file: its relation names the labels) when there is none."""
    return read_mulan(path, find_mulan_xml(path, required=False) if xml is None else Path(xml))


PAIR_OPTIONS = (
    FormatOption("image_col", "column of the image IDs (a 0-based number without a header)",
                 default="image", metavar="COLUMN"),
    FormatOption("label_col", "column of the labels", default="label", metavar="COLUMN"),
    FormatOption("sep", "field separator: one character, or 'tab' (default: from the suffix, "
                 ".csv comma, .tsv tab, else guessed from the first line)", metavar="SEP"),
    FormatOption("header", "the file has a header line naming its columns", default=True,
                 type=bool),
)

#: The formats by name, in the order :func:`guess_format` tries them for a folder.
FORMATS = {
    fmt.name: fmt
    for fmt in (
        DataFormat("pairs", "CSV / TSV (optionally compressed) / Parquet file or folder of "
                   "Parquet parts, one (image, label) per row", read_pair_table, PAIR_OPTIONS,
                   progress=True),
        DataFormat("mulan", "MULAN ARFF with its XML label header, or MEKA ARFF (its "
                   "relation's -C names the labels); optionally compressed", _read_mulan_beside,
                   (FormatOption("xml", "the XML label header (default: <name>.xml beside the "
                                 "ARFF file, or the only .xml there; none for MEKA files)",
                                 metavar="FILE"),)),
        DataFormat("movielens", "MovieLens ratings (users are images, movies labels)",
                   read_movielens,
                   (FormatOption("min_rating", "lowest rating that counts as positive",
                                 default=4.0, type=float, metavar="R"),)),
        DataFormat("openimages", "Open Images image-level labels CSV", _read_openimages,
                   (FormatOption("class_names", "class-descriptions CSV giving the labels' "
                                 "display names", metavar="CSV"),)),
        DataFormat("nuswide", "NUS-WIDE concepts, official release folder", read_nuswide),
        DataFormat("nuswide-tags", "NUS-WIDE 1k user tags folder", read_nuswide_tags),
        DataFormat("nuswide-pairs", "the NUS-WIDE-81 pairs TSV", read_nuswide_pairs,
                   (FormatOption("split", "keep only the official train or test split",
                                 choices=("train", "test")),)),
    )
}


def guess_format(path):
    """The format name ``format="auto"`` reads ``path`` with.

    ``*.arff`` (also compressed) is mulan; a folder holding ``u.data`` / ``ratings.dat`` /
    ``ratings.csv`` (or such a file) is movielens, a folder holding ``ImageList/`` nuswide, one
    holding the 1k tag lists nuswide-tags, one holding ``.parquet`` part files pairs; any other
    file is pairs.

    Raises
    ------
    DatasetFormatError
        For a folder that holds none of these.
    """
    path = Path(path)
    if path.is_dir():
        if any((path / name).is_file() for name in _MOVIELENS_FILES):
            return "movielens"
        if (path / "ImageList").is_dir():
            return "nuswide"
        if (path / "TagList1k.txt").is_file() or (path / "NUS_WID_Tags").is_dir():
            return "nuswide-tags"
        if parquet_parts(path):  # a dataset of Parquet part files (Spark, Dask)
            return "pairs"
        raise DatasetFormatError(
            path, None, "a folder whose format cannot be recognised",
            "a data file, or a folder of one of the formats movielens, nuswide, nuswide-tags "
            "(name it with format=... / --format)",
        )
    if is_arff(path):
        return "mulan"
    if path.name in _MOVIELENS_FILES[:2]:
        return "movielens"
    return "pairs"


def read_any(path, format="auto", show_progress=False, **options):
    """Read a dataset in any registered format.

    Parameters
    ----------
    path : path-like
        The data file or folder.
    format : str, default "auto"
        A name of :data:`FORMATS`, or ``"auto"`` (see :func:`guess_format`).
    show_progress : bool
        A progress bar over the rows, for the formats that can show one (pairs).
    **options
        The format's reader options (``FORMATS[name].options``); an option the format does not
        take is an error, not ignored.

    Returns
    -------
    ImageLabels

    Raises
    ------
    FileNotFoundError
        No such file or folder.
    ValueError
        An unknown format name or an option the format does not take.
    DatasetFormatError
        The data does not match the format (the message names file and line).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data {path} does not exist")
    name = guess_format(path) if format == "auto" else format
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; choose one of auto, {', '.join(FORMATS)}")
    data_format = FORMATS[name]
    allowed = {option.name for option in data_format.options}
    unknown = sorted(set(options) - allowed)
    if unknown:
        takes = ", ".join(sorted(allowed)) or "no options"
        raise ValueError(f"format {name!r} has no option {unknown[0]!r} (it takes {takes})")
    if show_progress and data_format.progress:
        options["show_progress"] = True
    return data_format.read(path, **options)
