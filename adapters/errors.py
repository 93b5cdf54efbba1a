"""The error every reader raises for input that does not match its format."""

__all__ = ["DatasetFormatError"]


class DatasetFormatError(ValueError):
    """A data file does not match the format its reader expects.

    The message names the file, the line (or, for Parquet, the row) and what was expected,
    e.g. ``ratings.csv, line 7: rating 'x' is not a number; expected a number``.

    Parameters
    ----------
    path : str or os.PathLike
        The offending file.
    line : int or None
        1-based line (or row, see `unit`) of the problem; None when it concerns the whole file.
    problem : str
        What is wrong.
    expected : str, optional
        What the reader expected instead.
    unit : str, default "line"
        What `line` counts: "line" for text files, "row" for Parquet.

    Attributes
    ----------
    path, line, problem, expected
        As given, so that callers can inspect the error without parsing the message.
    """

    def __init__(self, path, line, problem, expected=None, *, unit="line"):
        self.path = str(path)
        self.line = line
        self.problem = problem
        self.expected = expected
        where = self.path if line is None else f"{self.path}, {unit} {line}"
        message = f"{where}: {problem}"
        if expected:
            message += f"; expected {expected}"
        super().__init__(message)
