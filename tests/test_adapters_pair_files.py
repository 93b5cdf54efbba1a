"""Tests for the pair-table readers: generic pairs, MovieLens, Open Images, NUS-WIDE pairs."""

import gzip
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import file_pair_lists

from vse_recsys.adapters import (
    DatasetFormatError,
    read_movielens,
    read_nuswide_pairs,
    read_openimages,
    read_pairs,
)


def pairs_of(data):
    frame = data.to_pairs()
    return set(zip(frame["image"].tolist(), frame["label"].tolist()))


def expect_error(call, path, line, message):
    """`call()` raises a DatasetFormatError whose message starts with `path`, line `line`."""
    with pytest.raises(DatasetFormatError) as caught:
        call()
    assert isinstance(caught.value, ValueError)
    text = str(caught.value)
    where = f"{path}, line {line}: " if line is not None else f"{path}: "
    assert text.startswith(where), text
    assert re.search(message, text), text
    assert caught.value.line == line


def write_text(path, text):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.write(text)
    return path


# -- read_pairs ---------------------------------------------------------------------------------


@given(
    file_pair_lists(),
    st.sampled_from(["pairs.csv", "pairs.tsv", "pairs.tsv.gz", "pairs.txt"]),
    st.integers(1, 7),
)
def test_read_pairs_round_trip(tmp_path_factory, pairs, name, chunksize):
    images, labels = pairs
    path = tmp_path_factory.mktemp("pairs") / name
    frame = pd.DataFrame({"note": "x", "img": images, "lab": labels})
    frame.to_csv(path, sep="," if name.endswith(".csv") else "\t", index=False)
    data = read_pairs(path, "img", "lab", chunksize=chunksize)
    assert pairs_of(data) == set(zip(images, labels))
    assert data.dropped["duplicates"] == len(images) - data.n_pairs
    assert data.n_images == len(set(images))
    # all-integer IDs come back as int64, any other text as str
    assert all(isinstance(i, (int, np.integer)) for i in data.image_ids) == all(
        isinstance(i, int) for i in images
    )


def test_read_pairs_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "pairs.parquet"
    pd.DataFrame({"i": [3, 1, 3, 3], "l": ["a", "b", "a", "c"], "w": [1.0, 2, 3, 0]}).to_parquet(
        path
    )
    data = read_pairs(path, "i", "l", "w", chunksize=3, binary=False)
    assert list(data.image_ids) == [1, 3]
    assert data.user_items.toarray().tolist() == [[0, 2, 0], [4, 0, 0]]
    assert data.dropped == {"duplicates": 1, "zero_weight": 1}
    with pytest.raises(DatasetFormatError, match=r"pairs\.parquet, row 1: no column 'x'"):
        read_pairs(path, "i", "x")


def test_a_folder_of_parquet_parts_is_read_as_one_table(tmp_path):
    pytest.importorskip("pyarrow")
    from vse_recsys.adapters import read_any

    folder = tmp_path / "dataset"
    (folder / "day=1").mkdir(parents=True)
    pd.DataFrame({"image": [3, 1], "label": ["a", "b"]}).to_parquet(folder / "day=1" / "p0.parquet")
    pd.DataFrame({"image": [3, 2, 2], "label": ["a", "c", "a"]}).to_parquet(folder / "p1.parquet")
    (folder / "_SUCCESS").write_text("")  # Spark's marker, not a part
    data = read_pairs(folder, "image", "label", chunksize=2, show_progress=True)
    assert list(data.image_ids) == [1, 2, 3] and list(data.label_ids) == ["a", "b", "c"]
    assert data.user_items.toarray().tolist() == [[0, 1, 0], [1, 0, 1], [1, 0, 0]]
    assert data.dropped == {"duplicates": 1}  # (3, a) is in both parts
    from vse_recsys.adapters._tables import TableReader

    assert TableReader(folder, ["image", "label"]).rows == 5  # the progress bar's total
    auto = read_any(folder)  # a folder of parts is recognised as pairs
    assert (auto.user_items != data.user_items).nnz == 0
    pd.DataFrame({"image": [None], "label": ["a"]}).to_parquet(folder / "p2.parquet")
    with pytest.raises(DatasetFormatError, match=r"p2\.parquet, row 1: missing 'image ID'"):
        read_pairs(folder, "image", "label")
    pd.DataFrame({"img": [1], "label": ["a"]}).to_parquet(folder / "p2.parquet")
    with pytest.raises(DatasetFormatError, match=r"p2\.parquet: no column 'image'"):
        read_pairs(folder, "image", "label")


def test_a_folder_without_parts_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder without .parquet files"):
        read_pairs(tmp_path, "image", "label")


def test_read_pairs_weights_and_headerless_positions(tmp_path):
    path = write_text(tmp_path / "p.csv", "a,x,1\na,x,2\nb,y,0\nb,z,0.5\n")
    binary = read_pairs(path, 0, 1, 2, header=False)
    assert binary.user_items.toarray().tolist() == [[1, 0, 0], [0, 0, 1]]
    assert list(binary.label_ids) == ["x", "y", "z"]  # y is a column although its weight is 0
    weighted = read_pairs(path, 0, 1, 2, header=False, binary=False)
    assert weighted.user_items.toarray().tolist() == [[3, 0, 0], [0, 0, 0.5]]
    assert weighted.dropped == {"duplicates": 1, "zero_weight": 1}


def test_read_pairs_keeps_words_that_look_like_missing_values(tmp_path):
    path = write_text(tmp_path / "p.tsv", "image\tlabel\nNA\tnull\n007\tNaN\n7\tNone\n")
    data = read_pairs(path, "image", "label")
    assert pairs_of(data) == {("NA", "null"), ("007", "NaN"), ("7", "None")}


def test_read_pairs_separator_guessed_from_the_first_line(tmp_path):
    path = write_text(tmp_path / "p.data", "img\ttag\n1\tsky\n")
    assert pairs_of(read_pairs(path, "img", "tag")) == {(1, "sky")}


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("", 1, r"the file is empty; expected a header naming the columns 'img', 'tag'"),
        ("img,tag\n", None, r"the file has no data rows"),
        ("img,label\n1,a\n", 1, r"no column 'tag' \(the header has 'img', 'label'\)"),
        ("img,tag\n1,a\n2,b,c\n", 3, r"3 fields; expected 2 fields"),
        ("img,tag\n1,a\n\n\n,b\n", 5, r"missing 'image ID'; expected an ID in column 'img'"),
        ("img,tag\n1,a\n2\n", 3, r"missing 'label ID'"),
    ],
)
def test_read_pairs_bad_input(tmp_path, text, line, message):
    path = write_text(tmp_path / "p.csv", text)
    expect_error(lambda: read_pairs(path, "img", "tag", chunksize=1), path, line, message)


@pytest.mark.parametrize(
    "row, message",
    [("c,z,x", r"weight is 'x'; expected a number >= 0"), ("c,z,-1", r"weight is '-1'")],
)
def test_read_pairs_bad_weight(tmp_path, row, message):
    path = write_text(tmp_path / "p.csv", f"img,tag,w\na,x,1\nb,y,2\n{row}\n")
    expect_error(lambda: read_pairs(path, "img", "tag", "w", chunksize=2), path, 4, message)


def test_integer_ids_up_to_19_digits_stay_integers(tmp_path):
    big = 2**63 - 1  # the largest int64: 19 digits
    path = tmp_path / "big.csv"
    path.write_text(f"image,label\n{big},5\n-{big},7\n12,5\n")
    data = read_pairs(path, "image", "label")
    assert data.image_ids.dtype == np.int64 and data.label_ids.dtype == np.int64
    assert data.image_ids.tolist() == [-big, 12, big]
    path.write_text(f"image,label\n{big + 1},5\n12,5\n")  # beyond int64: all text
    beyond = read_pairs(path, "image", "label")
    assert beyond.image_ids.dtype.kind == "O" and str(big + 1) in list(beyond.image_ids)


@pytest.mark.parametrize("sep", ["tab", "TAB", "\\t", "\t"])
def test_a_tab_separator_can_be_named(tmp_path, sep):
    path = tmp_path / "pairs.txt"
    path.write_text("image\tlabel\na\tx\nb\ty\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pandas engine fallback
        data = read_pairs(path, "image", "label", sep=sep)
    assert list(data.image_ids) == ["a", "b"] and data.n_pairs == 2


@pytest.mark.parametrize("sep", ["::", "ab", ""])
def test_a_separator_of_several_characters_is_refused(tmp_path, sep):
    path = tmp_path / "pairs.txt"
    path.write_text("image,label\na,x\n")
    with pytest.raises(ValueError, match="separator must be one character"):
        read_pairs(path, "image", "label", sep=sep)


def test_read_pairs_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_pairs(tmp_path / "nope.csv", "a", "b")


# -- MovieLens ----------------------------------------------------------------------------------

RATINGS = [(1, 10, 5), (1, 20, 3), (2, 10, 4), (2, 30, 1), (3, 20, 2)]  # user 3: no rating >= 4


def check_movielens(data):
    assert list(data.image_ids) == [1, 2, 3] and list(data.label_ids) == [10, 20, 30]
    assert data.user_items.toarray().tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert data.dropped == {"below_min_rating": 3, "duplicates": 0}


def test_movielens_100k_layout(tmp_path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    write_text(folder / "u.data", "".join(f"{u}\t{i}\t{r}\t88125{u}\n" for u, i, r in RATINGS))
    check_movielens(read_movielens(folder / "u.data"))
    check_movielens(read_movielens(folder))  # a folder is searched for the ratings file
    assert read_movielens(folder, min_rating=None).n_pairs == 5


def test_movielens_dat_layout(tmp_path):
    path = write_text(
        tmp_path / "ratings.dat", "".join(f"{u}::{i}::{r}::97830\n" for u, i, r in RATINGS)
    )
    check_movielens(read_movielens(path))


def test_movielens_csv_layout_with_half_stars(tmp_path):
    rows = "".join(f"{u},{i},{r - 0.5 if r == 4 else r},1\n" for u, i, r in RATINGS)
    path = write_text(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n" + rows)
    data = read_movielens(path, min_rating=3.5)
    assert data.n_pairs == 2 and data.dropped["below_min_rating"] == 3


def test_movielens_layout_detected_from_the_first_line(tmp_path):
    path = write_text(
        tmp_path / "ratings.txt", "".join(f"{u}::{i}::{r}::0\n" for u, i, r in RATINGS)
    )
    check_movielens(read_movielens(path))
    check_movielens(read_movielens(path, layout="dat"))


@pytest.mark.parametrize(
    "name, text, line, message",
    [
        ("u.data", "1\t2\t5\t0\n1\t3\tfive\t0\n", 2, r"rating is 'five'; expected a number"),
        ("u.data", "1\t2\t5\t0\n1\t3\t5\t0\t9\n", 2, r"5 fields; expected 4 fields"),
        ("u.data", "1\t2\t5\n", 1, r"3 fields; expected 4 fields"),
        ("u.data", "1\t2\t5\t0\nx\t3\t5\t0\n", 2, r"user ID is 'x'; expected an integer"),
        ("ratings.dat", "1::2::5::0\n1::2.5::5::0\n", 2, r"item ID is '2.5'; expected an integer"),
        ("ratings.csv", "userId,itemId,rating\n", 1, r"no column 'movieId'"),
        ("u.data", "", 1, r"the file is empty"),
    ],
)
def test_movielens_bad_input(tmp_path, name, text, line, message):
    path = write_text(tmp_path / name, text)
    expect_error(lambda: read_movielens(path), path, line, message)


def test_movielens_unknown_layout(tmp_path):
    with pytest.raises(ValueError, match="layout must be 'auto' or one of"):
        read_movielens(write_text(tmp_path / "u.data", "1\t2\t3\t4\n"), layout="xml")


# -- Open Images --------------------------------------------------------------------------------

OPEN_IMAGES = """ImageID,Source,LabelName,Confidence
000002b66c9c498e,verification,/m/014j1m,1
000002b66c9c498e,verification,/m/0271t,0
000002b66c9c498e,crowdsource-verification,/m/014j1m,1
000002b97e5471a0,verification,/m/05z6w,0.6
000002b97e5471a0,machine,/m/0271t,0.3
00000c4e7ec7e1d8,verification,/m/0271t,0
"""


def test_open_images_positives_negatives_and_low_confidence(tmp_path):
    labels = write_text(tmp_path / "labels.csv", OPEN_IMAGES)
    data = read_openimages(labels)
    assert list(data.image_ids) == ["000002b66c9c498e", "000002b97e5471a0", "00000c4e7ec7e1d8"]
    assert list(data.label_ids) == ["/m/014j1m", "/m/0271t", "/m/05z6w"]
    assert data.user_items.toarray().tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    assert data.dropped == {"duplicates": 1, "low_confidence": 1, "negatives": 2}
    assert data.negatives is None
    kept = read_openimages(labels, keep_negatives=True)
    assert kept.negatives.toarray().tolist() == [[0, 1, 0], [0, 0, 0], [0, 1, 0]]
    assert kept.dropped == {"duplicates": 1, "low_confidence": 1, "duplicate_negatives": 0}
    assert "verified negatives kept: 2" in str(kept.summary())


@pytest.mark.parametrize("header", ["", "LabelName,DisplayName\n"])
def test_open_images_class_names_with_or_without_header(tmp_path, header):
    labels = write_text(tmp_path / "labels.csv", OPEN_IMAGES)
    names = write_text(
        tmp_path / "names.csv", header + '/m/014j1m,Apple\n/m/0271t,Drink\n/m/05z6w,"Tea, iced"\n'
    )
    data = read_openimages(labels, names)
    assert list(data.label_names) == ["Apple", "Drink", "Tea, iced"]


def test_open_images_unnamed_labels_keep_their_mid_with_a_warning(tmp_path):
    labels = write_text(tmp_path / "labels.csv", OPEN_IMAGES)
    names = write_text(tmp_path / "names.csv", "/m/014j1m,Apple\n")
    with pytest.warns(UserWarning, match="2 of 3 labels .* have no name"):
        data = read_openimages(labels, names)
    assert list(data.label_names) == ["Apple", "/m/0271t", "/m/05z6w"]


def test_open_images_bad_input(tmp_path):
    path = write_text(tmp_path / "boxes.csv", "ImageID,LabelName,XMin\nx,/m/1,0.5\n")
    expect_error(lambda: read_openimages(path), path, 1, r"no column 'Confidence'")
    path = write_text(tmp_path / "labels.csv", "ImageID,LabelName,Confidence\nx,/m/1,high\n")
    expect_error(lambda: read_openimages(path), path, 2, r"Confidence is 'high'")
    with pytest.raises(ValueError, match="min_confidence must be > 0"):
        read_openimages(path, min_confidence=0)


# -- NUS-WIDE pairs -----------------------------------------------------------------------------

NUSWIDE_PAIRS = """row\tsplit\tsplit_row\tcsv_image_id\tconcept
0\ttrain\t0\t111\tsky
0\ttrain\t0\t111\tclouds
2\ttest\t0\t111\tsky
5\ttrain\t1\t\twater
"""


def test_nuswide_pairs_use_row_as_the_image_id(tmp_path):
    path = write_text(tmp_path / "nuswide81_pairs.tsv.gz", NUSWIDE_PAIRS)
    data = read_nuswide_pairs(path)
    assert list(data.image_ids) == [0, 2, 5]  # csv_image_id (repeated, even empty) is ignored
    assert list(data.label_ids) == ["clouds", "sky", "water"]
    assert data.user_items.toarray().tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    train = read_nuswide_pairs(path, split="train")
    assert list(train.image_ids) == [0, 5]
    assert train.dropped == {"duplicates": 0, "other_split": 1}


def test_nuswide_pairs_bad_input(tmp_path):
    path = write_text(tmp_path / "p.tsv.gz", NUSWIDE_PAIRS + "x\ttest\t1\t2\tsky\n")
    expect_error(lambda: read_nuswide_pairs(path), path, 6, r"row is 'x'; expected an integer >= 0")
    path = write_text(tmp_path / "q.tsv", "row\tsplit\n0\ttrain\n")
    expect_error(lambda: read_nuswide_pairs(path), path, 1, r"no column 'concept'")
    with pytest.raises(ValueError, match="split must be None, 'train' or 'test'"):
        read_nuswide_pairs(path, split="val")


def test_warnings_are_not_raised_for_clean_files(tmp_path):
    path = write_text(tmp_path / "p.csv", "img,tag\n1,a\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_pairs(path, "img", "tag")
