"""``Annotator``: a model with its IDs and names — lookups, tagging known and new images,
similar labels, held-out evaluation, and its file."""

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from vse_recsys import VSEEns
from vse_recsys._npz import FORMAT_VERSION
from vse_recsys.adapters import ImageLabels, generate_image_labels, leave_one_out_split
from vse_recsys.annotator import Annotator, ModelFileError, Tags, tags_table
from vse_recsys.evaluation import ranking_metrics


@pytest.fixture(scope="module")
def named():
    """An Annotator over text IDs and names: bookmarks x tags."""
    data = generate_image_labels(n_images=300, n_labels=30, random_state=1)
    pairs = data.to_pairs()
    text = ImageLabels.from_pairs(
        [f"b{image}" for image in pairs["image"]],
        [f"t{label}" for label in pairs["label"]],
        label_names={f"t{label}": f"tag {label}" for label in range(30)},
    )
    return Annotator.from_dataset(text, factors=8, iterations=5, num_threads=1,
                                  random_state=0).fit(show_progress=False)


@pytest.fixture(scope="module")
def numbered():
    """An Annotator over integer IDs (as most files give them), with a held-out split."""
    data = generate_image_labels(n_images=400, n_labels=40, labels_per_image=4, random_state=2)
    train, test = leave_one_out_split(data, random_state=0)
    annotator = Annotator(VSEEns(factors=8, iterations=5, num_threads=1, random_state=0),
                          data.label_ids, data.label_names, data.image_ids, train)
    return annotator.fit(show_progress=False), data, test
def test_annotator_round_trip_keeps_ids_names_and_suggestions(named, tmp_path):
    path = named.save(tmp_path / "named")
    assert path.name == "named.npz" and oct(path.stat().st_mode & 0o777) != "0o600"
    loaded = Annotator.load(path)
    assert list(loaded.image_ids) == list(named.image_ids)
    assert list(loaded.label_ids) == list(named.label_ids)
    assert list(loaded.label_names) == list(named.label_names)
    assert (loaded.user_items != named.user_items).nnz == 0
    image = named.image_ids[5]
    assert loaded.tag([image], N=4) == named.tag([image], N=4)
    assert loaded.tag_new([["t1", "tag 2"]], N=3) == named.tag_new([["t1", "tag 2"]], N=3)


def test_annotator_lookups_by_id_and_name(named):
    assert named.label_index("t3") == named.label_index("tag 3")
    assert list(named.label_index(["t1", "tag 2"])) == [named.label_index("t1"),
                                                        named.label_index("t2")]
    with pytest.raises(KeyError, match="did you mean"):
        named.label_index("t300")
    with pytest.raises(KeyError, match="unknown image ID 'x'"):
        named.image_index("x")
    (tags,) = named.tag([named.image_ids[0]], N=100)  # more than there are candidates
    assert len(tags.labels) == named.n_labels - len(tags.known)
    assert not set(tags.labels) & set(tags.known)


def test_similar_labels_uses_names_and_leaves_the_label_out(named):
    similar = named.similar_labels("tag 4", N=5)
    assert len(similar) == 5
    assert "t4" not in [label for label, _, _ in similar]
    assert all(name == f"tag {label[1:]}" for label, name, _ in similar)
    assert [s for *_, s in similar] == sorted((s for *_, s in similar), reverse=True)


def test_load_refuses_a_newer_format_and_names_the_versions(named, tmp_path):
    path = named.save(tmp_path / "m.npz")
    with np.load(path) as stored:
        arrays = dict(stored)
    np.savez(tmp_path / "newer.npz", **{**arrays, "format_version": np.array(7)})
    with pytest.raises(ModelFileError,
                       match=rf"format version 7, newer .*\(up to version {FORMAT_VERSION}\)"):
        Annotator.load(tmp_path / "newer.npz")
    del arrays["format_version"]
    np.savez(tmp_path / "unversioned.npz", **arrays)
    with pytest.raises(ModelFileError, match="no format_version"):
        Annotator.load(tmp_path / "unversioned.npz")




def test_known_labels_are_the_training_labels_by_id(named):
    image = named.image_ids[3]
    row = named.user_items[named.image_index(image)]
    assert named.known_labels(image) == [str(v) for v in named.label_ids[row.indices]]
    assert named.known_labels(image) and all(isinstance(v, str) for v in named.known_labels(image))
    with pytest.raises(KeyError, match="unknown image ID 'nope'"):
        named.known_labels("nope")


def test_integer_ids_are_found_from_their_text(numbered):
    annotator, data, _ = numbered
    image = int(data.image_ids[7])
    assert annotator.image_index(str(image)) == annotator.image_index(image) == 7
    assert annotator.image_index(np.int64(image)) == 7
    with pytest.raises(KeyError, match="unknown image ID '007'"):  # not an integer ID
        annotator.image_index("007")
    assert annotator.image_index(["7", "x"], missing="ignore").tolist() == [7, -1]


def test_tag_new_reports_unknown_labels_or_skips_them_with_a_warning(named):
    with pytest.raises(KeyError, match="new image 'new-1': unknown label 'tx'"):
        named.tag_new([["t1", "tx"]])
    with pytest.warns(UserWarning, match="left out 1 unknown label"):
        (tags,) = named.tag_new([["t1", "tx"]], N=3, skip_unknown=True)
    assert tags.known == ["t1"] and len(tags.labels) == 3
    with pytest.raises(ValueError, match="has no known label"):
        named.tag_new([[]])


def test_tag_new_from_pairs_names_images_by_their_ids(named):
    pairs = ImageLabels.from_pairs(["a", "a", "b"], ["t1", "tag 2", "t5"])
    results = named.tag_new(pairs, N=4)
    assert [t.image for t in results] == ["a", "b"]
    assert results[0].known == ["t1", "t2"] and results[1].known == ["t5"]
    assert results[0].labels == named.tag_new([["t1", "t2"]], N=4)[0].labels


@pytest.mark.parametrize("include_known", [False, True])
def test_tag_new_table_is_the_table_of_tag_new(named, numbered, include_known):
    # the array-built table (what Dask tasks write) equals the one made from the Tags objects,
    # for text and integer IDs, with an image that has every label but two (fewer than N left)
    annotator, data, _ = numbered
    every_label_but_two = [(7, label) for label in data.label_ids[2:]]
    for model, pairs, rows in (
            (named, ImageLabels.from_pairs(["a", "a", "b", "c"], ["t1", "tag 2", "t5", "t3"]),
             3 * 4),
            (annotator, ImageLabels.from_pairs(*zip((5, 1), (5, 3), (6, 2),
                                                    *every_label_but_two)),
             2 * 4 + (4 if include_known else 2))):
        expected = tags_table(model.tag_new(pairs, N=4, include_known=include_known),
                              image_dtype=pairs.image_ids.dtype,
                              label_dtype=model.label_ids.dtype)
        table = model.tag_new_table(pairs, N=4, include_known=include_known)
        pd.testing.assert_frame_equal(table, expected)
        assert len(table) == rows


def test_suggest_keeps_the_input_order_and_numbers_the_label_lists(named):
    pairs = ImageLabels.from_pairs(["z"], ["t7"])
    image = named.image_ids[0]
    results = named.suggest([image], [["t1"], pairs, ["t2"]], N=2)
    assert [t.image for t in results] == [image, "new-1", "z", "new-2"]
    assert all(isinstance(t, Tags) and len(t.labels) == 2 for t in results)
    assert results[0] == named.tag([image], N=2)[0]


def test_tag_warns_about_images_without_training_labels(numbered):
    annotator, data, _ = numbered
    rows = annotator.user_items.tolil()
    rows[0] = 0
    empty = Annotator(annotator.model, data.label_ids, data.label_names, data.image_ids,
                      rows.tocsr())
    with pytest.warns(UserWarning, match="1 image.* had no label in training"):
        empty.tag([data.image_ids[0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty.tag([data.image_ids[1]])


def test_evaluate_on_held_out_pairs_equals_ranking_metrics(numbered):
    annotator, data, test = numbered
    coo = test.tocoo()
    pairs = ImageLabels.from_pairs(data.image_ids[coo.row], data.label_ids[coo.col])
    metrics = annotator.evaluate(pairs, K=(5,))
    expected = ranking_metrics(annotator.model, annotator.user_items, test, K=(5,))
    assert metrics == pytest.approx(expected)
    trained = ImageLabels.from_pairs([data.image_ids[0]],
                                     [data.label_ids[annotator.user_items[0].indices[0]]])
    with pytest.raises(ValueError, match="are training labels of the model"):
        annotator.evaluate(trained)


def test_leave_one_out_refits_a_fresh_model_with_the_same_parameters(numbered):
    annotator, data, _ = numbered
    before = annotator.model.user_factors.copy()
    metrics, held_out = annotator.evaluate_leave_one_out(data, K=(5,), random_state=0)
    train, test = leave_one_out_split(data, random_state=0)
    fresh = VSEEns(**annotator.model.get_params()).fit(train, show_progress=False)
    assert held_out == test.nnz
    assert metrics == pytest.approx(ranking_metrics(fresh, train, test, K=(5,)))
    np.testing.assert_array_equal(annotator.model.user_factors, before)  # the model is kept


def test_a_bare_model_file_is_refused_with_how_to_use_it(tmp_path):
    model = VSEEns(factors=2, iterations=1, early_stopping=False, random_state=0)
    model.fit(sp.csr_matrix(np.eye(3, dtype=np.float32)), show_progress=False)
    model.save(tmp_path / "bare.npz")
    with pytest.raises(ModelFileError, match="a bare VSEEns model .*VSEEns.load"):
        Annotator.load(tmp_path / "bare.npz")
    assert FORMAT_VERSION >= 3


def test_warnings_print_integer_ids_as_plain_numbers(numbered):
    annotator, _, _ = numbered
    new = ImageLabels.from_pairs(np.array([5, 5, 6], dtype=np.int64),
                                 np.array([1, 888888, 999999], dtype=np.int64))
    with pytest.warns(UserWarning) as caught:
        annotator.tag_new(new, N=3, skip_unknown=True)
    messages = " | ".join(str(warning.message) for warning in caught)
    assert "e.g. 888888" in messages and "e.g. 6" in messages  # the label, the empty image
    assert "np." not in messages and "int64" not in messages
