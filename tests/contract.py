"""Contract tests every model configuration inherits (in the spirit of implicit's
``RecommenderBaseTestMixin``): a subclass only says how to build the model.

The data is a checkerboard: 40 images in two groups (even / odd ids), 40 labels in the same
two groups. Image ``i`` has every label of its group except label ``i``, which is withheld;
a model that learned anything must rank the withheld label first.
"""

import io
import pickle
import warnings

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
            np.testing.assert_allclose(scores, batch_scores[image], rtol=1e-5, atol=1e-6)

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
        if model.user_factors is None:  # (EASE)
            with pytest.raises(NotImplementedError, match="keeps no image vectors"):
                model.similar_users(0, N=5)
            return
        for image in range(0, N, 7):
            ids, scores = model.similar_users(image, N=5)
            assert all(other % 2 == image % 2 for other in ids), ids
            assert scores[0] == pytest.approx(1.0, abs=1e-3)

    # -- what implicit's own contract mixin checks, in our words (issue 13, items 16-30) -------

    def test_asking_for_more_than_there_is_returns_each_once(self, fitted):
        model, user_items = fitted
        ids, scores = model.recommend(0, user_items[0], N=10_000)
        assert len(ids) == len(set(ids)) == N
        ids, scores = model.similar_items(3, N=10_000)
        assert len(ids) == len(set(ids)) == N and np.isfinite(scores).all()
        for bad in (0, -1, 1.5, True):
            with pytest.raises(ValueError, match="N must be a positive integer"):
                model.similar_items(3, N=bad)
            with pytest.raises(ValueError, match="N must be a positive integer"):
                model.recommend(0, user_items[0], N=bad)

    def test_similar_items_in_a_batch_start_with_the_item_itself(self, fitted):
        model, _ = fitted
        ids, scores = model.similar_items(np.arange(N), N=10)
        assert ids.shape == (N, 10)
        for label in range(N):
            assert ids[label][0] == label
            assert all(other % 2 == label % 2 for other in ids[label][:5]), ids[label]
            single_ids, single_scores = model.similar_items(label, N=10)
            # (labels with equal cosines may come in another order: compare the scores)
            assert single_ids[0] == label
            np.testing.assert_allclose(single_scores, scores[label], rtol=1e-5, atol=1e-6)

    def test_similar_items_filters_and_subsets(self, fitted):
        model, _ = fitted
        ids, scores = model.similar_items(np.arange(N), N=10, filter_items=np.arange(0, N, 5))
        assert not set(ids.ravel()) & set(range(0, N, 5))
        assert np.isfinite(scores).all()  # no infinite score, whatever the norms
        ids, scores = model.similar_items(np.arange(N), N=10, items=np.arange(8))
        for row in ids:
            assert set(row) == set(range(8))
        assert np.isfinite(scores).all()
        # every label asked for, the query among the filtered ones: each once, filtered last
        filtered = np.arange(0, N, 5)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no overflow in a division either
            ids, scores = model.similar_items(np.arange(N), N=999, filter_items=filtered)
        assert ids.shape == (N, N) and np.isfinite(scores).all()
        for row, row_scores in zip(ids, scores):
            assert sorted(row) == list(range(N))
            assert set(row[-len(filtered):]) == set(filtered)
            assert (row_scores[-len(filtered):] == -np.finfo(scores.dtype).max).all()

    def test_similar_users_filters_and_subsets(self, fitted):
        model, _ = fitted
        if model.user_factors is None:
            return  # (refused: test_similar_users_stay_in_group)
        ids, scores = model.similar_users(np.arange(N), N=10, filter_users=np.arange(0, N, 5))
        assert not set(ids.ravel()) & set(range(0, N, 5)) and np.isfinite(scores).all()
        ids, _ = model.similar_users(np.arange(N), N=999, users=np.arange(6))
        assert ids.shape == (N, 6) and all(set(row) == set(range(6)) for row in ids)
        count = model.user_factors.shape[0]  # the images, each with every other asked for
        ids, scores = model.similar_users(3, N=999, filter_users=np.arange(count // 4))
        assert sorted(ids) == list(range(count)) and np.isfinite(scores).all()
        assert set(ids[-(count // 4):]) == set(range(count // 4))

    def test_ranking_a_subset_puts_the_known_labels_last(self, fitted):
        model, user_items = fitted
        chosen = np.array([1, 2, 3, 4, 5, 6])  # image 0 has labels 2, 4, 6
        ids, scores = model.recommend(0, user_items[0], items=chosen, N=20)
        assert sorted(ids) == list(chosen)
        assert set(ids[3:]) == {2, 4, 6} and (scores[3:] == -np.finfo(scores.dtype).max).all()
        with pytest.raises(IndexError):
            model.recommend(0, user_items[0], items=[1, 2, N])
        with pytest.raises(IndexError):
            model.recommend(0, user_items[0], items=[1, -3])

    def test_folding_in_a_training_image_keeps_its_best_label(self, fitted):
        model, user_items = fitted
        for image in range(N):
            ids, scores = model.recommend(image, user_items[image], N=1)
            folded_ids, folded_scores = model.recommend(0, user_items[image], N=1,
                                                        recalculate_user=True)
            assert folded_ids[0] == ids[0]
            if self.fold_in_is_exact(model):
                assert folded_scores[0] == pytest.approx(scores[0], abs=1e-3)

    @staticmethod
    def fold_in_is_exact(model):
        """Whether recalculate_user gives a training image its trained scores (models that
        score an image from its labels do; a learned free vector is refitted, not recalled)."""
        return getattr(model, "_scores_from_rows", False)

    def test_an_unused_label_is_similar_to_nothing(self):
        rows = checkerboard().toarray()
        rows[:, 30] = 0
        rows[30] = 0
        model = self.make_model()
        model.fit(scipy.sparse.csr_matrix(rows), show_progress=False)
        for label in range(N):
            if label != 30:
                ids, _ = model.similar_items(label, N=10)
                assert 30 not in ids, (label, ids)

    def test_float64_input_and_coo_input(self):
        from implicit.utils import ParameterWarning

        model = self.make_model()
        model.fit(checkerboard().astype(np.float64), show_progress=False)
        with pytest.warns(ParameterWarning, match="COO matrix"):
            self.make_model().fit(checkerboard().tocoo(), show_progress=False)

    def test_no_gpu_and_no_partial_fit_items(self, fitted):
        model, user_items = fitted
        with pytest.raises(NotImplementedError, match="no GPU version"):
            model.to_gpu()
        assert model.to_cpu() is model
        with pytest.raises(NotImplementedError, match="partial_fit_items"):
            model.partial_fit_items([0], user_items.T.tocsr()[[0]])

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
