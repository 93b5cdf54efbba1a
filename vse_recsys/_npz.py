"""Model files: atomic ``.npz`` writes and checked ``.npz`` reads (never unpickling).

Shared by ``VSEEns.save``/``load`` and ``Annotator.save``/``load``.

Writing goes to a temporary file in the target's folder, which is flushed to disk and then
renamed over the target, so a crash, a full disk or Ctrl-C during a save leaves either the old
file or the new one, never a truncated mix. Reading checks each array's ``.npy`` header against
the size stored in the zip before allocating anything, refuses object arrays (they would need
pickle), and turns every way a damaged file can fail into one :class:`ModelFileError` that names
the file and the problem.
"""

import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

__all__ = ["ModelFileError", "atomic_savez", "npz_path", "read_npz", "source_name"]

# numpy's own limit on the size of an .npy header (a guard against hostile files)
_MAX_HEADER_SIZE = 10_000
# what reading a damaged zip member or .npy header can raise
_READ_ERRORS = (
    ValueError,
    OSError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,  # an unsupported zip compression method
    RuntimeError,  # an encrypted zip member
    SyntaxError,  # an .npy header that is not a Python literal
)


class ModelFileError(ValueError):
    """A file is not a model this version of vse-recsys can read (the message says why)."""


def source_name(source):
    """How to name a path or file object in an error message."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, (str, os.PathLike)) else f"<{type(source).__name__}>"


def npz_path(path):
    """``path`` with ``.npz`` appended when it lacks that suffix (as ``numpy.savez`` does)."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_savez(path, arrays):
    """Write ``arrays`` to ``path`` with ``numpy.savez``, atomically; returns the path written.

    A path without the ``.npz`` suffix gets it. The new file gets the permissions a plainly
    created file would (``0666`` less the umask), not ``mkstemp``'s private ``0600``.
    """
    path = npz_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_npz(source):
    """The arrays of an ``.npz`` file (path or binary file object), checked as they are read.

    Raises
    ------
    FileNotFoundError
        ``source`` is a path that does not exist.
    ModelFileError
        Not a zip file, a member that is not an ``.npy`` array, an object array (which would
        need pickle), a header that disagrees with the stored size (a truncated or damaged
        file), or a failed checksum.
    """
    name = source_name(source)
    if isinstance(source, (str, os.PathLike)):
        if not Path(source).exists():
            raise FileNotFoundError(f"model file {name} does not exist")
        if Path(source).is_dir():
            raise ModelFileError(f"{name} is a folder, not a model file")
    try:
        archive = zipfile.ZipFile(source)
    except _READ_ERRORS as error:
        raise ModelFileError(f"{name} is not an .npz model file ({error})") from None
    arrays = {}
    with archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise ModelFileError(
                    f"{name} holds {info.filename!r}, which is not a numpy array: not an .npz "
                    f"written by numpy.savez"
                )
            key = info.filename[: -len(".npy")]
            try:
                arrays[key] = _read_member(archive, info)
            except ModelFileError as error:
                raise ModelFileError(f"{name}: array {key!r} {error}") from None
            except _READ_ERRORS as error:
                raise ModelFileError(
                    f"{name}: array {key!r} is damaged ({error or type(error).__name__}); the "
                    f"file is corrupted or truncated"
                ) from None
    return arrays


def _read_member(archive, info):
    """One ``.npy`` member: header checked against the stored size before reading the data."""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(member, max_header_size=_MAX_HEADER_SIZE)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(member, max_header_size=_MAX_HEADER_SIZE)
        else:
            raise ModelFileError(f"has .npy format version {version}, which is not supported")
        shape, _, dtype = header
        if dtype.hasobject:
            raise ModelFileError(
                "holds Python objects, which are only readable by unpickling; model files never "
                "need that, so it is refused"
            )
        expected = member.tell() + int(np.prod(shape, dtype=object)) * dtype.itemsize
        if expected != info.file_size:
            raise ModelFileError(
                f"is truncated or damaged: its header announces shape {shape} of {dtype} "
                f"({expected:,} bytes with the header) but {info.file_size:,} bytes are stored"
            )
        member.seek(0)
        return np.lib.format.read_array(
            member, allow_pickle=False, max_header_size=_MAX_HEADER_SIZE
        )
