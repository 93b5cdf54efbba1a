"""Early stopping (scikit-learn's contract: stop after ``n_iter_no_change`` epochs without a
better validation score, keep the best epoch) and the label bias."""

import numpy as np
import pytest
import scipy.sparse as sp

from vse_recsys import VSEEns
from vse_recsys.adapters import generate_image_labels, leave_one_out_split
from vse_recsys.evaluation import ranking_metrics


@pytest.fixture(scope="module")
def data():
    dataset = generate_image_labels(n_images=3_000, n_labels=200, random_state=3)
    return leave_one_out_split(dataset, random_state=0)


def test_training_stops_after_n_iter_no_change_and_keeps_the_best_epoch(data):
    train, _ = data
    snapshots = []
    # a learning rate high enough to overfit within the budget, so the curve turns down
    model = VSEEns(factors=16, learning_rate=0.1, label_dropout=0.0, regularization=0.0,
                   iterations=200, n_iter_no_change=4, num_threads=1, random_state=0)
    model.fit(train, show_progress=False,
              callback=lambda *_: snapshots.append(model.label_inputs.copy()))
    scores = model.validation_scores_
    best = int(np.argmax(scores))
    assert model.best_iteration_ == best + 1
    assert len(model.fit_history) == len(scores) == best + 1 + 4 < 200  # stopped, not capped
    assert all(score <= scores[best] for score in scores[best + 1:])
    np.testing.assert_array_equal(model.label_inputs, snapshots[best])  # the best, not the last


def test_iterations_bound_the_epochs_when_the_score_keeps_rising(data):
    train, _ = data
    model = VSEEns(factors=16, iterations=3, n_iter_no_change=20, num_threads=1,
                   random_state=0).fit(train, show_progress=False)
    assert len(model.fit_history) == 3 and len(model.validation_scores_) == 3


def test_the_users_own_validation_pairs_are_what_is_scored(data):
    train, test = data
    model = VSEEns(factors=16, iterations=30, n_iter_no_change=5, num_threads=1,
                   random_state=0).fit(train, validation=test, show_progress=False)
    # the kept model is the best epoch's, so its MAP on those pairs is that epoch's score
    assert ranking_metrics(model, train, test)["map"] == pytest.approx(
        max(model.validation_scores_), rel=1e-4)


@pytest.mark.parametrize("loss, sampler", [("warp", "uniform"), ("bpr", "uniform"),
                                           ("hinge", "uniform")])
def test_the_label_bias_learns_popularity_with_every_loss(loss, sampler):
    # labels drawn independently of each other with very unequal popularity: nothing but
    # popularity to learn, and the bias is where it belongs
    rng = np.random.default_rng(0)
    n_images, n_labels = 4_000, 40
    popularity = 0.9 ** np.arange(n_labels)
    chosen = rng.random((n_images, n_labels)) < 0.3 * popularity
    chosen[np.arange(n_images), rng.integers(0, n_labels, n_images)] = True  # none empty
    model = VSEEns(factors=8, loss=loss, sampler=sampler, iterations=10, early_stopping=False,
                   num_threads=1, random_state=0)
    model.fit(sp.csr_matrix(chosen.astype(np.float32)), show_progress=False)
    bias = model.item_factors[:, -1]
    ranks = np.argsort(np.argsort(bias))  # Spearman: the bias orders labels by popularity
    correlation = np.corrcoef(ranks, np.argsort(np.argsort(-np.arange(n_labels))))[0, 1]
    assert correlation > 0.9, (loss, correlation)
