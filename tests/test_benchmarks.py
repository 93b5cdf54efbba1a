"""The benchmark scripts run end to end on tiny generated data, so they cannot rot.

``benchmarks/compare.py --quick`` and ``benchmarks/scaling.py --quick`` are run in-process (one
process, no pool). LightFM is hidden from the compare run: it is an optional extra, so the
script must skip it with a note instead of failing.
"""

import importlib
import json
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import REPO_ROOT

BENCHMARKS = REPO_ROOT / "benchmarks"
NON_LIGHTFM = ["VSE-ens", "uniform hinge", "WARP (ours)", "AOBPR", "BPR (ours)",
               "implicit BPR", "implicit ALS", "item-item cosine", "item-item BM25",
               "co-occurrence", "popularity"]


@pytest.fixture
def script(monkeypatch):
    """Import a benchmark script by name, with the benchmarks folder on sys.path.

    The scripts set one-thread BLAS / OpenMP defaults at import; the variables are set here
    first so that monkeypatch removes them again after the test.
    """
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module


@pytest.fixture
def bench(script):
    """The compare and scaling modules."""
    return script("compare"), script("scaling")


def test_curve_epochs_is_log_ish_and_ends_at_the_last_epoch(bench):
    compare, _ = bench
    assert compare.curve_epochs(1) == [1]
    assert compare.curve_epochs(13) == [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 13]
    assert compare.curve_epochs(40)[-6:] == [20, 24, 28, 32, 36, 40]


def test_time_to_target_takes_the_first_point_at_or_above_it(bench):
    compare, _ = bench
    curve = [dict(seconds=1.0, map=0.1), dict(seconds=2.0, map=0.3), dict(seconds=3.0, map=0.2),
             dict(seconds=4.0, map=0.5)]
    assert compare.time_to_target(curve, 0.3) == 2.0
    assert compare.time_to_target(curve, 0.4) == 4.0
    assert compare.time_to_target(curve, 0.6) is None


def test_cooccurrence_scores_match_the_definition(bench):
    """score(j) = sum over the image's training labels i of #(i and j) / #(i)."""
    compare, _ = bench
    rng = np.random.default_rng(3)
    dense = (rng.random((40, 9)) < 0.3).astype(np.float32)
    dense[:, 8] = 0  # a label nobody has: its P(j | i) row must not divide by zero
    train = sp.csr_matrix(dense)
    captured = {}
    compare.train_model("co-occurrence", train, {}, threads=1, seed=0, epochs=1,
                        on_epoch=lambda epoch, seconds, scorer, stats: captured.update(
                            scorer=scorer()))
    kind, score_fn = captured["scorer"]
    assert kind == "scores"
    ids = np.arange(40)
    expected = np.zeros((40, 9))
    for image in ids:
        for i in np.flatnonzero(dense[image]):
            both = (dense[:, i] * dense.T).sum(axis=1)  # images with i and each j
            expected[image] += both / dense[:, i].sum()
    np.testing.assert_allclose(score_fn(ids), expected, rtol=1e-6)


def test_compare_quick_runs_every_model_and_skips_lightfm(bench, monkeypatch, tmp_path,
                                                          capsys):
    compare, _ = bench
    monkeypatch.setitem(sys.modules, "lightfm", None)  # import lightfm now raises ImportError
    compare.SPLITS.clear()
    compare.main(["--quick", "--quick-images", "800", "--out-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "lightfm is not importable, skipping LightFM WARP ms10, LightFM WARP ms100" in printed

    data = json.loads((tmp_path / "compare_generated.json").read_text())
    retrains = [r for r in data["runs"] if r["phase"] == "retrain"]
    assert sorted({r["family"] for r in retrains}) == sorted(NON_LIGHTFM)
    # the thread row: VSE-ens and our WARP also ran with 2 threads, nothing else did
    assert sorted(r["family"] for r in retrains if r["threads"] == 2) == ["VSE-ens",
                                                                          "WARP (ours)"]
    for run in retrains:
        assert run["status"] == "completed", run
        assert run["curve"][-1]["epoch"] == run["epochs"]
        seconds = [point["seconds"] for point in run["curve"]]
        assert seconds == sorted(seconds) and seconds[0] >= 0
        for point in run["curve"]:
            for key in ("precision@5", "recall@5", "precision@10", "recall@10", "map",
                        "ndcg@10", "auc"):
                assert 0.0 <= point[key] <= 1.0
    # retraining used the epoch count chosen on validation
    tunes = [r for r in data["runs"] if r["phase"] == "tune"]
    for run in retrains:
        best = max((t for t in tunes if t["family"] == run["family"]),
                   key=lambda t: t["best_val_map"])
        assert run["epochs"] == best["best_epoch"] and run["params"] == best["params"]

    final = {r["family"]: r["curve"][-1]["map"] for r in retrains if r["threads"] == 1}
    # planted topic structure: label co-occurrence must beat plain popularity
    assert final["co-occurrence"] > final["popularity"]

    table = (tmp_path / "compare_generated.md").read_text()
    for name in NON_LIGHTFM:
        assert f"| {name} | 1 |" in table
    assert "speed-up vs our WARP" in table and "LightFM" not in table
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "compare_generated.png").stat().st_size > 10_000

    summary = compare.cross_dataset_tables({"generated": data})
    assert f"{final['co-occurrence']:.4f}" in summary.split("| co-occurrence |")[1].split("\n")[0]
    assert "| VSE-ens | our WARP |" in summary


def test_compare_resume_skips_finished_runs(bench, tmp_path, capsys):
    compare, _ = bench
    compare.SPLITS.clear()
    args = ["--quick", "--quick-images", "400", "--models", "popularity", "VSE-ens",
            "--no-threads-row", "--out-dir", str(tmp_path)]
    compare.main(args)
    first = json.loads((tmp_path / "compare_generated.json").read_text())["runs"]
    capsys.readouterr()
    compare.main(args + ["--resume"])
    second = json.loads((tmp_path / "compare_generated.json").read_text())["runs"]
    assert second == first  # nothing re-run, nothing added
    assert "tune:" not in capsys.readouterr().err


def test_scaling_quick_measures_both_models_at_every_size(bench, tmp_path):
    _, scaling = bench
    out = tmp_path / "scaling.json"
    scaling.main(["--quick", "--out", str(out)])
    data = json.loads(out.read_text())
    rows = scaling.summarise(data)
    assert {(r["labels"], r["threads"], r["model"]) for r in rows} == {
        (labels, threads, model) for labels in (200, 600) for threads in (1, 2)
        for model in ("VSE-ens", "WARP (ours)")}
    for row in rows:
        assert row["epoch_seconds"] > 0
        assert row["draws_per_update"] >= 1.0
        if row["model"] == "WARP (ours)":  # WARP is its own reference: it reaches its target
            assert row["speedup"] == pytest.approx(1.0)
    assert set(data["summary"]["learning_rates"]) == {"VSE-ens", "WARP (ours)"}
    assert "| 600 | 2 | VSE-ens |" in out.with_suffix(".md").read_text()


def test_throughput_quick_prints_every_model_and_the_ratios(script, capsys):
    script("throughput").main(["--quick", "--threads", "1"])
    out = capsys.readouterr().out
    for model in ("VSE-ens (adaptive+hinge)", "uniform+hinge", "uniform+bpr", "implicit BPR"):
        assert model in out
    assert "uniform+bpr / implicit BPR pairs/s" in out and "VSE-ens refresh share" in out


def test_reading_benchmark_times_every_shared_dataset(script, data_dir, capsys):
    script("reading").main(["--data-dir", str(data_dir), "--repeats", "1"])
    out = capsys.readouterr().out
    for name in ("corel5k", "delicious", "nuswide81", "movielens-100k", "generated 200k x 5k"):
        assert name in out
    assert "306317" in out  # delicious' pair count, as in the shared README


def test_foldin_benchmark_reports_the_ratio_to_trained(script, data_dir, capsys):
    script("foldin").main(["--dataset", "movielens-100k", "--data-dir", str(data_dir),
                           "--iterations", "2", "--threads", "1", "--fold-in-iterations", "2",
                           "--unseen-fraction", "0.1"])
    out = capsys.readouterr().out
    assert "movielens-100k" in out and "%" in out
