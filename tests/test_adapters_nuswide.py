"""Tests for the NUS-WIDE official-layout readers: concept ground truth and 1k user tags."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from vse_recsys.adapters import DatasetFormatError, nuswide, read_nuswide, read_nuswide_tags

IMAGES = [
    "C:\\ImageData\\Flickr\\actor\\0001_2124494179.jpg",
    "actor\\0002_174174086.jpg",
    "airport\\0001_2198271234.jpg",
    "airport\\0002_221597162.jpg",
]
TRUTH = {"sky": [1, 0, 1, 0], "airport": [0, 0, 1, 0], "water": [1, 0, 0, 0]}


def make_release(root, truth=TRUTH, images=IMAGES, concepts_file=True, newline="\n"):
    (root / "ImageList").mkdir(parents=True)
    (root / "ImageList" / "Imagelist.txt").write_text(newline.join(images) + newline)
    labels = root / "Groundtruth" / "AllLabels"
    labels.mkdir(parents=True)
    for concept, column in truth.items():
        text = newline.join(str(value) for value in column) + newline
        (labels / f"Labels_{concept}.txt").write_bytes(text.encode())
    if concepts_file:
        (root / "Concepts81.txt").write_text("\n".join(truth) + "\n")
    return root


def expect_error(call, path, line, message):
    with pytest.raises(DatasetFormatError, match=message) as caught:
        call()
    assert caught.value.path == str(path) and caught.value.line == line
    assert str(caught.value).startswith(f"{path}, line {line}: " if line else f"{path}: ")


# -- concepts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_concepts_in_the_order_of_concepts81(tmp_path, newline):
    data = read_nuswide(make_release(tmp_path, newline=newline))
    assert list(data.label_ids) == ["sky", "airport", "water"]
    assert list(data.image_ids) == [0, 1, 2, 3]  # Imagelist rows; images without labels kept
    assert data.user_items.toarray().tolist() == [[1, 0, 1], [0, 0, 0], [1, 1, 0], [0, 0, 0]]


def test_concepts_sorted_by_name_without_concepts81(tmp_path):
    data = read_nuswide(make_release(tmp_path, concepts_file=False))
    assert list(data.label_ids) == ["airport", "sky", "water"]
    assert data.drop_empty_images().n_images == 2


def test_a_label_file_with_too_few_lines(tmp_path):
    root = make_release(tmp_path, truth={"sky": [1, 0, 1]})
    path = root / "Groundtruth" / "AllLabels" / "Labels_sky.txt"
    expect_error(lambda: read_nuswide(root), path, 4, r"the file has 3 lines; expected 4 lines")


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("1\n0\n2\n0\n", 3, r"unexpected character '2'"),
        ("1\n0\n10\n0\n", 3, r"a value other than 0 or 1"),
        ("1\n0\n1 1\n0\n", 3, r"2 values; expected 1 value 0 or 1 per line"),
        ("1\n\n1\n0\n", 2, r"blank line"),
        ("1\n0\nx\n0\n", 3, r"unexpected character 'x'"),
        ("", 1, r"the file is empty"),
    ],
)
def test_bad_label_files(tmp_path, text, line, message):
    root = make_release(tmp_path, truth={"sky": [0, 0, 0, 0]})
    path = root / "Groundtruth" / "AllLabels" / "Labels_sky.txt"
    path.write_text(text)
    expect_error(lambda: read_nuswide(root), path, line, message)


def test_trailing_blank_lines_and_spaces_are_fine(tmp_path):
    root = make_release(tmp_path, truth={"sky": [0, 0, 0, 0]})
    (root / "Groundtruth" / "AllLabels" / "Labels_sky.txt").write_text("1 \n0\n1\t\n0\n\n\n")
    assert read_nuswide(root).user_items.toarray().ravel().tolist() == [1, 0, 1, 0]


def test_missing_files_say_what_layout_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ImageList/Imagelist\.txt"):
        read_nuswide(tmp_path)
    root = make_release(tmp_path)
    (root / "Groundtruth" / "AllLabels" / "Labels_water.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"Labels_water\.txt for concept 'water'"):
        read_nuswide(root)


# -- the byte-level 0/1 parser ------------------------------------------------------------------


@given(
    st.integers(1, 30).flatmap(
        lambda n: st.tuples(st.integers(1, 6), st.integers(0, 2**32 - 1), st.just(n))
    ),
    st.sampled_from([" ", "\t", "  "]),
    st.integers(3, 64),
)
def test_binary_rows_parser_matches_numpy_across_blocks(tmp_path_factory, shape, space, block):
    width, seed, n_rows = shape
    values = np.random.default_rng(seed).integers(0, 2, size=(n_rows, width))
    path = tmp_path_factory.mktemp("bits") / "rows.txt"
    path.write_text("".join(space.join(map(str, row)) + "\n" for row in values))
    original = nuswide._BLOCK_BYTES
    nuswide._BLOCK_BYTES = block  # tiny blocks: lines straddle block boundaries
    try:
        n_lines, rows, cols = nuswide._read_binary_rows(path, width)
    finally:
        nuswide._BLOCK_BYTES = original
    assert n_lines == n_rows
    assert sorted(zip(rows.tolist(), cols.tolist())) == sorted(zip(*np.nonzero(values)))


# -- tags ---------------------------------------------------------------------------------------


def make_tags(root, rows, tags=("sky", "beach", "nikon")):
    folder = root / "NUS_WID_Tags"
    folder.mkdir(parents=True)
    (folder / "TagList1k.txt").write_text("\n".join(tags) + "\n")
    (folder / "AllTags1k.txt").write_text("".join(" ".join(map(str, r)) + " \n" for r in rows))
    return folder


def test_tags(tmp_path):
    make_tags(tmp_path, [[1, 0, 1], [0, 0, 0], [0, 1, 0]])
    data = read_nuswide_tags(tmp_path)
    assert list(data.label_ids) == ["sky", "beach", "nikon"]
    assert data.user_items.toarray().tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]


def test_tags_in_the_root_folder_and_counts_checked_against_imagelist(tmp_path):
    folder = make_tags(tmp_path, [[1, 0, 1], [0, 0, 0]])
    assert read_nuswide_tags(folder).n_images == 2  # files directly in the given folder
    (tmp_path / "ImageList").mkdir()
    (tmp_path / "ImageList" / "Imagelist.txt").write_text("a.jpg\nb.jpg\nc.jpg\n")
    expect_error(
        lambda: read_nuswide_tags(tmp_path),
        folder / "AllTags1k.txt",
        3,
        r"the file has 2 lines; expected 3 lines, one per image",
    )


def test_tags_bad_input(tmp_path):
    folder = make_tags(tmp_path, [[1, 0, 1], [0, 1]])
    expect_error(
        lambda: read_nuswide_tags(tmp_path),
        folder / "AllTags1k.txt",
        2,
        r"2 values; expected 3 values 0 or 1 per line",
    )
    (folder / "TagList1k.txt").write_text("sky\nsky\nsea\n")
    expect_error(
        lambda: read_nuswide_tags(tmp_path), folder / "TagList1k.txt", None, "'sky' is listed twice"
    )
