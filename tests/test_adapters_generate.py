"""Tests for ``generate_image_labels``: shape, seeding, label counts, popularity, learnability."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from vse_recsys.adapters import ImageLabels, generate_image_labels, leave_one_out_split


def same(a, b):
    return (a.user_items != b.user_items).nnz == 0


@given(
    n_images=st.integers(1, 60),
    n_labels=st.integers(1, 40),
    labels_per_image=st.floats(1, 6),
    factors=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_shape_labels_per_image_and_determinism(
    n_images, n_labels, labels_per_image, factors, seed
):
    data = generate_image_labels(n_images, n_labels, labels_per_image, factors, random_state=seed)
    assert isinstance(data, ImageLabels)
    assert data.user_items.shape == (n_images, n_labels)
    assert data.labels_per_image.min() >= 1
    assert data.labels_per_image.max() <= n_labels
    assert set(data.user_items.data) == {1.0}
    assert same(
        data,
        generate_image_labels(n_images, n_labels, labels_per_image, factors, random_state=seed),
    )


def test_every_kind_of_seed_works_and_reproduces():
    def gen(seed):
        return generate_image_labels(300, 50, random_state=seed)

    assert same(gen(1), gen(1)) and not same(gen(1), gen(2))
    assert same(gen(np.random.default_rng(4)), gen(np.random.default_rng(4)))
    assert same(gen(np.random.RandomState(4)), gen(np.random.RandomState(4)))
    assert gen(None).n_images == 300
    with pytest.raises(TypeError, match="random_state"):
        gen("4")


def test_mean_labels_per_image():
    data = generate_image_labels(5000, 1000, labels_per_image=3.5, random_state=0)
    assert data.labels_per_image.mean() == pytest.approx(3.5, rel=0.03)
    assert data.labels_per_image.std() > 0.5  # variable, not constant


@pytest.mark.parametrize("exponent", [0.5, 1.0, 1.5])
def test_popularity_is_zipf_like(exponent):
    data = generate_image_labels(20000, 1000, zipf_exponent=exponent, random_state=0)
    frequency = np.sort(data.images_per_label)[::-1]
    # the rank-frequency curve is a power law of the given exponent past the first few labels
    # (those saturate: a label appears at most once per image)
    ranks = np.arange(10, 301)
    slope = np.polyfit(np.log(ranks), np.log(frequency[ranks - 1]), 1)[0]
    assert slope == pytest.approx(-exponent, abs=0.15)


def test_zero_exponent_gives_flat_popularity():
    data = generate_image_labels(20000, 100, zipf_exponent=0, random_state=0)
    frequency = data.images_per_label
    assert frequency.max() < 2 * frequency.min()


def hit_rate_at_10(train, test, scores):
    scores = np.where(train.toarray() > 0, -np.inf, scores)
    rows = np.flatnonzero(np.diff(test.indptr))
    top = np.argpartition(-scores[rows], 10, axis=1)[:, :10]
    return (top == test.indices[test.indptr[rows]][:, None]).any(axis=1).mean()


def learned_over_popularity(data):
    """Leave-one-out hit rate@10 of a co-occurrence learner over that of popularity."""
    train, test = leave_one_out_split(data, random_state=1)
    popularity = np.asarray(train.sum(axis=0)).ravel()
    co = (train.T @ train).toarray()
    np.fill_diagonal(co, 0)
    # score a label by how often it co-occurs with each of the image's training labels
    co_occurrence = np.asarray(train @ (co / np.maximum(popularity, 1)[:, None]))
    learned = hit_rate_at_10(train, test, co_occurrence + 1e-6 * popularity)
    return learned / hit_rate_at_10(train, test, np.tile(popularity, (train.shape[0], 1)))


def test_held_out_labels_are_predictable_well_above_popularity():
    assert learned_over_popularity(generate_image_labels(2000, 500, random_state=0)) > 1.25


def test_more_noise_means_less_structure():
    ratios = [
        learned_over_popularity(generate_image_labels(2000, 200, noise=noise, random_state=0))
        for noise in (0.1, 0.5, 100.0)
    ]
    assert ratios[0] > ratios[1] > ratios[2]
    assert ratios[2] < 1.1  # pure popularity: nothing to learn beyond it


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_images=0), "n_images must be >= 1"),
        (dict(n_labels=2.5), "n_labels must be an integer"),
        (dict(labels_per_image=0.5), "labels_per_image must be >= 1"),
        (dict(noise=0), "noise must be > 0"),
        (dict(zipf_exponent=-1), "zipf_exponent must be >= 0"),
        (dict(factors=True), "factors must be an integer"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_image_labels(**kwargs)


def test_large_generation_keeps_its_size():
    # the throughput benchmark's size: ~1M pairs over 5,000 labels (its speed is measured by
    # benchmarks/reading.py, not here)
    data = generate_image_labels(200_000, 5000, 5.0, random_state=0)
    assert data.n_pairs == pytest.approx(1_000_000, rel=0.01)
    assert sp.isspmatrix_csr(data.user_items)
