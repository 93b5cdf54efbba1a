"""Model files: atomic ``.npz`` writes and checked ``.npz`` reads (never unpickling).

Shared by every model's ``save``/``load`` and ``Annotator.save``/``load``.

**One version story for every file kind.** Each file names its kind in ``format`` and the
layout version in ``format_version`` (:data:`FORMAT_VERSION`, one number for all kinds, raised
whenever any layout changes). :func:`read_model_file` refuses newer versions, tells a file of
another kind (an Annotator file given to ``VSEEns.load``, a bare model given to
``Annotator.load``) and files of other tools (implicit's models) by what they are, and reads the
files of earlier versions: version 1 (VSEEns and annotator files), version 2 (VSEEns files with
``candidates``), neither of which had ``format`` in bare model files.

Writing goes to a temporary file in the target's folder, which is flushed to disk and then
renamed over the target, so a crash, a full disk or Ctrl-C during a save leaves either the old
file or the new one, never a truncated mix. Reading checks each array's ``.npy`` header against
the size stored in the zip before allocating anything, refuses object arrays (they would need
pickle), and turns every way a damaged file can fail into one :class:`ModelFileError` that names
the file and the problem.
"""

import os
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "ModelFileError",
    "check_kind",
    "kind_of",
    "atomic_savez",
    "npz_path",
    "read_model_file",
    "read_npz",
    "read_params",
    "source_name",
    "write_model_file",
]

#: Version of the file layouts written now (``format_version``); readers refuse higher ones.
#: 1: first VSEEns and annotator files; 2: VSEEns ``candidates``; 3: every file names its kind.
FORMAT_VERSION = 3
#: ``format`` of each file kind, by the name used in messages
KINDS = {
    "VSEEns": "vse-recsys VSEEns",
    "EASE": "vse-recsys EASE",
    "Annotator": "vse-recsys annotator",
}
# how to load each kind, for the message when a file is given to the wrong loader
_LOAD_HINT = {
    "VSEEns": "a bare VSEEns model (VSEEns.save): load it with VSEEns.load, or to tag by ID "
              "wrap it as Annotator(model, label_ids, ...) and save that, or use 'vse-recsys fit'",
    "EASE": "a bare EASE model (EASE.save): load it with EASE.load, or to tag by ID wrap it "
            "as Annotator(model, label_ids, ...) and save that, or use 'vse-recsys fit'",
    "Annotator": "an Annotator file (written by 'vse-recsys fit' or Annotator.save): load it "
                 "with vse_recsys.annotator.Annotator.load; its model is Annotator.model",
}
# entries that only other tools' files have: (entries, what the file looks like)
_FOREIGN = (
    ({"alpha", "use_cg"}, "an implicit AlternatingLeastSquares model"),
    ({"neg_prop"}, "an implicit LogisticMatrixFactorization model"),
    ({"K", "indptr"}, "an implicit item-item (nearest neighbours) model"),
    ({"learning_rate", "verify_negative_samples", "user_factors"},
     "an implicit BayesianPersonalizedRanking model"),
)

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
    if not path.parent.is_dir():  # (else the error would name the hidden temporary file)
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
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
        try:
            _check_every_member_is_listed(archive)
        except _READ_ERRORS as error:
            raise ModelFileError(f"{name} is damaged ({error}); the file is corrupted") from None
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


def _check_every_member_is_listed(archive):
    """Refuse a zip whose directory does not list every member it stores.

    A damaged directory can end early and list only the first members: the others would be
    missing without any checksum failing (a model file would lose its last entries, e.g. its
    seed and format). numpy writes members back to back from the start of the file, each a
    local header, its name and extra field, and its data, up to the directory: so the listed
    members must tile that span exactly.
    """
    start_dir = getattr(archive, "start_dir", None)  # where the directory begins (zipfile's own)
    members = sorted(archive.infolist(), key=lambda info: info.header_offset)
    if start_dir is None or any(info.flag_bits & 0x08 for info in members):
        return  # sizes after the data (a data descriptor): not numpy's layout, not checked
    position = 0
    for info in members:
        if info.header_offset != position:
            raise ValueError(f"bytes {position}..{info.header_offset} hold no listed member")
        archive.fp.seek(info.header_offset)
        header = archive.fp.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            raise ValueError(f"no member header at byte {info.header_offset}")
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        position = info.header_offset + 30 + name_length + extra_length + info.compress_size
    if position != start_dir:
        raise ValueError(f"bytes {position}..{start_dir} hold members the directory does not list")


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


def kind_of(arrays):
    """The kind of a model file's arrays (a key of :data:`KINDS`), or None if not ours."""
    if "format" in arrays:
        text = arrays["format"]
        if text.shape == () and text.dtype.kind == "U":
            for kind, name in KINDS.items():
                if str(text) == name:
                    return kind
        return None
    # versions 1 and 2 of bare VSEEns files had no "format"; "loss" is in every one of them
    if "loss" in arrays and "factors" in arrays:
        return "VSEEns"
    return None


def _version_of(arrays, name, kind):
    if "format_version" not in arrays:
        if "format" in arrays:  # every file that names its kind has a version too
            raise ModelFileError(f"{name} is not a valid {kind} model file: it has no "
                                 f"format_version")
        return 1  # VSEEns files from before versioning
    version = arrays["format_version"]
    if version.shape != () or version.dtype.kind not in "iu":
        raise ModelFileError(
            f"{name} is not a valid {kind} model file: format_version must be an integer, got "
            f"{version!r}"
        )
    version = int(version)
    if version > FORMAT_VERSION:
        from . import __version__

        raise ModelFileError(
            f"{name} has model format version {version}, newer than this vse-recsys "
            f"({__version__}) can read (up to version {FORMAT_VERSION}); upgrade vse-recsys to "
            f"use it"
        )
    if version < 1:
        raise ModelFileError(f"{name} is not a valid {kind} model file: unknown format_version "
                             f"{version}")
    return version


def check_kind(arrays, kind, name):
    """The file's format version, after checking that ``arrays`` are a ``kind`` file.

    Raises ModelFileError saying what the file is when it is another kind, another tool's file,
    or no model file at all.
    """
    found = kind_of(arrays)
    if found is None:
        looks = next((what for keys, what in _FOREIGN if keys <= set(arrays)), None)
        if "format" in arrays:
            looks = f"its format is {arrays['format']!r}"
        elif looks:
            looks = f"it looks like {looks}"
        else:
            looks = f"it has no 'format' entry; entries: {', '.join(sorted(arrays)[:6])}"
        raise ModelFileError(f"{name} is not a vse-recsys {kind} model file ({looks})")
    if found != kind:
        raise ModelFileError(f"{name} is {_LOAD_HINT[found]}, not a {kind} file")
    return _version_of(arrays, name, kind)


def read_model_file(source, kind):
    """``(arrays, format_version)`` of a ``kind`` file (``"VSEEns"``, ``"EASE"``,
    ``"Annotator"``), path or binary file object; ``format`` and ``format_version`` are left
    out of ``arrays``.

    A path that does not exist is retried with ``.npz`` appended.

    Raises
    ------
    FileNotFoundError
        No such file.
    ModelFileError
        A damaged file, a file of another kind or tool (saying which), or a newer version.
    """
    if isinstance(source, (str, os.PathLike)) and not Path(source).exists():
        with_suffix = npz_path(source)
        source = with_suffix if with_suffix.exists() else source
    arrays = read_npz(source)
    version = check_kind(arrays, kind, source_name(source))
    arrays.pop("format", None)
    arrays.pop("format_version", None)
    return arrays, version


def write_model_file(target, kind, arrays):
    """Write a ``kind`` file: ``arrays`` plus ``format`` and ``format_version``.

    A path is written atomically (see :func:`atomic_savez`) and returned; a file object is
    written with ``numpy.savez`` (returns None).
    """
    arrays = {
        **arrays,
        "format": np.array(KINDS[kind]),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
    }
    if isinstance(target, (str, os.PathLike)):
        return atomic_savez(target, arrays)
    np.savez(target, **arrays)
    return None


def read_params(arrays, names, fail):
    """The entries of ``names`` present in ``arrays`` as Python scalars (model parameters);
    ``fail(problem)`` makes the error for an entry that is not one number or string."""
    params = {}
    for key in sorted(set(names) & set(arrays)):
        value = arrays[key]
        if value.shape != () or value.dtype.kind not in "biufU":
            raise fail(f"parameter {key!r} must be a single number or string, got {value!r}")
        params[key] = value.item()
    return params
