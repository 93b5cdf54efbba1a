"""Only collected against the bounds-checked build (``./run.sh test-boundscheck``, part of CI):
an out-of-range index into the kernels' typed arrays raises IndexError there instead of
silently corrupting memory. ``tests/conftest.py`` leaves this file out of normal builds, where
the same calls would write out of bounds.
"""

import numpy as np
import pytest

from vse_recsys import _sampler
from vse_recsys.model import LOSSES, SAMPLERS


@pytest.fixture(autouse=True)
def checked_build():
    """Refuse to run (before any out-of-range call) against a build without the checks."""
    assert _sampler.BOUNDSCHECK, (
        f"{_sampler.__file__} was built without bounds checks: run ./run.sh test-boundscheck"
    )


def test_the_installed_checked_build_is_imported():
    assert "site-packages" in _sampler.__file__, _sampler.__file__


def _epoch(pair_users, pair_labels, n_images=4, n_labels=5, sampler="uniform", threads=1):
    """One train_epoch call on tiny data with the given pairs."""
    generator = np.random.default_rng(0)
    user_factors = generator.normal(size=(n_images, 3)).astype(np.float32)
    item_factors = generator.normal(size=(n_labels, 3)).astype(np.float32)
    indptr = np.array([0, 1, 2, 3, 4], dtype=np.int64)
    indices = np.array([0, 1, 2, 3], dtype=np.int32)
    adaptive = _sampler.AdaptiveSampler(n_labels, 3, 2.0, threads)
    return _sampler.train_epoch(
        user_factors, item_factors, indptr, indices,
        np.asarray(pair_users, dtype=np.int32), np.asarray(pair_labels, dtype=np.int32),
        loss=LOSSES["hinge"], sampler=SAMPLERS[sampler], adaptive=adaptive, learning_rate=0.05,
        regularization=0.01, margin=1.0, max_sampled=10, verify_negative_samples=True,
        warp_weights=_sampler.warp_rank_weights(n_labels),
        rng_states=_sampler.make_rng_states(generator, threads), refresh_interval=100,
        num_threads=threads,
    )


def test_valid_pairs_train_under_the_checks():
    stats = _epoch([0, 1, 2, 3], [0, 1, 2, 3], sampler="adaptive")
    assert stats["pairs"] == 4


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "pair_users, pair_labels",
    [([0, 9], [0, 1]), ([0, 1], [0, 7]), ([0, -1], [0, 1])],
    ids=["image past the end", "label past the end", "negative image"],
)
def test_an_out_of_range_pair_raises_index_error(pair_users, pair_labels, threads):
    with pytest.raises(IndexError, match="Out of bounds"):
        _epoch(pair_users, pair_labels, threads=threads)
