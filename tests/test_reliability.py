"""Faults: Ctrl-C during a fit, and interrupted saves."""

import os
import signal
import threading
import time

import numpy as np
import pytest

from test_model import random_labels
from vse_recsys import VSEEns


def _interrupt_after(seconds):
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("sampler, loss", [("adaptive", "hinge"), ("uniform", "warp")])
def test_ctrl_c_stops_promptly_and_keeps_the_last_completed_epoch(threads, sampler, loss):
    user_items = random_labels(n_images=40_000, n_labels=2_000, per_image=8)
    snapshots = []
    model = VSEEns(factors=32, iterations=10_000, num_threads=threads, sampler=sampler,
                   loss=loss, learning_rate=0.01, random_state=0)
    callback = lambda *_: snapshots.append(model.item_factors.copy())  # noqa: E731
    first_epoch = time.perf_counter()
    VSEEns(factors=32, iterations=1, num_threads=threads, sampler=sampler, loss=loss,
           random_state=0).fit(user_items, show_progress=False)
    epoch_seconds = time.perf_counter() - first_epoch

    timer = _interrupt_after(max(0.5, 2.5 * epoch_seconds))
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        model.fit(user_items, show_progress=False, callback=callback)
    stopped = time.perf_counter() - started
    timer.cancel()

    assert snapshots, "the interrupt came before the first epoch ended"
    np.testing.assert_array_equal(model.item_factors, snapshots[-1])
    assert np.isfinite(model.user_factors).all()
    # stopped within about one epoch of the signal, not at the end of the 10,000 epochs
    assert stopped < max(0.5, 2.5 * epoch_seconds) + 2 * epoch_seconds + 1.0
    ids, _ = model.recommend(0, user_items[0], N=3)  # still usable
    assert len(ids) == 3


def test_ctrl_c_in_the_first_epoch_leaves_a_new_model_unfitted():
    user_items = random_labels(n_images=200_000, n_labels=5_000, per_image=10)
    model = VSEEns(factors=64, iterations=1, num_threads=1, random_state=0)
    timer = _interrupt_after(0.3)
    with pytest.raises(KeyboardInterrupt):
        model.fit(user_items, show_progress=False)
    timer.cancel()
    assert model.user_factors is None and model.item_factors is None
