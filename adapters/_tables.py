"""Chunked reading of delimited text (optionally compressed) and Parquet tables.

Shared by the pair-list readers (generic pairs, Open Images, NUS-WIDE pairs, MovieLens): each
reads a table chunk by chunk so memory stays near the size of the result, and every problem is
reported as a :class:`DatasetFormatError` naming the file and the physical line.
"""

import bz2
import gzip
import lzma
import re
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DatasetFormatError

_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_PARQUET = {".parquet", ".pq", ".parq"}
DEFAULT_CHUNKSIZE = 1_000_000


def open_binary(path):
    """Open a file for reading bytes, decompressing ``.gz``, ``.bz2`` and ``.xz``."""
    opener = _OPENERS.get(Path(path).suffix.lower(), open)
    return opener(path, "rb")


def open_text(path):
    """Open a text file for reading, decompressing ``.gz``, ``.bz2`` and ``.xz``.

    A UTF-8 byte-order mark is skipped. Use inside :func:`format_errors`, which turns the
    errors of undecodable or damaged files into DatasetFormatError.
    """
    opener = _OPENERS.get(Path(path).suffix.lower(), open)
    return opener(path, "rt", encoding="utf-8-sig")


@contextmanager
def format_errors(path):
    """Turn what reading a file that is not UTF-8 text, or a damaged compressed file, raises
    into a DatasetFormatError naming the file. Real I/O errors (they have an errno: permission
    denied, ...) pass through."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(path, None, f"not UTF-8 text ({exc.reason})") from None
    except (EOFError, zlib.error, lzma.LZMAError) as exc:
        raise DatasetFormatError(path, None, f"damaged compressed data ({exc})") from None
    except OSError as exc:
        if exc.errno is not None:
            raise
        raise DatasetFormatError(path, None, f"damaged or not compressed as named ({exc})") from None


def _format_suffix(path):
    """The suffix that names the format, under any compression suffix (``a.tsv.gz`` → .tsv)."""
    path = Path(path)
    if path.suffix.lower() in _OPENERS:
        path = path.with_suffix("")
    return path.suffix.lower()


def parquet_parts(folder):
    """The Parquet part files of a dataset folder: every ``*.parquet`` below it (hidden files
    and Spark's ``_SUCCESS`` markers aside), in sorted order."""
    return sorted(path for path in Path(folder).rglob("*.parquet")
                  if path.is_file() and not any(part.startswith((".", "_"))
                                                for part in path.relative_to(folder).parts))


def is_parquet(path):
    return _format_suffix(path) in _PARQUET


def guess_separator(path):
    """Tab for ``.tsv``/``.tab``, comma for ``.csv``, else whichever the first line uses."""
    suffix = _format_suffix(path)
    if suffix in (".tsv", ".tab"):
        return "\t"
    if suffix == ".csv":
        return ","
    with format_errors(path), open_text(path) as handle:
        first = next((line for line in handle if line.strip()), "")
    return "\t" if "\t" in first else ","


def _data_line(path, row, header):
    """Physical 1-based line of 0-based data row ``row`` (pandas skips blank lines)."""
    seen = -1 if header else 0  # the header is the first non-blank line
    # errors="replace": bytes that are not UTF-8 after the line sought must not hide the error
    # being located
    opener = _OPENERS.get(Path(path).suffix.lower(), open)
    try:
        with opener(path, "rt", encoding="utf-8-sig", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                if seen == row:
                    return number
                seen += 1
    except (OSError, EOFError, zlib.error, lzma.LZMAError):  # damaged further on
        pass
    return None


# separators given by name (a command line cannot easily pass a tab character)
_SEPARATORS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "space": " ",
               "pipe": "|"}


def _separator(sep):
    """A field separator given as one character or by name (``tab``, ``\\t``, ``comma``)."""
    if sep is None:
        return None
    sep = _SEPARATORS.get(sep.lower() if isinstance(sep, str) else sep, sep)
    if not isinstance(sep, str) or len(sep) != 1 or sep in "\r\n\"":
        raise ValueError(
            f"the field separator must be one character (or tab, comma, semicolon, space, "
            f"pipe), got {sep!r}"
        )
    return sep


class TableReader:
    """Read the columns of a CSV/TSV/Parquet file in chunks, with located error messages.

    Parameters
    ----------
    path : path-like
    columns : list of str or int
        Columns the caller needs: names when the file has a header, else 0-based positions.
    text : list of str or int
        Those of `columns` holding IDs: read as text, so "007" stays "007". The others are
        parsed as numbers when they all are (fast), else as text that :meth:`numbers` checks.
    sep : str, optional
        Field separator for text files: one character, or ``tab`` (also ``\t`` as two
        characters), ``comma``, ``semicolon``, ``space``, ``pipe``; guessed when None. ":" with
        `n_fields` reads MovieLens' ``::`` files with pandas' fast parser.
    header : bool, default True
        Whether the first non-blank line names the columns.
    n_fields : int, optional
        For files without a header: the number of fields every line must have.
    chunksize : int
        Rows per chunk.

    A folder of Parquet part files (as Spark and Dask write a dataset: every ``*.parquet``
    below it, in sorted order) is read as one table, part after part; errors name the part and
    its row. ``rows`` is the table's row count when its metadata gives it (Parquet), for a
    progress bar.
    """

    def __init__(
        self, path, columns, *, text=(), sep=None, header=True, n_fields=None, chunksize=None
    ):
        self.path = Path(path)
        self.columns = list(columns)
        self.text = list(text)
        self.header = header
        self.n_fields = n_fields
        self.chunksize = int(chunksize or DEFAULT_CHUNKSIZE)
        if self.chunksize < 1:
            raise ValueError(f"chunksize must be >= 1, got {chunksize}")
        self.parts = parquet_parts(self.path) if self.path.is_dir() else [self.path]
        if not self.path.exists() or not self.parts:
            raise FileNotFoundError(f"no such file: {self.path}" if not self.path.exists()
                                    else f"{self.path} is a folder without .parquet files")
        self._starts = []  # (first global row, part) of each part read so far, for errors
        self.parquet = self.path.is_dir() or is_parquet(self.path)
        self.unit = "row" if self.parquet else "line"
        self.sep = None if self.parquet else (_separator(sep) or guess_separator(self.path))
        self._check_columns()

    # -- errors ---------------------------------------------------------------------------------

    @property
    def rows(self):
        """The number of rows, from the Parquet metadata (None for text files)."""
        if not self.parquet:
            return None
        return sum(_parquet_file(part).metadata.num_rows for part in self.parts)

    def error(self, row, problem, expected=None):
        """A DatasetFormatError for 0-based data row ``row`` (None: the whole file)."""
        if row is None:
            return DatasetFormatError(self.path, None, problem, expected)
        if not self.parquet:
            line = _data_line(self.path, row, self.header)
            return DatasetFormatError(self.path, line, problem, expected, unit=self.unit)
        start, part = next((start, part) for start, part in reversed(self._starts)
                           if start <= row)
        return DatasetFormatError(part, row - start + 1, problem, expected, unit=self.unit)

    def _parser_error(self, exc):
        message = str(exc)
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
        if found:
            expected, line, saw = found.groups()
            return DatasetFormatError(self.path, int(line), f"{saw} fields", f"{expected} fields")
        return DatasetFormatError(self.path, None, message.strip())

    # -- structure ------------------------------------------------------------------------------

    def _file_columns(self):
        if self.parquet:
            schema = _parquet_file(self.parts[0]).schema_arrow
            self._check_parquet_types(schema, self.parts[0])
            return list(schema.names)
        try:
            with format_errors(self.path):
                frame = pd.read_csv(
                    self.path, sep=self.sep, header=0 if self.header else None, nrows=1, dtype=str
                )
        except pd.errors.EmptyDataError:
            raise DatasetFormatError(
                self.path, 1, "the file is empty", self._describe_expected()
            ) from None
        except pd.errors.ParserError as exc:
            raise self._parser_error(exc) from None
        if not isinstance(frame.index, pd.RangeIndex):
            # pandas reads a first data line with one field more than the header as "the
            # first column is the index" and shifts every column by one: refuse that
            found = len(frame.columns) + frame.index.nlevels
            raise self.error(
                0, f"{found} fields", f"{len(frame.columns)} fields, as many as the header names"
            )
        return list(frame.columns)

    def _check_parquet_types(self, schema, part):
        """Parquet columns must hold plain values: an ID column of lists or structs cannot be
        read as IDs (and would fail later with an unhelpful TypeError)."""
        import pyarrow as pa

        for column in self.columns:
            if column not in schema.names:
                if part != self.parts[0]:  # (the first part's: reported by _check_columns)
                    raise DatasetFormatError(part, None, f"no column {column!r}",
                                             f"the columns of {self.parts[0].name}")
                continue
            kind = schema.field(column).type
            if pa.types.is_dictionary(kind):
                kind = kind.value_type
            plain = (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                     or pa.types.is_string(kind) or pa.types.is_large_string(kind)
                     or pa.types.is_boolean(kind) or pa.types.is_null(kind))
            if not plain:
                raise DatasetFormatError(
                    part, None, f"column {column!r} holds {kind}",
                    "integers, numbers or strings",
                )

    def _describe_expected(self):
        if self.header:
            return "a header naming the columns " + ", ".join(map(repr, self.columns))
        return f"lines of {self.n_fields or 'separated'} fields"

    def _check_columns(self):
        found = self._file_columns()
        if self.header:
            missing = [column for column in self.columns if column not in found]
            if missing:
                raise DatasetFormatError(
                    self.path,
                    1,
                    f"no column {missing[0]!r} (the header has {', '.join(map(repr, found))})",
                    "columns " + ", ".join(map(repr, self.columns)),
                    unit=self.unit,
                )
        elif self.n_fields is not None and len(found) != self.n_fields:
            raise self.error(0, f"{len(found)} fields", f"{self.n_fields} fields")
        elif max(self.columns) >= len(found):  # e.g. column 1 of lines with one field
            raise self.error(
                0, f"{len(found)} field{'s' * (len(found) != 1)}",
                f"at least {max(self.columns) + 1} fields (columns are counted from 0)",
            )

    # -- data -----------------------------------------------------------------------------------

    def chunks(self):
        """Yield DataFrames of the needed columns; the index is the 0-based data row."""
        total = 0
        for frame in self._raw_chunks():
            total += len(frame)
            yield frame[self.columns]
        if total == 0:
            raise self.error(None, "the file has no data rows", self._describe_expected())

    def _raw_chunks(self):
        if self.parquet:
            offset = 0
            for part in self.parts:
                self._starts.append((offset, part))
                with _parquet_errors(part):
                    reader = _parquet_file(part)
                    if part != self.parts[0]:
                        self._check_parquet_types(reader.schema_arrow, part)
                    for batch in reader.iter_batches(batch_size=self.chunksize,
                                                     columns=self.columns):
                        frame = batch.to_pandas()
                        frame.index += offset
                        offset += len(frame)
                        yield frame
            return
        # all columns are parsed (not usecols) so that a line with extra fields is an error;
        # only empty fields count as missing, so IDs such as "NA" or "null" stay text; IDs are
        # plain Python strings (object), which pandas reads and factorizes fastest
        try:
            with format_errors(self.path):
                reader = pd.read_csv(
                    self.path,
                    sep=self.sep,
                    header=0 if self.header else None,
                    dtype={column: object for column in self.text},
                    keep_default_na=False,
                    na_values=[""],
                    chunksize=self.chunksize,
                )
                with reader:
                    yield from reader
        except pd.errors.ParserError as exc:
            raise self._parser_error(exc) from None

    def ids(self, frame, column, what=None):
        """The IDs in `column` as an array; a missing (empty) one is an error."""
        values = frame[column]
        missing = values.isna().to_numpy()
        if missing.any():
            row = values.index[np.argmax(missing)]
            raise self.error(row, f"missing {what or column!r}", f"an ID in column {column!r}")
        return values.to_numpy()

    def numbers(self, frame, column, *, integer=False, minimum=None, what=None):
        """`column` as float64 (int64 if `integer`); the first bad value raises, located."""
        what = what or repr(column)
        values = frame[column]
        if values.dtype.kind in "iuf":  # parsed as numbers (exact for int64 IDs)
            numbers = values.to_numpy()
        else:  # pandas found text in this chunk: find the first value that is no number
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        kind = "an integer" if integer else "a number"
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(numbers)
        too_large, limit = np.zeros(len(numbers), dtype=bool), None
        if integer:
            bad |= numbers != np.round(numbers)
            # IDs must stay exact: uint64 beyond int64 would wrap, floats beyond 2**53 round
            if numbers.dtype.kind == "u":
                too_large, limit = numbers > np.iinfo(np.int64).max, "2**63"
            elif numbers.dtype.kind == "f":
                too_large, limit = np.abs(numbers) > 2**53, "2**53"
        if minimum is not None:
            bad |= numbers < minimum
            kind += f" >= {minimum}"
        bad |= too_large
        if bad.any():
            position = int(np.argmax(bad))
            value = values.iloc[position]
            problem = f"missing {what}" if pd.isna(value) else f"{what} is {str(value)!r}"
            if too_large[position]:
                problem += ", too large to be kept exactly"
                kind += f" below {limit} in magnitude"
            raise self.error(values.index[position], problem, kind)
        return numbers.astype(np.int64 if integer else np.float64)


def _parquet_file(path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            f"reading the Parquet file {path} needs pyarrow: pip install 'vse-recsys[parquet]' (or pyarrow)"
        ) from None
    with _parquet_errors(path):
        return pq.ParquetFile(path)


@contextmanager
def _parquet_errors(path):
    """pyarrow's errors for a damaged or non-Parquet file as a DatasetFormatError."""
    import pyarrow as pa

    try:
        yield
    except pa.ArrowException as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise DatasetFormatError(path, None, f"not a readable Parquet file ({exc})") from None
