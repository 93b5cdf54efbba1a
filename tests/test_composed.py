"""The label-composed model's kernel (``train_composed_epoch``) against the NumPy reference of
``tests/composed_reference.py``, and its composition rules.

An image whose labels are all but one of the model's has exactly one negative, whatever the
sampler draws: a visit is then deterministic but for the order of its pairs, which the kernel
draws. The kernel's result must equal the reference's for one of the orders.
"""

import itertools

import numpy as np
import pytest
import scipy.sparse as sp

import composed_reference as reference
from vse_recsys import _sampler
from vse_recsys.model import LOSSES, SAMPLERS


def _one_visit(labels_of_image, n_labels, k=4, *, loss="hinge", bias=True, free=False,
               adagrad=False, exponent=0.5, seed=0, lr=0.05, reg=0.01, margin=1.0):
    rng = np.random.default_rng(seed)
    inputs = rng.normal(0, 0.5, (n_labels, k))
    labels = rng.normal(0, 0.5, (n_labels, k + bias))
    free_vectors = rng.normal(0, 0.5, (1, k)) if free else np.zeros((0, k))
    sums = None
    if adagrad:
        sums = (np.ones_like(inputs), np.ones_like(labels), np.ones_like(free_vectors))
    indptr = np.array([0, len(labels_of_image)], dtype=np.int64)
    indices = np.array(sorted(labels_of_image), dtype=np.int32)
    before = (inputs.copy(), labels.copy(), free_vectors.copy(),
              None if sums is None else tuple(s.copy() for s in sums))
    trained = [a.copy() for a in (inputs, labels, free_vectors)]
    trained_sums = None if sums is None else [s.copy() for s in sums]
    stats = _sampler.train_composed_epoch(
        trained[0], trained[1], trained[2], indptr, indices, np.array([0], dtype=np.int32),
        loss=LOSSES[loss], sampler=SAMPLERS["uniform"], learning_rate=lr, regularization=reg,
        margin=margin, max_sampled=50, verify_negative_samples=True,
        warp_weights=_sampler.warp_rank_weights(n_labels),
        rng_states=_sampler.make_rng_states(np.random.default_rng(seed), 1),
        refresh_interval=10**9, num_threads=1, exponent=exponent, bias=bias, free=free,
        input_sums=None if sums is None else trained_sums[0],
        item_sums=None if sums is None else trained_sums[1],
        free_sums=None if sums is None else trained_sums[2])
    return before, trained, trained_sums, indices, stats


def _matches_one_order(before, trained, trained_sums, indices, negative, **params):
    inputs, labels, free_vectors, sums = before
    outcomes = []
    for order in itertools.permutations(range(len(indices))):
        expected = [inputs.copy(), labels.copy(), free_vectors.copy()]
        expected_sums = None if sums is None else [s.copy() for s in sums]
        reference.visit(expected[0], expected[1], indices, order, [negative] * len(indices),
                        free=expected[2][0] if len(expected[2]) else None,
                        sums=None if sums is None else (expected_sums[0], expected_sums[1],
                                                        expected_sums[2][0] if len(
                                                            expected_sums[2]) else None),
                        **params)
        same = all(np.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(expected, trained))
        if sums is not None:
            same = same and all(np.allclose(a, b, rtol=1e-10, atol=1e-12)
                                for a, b in zip(expected_sums, trained_sums))
        outcomes.append(same)
    return any(outcomes)


@pytest.mark.parametrize("loss", ["hinge", "bpr"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("free", [False, True])
@pytest.mark.parametrize("adagrad", [False, True])
def test_a_visit_matches_the_reference_for_one_order_of_its_pairs(loss, bias, free, adagrad):
    labels_of_image = [0, 1, 2]  # of 4 labels: label 3 is the only negative
    before, trained, sums, indices, stats = _one_visit(
        labels_of_image, 4, loss=loss, bias=bias, free=free, adagrad=adagrad, margin=5.0)
    assert stats["pairs"] == 3 and stats["updates"] == 3 and stats["skipped"] == 0
    assert _matches_one_order(before, trained, sums, indices, 3, loss=loss, bias=bias,
                              margin=5.0)


@pytest.mark.parametrize("exponent", [0.0, 0.5, 1.0])
def test_the_exponent_scales_the_sum_of_the_other_labels(exponent):
    before, trained, sums, indices, _ = _one_visit([0, 1, 2, 4], 6, exponent=exponent,
                                                   margin=50.0)
    # label 3 and 5 are negatives: the drawn one is unknown, try both for every order
    found = False
    for negatives in itertools.product([3, 5], repeat=4):
        inputs, labels, free_vectors, _ = before
        for order in itertools.permutations(range(4)):
            expected = [inputs.copy(), labels.copy()]
            reference.visit(expected[0], expected[1], indices, order, list(negatives),
                            exponent=exponent, margin=50.0)
            if all(np.allclose(a, b, rtol=1e-10) for a, b in zip(expected, trained)):
                found = True
                break
        if found:
            break
    assert found


def test_leaving_the_positive_in_the_sum_would_differ():
    """The kernel leaves p out: the reference with p kept in the sum does not match it."""
    before, trained, _, indices, _ = _one_visit([0, 1], 3, margin=5.0)
    inputs, labels, _, _ = before
    for order in itertools.permutations(range(2)):
        copied = [inputs.copy(), labels.copy()]
        total = copied[0][indices].sum(axis=0)
        for position in order:  # the copying model: u includes the positive's own input
            user = np.append(2 ** -0.5 * total, 1.0)
            positive = indices[position]
            reference.ascend(copied[1][positive], None, user, 1.0, 0.05, 0.01)
            reference.ascend(copied[1][2], None, user, -1.0, 0.05, 0.01)
        assert not np.allclose(copied[1], trained[1])


def test_an_image_with_one_label_trains_only_the_bias():
    before, trained, _, _, stats = _one_visit([1], 2, margin=5.0)
    inputs, labels, _, _ = before
    assert stats["updates"] == 1
    # no other label: no input gradient, only the visit's L2 shrinkage of the image's input
    np.testing.assert_array_equal(trained[0][0], inputs[0])
    np.testing.assert_allclose(trained[0][1], inputs[1] * (1 - 0.05 * 0.01), rtol=1e-12)
    # u = (0, ..., 0, 1): only the bias column and the L2 shrinkage move the label vectors
    moved = trained[1] - labels
    np.testing.assert_allclose(moved[:, :-1], -0.05 * 0.01 * labels[:, :-1], rtol=1e-12)
    assert moved[1, -1] == pytest.approx(0.05 * (1 - 0.01 * labels[1, -1]))
    assert moved[0, -1] == pytest.approx(0.05 * (-1 - 0.01 * labels[0, -1]))


def test_an_image_with_every_label_is_skipped_and_nothing_moves():
    before, trained, _, _, stats = _one_visit([0, 1, 2], 3)
    assert stats["skipped"] == 3 and stats["updates"] == 0
    for original, now in zip(before[:3], trained):
        np.testing.assert_array_equal(original, now)


def test_bad_shapes_and_settings_are_refused():
    inputs = np.zeros((4, 3))
    labels = np.zeros((4, 4))
    common = dict(loss=LOSSES["hinge"], sampler=SAMPLERS["uniform"], learning_rate=0.1,
                  regularization=0.0, margin=1.0, max_sampled=10, verify_negative_samples=True,
                  warp_weights=_sampler.warp_rank_weights(4),
                  rng_states=_sampler.make_rng_states(np.random.default_rng(0), 1),
                  refresh_interval=100, num_threads=1)
    indptr = np.array([0, 2], dtype=np.int64)
    indices = np.array([0, 1], dtype=np.int32)
    order = np.array([0], dtype=np.int32)
    with pytest.raises(ValueError, match="needs 3"):
        _sampler.train_composed_epoch(inputs, labels, np.zeros((0, 3)), indptr, indices, order,
                                      bias=False, **common)
    with pytest.raises(ValueError, match="image_order holds images outside"):
        _sampler.train_composed_epoch(inputs, labels, np.zeros((0, 3)), indptr, indices,
                                      np.array([1], dtype=np.int32), **common)
    with pytest.raises(ValueError, match="dropout must be in"):
        _sampler.train_composed_epoch(inputs, labels, np.zeros((0, 3)), indptr, indices, order,
                                      dropout=1.0, **common)


def test_label_dropout_leaves_labels_out_of_the_visit_and_their_inputs_unchanged():
    """With dropout near 1 almost every visit sums nothing: the inputs get no gradient."""
    n_images, n_labels, k = 200, 30, 4
    rng = np.random.default_rng(1)
    rows = sp.random(n_images, n_labels, density=0.2, format="csr", random_state=2)
    rows.data[:] = 1
    inputs = rng.normal(0, 0.5, (n_labels, k))
    labels = rng.normal(0, 0.5, (n_labels, k + 1))
    common = dict(loss=LOSSES["hinge"], sampler=SAMPLERS["uniform"], learning_rate=0.05,
                  regularization=0.0, margin=1.0, max_sampled=10, verify_negative_samples=True,
                  warp_weights=_sampler.warp_rank_weights(n_labels), refresh_interval=10**9,
                  num_threads=1)
    order = np.arange(n_images, dtype=np.int32)
    indptr, indices = rows.indptr.astype(np.int64), rows.indices.astype(np.int32)

    def moved(dropout):
        trained = inputs.copy()
        _sampler.train_composed_epoch(
            trained, labels.copy(), np.zeros((0, k)), indptr, indices, order, dropout=dropout,
            rng_states=_sampler.make_rng_states(np.random.default_rng(0), 1), **common)
        return np.count_nonzero(np.any(trained != inputs, axis=1))

    assert moved(0.0) == np.count_nonzero(rows.getnnz(axis=0))
    # P(a visit keeps >= 2 labels) is tiny at 0.999: at most a label or two ever move
    assert moved(0.999) <= 2


def test_the_composition_of_a_row_is_the_scaled_sum_of_its_inputs():
    rows = sp.csr_matrix(np.array([[1, 0, 1, 1], [0, 1, 0, 0], [0, 0, 0, 0]], np.float32))
    inputs = np.arange(12, dtype=np.float64).reshape(4, 3)
    vectors = reference.compose(rows, inputs, exponent=0.5)
    np.testing.assert_allclose(vectors[0, :3], (inputs[0] + inputs[2] + inputs[3]) / np.sqrt(3))
    np.testing.assert_allclose(vectors[1, :3], inputs[1])
    np.testing.assert_allclose(vectors[2], [0, 0, 0, 1])
