"""Contract tests every model configuration inherits (in the spirit of implicit's
``RecommenderBaseTestMixin``): a subclass only says how to build the model.

The data is a checkerboard: 40 images in two groups (even / odd ids), 40 labels in the same
two groups. Image ``i`` has every label of its group except label ``i``, which is withheld;
a model that learned anything must rank the withheld label first.
"""

import io
import pickle

import numpy as np
import pytest
import scipy.sparse
from implicit.evaluation import ranking_metrics_at_k

N = 40


def checkerboard():
    rows, cols = [], []
    for image in range(N):
        for label in range(image % 2, N, 2):
            if label != image:
                rows.append(image)
                cols.append(label)
    data = np.ones(len(rows), dtype=np.float32)
    return scipy.sparse.csr_matrix((data, (rows, cols)), shape=(N, N))


def _image_vector(model, user_items, image):
    """The vector an image is scored with: stored, or computed from its labels."""
    if getattr(model, "_scores_from_rows", False):
        return model.recalculate_user(image, user_items[image])
    return model.user_factors[image]


class ModelContract:
    """Mix into a test class that defines ``make_model(self, **overrides)``."""

    @classmethod
    def make_model(cls, **overrides):
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls):
        user_items = checkerboard()
        model = cls.make_model()
        model.fit(user_items, show_progress=False)
        return model, user_items

    def test_recommends_the_withheld_label(self, fitted):
        model, user_items = fitted
        for image in range(N):
            ids, scores = model.recommend(image, user_items[image], N=1)
            assert ids[0] == image, f"image {image}: got {ids}, scores {scores}"

    def test_never_recommends_known_labels(self, fitted):
        model, user_items = fitted
        ids, _ = model.recommend(np.arange(N), user_items, N=N // 2)
        for image in range(N):
            assert not set(ids[image]) & set(user_items[image].indices)

    def test_batch_equals_one_by_one(self, fitted):
        model, user_items = fitted
        images = np.arange(N)
        batch_ids, batch_scores = model.recommend(images, user_items, N=5)
        for image in images:
            ids, scores = model.recommend(image, user_items[image], N=5)
            np.testing.assert_array_equal(ids, batch_ids[image])
            np.testing.assert_allclose(scores, batch_scores[image], rtol=1e-5)

    def test_filter_items_and_items_subset(self, fitted):
        model, user_items = fitted
        ids, _ = model.recommend(0, user_items[0], N=5, filter_items=[0, 2])
        assert 0 not in ids and 2 not in ids
        ids, _ = model.recommend(0, user_items[0], N=3, items=[1, 3, 0, 5])
        assert set(ids) <= {0, 1, 3, 5}
        assert ids[0] == 0

    def test_scores_are_the_dot_products(self, fitted):
        model, user_items = fitted
        ids, scores = model.recommend(3, user_items[3], N=4)
        np.testing.assert_allclose(
            scores, model.item_factors[ids] @ _image_vector(model, user_items, 3), rtol=1e-5
        )

    def test_similar_items_stay_in_group(self, fitted):
        model, _ = fitted
        for label in range(0, N, 7):
            ids, scores = model.similar_items(label, N=5)
            # with two factors a group's vectors are nearly parallel: cosine ties with the
            # label itself are fine, leaving the group is not
            assert all(other % 2 == label % 2 for other in ids), ids
            assert scores[0] == pytest.approx(1.0, abs=1e-3)

    def test_similar_users_stay_in_group(self, fitted):
        model, _ = fitted
        if getattr(model, "_scores_from_rows", False):
            with pytest.raises(NotImplementedError, match="keeps no image vectors"):
                model.similar_users(0, N=5)
            return
        for image in range(0, N, 7):
            ids, scores = model.similar_users(image, N=5)
            assert all(other % 2 == image % 2 for other in ids), ids
            assert scores[0] == pytest.approx(1.0, abs=1e-3)

    def test_npz_round_trip(self, fitted, tmp_path):
        model, user_items = fitted
        model.save(tmp_path / "model.npz")
        loaded = type(model).load(tmp_path / "model.npz")
        self._assert_same_model(model, loaded, user_items)

    def test_npz_round_trip_through_a_file_object(self, fitted):
        model, user_items = fitted
        buffer = io.BytesIO()
        model.save(buffer)
        buffer.seek(0)
        self._assert_same_model(model, type(model).load(buffer), user_items)

    def test_pickle_round_trip(self, fitted):
        model, user_items = fitted
        self._assert_same_model(model, pickle.loads(pickle.dumps(model)), user_items)

    def test_unfitted_model_round_trips(self, tmp_path):
        model = self.make_model()
        model.save(tmp_path / "unfitted.npz")
        loaded = type(model).load(tmp_path / "unfitted.npz")
        assert loaded.user_factors is None and loaded.item_factors is None
        assert loaded.get_params() == model.get_params()
        assert pickle.loads(pickle.dumps(model)).user_factors is None

    def test_implicit_evaluation_runs(self, fitted):
        model, user_items = fitted
        test = scipy.sparse.csr_matrix(
            (np.ones(N, dtype=np.float32), (np.arange(N), np.arange(N))), shape=(N, N)
        )
        metrics = ranking_metrics_at_k(model, user_items, test, K=1, show_progress=False)
        assert metrics["precision"] == pytest.approx(1.0)

    @staticmethod
    def _assert_same_model(model, loaded, user_items):
        assert type(loaded) is type(model)
        np.testing.assert_array_equal(loaded.user_factors, model.user_factors)
        np.testing.assert_array_equal(loaded.item_factors, model.item_factors)
        assert loaded.get_params() == model.get_params()
        ids, scores = model.recommend(np.arange(N), user_items, N=5)
        loaded_ids, loaded_scores = loaded.recommend(np.arange(N), user_items, N=5)
        np.testing.assert_array_equal(ids, loaded_ids)
        np.testing.assert_array_equal(scores, loaded_scores)
