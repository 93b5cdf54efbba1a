"""EASE: the closed form against a NumPy reference, the implicit contract, files, bad input and
the memory refusal."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import assume, given
from hypothesis import strategies as st

from contract import ModelContract
from strategies import random_labels
from vse_recsys import EASE
from vse_recsys._npz import ModelFileError
from vse_recsys.evaluation import ranking_metrics, score_metrics
from vse_recsys.memory import InsufficientMemoryError


def reference_weights(user_items, regularization):
    """Steck's closed form, written out with a dense float64 solve."""
    X = user_items.toarray().astype(np.float64)
    P = np.linalg.inv(X.T @ X + regularization * np.eye(X.shape[1]))
    B = -P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    return B


@given(
    seed=st.integers(0, 2**16),
    shape=st.tuples(st.integers(1, 60), st.integers(1, 40)),
    density=st.floats(0.02, 0.6),
    regularization=st.sampled_from([0.1, 1.0, 10.0, 500.0]),
)
def test_weights_match_the_dense_reference(seed, shape, density, regularization):
    user_items = sp.random(*shape, density=density, format="csr", random_state=seed,
                           dtype=np.float32)
    user_items.data[:] = 1
    assume(user_items.nnz > 0)
    model = EASE(regularization=regularization, dtype=np.float64).fit(user_items,
                                                                    show_progress=False)
    B = reference_weights(user_items, regularization)
    np.testing.assert_allclose(model.item_factors.T, B, rtol=1e-7, atol=1e-9)
    assert not np.diag(model.item_factors).any()


def test_float32_weights_and_scores_are_the_label_row_times_b():
    user_items = random_labels(n_images=400, n_labels=50)
    model = EASE(regularization=5.0).fit(user_items, show_progress=False)
    assert model.item_factors.dtype == np.float32 and model.user_factors is None
    B = reference_weights(user_items, 5.0)
    np.testing.assert_allclose(model.item_factors.T, B, rtol=1e-4, atol=1e-6)
    ids, scores = model.recommend(7, user_items[7], N=50, filter_already_liked_items=False)
    expected = user_items[7].toarray()[0] @ B
    np.testing.assert_allclose(scores, expected[ids], rtol=1e-4, atol=1e-6)
    assert (np.diff(scores) <= 0).all()  # best first


def test_a_new_image_is_scored_from_its_labels_alone():
    user_items = random_labels(n_images=300, n_labels=40)
    model = EASE(regularization=2.0).fit(user_items, show_progress=False)
    new = sp.csr_matrix(([1.0, 1.0], ([0, 0], [3, 8])), shape=(1, 40))
    alone = model.recommend(0, new, N=5)
    in_batch = model.recommend(np.arange(3), sp.vstack([user_items[5], new, user_items[2]]).tocsr(),
                               N=5)
    np.testing.assert_array_equal(alone[0], in_batch[0][1])
    np.testing.assert_allclose(alone[1], in_batch[1][1])
    assert not {3, 8} & set(alone[0])


def test_large_batches_are_scored_in_slices_with_the_same_results(monkeypatch):
    import vse_recsys.ease as ease

    user_items = random_labels(n_images=500, n_labels=30)
    model = EASE().fit(user_items, show_progress=False)
    whole = model.recommend(np.arange(500), user_items, N=4)
    monkeypatch.setattr(ease, "_RECOMMEND_BATCH", 64)
    sliced = model.recommend(np.arange(500), user_items, N=4)
    np.testing.assert_array_equal(whole[0], sliced[0])
    np.testing.assert_allclose(whole[1], sliced[1], rtol=1e-6)  # (BLAS blocks round apart)


def test_evaluation_scores_from_the_training_rows():
    user_items = random_labels(n_images=400, n_labels=40)
    train = user_items.tolil()
    held = {}
    for image in range(0, 400, 3):
        labels = user_items[image].indices
        if len(labels) >= 2:
            train[image, labels[0]] = 0
            held[image] = labels[0]
    train = train.tocsr()
    train.eliminate_zeros()
    rows, cols = zip(*held.items())
    test = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=train.shape)
    model = EASE(regularization=3.0).fit(train, show_progress=False)
    B = reference_weights(train, 3.0).astype(np.float32)
    expected = score_metrics(lambda ids: train[ids].toarray() @ B, train, test, K=(5,))
    assert ranking_metrics(model, train, test, K=(5,)) == pytest.approx(expected, rel=1e-5)


def test_an_unused_label_scores_zero_and_regularization_keeps_the_solve_defined():
    user_items = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32))
    model = EASE(regularization=1e-6).fit(user_items, show_progress=False)
    assert np.isfinite(model.item_factors).all()
    assert not model.item_factors[2].any() and not model.item_factors[:, 2].any()


class TestEaseContract(ModelContract):
    @classmethod
    def make_model(cls, **overrides):
        return EASE(**{"regularization": 1.0, "num_threads": 1, **overrides})


@pytest.mark.parametrize(
    "user_items, error, message",
    [
        (np.ones((3, 3)), ValueError, "must be a scipy.sparse CSR matrix"),
        (sp.csr_matrix(np.array([[1.0, -1.0]])), ValueError, "negative values"),
        (sp.csr_matrix(np.array([[1.0, np.nan]])), ValueError, "NaN or infinite"),
        (sp.csr_matrix((4, 5)), ValueError, "no positive entries"),
        (sp.csr_matrix((4, 0)), ValueError, "at least one image and one label"),
    ],
    ids=["dense", "negative", "nan", "empty", "no-labels"],
)
def test_bad_training_matrices_are_explained(user_items, error, message):
    with pytest.raises(error, match=message):
        EASE().fit(user_items, show_progress=False)


@pytest.mark.parametrize("regularization", [0, -1.0, float("nan"), "ten"])
def test_bad_regularization_is_refused_before_any_work(regularization):
    with pytest.raises(ValueError, match="regularization must be"):
        EASE(regularization=regularization).fit(random_labels(), show_progress=False)


def test_duplicates_and_coo_input_are_reported():
    user_items = random_labels().tocoo()
    with pytest.warns(UserWarning, match="COO matrix; converting it to CSR"):
        model = EASE().fit(user_items, show_progress=False)
    np.testing.assert_array_equal(
        model.item_factors, EASE().fit(user_items.tocsr(), show_progress=False).item_factors)


def test_memory_refusal_names_the_labels_and_suggests_vseens(monkeypatch):
    import vse_recsys.memory as memory

    monkeypatch.setattr(memory, "available_memory", lambda: 2 * 2**30)
    user_items = sp.csr_matrix(([1.0], ([0], [99_999])), shape=(1, 100_000))
    with pytest.raises(InsufficientMemoryError, match=r"100,000 labels.*VSEEns") as caught:
        EASE().fit(user_items, show_progress=False)
    assert "GiB" in str(caught.value)
    estimate = EASE().estimate_memory(1, 100_000, 1)
    assert estimate.total > 12 * 100_000**2  # tens of GB: the Gram matrix and B


def test_save_load_round_trip_and_damaged_weights(tmp_path):
    user_items = random_labels(n_images=200, n_labels=20)
    model = EASE(regularization=7.0).fit(user_items, show_progress=False)
    path = tmp_path / "ease.npz"
    model.save(path)
    loaded = EASE.load(path)
    np.testing.assert_array_equal(loaded.item_factors, model.item_factors)
    assert loaded.get_params() == model.get_params()
    with np.load(path) as stored:
        arrays = dict(stored)
    for name, changes, message in [
        ("nan", {"item_factors": np.full((20, 20), np.nan, np.float32)}, "NaN or infinite"),
        ("not square", {"item_factors": np.zeros((20, 3), np.float32)}, "square"),
        ("diagonal", {"item_factors": np.eye(20, dtype=np.float32)}, "diagonal of B"),
        ("reg", {"regularization": np.array(-1.0)}, "regularization must be"),
    ]:
        np.savez(tmp_path / f"{name}.npz", **{**arrays, **changes})
        with pytest.raises(ModelFileError, match=message):
            EASE.load(tmp_path / f"{name}.npz")


def test_files_of_the_other_model_are_named_as_such(tmp_path):
    from vse_recsys import VSEEns

    user_items = random_labels(n_images=100, n_labels=10)
    EASE().fit(user_items, show_progress=False).save(tmp_path / "ease.npz")
    VSEEns(factors=2, iterations=1, random_state=0).fit(user_items, show_progress=False).save(
        tmp_path / "vse.npz")
    with pytest.raises(ModelFileError, match="bare EASE model .*EASE.load"):
        VSEEns.load(tmp_path / "ease.npz")
    with pytest.raises(ModelFileError, match="bare VSEEns model .*VSEEns.load"):
        EASE.load(tmp_path / "vse.npz")
