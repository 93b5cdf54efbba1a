"""The compiled kernels against NumPy references, and the build's no-GIL guarantee."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vse_recsys import _sampler

SOURCE = Path(__file__).resolve().parent.parent / "vse_recsys" / "_sampler.pyx"
LOSSES = {"hinge": _sampler.Loss.HINGE, "warp": _sampler.Loss.WARP, "bpr": _sampler.Loss.BPR}


def reference_step(user, pos, neg, loss, lr, reg, margin, rank_weight):
    """ALGORITHM.md's update, written out in NumPy (float64)."""
    u, p, q = (np.asarray(v, dtype=np.float64) for v in (user, pos, neg))
    s_pos, s_neg = u @ p, u @ q
    if loss == "bpr":
        scale = 1 / (1 + np.exp(s_pos - s_neg))
    elif margin - s_pos + s_neg > 0:
        scale = rank_weight if loss == "warp" else 1.0
    else:
        return u, p, q, 0.0
    return (
        u + lr * (scale * (p - q) - reg * u),
        p + lr * (scale * u - reg * p),
        q + lr * (-scale * u - reg * q),
        scale,
    )


vectors = st.integers(1, 70).flatmap(
    lambda k: st.tuples(
        *[arrays(np.float64, k, elements=st.floats(-2, 2, allow_subnormal=False))] * 3
    )
)


@given(
    vectors=vectors,
    loss=st.sampled_from(sorted(LOSSES)),
    lr=st.floats(1e-4, 0.5),
    reg=st.floats(0, 0.1),
    margin=st.sampled_from([0.0, 0.5, 1.0]),
    rank_weight=st.floats(1, 10),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_pair_update_matches_the_numpy_reference(vectors, loss, lr, reg, margin, rank_weight,
                                                 dtype):
    user, pos, neg = (np.ascontiguousarray(v, dtype=dtype) for v in vectors)
    expected = reference_step(user, pos, neg, loss, lr, reg, margin, rank_weight)
    # the kernel decides "violated" in the model's precision; skip knife-edge cases
    violation = margin - float(user.astype(np.float64) @ pos) + float(user.astype(np.float64) @ neg)
    if loss != "bpr" and abs(violation) < 1e-3:
        return
    scale = _sampler.pair_update(user, pos, neg, LOSSES[loss], lr, reg, margin, rank_weight)
    tolerance = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(scale, expected[3], **tolerance)
    for got, want in zip((user, pos, neg), expected[:3]):
        np.testing.assert_allclose(got, want, **tolerance)


def test_hinge_update_only_when_the_margin_is_violated():
    user = np.array([1.0, 0.0], dtype=np.float32)
    pos = np.array([2.0, 0.0], dtype=np.float32)  # s_pos = 2
    neg = np.array([0.5, 0.0], dtype=np.float32)  # s_neg = 0.5: 1 - 2 + 0.5 < 0
    before = [v.copy() for v in (user, pos, neg)]
    assert _sampler.pair_update(user, pos, neg, _sampler.Loss.HINGE, 0.1, 0.01, 1.0) == 0
    for got, want in zip((user, pos, neg), before):
        np.testing.assert_array_equal(got, want)


def test_warp_rank_weights_are_harmonic_numbers():
    weights = _sampler.warp_rank_weights(5)
    np.testing.assert_allclose(weights, [0, 1, 1.5, 1.5 + 1 / 3, 1.5 + 1 / 3 + 0.25])


@pytest.mark.parametrize("n_labels", [1, 2, 7, 2049, 5000])
@pytest.mark.parametrize("threads", [1, 2])
def test_refresh_sorts_each_factor_and_measures_its_spread(n_labels, threads):
    rng = np.random.default_rng(n_labels)
    factors = rng.normal(size=(n_labels, 5)).astype(np.float32)
    factors[: n_labels // 3, 0] = 0.25  # ties
    factors[1:2, 1] = -0.0
    sampler = _sampler.AdaptiveSampler(n_labels, 5, 10.0, threads)
    sampler.refresh(factors)
    for f in range(5):
        order = sampler.sorted_labels[f]
        assert sorted(order) == list(range(n_labels))
        values = factors[order, f]
        assert np.all(values[:-1] >= values[1:]), f"factor {f} not descending"
    np.testing.assert_allclose(sampler.sigma, factors.astype(np.float64).std(axis=0), rtol=1e-6,
                               atol=1e-9)
    factors *= -1  # the next refresh must see the change
    sampler.refresh(factors)
    values = factors[sampler.sorted_labels[2], 2]
    assert np.all(values[:-1] >= values[1:])


def test_kernels_compile_without_performance_hints(tmp_path):
    """Cython reports a 'performance hint' when a nogil helper lacks noexcept (it would take
    the GIL to check for exceptions on every call) and for similar slow paths. The kernels are
    compiled here with the build's directives and must produce none."""
    if shutil.which("cython") is None and not _has_cython():
        pytest.fail("Cython is a test dependency: install the 'test' extra")
    source_dir = tmp_path / "src"
    shutil.copytree(SOURCE.parent, source_dir, ignore=shutil.ignore_patterns("*.so", "*.c"))
    result = subprocess.run(
        [sys.executable, "-m", "cython", "-3", "-X", "boundscheck=False", "-X",
         "wraparound=False", "-X", "cdivision=True", "-X", "initializedcheck=False",
         str(source_dir / "_sampler.pyx"), "-o", str(tmp_path / "out.c")],
        capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr
    hints = [line for line in result.stderr.splitlines()
             if re.search(r"performance hint|warning", line, re.IGNORECASE)]
    assert hints == []


def _has_cython():
    try:
        import Cython  # noqa: F401
    except ImportError:
        return False
    return True


def test_the_build_has_the_bounds_checking_that_was_asked_for():
    """`./run.sh test` must import the fast build, `./run.sh test-boundscheck` the checked one
    (it sets VSE_RECSYS_BOUNDSCHECK=1): a mix-up would make one of the runs test the wrong
    kernels."""
    wanted = os.environ.get("VSE_RECSYS_BOUNDSCHECK", "").strip().lower() in {"1", "true", "yes",
                                                                                "on"}
    assert _sampler.BOUNDSCHECK is wanted, _sampler.__file__


def _epoch_inputs(n_images=30, n_labels=12, k=4, seed=0):
    rng = np.random.default_rng(seed)
    user_items = (rng.random((n_images, n_labels)) < 0.3).astype(np.float32)
    user_items[:, 0] = 1  # every image has a label
    indptr = np.concatenate([[0], np.cumsum(user_items.sum(axis=1))]).astype(np.int64)
    indices = np.concatenate([np.flatnonzero(row) for row in user_items]).astype(np.int32)
    pair_users = np.repeat(np.arange(n_images, dtype=np.int32), np.diff(indptr))
    users = (rng.standard_normal((n_images, k)) * 0.1).astype(np.float32)
    items = (rng.standard_normal((n_labels, k)) * 0.1).astype(np.float32)
    return users, items, indptr, indices, pair_users, indices.copy()


def test_train_epoch_refuses_more_threads_than_the_sampler_has_scratch_for():
    """Each thread sorts into its own scratch row of the AdaptiveSampler: a sampler built for one
    thread used by two would write past its scratch, so the kernel must refuse (found by the
    sampler statistics suite)."""
    users, items, indptr, indices, pair_users, pair_labels = _epoch_inputs()
    adaptive = _sampler.AdaptiveSampler(items.shape[0], items.shape[1], 3.0, num_threads=1)
    args = (users, items, indptr, indices, pair_users, pair_labels)
    settings = dict(loss=_sampler.Loss.HINGE, sampler=_sampler.Sampler.ADAPTIVE,
                    adaptive=adaptive, learning_rate=0.05, regularization=0.01, margin=1.0,
                    max_sampled=10, verify_negative_samples=True,
                    warp_weights=_sampler.warp_rank_weights(items.shape[0]),
                    rng_states=_sampler.make_rng_states(np.random.default_rng(0), 2),
                    refresh_interval=50)
    with pytest.raises(ValueError, match="built for 1 threads"):
        _sampler.train_epoch(*args, **settings, num_threads=2)
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        _sampler.train_epoch(*args, **settings, num_threads=0)
    stats = _sampler.train_epoch(*args, **settings, num_threads=1)
    assert stats["pairs"] == len(pair_labels) and stats["threads_used"] == 1


def test_train_epoch_writes_the_advanced_rng_state_back():
    """Threads work on cache-aligned copies of their RNG states; the copies must be written
    back, or the next epoch would replay this epoch's draws."""
    users, items, indptr, indices, pair_users, pair_labels = _epoch_inputs()
    states = _sampler.make_rng_states(np.random.default_rng(0), 2)
    before = states.copy()
    _sampler.train_epoch(users, items, indptr, indices, pair_users, pair_labels,
                         loss=_sampler.Loss.BPR, sampler=_sampler.Sampler.UNIFORM, adaptive=None,
                         learning_rate=0.05, regularization=0.01, margin=1.0, max_sampled=10,
                         verify_negative_samples=True,
                         warp_weights=_sampler.warp_rank_weights(items.shape[0]),
                         rng_states=states, refresh_interval=50, num_threads=2)
    assert not np.array_equal(states[:, :4], before[:, :4])
    np.testing.assert_array_equal(states[:, 4:], before[:, 4:])  # padding untouched


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_per_thread_rows_start_on_cache_lines(dtype):
    rows = _sampler._cache_aligned_rows(3, 8, dtype)
    assert rows.shape == (3, 8) and rows.ctypes.data % 64 == 0 and not rows.any()


def test_training_draws_harder_negatives_with_the_adaptive_sampler():
    """End to end through the epoch kernel (its draw-ahead pipeline included): on a partly
    trained model, the adaptive sampler's first-choice negatives outscore the positive far more
    often than uniform draws do.

    Measured with margin 0 and a learning rate of 1e-12 (the model does not move), over ~8,000
    pairs: adaptive 0.17-0.20, uniform 0.11-0.13 (ratio 1.56-1.60 over seeds 0-3). The binomial
    standard error of each rate is ~0.004, so ``ratio > 1.25`` passes with a wide margin, while
    a kernel that ignores the sampled slot (uniform in effect, ratio ~1) or reads the wrong end
    of the sorted lists (ratio < 1) fails.
    """
    from vse_recsys import VSEEns
    from vse_recsys.adapters import generate_image_labels

    data = generate_image_labels(n_images=2000, n_labels=300, labels_per_image=4,
                                 random_state=0).user_items
    model = VSEEns(factors=16, iterations=10, num_threads=1, random_state=0,
                   image_vectors="free", label_bias=False, learning_schedule="sgd",
                   early_stopping=False)
    model.fit(data, show_progress=False)
    indptr = data.indptr.astype(np.int64)
    pair_users = np.repeat(np.arange(data.shape[0], dtype=np.int32), np.diff(indptr))
    rates = {}
    for sampler in (_sampler.Sampler.ADAPTIVE, _sampler.Sampler.UNIFORM):
        adaptive = _sampler.AdaptiveSampler(data.shape[1], 16, 0.3 * data.shape[1], 1)
        stats = _sampler.train_epoch(
            model.user_factors.copy(), model.item_factors.copy(), indptr, data.indices,
            pair_users, data.indices, loss=_sampler.Loss.HINGE, sampler=sampler,
            adaptive=adaptive, learning_rate=1e-12, regularization=0.0, margin=0.0,
            max_sampled=10, verify_negative_samples=True,
            warp_weights=_sampler.warp_rank_weights(data.shape[1]),
            rng_states=_sampler.make_rng_states(np.random.default_rng(0), 1),
            refresh_interval=10**9, num_threads=1)
        rates[sampler] = stats["violations"] / stats["pairs"]
    assert rates[_sampler.Sampler.ADAPTIVE] > 1.25 * rates[_sampler.Sampler.UNIFORM], rates


@pytest.mark.parametrize("candidates", [1, 3])
def test_each_pair_trains_on_the_highest_scoring_of_its_candidates(candidates):
    """With ``candidates = c`` and the uniform sampler over M = 20 negatives, the negative
    trained on is the best-scoring of c independent uniform draws, so the one ranked r-th
    (r = 1 the highest) is chosen with probability ((M - r + 1)^c - (M - r)^c) / M^c.

    Read off the updates: 40,000 images share the vector (1, 0) and the single positive label 0;
    negative a has the vector (a, 0), so its score is a; the margin is huge, so every pair
    violates and moves its negative's first coordinate by exactly -lr (reg 0). The learning
    rate (1e-6) moves a score by at most 0.04 over the epoch, far less than the gap of 1
    between two negatives, so the ranking stays fixed. A chi-square goodness-of-fit p-value
    below 1e-6 fails; a kernel that ignores ``candidates`` (c = 3 judged as uniform) gives a
    chi-square in the tens of thousands, p ~ 0.
    """
    from scipy import stats

    n_images, m, lr = 40_000, 20, 1e-6
    users = np.zeros((n_images, 2))
    users[:, 0] = 1
    items = np.zeros((m + 1, 2))
    items[0, 0] = m + 1.0
    items[1:, 0] = np.arange(1, m + 1)
    before = items.copy()
    indptr = np.arange(n_images + 1, dtype=np.int64)
    indices = np.zeros(n_images, dtype=np.int32)
    stats_ = _sampler.train_epoch(
        users, items, indptr, indices, np.arange(n_images, dtype=np.int32), indices,
        loss=_sampler.Loss.HINGE, sampler=_sampler.Sampler.UNIFORM, adaptive=None,
        learning_rate=lr, regularization=0.0, margin=1e6, max_sampled=10,
        verify_negative_samples=True, warp_weights=_sampler.warp_rank_weights(m + 1),
        rng_states=_sampler.make_rng_states(np.random.default_rng(0), 1),
        refresh_interval=10**9, num_threads=1, candidates=candidates)
    # (draws that hit the positive are redrawn and counted, so draws >= candidates per pair)
    assert stats_["draws"] >= candidates * n_images and stats_["updates"] == n_images
    chosen = np.rint((before[1:, 0] - items[1:, 0]) / lr).astype(int)  # per negative a = 1..M
    assert chosen.sum() == n_images
    by_rank = chosen[::-1]  # rank 1 = label M, the highest score
    r = np.arange(1, m + 1)
    expected = ((m - r + 1.0) ** candidates - (m - r) ** candidates) / m**candidates
    p_value = stats.chisquare(by_rank, n_images * expected).pvalue
    assert p_value > 1e-6, (by_rank, p_value)


def test_train_epoch_refuses_candidates_for_warp():
    users, items, indptr, indices, pair_users, pair_labels = _epoch_inputs()
    with pytest.raises(ValueError, match="1 for WARP"):
        _sampler.train_epoch(users, items, indptr, indices, pair_users, pair_labels,
                             loss=_sampler.Loss.WARP, sampler=_sampler.Sampler.UNIFORM,
                             adaptive=None, learning_rate=0.05, regularization=0.01, margin=1.0,
                             max_sampled=10, verify_negative_samples=True,
                             warp_weights=_sampler.warp_rank_weights(items.shape[0]),
                             rng_states=_sampler.make_rng_states(np.random.default_rng(0), 1),
                             refresh_interval=50, num_threads=1, candidates=2)


# -- the epoch's order of the pairs -------------------------------------------------------------


def _csr_pairs(rows):
    """indptr (int64), indices (int32) and the (image, label) pairs of a list of label lists."""
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    indices = np.array([a for r in rows for a in r], dtype=np.int32)
    pairs = sorted((i, a) for i, r in enumerate(rows) for a in r)
    return indptr, indices, pairs


@given(rows=st.lists(st.lists(st.integers(0, 50), max_size=6), min_size=1, max_size=40),
       threads=st.sampled_from([1, 2]), pile_size=st.sampled_from([1, 3, 4096]),
       seed=st.integers(0, 2**32 - 1))
def test_shuffled_pairs_are_every_pair_once(rows, threads, pile_size, seed):
    """Whatever the piles and threads, an epoch's order holds every (image, label) pair exactly
    once, images without labels included in the walk (they contribute nothing)."""
    indptr, indices, pairs = _csr_pairs(rows)
    shuffler = _sampler.PairShuffler(indptr, indices, threads, pile_size)
    states = _sampler.make_rng_states(np.random.default_rng(seed), threads)
    for _ in range(2):
        images, labels = shuffler.shuffle(states)
        assert sorted(zip(images.tolist(), labels.tolist())) == pairs


@pytest.mark.parametrize("threads, pile_size", [(1, 2), (2, 2), (1, 4096)])
def test_shuffle_gives_every_permutation_equally_often(threads, pile_size):
    """Rao-Sandelius (random piles, Fisher-Yates in each) is uniform over permutations: 5 pairs
    shuffled 60,000 times give each of the 120 orders ~500 times. Chi-square goodness of fit,
    119 degrees of freedom: a correct shuffle passes p > 1e-6 with probability 1 - 1e-6, while
    a biased one (piles read in a fixed order without shuffling, a Fisher-Yates off by one,
    threads writing the same slots) is off by hundreds of counts per order, p ~ 0."""
    from itertools import permutations

    from scipy import stats

    indptr, indices, _ = _csr_pairs([[0, 1], [2], [], [3, 4]])
    shuffler = _sampler.PairShuffler(indptr, indices, threads, pile_size)
    states = _sampler.make_rng_states(np.random.default_rng(7), threads)
    index = {order: i for i, order in enumerate(permutations(range(5)))}
    counts = np.zeros(120, dtype=np.int64)
    for _ in range(60_000):
        _, labels = shuffler.shuffle(states)  # labels 0..4 are the pairs
        counts[index[tuple(labels.tolist())]] += 1
    assert stats.chisquare(counts).pvalue > 1e-6, counts


def test_shuffle_with_two_threads_puts_each_pair_anywhere_uniformly():
    """64 pairs in piles of ~4 across 2 threads, 20,000 shuffles: the position of every pair
    is uniform over the 64 slots (chi-square over the 64 x 64 counts, 3,969 degrees of
    freedom; p > 1e-6), so no pair is stuck in its own thread's half or its pile's region."""
    from scipy import stats

    indptr, indices, _ = _csr_pairs([list(range(i * 8, i * 8 + 8)) for i in range(8)])
    shuffler = _sampler.PairShuffler(indptr, indices, 2, 4)
    assert shuffler.n_piles == 16
    states = _sampler.make_rng_states(np.random.default_rng(8), 2)
    counts = np.zeros((64, 64), dtype=np.int64)
    for _ in range(20_000):
        _, labels = shuffler.shuffle(states)
        counts[labels, np.arange(64)] += 1
    expected = np.full(counts.shape, 20_000 / 64)
    statistic = ((counts - expected) ** 2 / expected).sum()
    assert stats.chi2.sf(statistic, 63 * 63) > 1e-6, statistic


def test_shuffle_is_reproducible_and_fresh_every_epoch():
    indptr, indices, _ = _csr_pairs([list(range(20))] * 50)
    orders = []
    for _ in range(2):
        shuffler = _sampler.PairShuffler(indptr, indices, 2, 64)
        states = _sampler.make_rng_states(np.random.default_rng(0), 2)
        orders.append([np.concatenate(shuffler.shuffle(states)).copy() for _ in range(2)])
    np.testing.assert_array_equal(orders[0][0], orders[1][0])  # same seed, same threads
    np.testing.assert_array_equal(orders[0][1], orders[1][1])
    assert not np.array_equal(orders[0][0], orders[0][1])  # the states advanced


def test_shuffler_refuses_inconsistent_pairs():
    with pytest.raises(ValueError, match="indptr must start at 0 and end at len"):
        _sampler.PairShuffler(np.array([0, 3], dtype=np.int64), np.zeros(2, dtype=np.int32))


def test_shuffle_and_fit_work_when_openmp_gives_fewer_threads_than_asked():
    """OpenMP may start fewer threads than requested (OMP_THREAD_LIMIT, a build without
    OpenMP, nested parallelism). The shuffle splits its work into fixed shares, not by thread
    id, so every pair is still placed, the order is the one two real threads would give, and a
    2-thread fit trains normally (found by review: shares of missing threads were skipped and
    training read garbage pair indices)."""
    code = """
import numpy as np
from vse_recsys import VSEEns, _sampler
indptr = np.arange(0, 3001, 3, dtype=np.int64)
indices = np.tile(np.arange(3, dtype=np.int32), 1000)
shuffler = _sampler.PairShuffler(indptr, indices, 2, 64)
images, labels = shuffler.shuffle(_sampler.make_rng_states(np.random.default_rng(0), 2))
assert sorted(zip(images.tolist(), labels.tolist())) == [(i, a) for i in range(1000) for a in range(3)]
np.save("order.npy", np.stack([images, labels]))
rng = np.random.default_rng(0)
import scipy.sparse as sp
matrix = sp.random(400, 50, density=0.1, format="csr", random_state=0, dtype=np.float32)
model = VSEEns(factors=8, iterations=2, num_threads=2, random_state=0).fit(matrix, show_progress=False)
assert np.isfinite(model.user_factors).all() and model.fit_history[-1]["threads_used"] == 1
print("ok")
"""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        # the subprocess imports the very build this test runs against
        package_parent = str(Path(_sampler.__file__).resolve().parents[1])
        env = dict(os.environ, OMP_THREAD_LIMIT="1",
                   PYTHONPATH=os.pathsep.join([package_parent, os.environ.get("PYTHONPATH", "")]))
        result = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
        limited = np.load(Path(folder) / "order.npy")
    indptr = np.arange(0, 3001, 3, dtype=np.int64)
    indices = np.tile(np.arange(3, dtype=np.int32), 1000)
    shuffler = _sampler.PairShuffler(indptr, indices, 2, 64)
    images, labels = shuffler.shuffle(_sampler.make_rng_states(np.random.default_rng(0), 2))
    np.testing.assert_array_equal(limited, np.stack([images, labels]))


def test_extra_candidates_are_never_positives_even_without_verification():
    """Best of c unverified draws would almost always pick one of the image's other positives
    (they score highest). Image 0 has positives 0..9 scored far above the 10 negatives; with
    verification off, the first draw is a positive about half the time (and then trained on,
    as documented), but an extra candidate never is: with c = 4 the fraction of updates that
    used a positive stays near one draw's 1/2, far from 1 - (1/2)^4."""
    n_images, lr = 20_000, 1e-9
    users = np.zeros((n_images, 2))
    users[:, 0] = 1
    items = np.zeros((20, 2))
    items[:10, 0] = 100 + np.arange(10)  # positives: the highest scores
    items[10:, 0] = np.arange(10)
    indptr = np.arange(0, 10 * n_images + 1, 10, dtype=np.int64)
    indices = np.tile(np.arange(10, dtype=np.int32), n_images)
    pair_users = np.arange(n_images, dtype=np.int32)
    pair_labels = np.full(n_images, 9, dtype=np.int32)  # each image trains positive 9 once
    before = items.copy()
    _sampler.train_epoch(users, items, indptr, indices, pair_users, pair_labels,
                         loss=_sampler.Loss.HINGE, sampler=_sampler.Sampler.UNIFORM,
                         adaptive=None, learning_rate=lr, regularization=0.0, margin=1e6,
                         max_sampled=10, verify_negative_samples=False,
                         warp_weights=_sampler.warp_rank_weights(20),
                         rng_states=_sampler.make_rng_states(np.random.default_rng(0), 1),
                         refresh_interval=10**9, num_threads=1, candidates=4)
    # a label used as the negative moves down by lr per use (positive 9 moves up as positive)
    used = np.rint((before[:, 0] - items[:, 0]) / lr).astype(int)
    used[9] = 0
    positive_fraction = used[:10].sum() / used.sum()
    assert 0.40 < positive_fraction < 0.60, (positive_fraction, used)
