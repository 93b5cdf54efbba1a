"""VSEEns behaviour: determinism, threads, re-fitting, parameters and bad input."""

import copy
import os
import warnings

import numpy as np
import pytest
import scipy.sparse

from strategies import CONFIGS, FREE, quick_model, random_labels
from vse_recsys import VSEEns
from vse_recsys.adapters import generate_image_labels, leave_one_out_split
from vse_recsys.evaluation import ranking_metrics
from vse_recsys.model import DivergenceError


# -- determinism and threads ----------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['loss']}-{c['sampler']}")
def test_one_thread_fits_are_bit_identical(config):
    user_items = random_labels()
    first = quick_model(**config).fit(user_items, show_progress=False)
    second = quick_model(**config).fit(user_items, show_progress=False)
    np.testing.assert_array_equal(first.user_factors, second.user_factors)
    np.testing.assert_array_equal(first.item_factors, second.item_factors)
    other_seed = quick_model(random_state=1, **config).fit(user_items, show_progress=False)
    assert not np.array_equal(first.item_factors, other_seed.item_factors)


@pytest.mark.parametrize(
    "random_state",
    [None, 3, np.int64(3), np.random.default_rng(3), np.random.RandomState(3)],
    ids=["None", "int", "np.int64", "Generator", "RandomState"],
)
def test_every_kind_of_random_state_works(random_state):
    model = quick_model(random_state=random_state).fit(random_labels(), show_progress=False)
    assert np.isfinite(model.item_factors).all()


def test_two_threads_really_run_in_parallel():
    model = quick_model(num_threads=2, iterations=2).fit(
        random_labels(n_images=5000), show_progress=False
    )
    assert all(epoch["threads_used"] == 2 for epoch in model.fit_history)
    assert np.isfinite(model.user_factors).all()


def test_num_threads_zero_uses_the_cores_this_process_may_run_on():
    model = quick_model(num_threads=0, iterations=1).fit(random_labels(), show_progress=False)
    assert model.fit_history[0]["threads_used"] <= len(os.sched_getaffinity(0))
    assert model._threads() == len(os.sched_getaffinity(0))


# -- training schedule ------------------------------------------------------------------------


def test_refit_continues_from_the_fitted_factors():
    user_items = random_labels()
    model = quick_model().fit(user_items, show_progress=False)
    fitted = model.item_factors.copy()
    model.iterations = 0
    model.fit(user_items, show_progress=False)
    np.testing.assert_array_equal(model.item_factors, fitted)  # not re-initialised
    model.iterations = 1
    model.fit(user_items, show_progress=False)
    assert not np.array_equal(model.item_factors, fitted)
    with pytest.raises(ValueError, match="same shape"):
        model.fit(random_labels(n_labels=61), show_progress=False)


def test_epoch_statistics_and_callback():
    user_items = random_labels()
    seen = []
    model = quick_model(iterations=2, loss="hinge", sampler="adaptive").fit(
        user_items, show_progress=False, callback=lambda *args: seen.append(args)
    )
    assert [epoch for epoch, _, _ in seen] == [0, 1]
    stats = seen[-1][2]
    assert stats["pairs"] == user_items.nnz
    assert stats["draws"] >= stats["pairs"] - stats["skipped"]
    assert 0 <= stats["violation_rate"] <= 1 and stats["skip_rate"] == 0
    # default refresh interval: n_labels * ln(n_labels) pairs, plus one refresh at the start
    interval = np.ceil(60 * np.log(60))
    assert stats["refreshes"] == pytest.approx(1 + user_items.nnz // interval, abs=1)
    assert model.fit_history[-1] is stats


def test_progress_bar_shows_training_health(capsys):
    quick_model(iterations=1).fit(random_labels(), show_progress=True)
    err = capsys.readouterr().err
    assert "violated=" in err and "skipped=" in err and "unviolated=" in err  # (WARP)
    quick_model(iterations=2, early_stopping=True).fit(random_labels(), show_progress=True)
    assert "val_map=" in capsys.readouterr().err


def test_a_log_gets_one_progress_line_per_epoch(capsys):
    """Without a terminal tqdm writes a line per refresh: the postfix must not add one."""
    quick_model(iterations=3).fit(random_labels(), show_progress=True)
    lines = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
             if "VSEEns" in line and "it/s" in line or "s/it" in line]
    epochs = [line.split("|")[2].split("[")[0].strip() for line in lines if "/3" in line]
    assert len(epochs) == len(set(epochs)), lines  # no epoch shown twice


def test_images_without_labels_keep_valid_factors():
    user_items = random_labels().tolil()
    user_items[5, :] = 0
    user_items = user_items.tocsr()
    user_items.eliminate_zeros()
    model = quick_model().fit(user_items, show_progress=False)
    assert np.isfinite(model.user_factors[5]).all()
    ids, scores = model.recommend(5, user_items[5], N=3)
    assert len(ids) == 3 and np.isfinite(scores).all()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['loss']}-{c['sampler']}")
def test_an_image_with_every_label_is_skipped_not_looped(config):
    user_items = random_labels().tolil()
    user_items[0, :] = 1
    user_items[1, 1:] = 1  # every label but one
    model = quick_model(**config).fit(user_items.tocsr(), show_progress=False)
    assert model.fit_history[-1]["skipped"] >= 60  # image 0's pairs have no negative
    assert np.isfinite(model.user_factors).all()


def test_without_verification_training_still_works():
    model = quick_model(verify_negative_samples=False).fit(random_labels(), show_progress=False)
    assert np.isfinite(model.item_factors).all()


@pytest.mark.parametrize("vectors", ["free", "labels"])
def test_divergence_raises_and_keeps_the_last_completed_epoch(vectors):
    snapshots = []
    trained = "user_factors" if vectors == "free" else "label_inputs"

    def blow_up_after_two_epochs(epoch, seconds, stats):
        snapshots.append((getattr(model, trained).copy(), model.item_factors.copy()))
        if epoch == 1:
            model.learning_rate = 1e30  # read by the next epoch

    settings = FREE if vectors == "free" else {}
    model = quick_model(loss="hinge", sampler="uniform", iterations=5, **settings)
    with pytest.raises(DivergenceError, match=r"epoch 3 of 5: .*(lower learning_rate|lower "
                                              r"regularization or learning_rate)"):
        model.fit(random_labels(), show_progress=False, callback=blow_up_after_two_epochs)
    assert len(snapshots) == 2
    np.testing.assert_array_equal(getattr(model, trained), snapshots[-1][0])
    unused = np.asarray(random_labels().sum(axis=0) == 0).ravel()  # (zeroed after training)
    np.testing.assert_array_equal(model.item_factors[~unused], snapshots[-1][1][~unused])

    fresh = quick_model(loss="hinge", sampler="uniform", learning_rate=1e30, iterations=5,
                        **settings)
    with pytest.raises(DivergenceError, match="epoch 1 of 5"):
        fresh.fit(random_labels(), show_progress=False)
    assert fresh.user_factors is None and fresh.item_factors is None  # no epoch completed


# -- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(loss="softmax"), "loss must be one of"),
        (dict(sampler="sorted"), "sampler must be one of"),
        (dict(loss="warp", sampler="adaptive"), "WARP estimates a positive's rank"),
        (dict(factors=0), "factors must be >= 1"),
        (dict(factors=2.5), "factors must be an integer"),
        (dict(learning_rate=0), "learning_rate must be > 0"),
        (dict(learning_rate=float("nan")), "learning_rate must be a finite number"),
        (dict(rank_decay=-1), "rank_decay must be > 0"),
        (dict(refresh_interval=0), "refresh_interval must be >= 1"),
        (dict(candidates=0), "candidates must be >= 1"),
        (dict(candidates=2.5), "candidates must be an integer"),
        (dict(loss="warp", sampler="uniform", candidates=2), "loss='warp' needs candidates=1"),
        (dict(num_threads=-1), "num_threads must be >= 0"),
        (dict(dtype=np.int32), "dtype must be float32 or float64"),
    ],
)
def test_bad_parameters_are_explained(params, message):
    with pytest.raises(ValueError, match=message):
        quick_model(**params).fit(random_labels(), show_progress=False)


def test_every_constructor_argument_has_a_default():
    model = VSEEns()
    assert model.loss == "warp" and model.sampler == "uniform"
    assert model.image_vectors == "labels" and model.label_bias and model.early_stopping


def test_the_papers_configuration_is_one_call_away():
    model = VSEEns.paper(random_state=0)
    assert (model.image_vectors, model.label_bias, model.loss, model.sampler) == (
        "free", False, "hinge", "adaptive")
    assert (model.factors, model.learning_rate, model.regularization, model.init_scale) == (
        100, 0.01, 0.01, 0.01)
    assert model.learning_schedule == "sgd" and not model.early_stopping
    assert VSEEns.paper(factors=8).factors == 8  # overrides on top
    model.set_params(iterations=2).fit(random_labels(), show_progress=False)
    assert model.user_factors.shape == (300, 100) and model.label_inputs is None


# -- bad input --------------------------------------------------------------------------------


def _fit(user_items):
    return quick_model(iterations=1).fit(user_items, show_progress=False)


@pytest.mark.parametrize(
    "user_items, message",
    [
        (np.ones((3, 3)), "must be a scipy.sparse CSR matrix"),
        (scipy.sparse.csr_matrix(np.array([[1.0, -1.0]])), "negative values"),
        (scipy.sparse.csr_matrix(np.array([[1.0, np.nan]])), "NaN or infinite"),
        (scipy.sparse.csr_matrix(np.array([[1.0, np.inf]])), "NaN or infinite"),
        (scipy.sparse.csr_matrix((4, 5)), "no positive entries"),
        (scipy.sparse.csr_matrix((4, 0)), "at least one image and one label"),
        (scipy.sparse.csr_matrix((0, 4)), "at least one image and one label"),
        (scipy.sparse.csr_matrix(np.array([[1 + 1j]])), "must hold numbers"),
    ],
    ids=["dense", "negative", "nan", "inf", "empty", "no-labels", "no-images", "complex"],
)
def test_bad_training_matrices_are_explained(user_items, message):
    with pytest.raises(ValueError, match=message):
        _fit(user_items)


def test_other_sparse_formats_are_converted_with_a_warning():
    user_items = random_labels()
    with pytest.warns(UserWarning, match="COO matrix; converting it to CSR"):
        model = _fit(user_items.tocoo())
    np.testing.assert_array_equal(model.item_factors, _fit(user_items).item_factors)


def test_csr_array_is_accepted_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fit(scipy.sparse.csr_array(random_labels()))


def test_duplicates_and_explicit_zeros_are_reported_not_silently_dropped():
    user_items = scipy.sparse.csr_matrix(
        (np.array([1.0, 1.0, 0.0, 1.0]), np.array([0, 0, 1, 2]), np.array([0, 3, 4])),
        shape=(2, 3),
    )
    original = user_items.copy()
    with pytest.warns(UserWarning) as record:
        _fit(user_items)
    messages = " ".join(str(w.message) for w in record)
    assert "1 duplicate" in messages and "1 explicitly stored zeros" in messages
    assert (user_items != original).nnz == 0 and user_items.nnz == 4  # input untouched


def test_recommend_rejects_bad_calls_with_clear_errors():
    user_items = random_labels()
    unfitted = VSEEns()
    with pytest.raises(ValueError, match="not fitted"):
        unfitted.recommend(0, user_items[0])
    model = quick_model(iterations=1, **FREE).fit(user_items, show_progress=False)
    with pytest.raises(IndexError, match="userid 300 is out of range: the model has 300 images"):
        model.recommend(300, user_items[0])
    composed = _fit(user_items)  # scores an image from its labels: any userid will do
    np.testing.assert_array_equal(composed.recommend(300, user_items[0])[0],
                                  composed.recommend(0, user_items[0])[0])
    with pytest.raises(IndexError, match="userid -1 is out of range"):
        model.recommend(np.array([0, -1]), user_items[:2])
    with pytest.raises(ValueError, match="61 columns but the model knows 60 labels"):
        model.recommend(0, scipy.sparse.csr_matrix((1, 61)))
    with pytest.raises(ValueError, match="1 row for every user"):
        model.recommend(np.arange(3), user_items[:2])
    with pytest.raises(IndexError, match="filter_items 60 is out of range"):
        model.recommend(0, user_items[0], filter_items=[60])
    with pytest.raises(ValueError, match="integer ids"):
        model.recommend(0.5, user_items[0])
    with pytest.raises(IndexError, match="itemid 99 is out of range"):
        model.similar_items(99)


# -- folding in new images ----------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['loss']}-{c['sampler']}")
def test_a_folded_in_image_gets_its_withheld_label(config):
    from contract import N, checkerboard

    user_items = checkerboard()
    model = VSEEns(factors=2, iterations=100, learning_rate=0.05 if config["loss"] != "warp"
                   else 0.01, regularization=0.03, rank_decay=1.0, num_threads=1,
                   random_state=7, **config).fit(user_items, show_progress=False)
    # a brand-new image (id N, beyond the model) with image 4's labels: fold it in
    ids, _ = model.recommend(N, user_items[4], N=1, recalculate_user=True)
    assert ids[0] == 4
    again, _ = model.recommend(N, user_items[4], N=1, recalculate_user=True)
    np.testing.assert_array_equal(ids, again)  # seeded: same input, same answer
    batch, _ = model.recommend(np.arange(N), user_items, N=1, recalculate_user=True)
    assert (batch[:, 0] == np.arange(N)).mean() >= 0.9


def test_folding_in_free_vectors_trained_with_adagrad_recovers_their_accuracy():
    # a training image's free vector, discarded and folded in from its labels, ranks its
    # held-out label about as well as the trained one did. Fold-in steps as training did: by
    # AdaGrad from fresh sums. Constant SGD steps at AdaGrad's base rate keep moving the vector
    # and got 0.74-0.83 of the trained MAP here (and 0.69-0.78 on delicious). One seeded,
    # one-thread fit: deterministic.
    data = generate_image_labels(n_images=4000, n_labels=200, random_state=0)
    train, test = leave_one_out_split(data, random_state=0)
    model = VSEEns(image_vectors="free", factors=16, iterations=40, num_threads=1,
                   random_state=0).fit(train, show_progress=False)
    trained = ranking_metrics(model, train, test)["map"]
    folded = copy.copy(model)
    folded.user_factors = np.zeros_like(model.user_factors)
    folded.partial_fit_users(np.arange(train.shape[0]), train)
    assert ranking_metrics(folded, train, test)["map"] >= 0.95 * trained


def test_partial_fit_users_updates_and_grows_the_model():
    from contract import N, checkerboard

    user_items = checkerboard()
    model = VSEEns(factors=2, iterations=100, regularization=0.03, rank_decay=1.0,
                   num_threads=1, random_state=7).fit(user_items, show_progress=False)
    model.partial_fit_users([N + 2, 3], user_items[[6, 3]])
    assert model.user_factors.shape == (N + 3, 2 + 1)  # (+ the bias column)
    np.testing.assert_array_equal(model.user_factors[N], 0)  # the gap gets zero vectors
    ids, _ = model.recommend(N + 2, user_items[6], N=1)
    assert ids[0] == 6
    with pytest.raises(ValueError, match="one id per row"):
        model.partial_fit_users([1, 2], user_items[[1]])
    with pytest.raises(ValueError, match="columns but the model knows"):
        model.partial_fit_users([1], scipy.sparse.csr_matrix((1, N + 1)))


def test_conversion_warnings_are_implicit_parameter_warnings():
    from implicit.utils import ParameterWarning

    with pytest.warns(ParameterWarning, match="COO matrix; converting it to CSR"):
        _fit(random_labels().tocoo())


def test_get_params_gives_a_model_with_the_same_settings_and_set_params_checks_names():
    model = VSEEns(factors=5, loss="bpr", random_state=3)
    clone = VSEEns(**model.get_params())
    assert clone.get_params() == model.get_params() and clone.factors == 5
    assert model.set_params(learning_rate=0.5) is model and model.learning_rate == 0.5
    with pytest.raises(ValueError, match="has no parameter 'epochs'"):
        model.set_params(epochs=3)


@pytest.mark.parametrize("params, cause", [
    (dict(learning_rate=1e30), "lower learning_rate"),
    (dict(regularization=1e30), "regularization=1e+30 is far beyond"),
    (dict(regularization=1e30, learning_schedule="sgd"), "regularization=1e+30 with"),
    (dict(init_scale=1e20), "init_scale=1e+20"),
])
def test_divergence_advice_names_the_parameter_out_of_range(params, cause):
    model = quick_model(iterations=3, **params)
    with pytest.raises(DivergenceError) as caught:
        model.fit(random_labels(), show_progress=False)
    message = str(caught.value)
    assert cause in message
    # and no other parameter's advice
    others = {"lower learning_rate", "regularization=", "init_scale="} - {
        next(part for part in ("lower learning_rate", "regularization=", "init_scale=")
             if part in cause)}
    assert not any(other in message for other in others), message


def test_a_fit_with_nothing_to_learn_warns_that_nothing_was_trained():
    every_label = scipy.sparse.csr_matrix(np.ones((50, 1), dtype=np.float32))
    with pytest.warns(UserWarning, match="nothing was trained"):
        quick_model(iterations=2).fit(every_label, show_progress=False)


@pytest.mark.parametrize("config", ["default", "bpr", "free"])
def test_a_label_no_image_has_is_similar_to_nothing(config):
    params = {"default": {}, "bpr": dict(loss="bpr"), "free": FREE}[config]
    user_items = generate_image_labels(n_images=1_000, n_labels=80, random_state=0).user_items
    user_items = user_items.tolil()
    user_items[:, 7] = 0  # nobody has label 7: it trains as a negative only
    user_items = scipy.sparse.csr_matrix(user_items)
    user_items.eliminate_zeros()
    model = VSEEns(factors=16, iterations=5, random_state=0, num_threads=1, **params)
    model.fit(user_items, show_progress=False)
    assert model.item_factors[7, -1] != 0 or not model.label_bias  # its bias is kept
    ids, scores = model.similar_items(np.arange(80), N=80)
    for label in range(80):
        row = dict(zip(ids[label], scores[label]))
        assert row[7] == 0.0, (label, row[7])
    assert (scores[7] == 0).all()  # its own list: similar to nothing, itself included


def test_a_folded_in_image_does_not_depend_on_the_batch_or_the_threads():
    user_items = generate_image_labels(n_images=300, n_labels=40, random_state=0).user_items
    model = VSEEns(factors=8, iterations=3, random_state=0, num_threads=1, **FREE)
    model.fit(user_items, show_progress=False)
    new = user_items[[5, 9, 12]]
    alone = model.recommend(0, new[0], N=10, recalculate_user=True)
    vectors = {}
    for threads in (1, 2):
        model.num_threads = threads
        for order in ([0, 1, 2], [1, 0, 2], [2, 1, 0]):
            ids, scores = model.recommend(np.arange(3), new[order], N=10,
                                          recalculate_user=True)
            first = order.index(0)
            np.testing.assert_array_equal(ids[first], alone[0])
            np.testing.assert_allclose(scores[first], alone[1], rtol=1e-5)
        vectors[threads] = model.recalculate_user(np.arange(3), new)
    np.testing.assert_allclose(vectors[1], vectors[2], rtol=1e-5)
