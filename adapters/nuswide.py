"""NUS-WIDE (Chua et al., CIVR 2009): the official release layout and the shared pairs file.

Image IDs are row numbers in ``ImageList/Imagelist.txt`` (0..269,647), the same numbers as the
``row`` column of the shared ``nuswide81_pairs.tsv.gz``, so the readers agree with each other.
The readers of the official layout keep images without any label as empty rows (the release
lists every image); the pairs file only holds images with at least one concept.
"""

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ._tables import TableReader, format_errors
from .dataset import ImageLabels, _PairCollector
from .errors import DatasetFormatError

__all__ = ["read_nuswide", "read_nuswide_tags", "read_nuswide_pairs"]

_BLOCK_BYTES = 1 << 24  # 16 MiB of text at a time keeps the 0/1 parser's temporaries small
_ZERO, _ONE, _NEWLINE = ord("0"), ord("1"), ord("\n")
_SPACES = (ord(" "), ord("\t"), ord("\r"))


def _text_lines(path):
    """Non-blank, stripped lines of a small UTF-8 text file (a byte-order mark is skipped)."""
    with format_errors(path), open(path, encoding="utf-8-sig") as handle:
        return [line.strip() for line in handle if line.strip()]


def _line_blocks(path):
    """The file's bytes in blocks of whole lines (the last may lack its newline)."""
    carry = b""
    with open(path, "rb") as handle:
        if handle.read(3) != b"\xef\xbb\xbf":  # skip a UTF-8 byte-order mark
            handle.seek(0)
        while block := handle.read(_BLOCK_BYTES):
            data = carry + block
            cut = data.rfind(b"\n") + 1  # carry a partial last line over to the next block
            data, carry = data[:cut], data[cut:]
            if data:
                yield data
    if carry:
        yield carry


def _parse_block(data, width, path, first_line, expected):
    """Per-line value counts and the (line, column) positions of the 1s in one block."""
    text = np.frombuffer(data, dtype=np.uint8)
    digit = (text == _ZERO) | (text == _ONE)
    newline = np.flatnonzero(text == _NEWLINE)
    ends = newline if data.endswith(b"\n") else np.append(newline, len(text) - 1)

    def fail(position, problem):
        line = first_line + int(np.searchsorted(newline, position))
        raise DatasetFormatError(path, line, problem, expected)

    other = ~digit & (text != _NEWLINE)
    for space in _SPACES:
        other &= text != space
    if other.any():
        position = int(np.argmax(other))
        fail(position, f"unexpected character {chr(text[position])!r}")
    joined = digit[:-1] & digit[1:]  # "10" or "11": not a single 0/1 value
    if joined.any():
        fail(int(np.argmax(joined)), "a value other than 0 or 1")
    counts = np.diff(np.cumsum(digit, dtype=np.int64)[ends], prepend=0)
    wrong = np.flatnonzero((counts != 0) & (counts != width))
    if wrong.size:
        fail(int(ends[wrong[0]]), f"{counts[wrong[0]]} values")
    # blank lines have no digits, so the digits fill the other lines row by row
    lines, columns = np.nonzero(text[digit].reshape(-1, width) == _ONE)
    return counts, np.flatnonzero(counts)[lines], columns


def _read_binary_rows(path, width):
    """Parse a file of lines holding `width` values 0/1 separated by spaces or tabs.

    Vectorised over bytes, a block at a time. Trailing blank lines are allowed; any other
    deviation raises DatasetFormatError with its line.

    Returns
    -------
    n_lines : int
    rows, cols : numpy.ndarray of int64
        Positions of the 1s (row = 0-based line).
    """
    expected = f"{width} value{'s' if width > 1 else ''} 0 or 1 per line"
    rows, cols = [], []
    n_lines = 0  # lines in earlier blocks
    blank_line = None  # first of a run of blank lines: an error unless only blanks follow
    for data in _line_blocks(path):
        counts, block_rows, block_cols = _parse_block(data, width, path, n_lines + 1, expected)
        content = np.flatnonzero(counts)
        blanks = np.flatnonzero(counts == 0)
        if content.size and blank_line is not None:
            raise DatasetFormatError(path, blank_line, "blank line", expected)
        if content.size and blanks.size and blanks[0] < content[-1]:
            raise DatasetFormatError(path, n_lines + int(blanks[0]) + 1, "blank line", expected)
        if blanks.size and blank_line is None:  # blanks after all content: fine if at the end
            blank_line = n_lines + int(blanks[0]) + 1
        rows.append(block_rows + n_lines)
        cols.append(block_cols)
        n_lines += len(counts)
    if blank_line is not None:
        n_lines = blank_line - 1
    if n_lines == 0:
        raise DatasetFormatError(path, 1, "the file is empty", expected)
    return n_lines, np.concatenate(rows), np.concatenate(cols)


def _count_images(root):
    """Number of images in the official ``ImageList/Imagelist.txt``."""
    image_list = Path(root) / "ImageList" / "Imagelist.txt"
    if not image_list.is_file():
        raise FileNotFoundError(
            f"no {image_list}: expected the official NUS-WIDE layout (ImageList/Imagelist.txt, "
            f"Groundtruth/AllLabels/Labels_<concept>.txt)"
        )
    n_images = len(_text_lines(image_list))
    if n_images == 0:
        raise DatasetFormatError(image_list, 1, "the file is empty", "one image path per line")
    return n_images, image_list


def read_nuswide(root):
    """Read the NUS-WIDE concept ground truth from the official release layout.

    Reads ``<root>/ImageList/Imagelist.txt`` (one image per line: its row is the image ID) and
    ``<root>/Groundtruth/AllLabels/Labels_<concept>.txt`` (one 0/1 per image, in the same
    order). Concepts are in the order of ``<root>/Concepts81.txt`` when it exists, else sorted
    by name. Every image is a row, also those with no concept.

    Parameters
    ----------
    root : path-like
        The folder of the release.

    Returns
    -------
    ImageLabels
        Image IDs ``0..n-1`` (Imagelist rows), label IDs the concept names.

    Raises
    ------
    FileNotFoundError
        A file of the layout is missing.
    DatasetFormatError
        A file is not UTF-8 text, a label file has a value other than 0/1 or the wrong number
        of lines (with the file and line).
    """
    root = Path(root)
    n_images, image_list = _count_images(root)
    label_dir = root / "Groundtruth" / "AllLabels"
    concept_list = root / "Concepts81.txt"
    if concept_list.is_file():
        concepts = _text_lines(concept_list)
    else:
        concepts = sorted(
            p.name[len("Labels_") : -len(".txt")] for p in label_dir.glob("Labels_*.txt")
        )
    if not concepts:
        raise FileNotFoundError(f"no Labels_<concept>.txt files in {label_dir}")
    rows, cols = [], []
    for column, concept in enumerate(concepts):
        path = label_dir / f"Labels_{concept}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"no {path} for concept {concept!r} listed in {concept_list}")
        n_lines, concept_rows, _ = _read_binary_rows(path, 1)
        if n_lines != n_images:
            raise DatasetFormatError(
                path,
                min(n_lines, n_images) + 1,
                f"the file has {n_lines} lines",
                f"{n_images} lines, one per image in {image_list}",
            )
        rows.append(concept_rows)
        cols.append(np.full(len(concept_rows), column))
    matrix = _binary_csr(np.concatenate(rows), np.concatenate(cols), (n_images, len(concepts)))
    return ImageLabels(matrix, None, np.array(concepts, dtype=object), source=root, copy=False)


def _find(root, name):
    for folder in (root, root / "NUS_WID_Tags"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no {name} in {root} or {root / 'NUS_WID_Tags'}")


def read_nuswide_tags(root):
    """Read the NUS-WIDE user tags: ``AllTags1k.txt`` with the names in ``TagList1k.txt``.

    ``AllTags1k.txt`` has one line per image (in Imagelist order) of 1,000 values 0/1, one per
    tag of ``TagList1k.txt``. Both are looked for in `root` and ``<root>/NUS_WID_Tags``. Every
    image is a row, also those with no tag; if ``ImageList/Imagelist.txt`` exists the image
    counts must agree.

    Parameters
    ----------
    root : path-like

    Returns
    -------
    ImageLabels
        Image IDs ``0..n-1``, label IDs the tag names.

    Raises
    ------
    FileNotFoundError
        ``TagList1k.txt`` or ``AllTags1k.txt`` is missing.
    DatasetFormatError
        As for :func:`read_nuswide`; also a tag listed twice.
    """
    root = Path(root)
    tag_list = _find(root, "TagList1k.txt")
    tags = _text_lines(tag_list)
    if not tags:
        raise DatasetFormatError(tag_list, 1, "the file is empty", "one tag per line")
    if len(set(tags)) != len(tags):
        repeated = next(tag for tag in tags if tags.count(tag) > 1)
        raise DatasetFormatError(tag_list, None, f"tag {repeated!r} is listed twice")
    all_tags = _find(root, "AllTags1k.txt")
    n_images, rows, cols = _read_binary_rows(all_tags, len(tags))
    if (root / "ImageList" / "Imagelist.txt").is_file():
        listed, image_list = _count_images(root)
        if listed != n_images:
            raise DatasetFormatError(
                all_tags,
                min(listed, n_images) + 1,
                f"the file has {n_images} lines",
                f"{listed} lines, one per image in {image_list}",
            )
    matrix = _binary_csr(rows, cols, (n_images, len(tags)))
    return ImageLabels(matrix, None, np.array(tags, dtype=object), source=all_tags, copy=False)


def _binary_csr(rows, cols, shape):
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=shape)


def read_nuswide_pairs(path, *, split=None, chunksize=None):
    """Read the shared NUS-WIDE-81 pairs file (``nuswide81_pairs.tsv.gz``).

    A TSV with header ``row, split, split_row, csv_image_id, concept``, one line per (image,
    concept) pair. ``row`` (0..269,647, the Imagelist row) is the image ID; ``csv_image_id`` is
    unreliable upstream and is not used. Images with no concept are absent from the file, so
    they are not rows here.

    Parameters
    ----------
    path : path-like
    split : {"train", "test"}, optional
        Keep only the official train (161,789 images) or test (107,859) split; the other
        split's lines are counted in ``dropped["other_split"]``.
    chunksize : int, optional
        Rows read at a time.

    Returns
    -------
    ImageLabels
        Image IDs int64 (sorted), label IDs the concept names (sorted).
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be None, 'train' or 'test', got {split!r}")
    columns = ["row", "concept"] + (["split"] if split else [])
    table = TableReader(path, columns, text=columns[1:], sep="\t", chunksize=chunksize)
    collector = _PairCollector()
    other_split = 0
    for frame in table.chunks():
        images = table.numbers(frame, "row", integer=True, minimum=0, what="row")
        labels = table.ids(frame, "concept")
        if split:
            mine = (frame["split"] == split).to_numpy(dtype=bool)
            other_split += int(len(mine) - np.count_nonzero(mine))
            images, labels = images[mine], labels[mine]
        collector.add(images, labels)
    built = collector.build()
    dropped = {"duplicates": built.duplicates["positives"]}
    if split:
        dropped["other_split"] = other_split
    return ImageLabels(
        built.matrices["positives"],
        built.image_ids,
        built.label_ids,
        dropped=dropped,
        source=path,
        copy=False,
    )
