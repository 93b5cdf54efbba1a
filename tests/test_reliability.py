"""Faults: Ctrl-C during a fit, divergence, too little memory, and concurrent use.

Faults in model files (interrupted saves, damaged files) are in ``test_reliability_files.py``;
fuzzed input in ``test_reliability_fuzz_*.py``.
"""

import os
import re
import signal
import threading
import tracemalloc

import numpy as np
import pytest

from strategies import CONFIGS, FREE, random_labels
from vse_recsys import VSEEns, _sampler, memory
from vse_recsys.memory import InsufficientMemoryError
from vse_recsys.model import DivergenceError


@pytest.fixture(autouse=True)
def python_handles_ctrl_c():
    """Python's own SIGINT handler, installed again at the C level for each test: in the full
    suite a library loaded by an earlier test can leave another one there (Ctrl-C was then
    never seen), which ``signal.getsignal`` does not show."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _interrupt_soon(sent):
    """Send SIGINT to this process from another thread, then set the Event ``sent``.

    The signal arrives while the main thread trains (in the kernels, which check for it) or in
    Python code between epochs: either way KeyboardInterrupt propagates out of ``fit``, which
    is what the tests wait for, and no signal is left armed for a later test.
    """

    def send():
        os.kill(os.getpid(), signal.SIGINT)
        sent.set()

    threading.Thread(target=send, daemon=True).start()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("sampler, loss", [("adaptive", "hinge"), ("uniform", "warp")])
def test_ctrl_c_keeps_the_last_completed_epoch(threads, sampler, loss):
    user_items = random_labels(n_images=40_000, n_labels=2_000, per_image=8)
    used = np.asarray(user_items.sum(axis=0)).ravel() > 0  # (unused labels are zeroed after)
    snapshots, sent = [], threading.Event()
    model = VSEEns(factors=32, iterations=10_000, num_threads=threads, sampler=sampler,
                   loss=loss, learning_rate=0.01, random_state=0, early_stopping=False)

    def callback(epoch, *_):
        snapshots.append(model.item_factors.copy())
        if epoch == 1:  # from here on the interrupt can come at any moment
            _interrupt_soon(sent)
        elif epoch > 1:
            sent.wait()  # the signal is pending now: it is raised before another epoch ends
            # (a lost interrupt fails here instead of training 10,000 epochs)
            assert epoch <= 3, f"Ctrl-C sent in epoch {len(snapshots) - 1} still not raised"

    with pytest.raises(KeyboardInterrupt):
        model.fit(user_items, show_progress=False, callback=callback)

    assert len(snapshots) >= 2 and sent.is_set()
    np.testing.assert_array_equal(model.item_factors[used], snapshots[-1][used])
    assert np.isfinite(model.user_factors).all()
    ids, _ = model.recommend(0, user_items[0], N=3)  # still usable
    assert len(ids) == 3


def test_ctrl_c_with_early_stopping_keeps_the_best_epoch_so_far():
    user_items = random_labels(n_images=4_000, n_labels=300, per_image=6)
    best, sent = {}, threading.Event()
    model = VSEEns(factors=16, iterations=10_000, num_threads=1, random_state=0)

    def callback(epoch, _seconds, stats):
        if stats["validation_map"] >= max(model.validation_scores_):
            best["inputs"] = model.label_inputs.copy()
        if epoch == 3:
            _interrupt_soon(sent)
        elif epoch > 3:
            sent.wait()

    with pytest.raises(KeyboardInterrupt):
        model.fit(user_items, show_progress=False, callback=callback)
    np.testing.assert_array_equal(model.label_inputs, best["inputs"])
    assert model.best_iteration_ == int(np.argmax(model.validation_scores_)) + 1


@pytest.mark.parametrize("vectors", ["labels", "free"])
def test_ctrl_c_in_the_first_epoch_leaves_a_new_model_unfitted(vectors):
    import _thread

    user_items = random_labels(n_images=2_000, n_labels=200, per_image=5)
    model = VSEEns(factors=8, iterations=3, num_threads=1, random_state=0,
                   image_vectors=vectors)
    kernel = "train_epoch" if vectors == "free" else "train_composed_epoch"
    real_epoch = getattr(_sampler, kernel)

    def interrupted_epoch(*args, **kwargs):
        _thread.interrupt_main()  # pending before the kernel starts: raised in it or before
        return real_epoch(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_sampler, kernel, interrupted_epoch)
        with pytest.raises(KeyboardInterrupt):
            model.fit(user_items, show_progress=False)
    assert model.user_factors is None and model.item_factors is None
    assert model.label_inputs is None and model.fit_history == []


# -- divergence -------------------------------------------------------------------------------


@pytest.mark.parametrize("vectors", [FREE, {}], ids=["free", "composed"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['loss']}-{c['sampler']}")
@pytest.mark.parametrize("learning_rate", [1e3, 1e15, 1e38])
def test_divergence_is_an_error_naming_the_epoch_and_never_reaches_recommend(config,
                                                                            learning_rate,
                                                                            vectors):
    user_items = random_labels()
    model = VSEEns(factors=8, iterations=6, num_threads=1, random_state=0, early_stopping=False,
                   learning_rate=learning_rate, init_scale=1.0, regularization=0, **config,
                   **vectors)
    snapshots = []
    try:
        model.fit(user_items, show_progress=False,
                  callback=lambda *_: snapshots.append(model.item_factors.copy()))
    except DivergenceError as error:
        assert re.search(r"diverged in epoch \d+ of 6: .*Try a lower learning_rate", str(error))
        assert len(model.fit_history) < 6
        if snapshots:  # the last completed epoch is kept
            np.testing.assert_array_equal(model.item_factors, snapshots[-1])
        else:  # none completed: the new model stays unfitted
            assert model.user_factors is None and model.item_factors is None
    else:
        assert learning_rate < 1e38, "an update with lr 1e38 cannot stay finite"
    for factors in (model.user_factors, model.item_factors):
        assert factors is None or np.isfinite(factors).all()
    if model.user_factors is None:
        model.learning_rate = 0.05
        model.fit(user_items, show_progress=False)
        model.learning_rate = learning_rate
    _, scores = model.recommend(np.arange(300), user_items, N=5)
    assert np.isfinite(scores).all()
    # folding in a new image trains with the same learning rate: a clear error or finite
    # (a composed vector is computed from the labels, without a learning rate)
    try:
        _, scores = model.recommend(0, user_items[0], N=5, recalculate_user=True)
    except DivergenceError as error:
        assert re.search(r"folding in 1 images diverged .*lower learning_rate", str(error))
    else:
        assert np.isfinite(scores).all()
        assert learning_rate < 1e38 or model.image_vectors == "labels"


# -- memory -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, params",
    [
        ((6_000, 800, 5), dict()),
        # many images with one label each: their vectors are only made at the end (no draws)
        ((1_500_000, 20, 1), dict(early_stopping=False)),
        # many labels: scoring the held-out images copies the label vectors
        ((2_000, 100_000, 3), dict()),
        ((600, 6_000, 20), dict()),
        ((6_000, 800, 5), dict(sampler="adaptive", loss="hinge")),
        ((600, 6_000, 20), dict(dtype=np.float64, num_threads=2)),
        ((6_000, 800, 5), dict(early_stopping=False, image_vectors="labels+free")),
        ((6_000, 800, 5), dict(FREE, sampler="adaptive", loss="hinge", early_stopping=False)),
        ((600, 6_000, 20), dict(FREE, sampler="uniform", loss="warp", early_stopping=False)),
    ],
)
def test_the_memory_estimate_bounds_what_fit_allocates_and_is_tight(shape, params):
    n_images, n_labels, per_image = shape
    user_items = random_labels(n_images, n_labels, per_image)
    settings = dict(factors=16, iterations=2, num_threads=1, random_state=0)
    model = VSEEns(**{**settings, **params})
    most = int(np.diff(user_items.indptr).max())
    for continuing in (False, True):  # a second fit reuses the factors
        # (random_labels gives canonical binary CSR, which fit does not copy)
        estimate = model.estimate_memory(n_images, n_labels, user_items.nnz, most, True)
        tracemalloc.start()  # numpy reports its allocations to tracemalloc
        try:
            model.fit(user_items, show_progress=False)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert 0.75 * estimate.total <= peak <= estimate.total, (continuing, peak, estimate)


def test_fit_fails_fast_with_the_estimate_when_memory_is_short(monkeypatch):
    user_items = random_labels(n_images=20_000, n_labels=1_000, per_image=5)
    model = VSEEns(factors=64, num_threads=1, random_state=0, loss="hinge", sampler="adaptive")
    estimate = model.estimate_memory(*user_items.shape, user_items.nnz,
                                     int(np.diff(user_items.indptr).max()), True)
    monkeypatch.setattr(memory, "available_memory", lambda: estimate.total // 2)
    tracemalloc.start()
    try:
        with pytest.raises(InsufficientMemoryError) as caught:
            model.fit(user_items, show_progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(caught.value, MemoryError)
    message = str(caught.value)
    assert f"VSEEns.fit needs about {memory._size(estimate.total)}" in message
    assert "factors" in message and "adaptive sampler" in message and "pairs" in message
    assert f"only {memory._size(estimate.total // 2)} of memory is available" in message
    assert peak < estimate.total / 50  # failed before allocating, not halfway through
    assert model.user_factors is None

    monkeypatch.setenv("VSE_RECSYS_MEMORY_CHECK", "0")  # the documented escape hatch
    model.iterations = 1
    model.fit(user_items, show_progress=False)
    assert model.user_factors is not None


def test_the_estimate_grows_with_each_term():
    model = VSEEns(factors=32, num_threads=1, sampler="adaptive", loss="hinge", **FREE,
                   early_stopping=False)
    base = model.estimate_memory(10_000, 1_000, 50_000)
    assert set(base.terms) == {"training matrix", "factors", "initialisation", "pairs",
                               "visit scratch", "validation pairs", "validation scoring",
                               "validation split", "image vectors", "adaptive sampler",
                               "WARP weights", "divergence check", "other"}
    assert base.terms["factors"] == 2 * (10_000 + 1_000) * 32 * 4
    assert base.terms["adaptive sampler"] == 12 * 32 * 1_000 + 8 * 1_000 + 3 * 2048 * 4
    assert base.terms["validation split"] == base.terms["image vectors"] == 0
    composed = VSEEns(factors=32, num_threads=1).estimate_memory(10_000, 1_000, 50_000)
    # label inputs and vectors (with the bias column), their copy and AdaGrad's sums
    assert composed.terms["factors"] == 3 * 1_000 * (32 + 33) * 4
    assert composed.terms["validation split"] > 0 and composed.terms["image vectors"] > 0
    assert model.estimate_memory(20_000, 1_000, 50_000).total > base.total
    assert model.estimate_memory(10_000, 1_000, 100_000).total > base.total
    assert VSEEns(factors=32, num_threads=1, dtype=np.float64).estimate_memory(
        10_000, 1_000, 50_000).total > base.total
    uniform = VSEEns(factors=32, num_threads=1, sampler="uniform", **FREE)
    assert uniform.estimate_memory(10_000, 1_000, 50_000).terms["adaptive sampler"] == 0
    assert "MiB" in str(base) and "pairs" in str(base)


def test_available_memory_reads_meminfo_and_cgroup_limits(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       1000000 kB\nMemAvailable:     500000 kB\n")
    cgroup = tmp_path / "cgroup"
    (cgroup / "box").mkdir(parents=True)
    proc_cgroup = tmp_path / "proc-cgroup"
    proc_cgroup.write_text("0::/box\n")
    paths = dict(meminfo=meminfo, cgroup_root=cgroup, proc_cgroup=proc_cgroup)
    assert memory.available_memory(**paths) == 500_000 * 1024  # no limit files: meminfo only

    (cgroup / "box" / "memory.max").write_text("300000000\n")
    (cgroup / "box" / "memory.current").write_text("100000000\n")
    assert memory.available_memory(**paths) == 200_000_000  # the container's room is smaller
    (cgroup / "box" / "memory.max").write_text("max\n")
    assert memory.available_memory(**paths) == 500_000 * 1024

    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # unlimited
    v1_paths = dict(meminfo=meminfo, cgroup_root=v1, proc_cgroup=tmp_path / "absent")
    assert memory.available_memory(**v1_paths) == 500_000 * 1024
    (v1 / "memory" / "memory.limit_in_bytes").write_text("1000\n")
    (v1 / "memory" / "memory.usage_in_bytes").write_text("400\n")
    assert memory.available_memory(**v1_paths) == 600

    nothing = dict(meminfo=tmp_path / "absent", cgroup_root=tmp_path / "absent",
                   proc_cgroup=tmp_path / "absent")
    assert memory.available_memory(**nothing) is None  # unknown: fit does not check
    meminfo.write_text("MemAvailable: lots\n")
    assert memory.available_memory(meminfo=meminfo, cgroup_root=tmp_path / "absent",
                                   proc_cgroup=tmp_path / "absent") is None


def test_the_real_machine_reports_its_memory():
    available = memory.available_memory()
    assert available is None or 0 < available < 2**50


def test_the_command_line_reports_short_memory_in_one_line(tmp_path, monkeypatch, capsys):
    from vse_recsys import cli

    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image,label\n" + "".join(f"{i},{i % 7}\n" for i in range(50)))
    monkeypatch.setattr(memory, "available_memory", lambda: 1000)
    status = cli.main(["fit", str(pairs), "-o", str(tmp_path / "model.npz"), "-q"])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("vse-recsys: error: VSEEns.fit needs about") and err.count("\n") == 1
    assert not (tmp_path / "model.npz").exists()


# -- threads ----------------------------------------------------------------------------------


def test_recommend_from_two_threads_while_a_third_fits_another_model():
    """No shared mutable state: results under concurrency equal the single-threaded ones."""
    user_items = random_labels(n_images=2_000, n_labels=300, per_image=5)
    shared = VSEEns(factors=16, iterations=3, num_threads=1, random_state=0).fit(
        user_items, show_progress=False
    )
    images = np.arange(2_000)
    expected_batch = shared.recommend(images, user_items, N=10)
    singles = range(0, 2_000, 97)
    expected_one = [shared.recommend(i, user_items[i], N=5) for i in singles]
    expected_fold_in = shared.recommend(7, user_items[7], N=5, recalculate_user=True)
    # the second model trains on other data, long enough for many rounds of recommend
    other_items = random_labels(n_images=20_000, n_labels=500, per_image=8, seed=1)
    second_params = dict(factors=16, iterations=6, num_threads=1, random_state=1)
    expected_second = VSEEns(**second_params).fit(other_items, show_progress=False)

    # Overlap is enforced, not hoped for: after each epoch the fit waits (in its callback)
    # until both hammer threads have finished one more round, so every epoch of the fit
    # runs while recommend is being called from two other threads.
    failures, rounds = [], [0, 0]
    progress = threading.Condition()
    fitting_done = threading.Event()

    def one_round():
        ids, scores = shared.recommend(images, user_items, N=10)
        np.testing.assert_array_equal(ids, expected_batch[0])
        np.testing.assert_array_equal(scores, expected_batch[1])
        for i, (expected_ids, expected_scores) in zip(singles, expected_one):
            ids, scores = shared.recommend(i, user_items[i], N=5)
            np.testing.assert_array_equal(ids, expected_ids)
            np.testing.assert_array_equal(scores, expected_scores)
        ids, scores = shared.recommend(7, user_items[7], N=5, recalculate_user=True)
        np.testing.assert_array_equal(ids, expected_fold_in[0])
        np.testing.assert_array_equal(scores, expected_fold_in[1])

    def hammer(slot):
        try:
            while not fitting_done.is_set():
                one_round()
                with progress:
                    rounds[slot] += 1
                    progress.notify_all()
            one_round()
        except BaseException as error:  # reported by the main thread
            failures.append(error)
            with progress:
                progress.notify_all()

    def wait_for_both_hammers(epoch, elapsed, stats):
        with progress:
            target = [count + 1 for count in rounds]
            progress.wait_for(
                lambda: failures or all(r >= t for r, t in zip(rounds, target)), timeout=120
            )

    second = VSEEns(**second_params)

    def fit_second():
        try:
            second.fit(other_items, show_progress=False, callback=wait_for_both_hammers)
        except BaseException as error:
            failures.append(error)
        finally:
            fitting_done.set()

    workers = [threading.Thread(target=hammer, args=(slot,)) for slot in (0, 1)]
    workers.append(threading.Thread(target=fit_second))
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=600)
    assert not any(worker.is_alive() for worker in workers), "a thread hung"
    assert not failures, failures[0]
    # each hammer finished a round during every epoch (the callback waited for it)
    assert min(rounds) >= second_params["iterations"], rounds
    # the concurrent fit is bit-identical to the one made alone (one thread, same seed)
    np.testing.assert_array_equal(second.user_factors, expected_second.user_factors)
    np.testing.assert_array_equal(second.item_factors, expected_second.item_factors)
