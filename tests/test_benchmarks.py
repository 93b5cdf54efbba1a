"""The benchmark scripts run end to end on tiny generated data, so they cannot rot.

``benchmarks/compare.py --quick`` and ``benchmarks/scaling.py --quick`` are run in-process (one
process, no pool). LightFM is hidden from the compare run: it is an optional extra, so the
script must skip it with a note instead of failing. The shared harness (``benchmarks/harness.py``:
splits, result store, worker pool, code state) is tested directly, and every committed results
file must still give the tables committed beside it.
"""

import importlib
import json
import os
import re
import shutil
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import REPO_ROOT
from vse_recsys.adapters import generate_image_labels, leave_one_out_split

BENCHMARKS = REPO_ROOT / "benchmarks"
RESULTS = BENCHMARKS / "results"
NON_LIGHTFM = ["VSEEns", "VSEEns defaults", "VSE-ens", "WARP (ours)", "AOBPR", "BPR (ours)",
               "implicit BPR", "implicit ALS", "item-item cosine", "item-item BM25", "EASE",
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


@pytest.fixture
def harness(script):
    """The module the benchmark scripts share."""
    return script("harness")


def test_curve_epochs_is_log_ish_and_ends_at_the_last_epoch(harness):
    assert harness.curve_epochs(1) == [1]
    assert harness.curve_epochs(13) == [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 13]
    assert harness.curve_epochs(40)[-6:] == [20, 24, 28, 32, 36, 40]


def test_time_to_target_takes_the_first_point_at_or_above_it(harness):
    curve = [dict(seconds=1.0, map=0.1), dict(seconds=2.0, map=0.3), dict(seconds=3.0, map=0.2),
             dict(seconds=4.0, map=0.5)]
    assert harness.time_to_target(curve, 0.3) == 2.0
    assert harness.time_to_target(curve, 0.4) == 4.0
    assert harness.time_to_target(curve, 0.6) is None


def test_split_is_leave_one_out_seed_0_then_seed_1(harness):
    data = generate_image_labels(n_images=300, n_labels=40, labels_per_image=4, random_state=0)
    fit, validation, train, test = harness.split(data)
    expected_train, expected_test = leave_one_out_split(data, random_state=0)
    expected_fit, expected_validation = leave_one_out_split(expected_train, random_state=1)
    for got, expected in ((train, expected_train), (test, expected_test), (fit, expected_fit),
                          (validation, expected_validation)):
        assert got.shape == expected.shape and (got != expected).nnz == 0
    assert fit.multiply(validation).nnz == 0 and (fit + validation != train).nnz == 0


def test_store_resume_keeps_the_runs_and_skips_their_tasks(harness, tmp_path):
    path = tmp_path / "results" / "store.json"
    task = dict(phase="tune", family="VSE-ens", dataset="corel5k",
                params={"learning_rate": 0.03}, seed=0, epochs=4)
    first = harness.Store(path, {"command": "first"}, resume=False)
    first.add(dict(task, curve=[dict(epoch=1, map=0.25)], status="completed"))
    first.data["summary"]["chosen"] = "lr 0.03"
    first.data["meta"]["wall_seconds"] = 12.5
    first.save()

    resumed = harness.Store(path, {"command": "second"}, resume=True)
    assert resumed.data["runs"] == first.data["runs"]
    assert resumed.data["meta"] == {"command": "second", "resumed_from_seconds": 12.5}
    assert resumed.data["summary"] == {}  # a script recomputes it, unless it keeps it
    done = resumed.done()
    assert resumed.task_id(dict(task, status="a run's own fields do not count")) in done
    assert resumed.task_id(dict(task, seed=1)) not in done
    assert harness.Store(path, {}, resume=True, keep_summary=True).data["summary"] == {
        "chosen": "lr 0.03"}
    assert harness.Store(path, {}, resume=False).data["runs"] == []


def test_dumps_is_compact_json_with_one_run_per_line(harness):
    data = {"meta": {"command": "python x.py", "args": {"jobs": 2}},
            "runs": [dict(phase="tune", curve=[dict(epoch=e, map=e / 7) for e in (1, 2)],
                          status="diverged: lr, reg"), dict(phase="retrain", curve=[])],
            "summary": {}}
    text = harness.dumps(data)
    assert json.loads(text) == data
    # nothing but the line breaks beyond the most compact form, no indentation
    assert text.replace("\n", "") == json.dumps(data, separators=(",", ":"))
    lines = text.splitlines()
    assert [json.loads(line.rstrip(",")) for line in lines[lines.index('"runs":[') + 1:][:2]] \
        == data["runs"]


def test_portable_path_never_records_an_absolute_path(harness):
    root = harness.REPO_ROOT
    assert harness.portable_path(root / "benchmarks" / "results" / "a.json") == \
        "benchmarks/results/a.json"
    assert harness.portable_path(root.parent / "shared" / "data") == "../shared/data"
    assert harness.portable_path("../shared/data") == "../shared/data"  # relative: as given
    assert harness.portable_path("/somewhere/else/data") == ".../data"
    assert harness.portable(["--data-dir=/somewhere/else/data", "--out",
                             str(root / "out.json"), "WARP (ours)", 3]) == [
        "--data-dir=.../data", "--out", "out.json", "WARP (ours)", 3]


def test_code_state_names_the_commit_and_repository_relative_files(harness):
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    state = harness.code_state()
    assert re.fullmatch(r"[0-9a-f]{40}", state["head"])
    assert re.fullmatch(r"[0-9a-f]{64}", state["kernels_sha256"])
    for line in state["changed_files"]:  # `git status --porcelain` lines: "XY path"
        assert re.fullmatch(r"[ MTADRCU?!]{2} \S.*", line), line
        assert not os.path.isabs(line[3:]) and str(REPO_ROOT) not in line


def _square(task):
    """A worker for the pool test (module level: the workers look it up by name)."""
    return dict(task, value=task["seed"] ** 2)


def test_run_tasks_runs_each_task_once_in_worker_processes(harness, tmp_path):
    store = harness.Store(tmp_path / "runs.json", {}, resume=False)
    tasks = [dict(phase="p", family="f", dataset="d", seed=seed) for seed in range(5)]
    results = harness.run_tasks("squares", tasks, store, _square, jobs=2, nice=0,
                                cost=lambda task: task["seed"], describe=str)
    assert sorted(run["value"] for run in results) == [0, 1, 4, 9, 16]
    assert len(harness.load_results(store.path)["runs"]) == 5  # stored as each one ended

    more = tasks + [dict(phase="p", family="f", dataset="d", seed=5)]
    again = harness.run_tasks("squares", more, store, _square, jobs=1, nice=0,
                              cost=lambda task: 0, describe=str)
    assert [run["seed"] for run in again] == [0, 1, 2, 3, 4, 5]  # stored ones first, in order
    assert again[-1]["value"] == 25 and len(store.data["runs"]) == 6


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
        last = run["curve"][-1]
        if run["family"] == "VSEEns defaults":  # as shipped: its own early stopping
            assert 1 <= last["kept_epoch"] <= last["stopped_epoch"] <= run["epochs"]
            assert last["epoch"] == last["kept_epoch"]
        else:
            assert last["epoch"] == run["epochs"]
        seconds = [point["seconds"] for point in run["curve"]]
        assert seconds == sorted(seconds) and seconds[0] >= 0
        for point in run["curve"]:
            for key in ("precision@5", "recall@5", "precision@10", "recall@10", "map",
                        "ndcg@10", "auc"):
                assert 0.0 <= point[key] <= 1.0
    # retraining used the epoch count chosen on validation
    tunes = [r for r in data["runs"] if r["phase"] == "tune"]
    assert not [t for t in tunes if t["family"] == "VSEEns defaults"]  # nothing to tune
    for run in retrains:
        if run["family"] == "VSEEns defaults":
            continue
        best = max((t for t in tunes if t["family"] == run["family"]),
                   key=lambda t: t["best_val_map"])
        assert run["epochs"] == best["best_epoch"] and run["params"] == best["params"]

    final = {r["family"]: r["curve"][-1]["map"] for r in retrains if r["threads"] == 1}
    # planted topic structure: label co-occurrence must beat plain popularity
    assert final["co-occurrence"] > final["popularity"]

    table = (tmp_path / "compare_generated.md").read_text()
    for name in NON_LIGHTFM:
        assert f"| {name} | 1 |" in table
    assert "speed-up vs our WARP" in table and "speed-up vs EASE" in table
    assert "LightFM" not in table
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "compare_generated.png").stat().st_size > 10_000

    summary = compare.cross_dataset_tables({"generated": data})
    assert f"{final['co-occurrence']:.4f}" in summary.split("| co-occurrence |")[1].split("\n")[0]
    assert "| VSE-ens | our WARP |" in summary and "| VSEEns defaults | EASE |" in summary


def test_compare_resume_skips_finished_runs(bench, tmp_path, capsys):
    compare, _ = bench
    args = ["--quick", "--quick-images", "400", "--models", "popularity", "VSE-ens",
            "--no-threads-row", "--out-dir", str(tmp_path)]
    compare.main(args)
    first = json.loads((tmp_path / "compare_generated.json").read_text())["runs"]
    capsys.readouterr()
    compare.main(args + ["--resume"])
    second = json.loads((tmp_path / "compare_generated.json").read_text())["runs"]
    assert second == first  # nothing re-run, nothing added
    assert "tune:" not in capsys.readouterr().err


def test_compare_results_are_compact_and_name_no_machine_path(bench, harness, tmp_path):
    compare, _ = bench
    out = tmp_path / "out"
    compare.main(["--quick", "--quick-images", "400", "--models", "popularity", "WARP (ours)",
                  "--no-threads-row", "--data-dir", str(tmp_path / "data"), "--out-dir",
                  str(out)])
    text = (out / "compare_generated.json").read_text(encoding="utf-8")
    data = json.loads(text)
    assert text == harness.dumps(data)
    assert str(tmp_path) not in text and str(REPO_ROOT) not in text
    assert data["meta"]["command"] == (
        "python benchmarks/compare.py --quick --quick-images 400 --models popularity "
        "'WARP (ours)' --no-threads-row --data-dir .../data --out-dir .../out")
    assert data["meta"]["args"]["data_dir"] == ".../data"

    def strings(value):
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            return [string for item in value for string in strings(item)]
        return [value] if isinstance(value, str) else []

    assert not [string for string in strings(data) if os.path.isabs(string) or " /" in string]


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


def test_ease_scaling_quick_measures_both_models_in_child_processes(script, capsys, tmp_path):
    script("ease_scaling").main(["--quick", "--json", str(tmp_path / "ease.json")])
    results = json.loads((tmp_path / "ease.json").read_text())
    assert sorted((r["model"], r["n_labels"]) for r in results) == [
        ("EASE", 50), ("EASE", 200), ("VSEEns", 50), ("VSEEns", 200)]
    for result in results:
        assert result["seconds"] > 0 and 0 < result["fit_peak"] <= 1.2 * result["estimate"]
    assert "EASE/epoch" in capsys.readouterr().out


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


def test_defaults_sweep_quick_chooses_a_setting_and_a_lambda(script, data_dir, tmp_path, capsys):
    """Two worker processes (the pool path) on corel5k and tiny generated data, 6 epochs."""
    sweep = script("defaults_sweep")
    out = tmp_path / "defaults.json"
    sweep.main(["--quick", "--data-dir", str(data_dir), "--out", str(out)])
    data = json.loads(out.read_text(encoding="utf-8"))
    runs = [run for run in data["runs"] if run["phase"] in ("grid", "alternative")]
    assert {(run["phase"], run["dataset"]) for run in runs} == {
        (phase, dataset) for phase in ("grid", "alternative")
        for dataset in ("corel5k", "generated-quick")}
    for run in runs:  # a validation and a test MAP after every epoch
        assert run["status"] == "completed" and len(run["val"]) == len(run["test_curve"]) == 6
        assert all(0.0 < value <= 1.0 for value in run["val"] + run["test_curve"])
    result = sweep.analyse(data)
    assert result["chosen"]["phase"] == "grid" and result["ease_chosen"] in (10.0, 100.0)
    assert result["shipped_patience"] in data["meta"]["patiences"]
    capsys.readouterr()
    sweep.main(["--report", str(out)])
    assert "### Chosen: " in capsys.readouterr().out


def test_defaults_check_quick_scores_the_shipped_model_and_its_references(script, data_dir,
                                                                         tmp_path, capsys):
    """The check takes its tuned setting and EASE's lambda from a (quick) sweep's results."""
    sweep_out, out = tmp_path / "defaults.json", tmp_path / "check.json"
    script("defaults_sweep").main(["--quick", "--data-dir", str(data_dir), "--out",
                                   str(sweep_out)])
    check = script("defaults_check")
    check.main(["--quick", "--data-dir", str(data_dir), "--sweep", str(sweep_out), "--out",
                str(out), "--jobs", "1"])
    data = json.loads(out.read_text(encoding="utf-8"))
    runs = {(r["dataset"], r["family"]): r for r in data["runs"]}
    assert set(runs) == {(d, f) for d in ("corel5k", "generated-quick") for f in check.FAMILIES}
    sweep = json.loads(sweep_out.read_text(encoding="utf-8"))
    for dataset in ("corel5k", "generated-quick"):
        shipped = runs[dataset, "shipped"]
        assert shipped["params"] == {} and 1 <= shipped["kept_epoch"] <= shipped["epochs_trained"]
        assert len(runs[dataset, "curve"]["curve"]) == check.CURVE_EPOCHS
        params, epoch, _ = check.best_grid_setting(sweep, dataset)
        assert runs[dataset, "tuned"]["params"] == dict(params, iterations=epoch,
                                                        early_stopping=False)
        assert runs[dataset, "EASE"]["regularization"] == check.best_lambda(sweep, dataset)
        assert all(0.0 < run["map"] <= 1.0 for (d, _), run in runs.items() if d == dataset)
    assert "| corel5k | " in capsys.readouterr().out


def test_defaults_sweep_emulates_the_packages_early_stopping(script):
    sweep = script("defaults_sweep")
    # best so far kept; stop after `patience` epochs without a strictly better one
    assert sweep.early_stop([0.1, 0.3, 0.2, 0.3, 0.25, 0.4], 2) == (2, 4)
    assert sweep.early_stop([0.1, 0.3, 0.2, 0.3, 0.25, 0.4], 3) == (2, 5)
    assert sweep.early_stop([0.1, 0.3, 0.2, 0.3, 0.25, 0.4], 4) == (6, 6)
    assert sweep.early_stop([0.5], 10) == (1, 1)


def test_defaults_sweep_emulation_matches_the_package(script, harness):
    """The kept epoch of the emulated rule is the one VSEEns(early_stopping=True) keeps, when
    both see the same validation pairs."""
    from vse_recsys import VSEEns

    sweep = script("defaults_sweep")
    data = generate_image_labels(n_images=400, n_labels=60, random_state=0)
    fit, validation, _, _ = harness.split(data)
    images = np.flatnonzero(validation.getnnz(axis=1))
    params = dict(factors=8, learning_rate=0.2, iterations=30, num_threads=1, random_state=0)
    curve = []
    free = VSEEns(**params, early_stopping=False)
    free.fit(fit, show_progress=False, callback=lambda *_: curve.append(
        sweep.vse_map(free, fit, validation, images)))
    stopped = VSEEns(**params, early_stopping=True, n_iter_no_change=3)
    stopped.fit(fit, show_progress=False, validation=validation)
    np.testing.assert_allclose(stopped.validation_scores_, curve[:len(stopped.validation_scores_)],
                               rtol=1e-5)
    assert sweep.early_stop(curve, 3) == (stopped.best_iteration_,
                                          len(stopped.validation_scores_))


# the results files whose tables a script's --report writes beside them (the others are
# read by RESULTS.md only: defaults.json has its own test, the rest no committed tables)
REPORTERS = {"compare_": "compare", "scaling.json": "scaling", "large_scale.json": "large_scale"}
COMMITTED_RESULTS = sorted(path.relative_to(RESULTS).as_posix()
                           for path in RESULTS.glob("**/*.json")
                           if any(path.name.startswith(prefix) for prefix in REPORTERS))


@pytest.mark.parametrize("name", COMMITTED_RESULTS)
def test_report_rewrites_the_committed_tables(script, monkeypatch, tmp_path, name):
    """``--report`` of a committed results file writes the Markdown committed beside it."""
    module = script(next(reporter for prefix, reporter in REPORTERS.items()
                         if os.path.basename(name).startswith(prefix)))
    monkeypatch.setattr(script("harness"), "pyplot", lambda: None)  # the tables only
    copy = tmp_path / os.path.basename(name)
    shutil.copy(RESULTS / name, copy)
    module.main(["--report", str(copy)])
    committed = (RESULTS / name).with_suffix(".md").read_text(encoding="utf-8")
    assert copy.with_suffix(".md").read_text(encoding="utf-8") == committed


def test_defaults_report_is_the_generated_part_of_defaults_md(script, capsys):
    script("defaults_sweep").main(["--report", str(RESULTS / "defaults.json")])
    page = (RESULTS / "defaults.md").read_text(encoding="utf-8")
    assert page.split("## Generated tables (`--report`)\n\n", 1)[1] == capsys.readouterr().out


def test_large_scale_quick_measures_each_run_in_its_own_process(script, tmp_path, capsys):
    out = tmp_path / "large.json"
    script("large_scale").main(["--quick", "--output", str(out)])
    runs = json.loads(out.read_text())["runs"]
    assert [run["sweep"] for run in runs] == ["pairs", "pairs", "labels", "labels"]
    for run in runs:
        assert "error" not in run, run
        assert len(run["epoch_seconds"]) == 2 and run["outside_epochs_seconds"] >= 0
        assert run["nnz"] > 0 and run["estimate"] > 0 and run["recommend"]["seconds"] > 0
        assert {"validation split", "initialisation", "image vectors"} <= set(run["phases"])
    report = (tmp_path / "large.md").read_text()
    assert "## By pairs (1,000 labels)" in report and "## By labels (5,000 images" in report


def test_dask_tagging_quick_tags_every_image_once_with_one_and_two_workers(script, tmp_path):
    pytest.importorskip("dask.distributed")
    out = tmp_path / "dask.json"
    script("dask_tagging").main(["--quick", "--output", str(out)])
    record = json.loads(out.read_text())
    assert [run["workers"] for run in record["runs"]] == [1, 2]
    for run in record["runs"]:
        # the script itself asserts each image has its 10 rows once; here the totals agree
        assert run["images"] == record["meta"]["args"]["images"]
        assert run["rows"] == 10 * run["images"]
    assert record["speedup"] > 0 and "work_dir" not in record["meta"]["args"]


def test_many_labels_quick_scores_vseens_and_the_baselines(script, tmp_path, capsys):
    out = tmp_path / "many.json"
    script("many_labels").main(["--quick", "--threads", "1", "--output", str(out)])
    record = json.loads(out.read_text())
    models = [run["model"] for run in record["runs"]]
    # (EASE fits on the tiny data; at 100,000 labels it is refused, with its message kept)
    assert models == ["VSEEns() (1 thread)", "EASE()", "co-occurrence", "popularity"]
    assert all(0 < run["test_map"] <= 1 for run in record["runs"])
    by_model = {run["model"]: run["test_map"] for run in record["runs"]}
    assert by_model["VSEEns() (1 thread)"] > by_model["popularity"]
