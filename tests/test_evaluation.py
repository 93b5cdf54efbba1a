"""Tests for ``vse_recsys.evaluation``: every metric against a brute-force reference, hand-worked
examples, the tie and exclusion conventions, the three entry points, and input errors."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from strategies_evaluation import batch_sizes, cutoffs, factor_problems, score_problems

from vse_recsys.evaluation import (
    DEFAULT_K,
    factor_metrics,
    metric_names,
    ranking_metrics,
    score_metrics,
)

# --------------------------------------------------------------------------------------------
# Brute-force reference: a full sort per image and explicit loops, written from the definitions
# in the module docstring (not from the counting implementation).


def reference_metrics(scores, train, test, K):
    """Per-image metrics ``{name: list}`` and the evaluated image ids, the slow way."""
    K = list(dict.fromkeys([K] if isinstance(K, int) else K))
    train, test = train.toarray() != 0, test.toarray() != 0
    per_image = {name: [] for name in metric_names(K)}
    image_ids = []
    for image in range(scores.shape[0]):
        test_labels = set(np.flatnonzero(test[image]).tolist())
        if not test_labels:
            continue
        image_ids.append(image)
        s = scores[image]
        candidates = [a for a in range(scores.shape[1]) if not train[image, a]]
        # Descending score; on a tie negatives come first (pessimistic), then label index.
        ranking = sorted(candidates, key=lambda a: (-s[a], a in test_labels, a))
        ranks = [position + 1 for position, a in enumerate(ranking) if a in test_labels]
        for k in K:
            hits = sum(rank <= k for rank in ranks)
            dcg = sum(1 / math.log2(rank + 1) for rank in ranks if rank <= k)
            ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(k, len(ranks)) + 1))
            per_image[f"precision@{k}"].append(hits / k)
            per_image[f"recall@{k}"].append(hits / len(ranks))
            per_image[f"ndcg@{k}"].append(dcg / ideal)
        precisions = [(j + 1) / rank for j, rank in enumerate(ranks)]
        per_image["map"].append(sum(precisions) / len(precisions))
        negatives = [a for a in candidates if a not in test_labels]
        credit = [
            1.0 if s[p] > s[n] else 0.5 if s[p] == s[n] else 0.0
            for p in test_labels
            for n in negatives
        ]
        per_image["auc"].append(sum(credit) / len(credit) if credit else math.nan)
    return per_image, image_ids


def assert_matches_reference(result, scores, train, test, K):
    summary, per_image = result
    expected, image_ids = reference_metrics(scores, train, test, K)
    np.testing.assert_array_equal(per_image["image_ids"], image_ids)
    assert summary["n_images"] == len(image_ids)
    assert list(summary) == [*metric_names(K), "n_images"]
    for name, values in expected.items():
        np.testing.assert_allclose(per_image[name], values, rtol=1e-12, atol=1e-12, err_msg=name)
        defined = [v for v in values if not math.isnan(v)]
        mean = sum(defined) / len(defined) if defined else math.nan
        assert summary[name] == pytest.approx(mean, rel=1e-12, abs=1e-12, nan_ok=True), name


def csr(rows):
    return sp.csr_matrix(np.asarray(rows, dtype=np.float32))


def fixed_scores(scores):
    """A score function serving rows of a fixed matrix."""
    return lambda image_ids: scores[image_ids]


# --------------------------------------------------------------------------------------------
# Against the reference


@given(factor_problems(), cutoffs, batch_sizes)
def test_factor_metrics_match_reference(problem, K, batch_size):
    user_factors, item_factors, train, test = problem
    result = factor_metrics(
        user_factors, item_factors, train, test, K, batch_size=batch_size, return_per_image=True
    )
    assert_matches_reference(result, user_factors @ item_factors.T, train, test, K)


@given(score_problems(), cutoffs, batch_sizes)
def test_score_metrics_match_reference(problem, K, batch_size):
    scores, train, test = problem
    result = score_metrics(
        fixed_scores(scores), train, test, K, batch_size=batch_size, return_per_image=True
    )
    assert_matches_reference(result, scores, train, test, K)


# --------------------------------------------------------------------------------------------
# Hand-worked examples

# One image, five labels. Label 0 is a training label (and scores highest), labels 2 and 4 are
# test labels. Ranking of the candidates {1, 2, 3, 4}: 3 (.7), 2 (.5), 1 (.4), 4 (.3), so the
# test labels sit at ranks 2 and 4.
HAND_SCORES = np.array([[0.9, 0.4, 0.5, 0.7, 0.3]])
HAND_TRAIN = csr([[1, 0, 0, 0, 0]])
HAND_TEST = csr([[0, 0, 1, 0, 1]])
HAND_EXPECTED = {
    "precision@1": 0.0,
    "recall@1": 0.0,
    "ndcg@1": 0.0,
    "precision@2": 1 / 2,
    "recall@2": 1 / 2,
    "ndcg@2": (1 / math.log2(3)) / (1 + 1 / math.log2(3)),
    "precision@3": 1 / 3,
    "recall@3": 1 / 2,
    "ndcg@3": (1 / math.log2(3)) / (1 + 1 / math.log2(3)),
    "map": (1 / 2 + 2 / 4) / 2,
    # label 2 beats negative 1, loses to 3; label 4 loses to both: 1 of 4 pairs.
    "auc": 1 / 4,
    "n_images": 1,
}


def test_hand_computed_example_scores():
    result = score_metrics(fixed_scores(HAND_SCORES), HAND_TRAIN, HAND_TEST, K=(1, 2, 3))
    assert result == pytest.approx(HAND_EXPECTED)


def test_hand_computed_example_factors():
    # One factor: s(0, a) = 1 * v_a; float32 keeps the order of these values.
    result = factor_metrics([[1.0]], HAND_SCORES.T, HAND_TRAIN, HAND_TEST, K=(1, 2, 3))
    assert result == pytest.approx(HAND_EXPECTED)


def test_precision_divides_by_k_not_by_number_of_test_labels():
    # A single test label ranked first. implicit's precision_at_k would report 1.0
    # (hits / min(k, #test)); the paper's precision@5 is 1 / 5.
    scores = np.array([[0.0, 5.0, 1.0, 2.0, 3.0, 4.0]])
    result = score_metrics(
        fixed_scores(scores), csr([[1, 0, 0, 0, 0, 0]]), csr([[0, 1, 0, 0, 0, 0]]), K=5
    )
    assert result["precision@5"] == pytest.approx(0.2)
    assert result["recall@5"] == result["ndcg@5"] == result["map"] == result["auc"] == 1.0


def test_precision_divides_by_k_even_beyond_the_candidate_count():
    # Two candidates only, both test labels: precision@10 is still hits / 10.
    result = score_metrics(
        fixed_scores(np.array([[1.0, 2.0, 3.0]])), csr([[1, 0, 0]]), csr([[0, 1, 1]]), K=10
    )
    assert result["precision@10"] == pytest.approx(0.2)
    assert result["recall@10"] == result["ndcg@10"] == result["map"] == 1.0


def test_training_labels_are_excluded_from_the_ranking():
    # Without the exclusion the two training labels (scores 9, 8) would push the test label
    # from rank 1 to rank 3.
    scores = np.array([[9.0, 8.0, 7.0, 1.0, 0.0]])
    result = score_metrics(
        fixed_scores(scores), csr([[1, 1, 0, 0, 0]]), csr([[0, 0, 1, 0, 0]]), K=1
    )
    assert result["precision@1"] == result["map"] == result["auc"] == 1.0


@given(score_problems(), st.sampled_from([-np.inf, -1e9, 0.0, 1e9, np.inf]))
def test_training_label_scores_do_not_matter(problem, train_score):
    scores, train, test = problem
    changed = scores.copy()
    changed[train.toarray() != 0] = train_score
    _, before = score_metrics(fixed_scores(scores), train, test, return_per_image=True)
    _, after = score_metrics(fixed_scores(changed), train, test, return_per_image=True)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])


# --------------------------------------------------------------------------------------------
# Ties


def test_constant_scores_give_auc_one_half_and_the_worst_ranks():
    # Six labels, one training, two test: the five candidates all tie, so the test labels take
    # the last two ranks (4 and 5) and every (test, negative) pair gets half credit.
    scores = np.zeros((1, 6))
    result = score_metrics(
        fixed_scores(scores), csr([[1, 0, 0, 0, 0, 0]]), csr([[0, 1, 1, 0, 0, 0]]), K=(3, 5)
    )
    ideal = 1 + 1 / math.log2(3)
    assert result == pytest.approx(
        {
            "precision@3": 0.0,
            "recall@3": 0.0,
            "ndcg@3": 0.0,
            "precision@5": 2 / 5,
            "recall@5": 1.0,
            "ndcg@5": (1 / math.log2(5) + 1 / math.log2(6)) / ideal,
            "map": (1 / 4 + 2 / 5) / 2,
            "auc": 0.5,
            "n_images": 1,
        }
    )


@pytest.mark.parametrize("test_label", [0, 1])  # the tied test label before or after by index
def test_test_label_tied_with_a_negative_ranks_below_it(test_label):
    # Labels 0 and 1 tie at the top, one is the test label: rank 2 whatever the index order,
    # half credit against the tied negative, full credit against label 2.
    test = np.zeros((1, 3))
    test[0, test_label] = 1
    scores = np.array([[1.0, 1.0, 0.0]])
    result = score_metrics(fixed_scores(scores), csr(np.zeros((1, 3))), csr(test), K=1)
    assert result["precision@1"] == 0.0
    assert result["map"] == 0.5
    assert result["auc"] == 0.75  # (1/2 + 1) / 2


def test_tied_test_labels_share_the_top_ranks():
    # Two tied test labels above every negative: ranks 1 and 2, a perfect ranking.
    scores = np.array([[3.0, 3.0, 1.0, 2.0]])
    result = score_metrics(fixed_scores(scores), csr(np.zeros((1, 4))), csr([[1, 1, 0, 0]]), K=2)
    assert result["precision@2"] == result["ndcg@2"] == result["map"] == result["auc"] == 1.0


@given(score_problems(), st.randoms(use_true_random=False))
def test_metrics_do_not_depend_on_label_order(problem, random):
    # The tie rules never look at label indices, so permuting the labels changes nothing.
    scores, train, test = problem
    permutation = np.array(random.sample(range(scores.shape[1]), scores.shape[1]))
    _, before = score_metrics(fixed_scores(scores), train, test, return_per_image=True)
    _, after = score_metrics(
        fixed_scores(scores[:, permutation]),
        train[:, permutation],
        test[:, permutation],
        return_per_image=True,
    )
    for name in before:
        np.testing.assert_allclose(before[name], after[name], rtol=1e-12, err_msg=name)


# --------------------------------------------------------------------------------------------
# Which images count, and how they are averaged


@given(score_problems())
def test_a_perfect_scorer_gets_full_marks(problem):
    _, train, test = problem
    scores = test.toarray()  # every test label above every negative
    _summary, per_image = score_metrics(
        fixed_scores(scores), train, test, K=(1, 3), return_per_image=True
    )
    n_test = np.diff(test.indptr)[per_image["image_ids"]]
    np.testing.assert_allclose(per_image["recall@3"], np.minimum(n_test, 3) / n_test)
    np.testing.assert_allclose(per_image["precision@1"], 1.0)
    for name in ["ndcg@1", "ndcg@3", "map"]:
        np.testing.assert_allclose(per_image[name], 1.0)
    auc = per_image["auc"]
    assert np.all(auc[~np.isnan(auc)] == 1.0)


def test_images_without_test_labels_are_skipped():
    scores = np.vstack([HAND_SCORES, np.zeros((2, 5)), HAND_SCORES])
    train = sp.vstack([HAND_TRAIN, csr(np.zeros((2, 5))), HAND_TRAIN])
    test = sp.vstack([HAND_TEST, csr(np.zeros((2, 5))), HAND_TEST])
    summary, per_image = score_metrics(
        fixed_scores(scores), train, test, K=(1, 2, 3), return_per_image=True
    )
    np.testing.assert_array_equal(per_image["image_ids"], [0, 3])
    assert summary == pytest.approx({**HAND_EXPECTED, "n_images": 2})


def test_per_image_values_average_to_the_summary():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((40, 12))
    cells = rng.random((40, 12))
    train, test = csr(cells < 0.3), csr(cells > 0.8)
    summary, per_image = score_metrics(
        fixed_scores(scores), train, test, batch_size=7, return_per_image=True
    )
    assert set(per_image) == {"image_ids", *metric_names(DEFAULT_K)}
    for name in metric_names(DEFAULT_K):
        assert per_image[name].shape == per_image["image_ids"].shape
        assert summary[name] == pytest.approx(np.nanmean(per_image[name]))


def test_image_without_negatives_has_no_auc():
    # Image 0: every non-training label is a test label, so it has no (test, negative) pair.
    scores = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    train, test = csr([[1, 0, 0], [0, 0, 0]]), csr([[0, 1, 1], [1, 0, 0]])
    summary, per_image = score_metrics(
        fixed_scores(scores), train, test, K=1, return_per_image=True
    )
    assert math.isnan(per_image["auc"][0])
    assert summary["auc"] == 1.0  # image 1 only
    assert summary["map"] == 1.0 and summary["n_images"] == 2

    only, _ = score_metrics(
        fixed_scores(scores[:1]), train[:1], test[:1], K=1, return_per_image=True
    )
    assert math.isnan(only["auc"])


@pytest.mark.filterwarnings("ignore:train_user_items has 1 explicitly stored zeros")
def test_stored_values_and_explicit_zeros_are_ignored():
    train = sp.csr_matrix(([5.0, 0.0], ([0, 0], [0, 3])), shape=(1, 5))  # label 3 stored as 0
    test = sp.csr_matrix(([0.25, 7.0], ([0, 0], [2, 4])), shape=(1, 5))
    train_data, test_data = train.data.copy(), test.data.copy()
    scores = HAND_SCORES.copy()
    result = score_metrics(fixed_scores(scores), train, test, K=(1, 2, 3))
    assert result == pytest.approx(HAND_EXPECTED)
    # The inputs are left as they were.
    np.testing.assert_array_equal(train.data, train_data)
    np.testing.assert_array_equal(test.data, test_data)
    np.testing.assert_array_equal(scores, HAND_SCORES)


def test_cutoffs_accept_an_int_and_drop_duplicates():
    result = score_metrics(fixed_scores(HAND_SCORES), HAND_TRAIN, HAND_TEST, K=(3, 1, 3))
    assert list(result) == [*metric_names((3, 1)), "n_images"]
    assert metric_names(2) == ["precision@2", "recall@2", "ndcg@2", "map", "auc"]


def test_default_keys():
    result = score_metrics(fixed_scores(HAND_SCORES), HAND_TRAIN, HAND_TEST)
    assert list(result) == [
        "precision@5",
        "recall@5",
        "ndcg@5",
        "precision@10",
        "recall@10",
        "ndcg@10",
        "map",
        "auc",
        "n_images",
    ]


# --------------------------------------------------------------------------------------------
# Entry points


@pytest.fixture(scope="module")
def bpr_split():
    """implicit's CPU BPR, fit briefly on two blocks of images that share labels, and its split."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    rng = np.random.default_rng(42)
    n_images, n_labels = 60, 20
    image_block = np.arange(n_images)[:, None] * 2 // n_images
    in_block = image_block == np.arange(n_labels)[None, :] * 2 // n_labels
    cells = rng.random((n_images, n_labels))
    train, test = csr(in_block & (cells < 0.5)), csr(in_block & (cells > 0.8))
    model = BayesianPersonalizedRanking(
        factors=4, learning_rate=0.05, iterations=30, num_threads=1, random_state=0
    )
    model.fit(train, show_progress=False)
    return model, train, test


def test_ranking_metrics_with_implicit_bpr(bpr_split):
    model, train, test = bpr_split
    K = (1, 5)
    summary, per_image = ranking_metrics(
        model, train, test, K, batch_size=16, return_per_image=True
    )
    direct = factor_metrics(
        model.user_factors, model.item_factors, train, test, K, batch_size=16, return_per_image=True
    )
    assert summary == direct[0]
    for name in per_image:
        np.testing.assert_array_equal(per_image[name], direct[1][name])
    # BPR's factors carry its item bias as an extra column; the scores are their dot products.
    scores = model.user_factors @ model.item_factors.T
    expected, _ = reference_metrics(scores, train, test, K)
    for name, values in expected.items():
        np.testing.assert_allclose(per_image[name], values, rtol=1e-6, err_msg=name)
    assert summary["auc"] > 0.7  # it learnt the blocks


def test_score_function_equals_factor_entry_point(bpr_split):
    model, train, test = bpr_split
    user_factors, item_factors = model.user_factors, model.item_factors

    def score_fn(image_ids):
        return user_factors[image_ids] @ item_factors.T  # the same float32 product

    by_factors = factor_metrics(user_factors, item_factors, train, test, batch_size=9)
    by_scores = score_metrics(score_fn, train, test, batch_size=9)
    assert by_scores == by_factors


def test_gpu_style_model_is_copied_to_cpu():
    class DeviceMatrix:  # stands in for implicit.gpu.Matrix
        pass

    class CpuModel:
        user_factors = np.array([[1.0]], dtype=np.float32)
        item_factors = HAND_SCORES.T.astype(np.float32)

    class GpuModel:
        user_factors = item_factors = DeviceMatrix()

        def to_cpu(self):
            return CpuModel()

    result = ranking_metrics(GpuModel(), HAND_TRAIN, HAND_TEST, K=(1, 2, 3))
    assert result == pytest.approx(HAND_EXPECTED)


def test_integer_and_read_only_scores_are_accepted():
    counts = np.array([[9, 4, 5, 7, 3]])
    counts.flags.writeable = False
    result = score_metrics(fixed_scores(counts), HAND_TRAIN, HAND_TEST, K=(1, 2, 3))
    assert result == pytest.approx(HAND_EXPECTED)


def test_progress_bar_and_thread_limit(capsys):
    pytest.importorskip("threadpoolctl")
    result = factor_metrics(
        [[1.0]],
        HAND_SCORES.T,
        HAND_TRAIN,
        HAND_TEST,
        K=(1, 2, 3),
        show_progress=True,
        num_threads=1,
    )
    assert result == pytest.approx(HAND_EXPECTED)
    assert "evaluate" in capsys.readouterr().err


def test_large_random_problem_matches_reference_sample():
    # Several batches and several test labels per image, continuous scores.
    rng = np.random.default_rng(7)
    user_factors = rng.standard_normal((300, 16)).astype(np.float32)
    item_factors = rng.standard_normal((80, 16)).astype(np.float32)
    cells = rng.random((300, 80))
    train, test = csr(cells < 0.1), csr(cells > 0.95)
    result = factor_metrics(
        user_factors, item_factors, train, test, K=(5, 10), batch_size=64, return_per_image=True
    )
    scores = np.vstack([user_factors[i : i + 64] @ item_factors.T for i in range(0, 300, 64)])
    assert_matches_reference(result, scores, train, test, (5, 10))


# --------------------------------------------------------------------------------------------
# Bad input


class UnfittedModel:  # implicit's models hold None until fit
    user_factors = item_factors = None


def call_scores(train=HAND_TRAIN, test=HAND_TEST, scores=HAND_SCORES, **options):
    return score_metrics(fixed_scores(scores), train, test, **options)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: call_scores(test=csr(np.zeros((1, 6)))), ValueError, "shape"),
        (lambda: call_scores(test=csr(np.zeros((2, 5)))), ValueError, "shape"),
        (lambda: call_scores(test=csr([[1, 0, 1, 0, 0]])), ValueError, "share 1"),
        (lambda: call_scores(test=csr(np.zeros((1, 5)))), ValueError, "no test labels"),
        (lambda: call_scores(train=HAND_TRAIN.toarray()), TypeError, "scipy.sparse"),
        (lambda: call_scores(test=[[0, 0, 1, 0, 1]]), TypeError, "scipy.sparse"),
        (lambda: call_scores(scores=np.array([[0.0, np.nan, 0, 0, 0]])), ValueError, "NaN"),
        (lambda: call_scores(scores=np.zeros((1, 4))), ValueError, r"expected \(1, 5\)"),
        (lambda: call_scores(scores=np.zeros(5)), ValueError, "shape"),
        (lambda: call_scores(K=0), ValueError, "positive integer"),
        (lambda: call_scores(K=(5, -1)), ValueError, "positive integer"),
        (lambda: call_scores(K=True), ValueError, "positive integer"),
        (lambda: call_scores(K=2.5), ValueError, "sequence"),
        (lambda: call_scores(K="5"), ValueError, "positive integer"),
        (lambda: call_scores(K=()), ValueError, "at least one"),
        (lambda: call_scores(batch_size=0), ValueError, "batch_size"),
        (lambda: call_scores(num_threads=0), ValueError, "num_threads"),
        (lambda: score_metrics("not a function", HAND_TRAIN, HAND_TEST), TypeError, "callable"),
        (
            lambda: factor_metrics(np.ones((1, 2)), np.ones((5, 3)), HAND_TRAIN, HAND_TEST),
            ValueError,
            "same number of factors",
        ),
        (
            lambda: factor_metrics(np.ones((2, 2)), np.ones((5, 2)), HAND_TRAIN, HAND_TEST),
            ValueError,
            "2 images x 5 labels",
        ),
        (
            lambda: factor_metrics(np.ones((1, 2)), np.ones((4, 2)), HAND_TRAIN, HAND_TEST),
            ValueError,
            "1 images x 4 labels",
        ),
        (
            lambda: factor_metrics(np.ones(2), np.ones((5, 2)), HAND_TRAIN, HAND_TEST),
            ValueError,
            "2-D",
        ),
        (
            lambda: factor_metrics([[np.nan]], np.ones((5, 1)), HAND_TRAIN, HAND_TEST),
            ValueError,
            "NaN",
        ),
        (lambda: ranking_metrics(object(), HAND_TRAIN, HAND_TEST), TypeError, "score_metrics"),
        (
            lambda: ranking_metrics(UnfittedModel(), HAND_TRAIN, HAND_TEST),
            ValueError,
            "fit it first",
        ),
    ],
)
def test_bad_input_raises(call, error, message):
    with pytest.raises(error, match=message):
        call()
