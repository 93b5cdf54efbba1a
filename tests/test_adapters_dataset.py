"""Tests for ``ImageLabels``: construction from pairs, round trips, lookups, summary, subsets."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from strategies import pair_lists

from vse_recsys.adapters import DatasetSummary, ImageLabels


def pair_set(images, labels):
    return set(zip(images, labels))


def canonical(matrix):
    """True when the matrix is as ImageLabels promises: float32 CSR, sorted, no dups/zeros."""
    return (
        isinstance(matrix, sp.csr_matrix)
        and matrix.dtype == np.float32
        and matrix.has_canonical_format
        and np.count_nonzero(matrix.data) == matrix.nnz
    )


# -- round trips --------------------------------------------------------------------------------


@given(pair_lists())
def test_pairs_round_trip_is_identity_up_to_order_and_duplicates(pairs):
    images, labels = pairs
    data = ImageLabels.from_pairs(images, labels)
    out = data.to_pairs()
    assert pair_set(out["image"], out["label"]) == pair_set(images, labels)
    assert data.n_pairs == len(pair_set(images, labels))
    assert data.dropped["duplicates"] == len(images) - data.n_pairs
    assert canonical(data.user_items)
    assert set(data.user_items.data) <= {1.0}
    assert data.n_images == len(set(images)) and data.n_labels == len(set(labels))


@given(pair_lists(), st.lists(st.integers(0, 3), min_size=40, max_size=40))
def test_weighted_pairs_sum_duplicates_and_drop_zero_weights(pairs, raw_weights):
    images, labels = pairs
    weights = raw_weights[: len(images)]
    data = ImageLabels.from_pairs(images, labels, weights, binary=False)
    expected = {}
    for pair in zip(images, labels, weights):
        expected[pair[:2]] = expected.get(pair[:2], 0) + pair[2]
    expected = {pair: total for pair, total in expected.items() if total}
    frame = data.to_pairs()
    assert dict(zip(zip(frame["image"], frame["label"]), frame["weight"])) == expected
    assert data.dropped["zero_weight"] == weights.count(0)
    # every ID is a row/column even if all its pairs had weight 0
    assert data.n_images == len(set(images))


def weighted_pairs(data):
    frame = data.to_pairs()
    return dict(zip(zip(frame["image"], frame["label"]), frame["weight"]))


@given(pair_lists(), st.lists(st.integers(1, 3), min_size=40, max_size=40))
def test_dataframe_round_trip_keeps_ids_and_weights(pairs, weights):
    data = ImageLabels.from_pairs(*pairs, weights[: len(pairs[0])], binary=False)
    again = ImageLabels.from_dataframe(data.to_pairs(), weight_col="weight", binary=False)
    assert weighted_pairs(again) == weighted_pairs(data)
    assert set(again.image_ids) == set(data.image_ids)


def test_ids_are_sorted_when_comparable_else_in_order_of_appearance():
    data = ImageLabels.from_pairs(["b", "a", "c"], [3, 1, 2])
    assert list(data.image_ids) == ["a", "b", "c"]
    assert list(data.label_ids) == [1, 2, 3]
    mixed = ImageLabels.from_pairs(["b", 1, "a"], ["x", "x", "y"])
    assert list(mixed.image_ids) == ["b", 1, "a"]


def test_tuple_ids_stay_single_ids():
    data = ImageLabels.from_pairs([(1, 2), (3, 4), (1, 2)], ["x", "y", "y"])
    assert data.n_images == 2
    assert data.image_index((3, 4)) == 1
    assert data.image_id(0) == (1, 2)


def test_binary_from_weights_drops_zeros_and_sets_ones():
    data = ImageLabels.from_pairs(["a", "a", "b"], ["x", "y", "x"], [2.5, 0, 1])
    assert data.user_items.toarray().tolist() == [[1, 0], [1, 0]]
    assert data.dropped == {"duplicates": 0, "zero_weight": 1}


def test_given_ids_fix_order_and_add_empty_rows():
    data = ImageLabels.from_pairs(
        ["b"], ["y"], image_ids=["c", "b", "a"], label_ids=["y", "x"], label_names=["Why", "Ex"]
    )
    assert data.user_items.toarray().tolist() == [[0, 0], [1, 0], [0, 0]]
    assert list(data.label_names) == ["Why", "Ex"]
    with pytest.raises(ValueError, match=r"label 'z' \(pair 1\) is not among the given label_ids"):
        ImageLabels.from_pairs(["b", "b"], ["y", "z"], label_ids=["y"])


def test_label_names_from_a_mapping_default_to_the_id():
    data = ImageLabels.from_pairs([1, 1], ["/m/01", "/m/02"], label_names={"/m/01": "Cat"})
    assert list(data.label_names) == ["Cat", "/m/02"]
    with pytest.raises(ValueError, match="label_names as a sequence needs label_ids"):
        ImageLabels.from_pairs([1], ["/m/01"], label_names=["Cat"])


@pytest.mark.parametrize(
    "images, labels, weights, message",
    [
        (["a", None], ["x", "y"], None, "image ID of pair 1 is missing"),
        (["a", "b"], ["x", float("nan")], None, "label ID of pair 1 is missing"),
        (["a"], ["x", "y"], None, "images has 1 entries but labels has 2"),
        (["a", "b"], ["x", "y"], [1, -1], "weight -1.0 of pair 1 is not a finite number >= 0"),
        (["a"], ["x"], [np.inf], "weight inf of pair 0"),
    ],
)
def test_bad_pairs_raise_naming_the_pair(images, labels, weights, message):
    with pytest.raises(ValueError, match=message):
        ImageLabels.from_pairs(images, labels, weights)


def test_from_dataframe_names_a_missing_column():
    with pytest.raises(ValueError, match=r"no column 'tag'; its columns are \['image', 'label'\]"):
        ImageLabels.from_dataframe(pd.DataFrame({"image": [1], "label": [2]}), label_col="tag")


# -- the constructor --------------------------------------------------------------------------


def test_constructor_canonicalises_and_counts_what_it_merges():
    coo = sp.coo_matrix(([1, 1, 0, 2], ([0, 0, 1, 1], [1, 1, 0, 1])), shape=(2, 3))
    data = ImageLabels(coo)
    assert canonical(data.user_items)
    assert data.user_items.toarray().tolist() == [[0, 2, 0], [0, 2, 0]]
    assert data.dropped == {"duplicates": 1, "zero_weight": 1}
    assert list(data.image_ids) == [0, 1] and list(data.label_names) == [0, 1, 2]
    assert coo.nnz == 4  # the input is not modified


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_ids=["a"]), "image_ids has 1 entries but the matrix has 2"),
        (dict(label_ids=["x", "x"]), "label_ids must be unique, but 'x' appears more than once"),
        (dict(label_names=["only one"]), "label_names has 1 entries, need 2"),
        (dict(negatives=sp.csr_matrix((3, 2))), r"negatives has shape \(3, 2\)"),
    ],
)
def test_constructor_rejects_inconsistent_ids(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageLabels(sp.csr_matrix(np.eye(2)), **kwargs)


def test_constructor_rejects_negative_values():
    with pytest.raises(ValueError, match="non-negative"):
        ImageLabels(sp.csr_matrix(np.array([[1.0, -1.0]])))


# -- sizes, summary ---------------------------------------------------------------------------


def small():
    return ImageLabels.from_pairs(
        ["a", "a", "b", "c", "c", "c"], ["x", "y", "x", "x", "y", "z"], image_ids=list("abcd")
    )


def test_sizes():
    data = small()
    assert (data.n_images, data.n_labels, data.n_pairs) == (4, 3, 6)
    assert data.density == pytest.approx(6 / 12)
    assert data.labels_per_image.tolist() == [2, 1, 3, 0]
    assert data.images_per_label.tolist() == [3, 2, 1]


def test_summary_counts_and_reads_well():
    data = ImageLabels.from_pairs(["a", "a", "b"], ["x", "x", "y"], image_ids=["a", "b", "c"])
    summary = data.summary()
    assert isinstance(summary, DatasetSummary)
    assert summary.images_without_labels == 1
    assert summary.images_with_2plus_labels == 0
    assert summary.dropped == {"duplicates": 1}
    text = str(summary)
    assert "images: 3 (1 without labels, 0 with >= 2)" in text
    assert "1 duplicates" in text
    assert repr(data) == "<ImageLabels: 3 images x 2 labels, 2 pairs>"


def test_summary_of_an_empty_dataset():
    summary = ImageLabels.from_pairs([], []).summary()
    assert summary.n_pairs == 0 and summary.density == 0.0
    assert "pairs:  0" in str(summary)


# -- lookups ------------------------------------------------------------------------------------


def test_lookups_both_ways():
    data = small()
    assert data.image_index("c") == 2
    assert data.image_index(["d", "a"]).tolist() == [3, 0]
    assert data.label_index("y") == 1
    assert data.image_id(1) == "b"
    assert data.label_id([2, 0]).tolist() == ["z", "x"]


def test_unknown_ids_raise_key_error_naming_the_id():
    data = small()
    with pytest.raises(KeyError, match="unknown image ID 'q': the dataset has 4 images"):
        data.image_index("q")
    with pytest.raises(KeyError, match=r"unknown label ID 'q' \(and 1 more\): the dataset"):
        data.label_index(["x", "q", "w"])
    with pytest.raises(KeyError, match="image ID 1"):
        data.image_index(1)  # IDs are not positions
    assert data.label_index(["x", "q"], missing="ignore").tolist() == [0, -1]


def test_positions_out_of_range_raise_index_error():
    with pytest.raises(IndexError, match=r"image index 4 is out of range 0..3"):
        small().image_id(4)
    with pytest.raises(IndexError, match="label index -1"):
        small().label_id([-1])


# -- subsets ------------------------------------------------------------------------------------


def test_subset_keeps_ids_names_and_negatives_aligned():
    data = ImageLabels(
        sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0]])),
        ["i", "j"],
        ["x", "y", "z"],
        ["X", "Y", "Z"],
        negatives=sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 0]])),
    )
    part = data.subset(images=[1], labels=[2, 0])
    assert list(part.image_ids) == ["j"] and list(part.label_names) == ["Z", "X"]
    assert part.user_items.toarray().tolist() == [[0, 0]]
    assert part.negatives.toarray().tolist() == [[0, 1]]


def test_drop_empty_images_counts_them():
    data = small().drop_empty_images()
    assert list(data.image_ids) == ["a", "b", "c"]
    assert data.dropped["empty_images"] == 1
    assert "1 empty_images" in str(data.summary())
