"""The ``vse-recsys`` command line, end to end, and the ``Annotator`` it saves and loads.

The end-to-end tests run the installed command in a subprocess, as a new user would: write a
pairs CSV, ``fit``, ``tag`` (a known image, a new image from its labels), ``evaluate``. Error
paths run through ``main()`` in-process (the same code, far faster than a process each), and a
sample of them again in a subprocess, to check the real entry point's stderr and exit status.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from vse_recsys import EASE, VSEEns
from vse_recsys.adapters import generate_image_labels, leave_one_out_split
from vse_recsys._npz import FORMAT_VERSION
from vse_recsys.annotator import Annotator
from vse_recsys.cli import _MODEL_OPTIONS, _model_params, _parser, main

N_IMAGES, N_LABELS = 400, 60
FIT_OPTIONS = ["--factors", "16", "--iterations", "8", "--threads", "1", "--seed", "0"]


def _command():
    """The installed console script, else ``python -m vse_recsys``."""
    script = Path(sys.executable).with_name("vse-recsys")
    if script.exists():
        return [str(script)]
    found = shutil.which("vse-recsys")
    return [found] if found else [sys.executable, "-m", "vse_recsys"]


def run(*args, cwd, check=True):
    """Run the real command; returns the CompletedProcess (text output)."""
    env = dict(os.environ, PYTHONWARNINGS="default", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [*_command(), *map(str, args)], cwd=cwd, capture_output=True, text=True, env=env,
        timeout=120,
    )
    assert "Traceback" not in result.stderr, result.stderr
    if check:
        assert result.returncode == 0, result.stderr
    return result


def write_pairs(path, matrix, data):
    """Write the (image, label) pairs of a CSR matrix over `data`'s IDs as a CSV."""
    coo = sp.coo_matrix(matrix)
    pd.DataFrame(
        {"image": data.image_ids[coo.row], "label": data.label_ids[coo.col]}
    ).to_csv(path, index=False)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with pairs.csv (all), train.csv / test.csv (leave-one-out) and a fitted model."""
    folder = tmp_path_factory.mktemp("cli")
    data = generate_image_labels(n_images=N_IMAGES, n_labels=N_LABELS, labels_per_image=5,
                                 random_state=0)
    data.to_pairs()[["image", "label"]].to_csv(folder / "pairs.csv", index=False)
    train, test = leave_one_out_split(data, random_state=0)
    write_pairs(folder / "train.csv", train, data)
    write_pairs(folder / "test.csv", test, data)
    result = run("fit", "train.csv", "-o", "model.npz", *FIT_OPTIONS, cwd=folder)
    assert "Saved the model to model.npz" in result.stdout
    return folder


def known_labels(folder, image):
    frame = pd.read_csv(folder / "train.csv")
    return set(frame.loc[frame["image"] == image, "label"])


# -- the new user's path, in subprocesses ---------------------------------------------------------


def test_fit_writes_one_npz_without_pickle_with_ids_and_format_version(workdir):
    with np.load(workdir / "model.npz", allow_pickle=False) as stored:
        # one version for every file kind (see vse_recsys._npz); the model inside names its own
        assert int(stored["format_version"]) == FORMAT_VERSION == 3
        assert str(stored["format"]) == "vse-recsys annotator"
        assert str(stored["model.format"]) == "vse-recsys VSEEns"
        assert len(stored["image_ids"]) == N_IMAGES
        assert len(stored["label_ids"]) == len(stored["label_names"]) == N_LABELS
        assert stored["model.user_factors"].shape == (N_IMAGES, 16 + 1)  # (+ the bias column)
    assert not [p for p in workdir.iterdir() if p.name.endswith(".tmp")]  # atomic: no leftovers


def test_tag_a_known_image_as_json(workdir):
    image = 7
    result = run("tag", "model.npz", "--image", image, "-n", 5, "--format", "json", cwd=workdir)
    (tags,) = json.loads(result.stdout)
    known = known_labels(workdir, image)
    assert tags["image"] == image and tags["new"] is False
    assert set(tags["known_labels"]) == known
    labels = [entry["label"] for entry in tags["labels"]]
    assert len(labels) == len(set(labels)) == 5
    assert not known & set(labels)  # known labels excluded
    scores = [entry["score"] for entry in tags["labels"]]
    assert scores == sorted(scores, reverse=True)


def test_tag_a_new_image_from_its_labels(workdir):
    given = sorted(known_labels(workdir, 3))[:2]
    args = ["tag", "model.npz", "--labels", ",".join(map(str, given)), "-n", 6,
            "--format", "json"]
    first = run(*args, cwd=workdir)
    (tags,) = json.loads(first.stdout)
    assert tags["new"] is True and tags["image"] == "new-1"
    assert tags["known_labels"] == given
    labels = [entry["label"] for entry in tags["labels"]]
    assert len(labels) == 6 and not set(given) & set(labels)
    assert run(*args, cwd=workdir).stdout == first.stdout  # fold-in is seeded

    # --include-known may suggest the given labels; every label is then a candidate
    result = run("tag", "model.npz", "--labels", ",".join(map(str, given)), "--include-known",
                 "-n", N_LABELS + 10, "--format", "json", cwd=workdir)
    (tags,) = json.loads(result.stdout)
    assert sorted(entry["label"] for entry in tags["labels"]) == list(range(N_LABELS))


def test_tag_csv_to_a_file_from_images_file_and_labels_file(workdir):
    (workdir / "images.txt").write_text("# images to tag\n1\n\n2\n")
    (workdir / "new.csv").write_text("image,label\nbookmark-a,1\nbookmark-a,2\nbookmark-b,3\n")
    run("tag", "model.npz", "--images-file", "images.txt", "--labels-file", "new.csv",
        "-n", 3, "-o", "out.csv", cwd=workdir)
    with open(workdir / "out.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["image", "rank", "label", "name", "score"]
    by_image = {}
    for row in rows:
        by_image.setdefault(row["image"], []).append(int(row["label"]))
    assert list(by_image) == ["1", "2", "bookmark-a", "bookmark-b"]
    assert all(len(labels) == 3 for labels in by_image.values())
    assert not {1, 2} & set(by_image["bookmark-a"])
    assert not known_labels(workdir, 2) & set(by_image["2"])


def test_evaluate_on_test_pairs_and_by_leave_one_out(workdir):
    result = run("evaluate", "model.npz", "--test", "test.csv", "--output-format", "json",
                 "-q", cwd=workdir)
    metrics = json.loads(result.stdout)
    assert metrics["n_images"] == len(pd.read_csv(workdir / "test.csv"))
    assert 0 < metrics["map"] <= 1 and 0.5 < metrics["auc"] <= 1
    assert {"precision@5", "recall@10", "ndcg@5"} <= set(metrics)

    # leave-one-out refits with the saved parameters on the same split: the same numbers
    # (one thread and a fixed seed make both fits bit-identical)
    result = run("evaluate", "model.npz", "--leave-one-out", "pairs.csv", "--seed", 0,
                 "--output-format", "json", "-q", cwd=workdir)
    refit = json.loads(result.stdout)
    assert refit["n_images"] == metrics["n_images"]
    assert refit["map"] == pytest.approx(metrics["map"], abs=1e-9)

    text = run("evaluate", "model.npz", "--test", "test.csv", "-k", "3", "-q", cwd=workdir)
    assert "precision@3" in text.stdout and "map" in text.stdout


def test_evaluate_test_pairs_with_a_label_the_training_data_never_had(workdir, tmp_path,
                                                                      capsys):
    # the saved model cannot rank a label it was not fitted with: the error says so and names
    # both ways out; --skip-unknown evaluates the images with some other test label
    test = pd.read_csv(workdir / "test.csv", dtype=str)
    test.loc[:2, "label"] = "unseen"
    test.to_csv(tmp_path / "test.csv", index=False)
    status, _, err = call(["evaluate", workdir / "model.npz", "--test", tmp_path / "test.csv",
                           "-q"], capsys)
    assert status == 1 and len(err.splitlines()) == 1
    assert "unknown label 'unseen'" in err
    assert "--skip-unknown" in err and "--leave-one-out" in err
    status, out, err = call(["evaluate", workdir / "model.npz", "--test", tmp_path / "test.csv",
                             "--skip-unknown", "-q", "--output-format", "json"], capsys)
    assert status == 0 and "left out 3 pair(s)" in err, err
    assert json.loads(out)["n_images"] == len(test) - 3  # one test label per image


@pytest.mark.parametrize(
    "args",
    [
        ["fit", "missing.csv", "-o", "m.npz"],  # missing file
        ["fit", "pairs.csv", "-o", "m.npz", "--format", "parquet-ish"],  # unknown format
        ["tag", "model.npz", "--image", "123456"],  # unknown image ID
        ["tag", "model.npz", "--labels", "1,no-such-label"],  # unknown label
        ["fit", "pairs.csv", "-o", "m.npz", "--learning-rate", "-1"],  # bad value (model check)
        ["tag", "model.npz", "--image", "1", "-n", "zero"],  # bad value (option type)
    ],
    ids=["missing-file", "unknown-format", "unknown-image", "unknown-label", "model-check",
         "option-type"],
)
def test_errors_from_the_real_command_are_one_line(workdir, args):
    result = run(*args, cwd=workdir, check=False)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "error" in lines[0], result.stderr
    assert result.stdout == ""


def test_python_dash_m_runs_the_same_command(workdir):
    result = subprocess.run([sys.executable, "-m", "vse_recsys", "--version"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("vse-recsys ")


# -- every user error path, in-process ------------------------------------------------------------


def call(argv, capsys):
    """main(argv) as the command runs it: (exit status, stdout, stderr)."""
    try:
        status = main([str(arg) for arg in argv])
    except SystemExit as stop:  # argparse's usage errors
        status = stop.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def error_inputs(workdir):
    (workdir / "bad.csv").write_text("image,label\n0,1\n0\n")  # a line with one field
    (workdir / "semicolons.csv").write_text("a;b\n1;2\n")
    (workdir / "unknown-label.csv").write_text("image,label\nx,1\nx,nope\n")
    (workdir / "unknown-image.csv").write_text("image,label\n999999,1\n")
    (workdir / "not-a-model.npz").write_text("hello\n")
    with np.load(workdir / "model.npz", allow_pickle=False) as stored:
        arrays = dict(stored)
    np.savez(workdir / "newer.npz", **{**arrays, "format_version": np.array(FORMAT_VERSION + 1)})
    model = VSEEns(factors=2, iterations=1, early_stopping=False, random_state=0)
    model.fit(sp.csr_matrix(np.eye(3, dtype=np.float32)), show_progress=False)
    model.save(workdir / "bare.npz")
    (workdir / "folder.npz").mkdir(exist_ok=True)
    return workdir


ERRORS = {
    # fit: data
    "fit-missing-file": ["fit", "missing.csv", "-o", "m"],
    "fit-unknown-format": ["fit", "pairs.csv", "-o", "m", "--format", "xls"],
    "fit-no-data": ["fit", "-o", "m"],
    "fit-data-and-dataset": ["fit", "pairs.csv", "--dataset", "delicious", "-o", "m"],
    "fit-unknown-dataset": ["fit", "--dataset", "imagenet", "-o", "m"],
    "fit-bad-data-dir": ["fit", "--dataset", "delicious", "--data-dir", "no/such/dir", "-o", "m"],
    "fit-malformed-file": ["fit", "bad.csv", "-o", "m"],
    "fit-missing-column": ["fit", "semicolons.csv", "-o", "m"],
    "fit-wrong-column-option": ["fit", "pairs.csv", "-o", "m", "--image-col", "img"],
    "fit-no-header-name": ["fit", "pairs.csv", "-o", "m", "--no-header", "--image-col", "a"],
    "fit-folder-unknown": ["fit", ".", "-o", "m"],
    "fit-mulan-no-xml": ["fit", "pairs.csv", "-o", "m", "--format", "mulan"],
    "fit-mulan-missing-xml": ["fit", "pairs.csv", "-o", "m", "--format", "mulan", "--xml",
                              "no.xml"],
    "fit-movielens-garbage": ["fit", "pairs.csv", "-o", "m", "--format", "movielens"],
    "fit-openimages-garbage": ["fit", "pairs.csv", "-o", "m", "--format", "openimages"],
    "fit-nuswide-file": ["fit", "pairs.csv", "-o", "m", "--format", "nuswide"],
    # fit: output and parameters
    "fit-no-output": ["fit", "pairs.csv"],
    "fit-output-folder-missing": ["fit", "pairs.csv", "-o", "no/such/dir/m"],
    "fit-output-is-folder": ["fit", "pairs.csv", "-o", "folder.npz"],
    "fit-factors-zero": ["fit", "pairs.csv", "-o", "m", "--factors", "0"],
    "fit-factors-text": ["fit", "pairs.csv", "-o", "m", "--factors", "many"],
    "fit-learning-rate-negative": ["fit", "pairs.csv", "-o", "m", "--learning-rate", "-0.1"],
    "fit-learning-rate-nan": ["fit", "pairs.csv", "-o", "m", "--learning-rate", "nan"],
    "fit-iterations-negative": ["fit", "pairs.csv", "-o", "m", "--iterations", "-3"],
    "fit-unknown-loss": ["fit", "pairs.csv", "-o", "m", "--loss", "hinged"],
    "fit-warp-adaptive": ["fit", "pairs.csv", "-o", "m", "--loss", "warp", "--sampler",
                          "adaptive"],
    "fit-threads-negative": ["fit", "pairs.csv", "-o", "m", "--threads", "-2"],
    "fit-rank-decay-zero": ["fit", "pairs.csv", "-o", "m", "--rank-decay", "0"],
    "fit-unknown-option": ["fit", "pairs.csv", "-o", "m", "--epochs", "3"],
    # tag
    "tag-missing-model": ["tag", "missing.npz", "--image", "1"],
    "tag-not-a-model": ["tag", "not-a-model.npz", "--image", "1"],
    "tag-csv-as-model": ["tag", "pairs.csv", "--image", "1"],
    "tag-newer-model": ["tag", "newer.npz", "--image", "1"],
    "tag-bare-vseens-model": ["tag", "bare.npz", "--image", "1"],
    "tag-nothing": ["tag", "model.npz"],
    "tag-unknown-image": ["tag", "model.npz", "--image", "123456"],
    "tag-text-image": ["tag", "model.npz", "--image", "cat.jpg"],
    "tag-unknown-label": ["tag", "model.npz", "--labels", "1,2,zebra"],
    "tag-empty-labels": ["tag", "model.npz", "--labels", " , "],
    "tag-n-zero": ["tag", "model.npz", "--image", "1", "-n", "0"],
    "tag-unknown-output-format": ["tag", "model.npz", "--image", "1", "--format", "xml"],
    "tag-output-folder-missing": ["tag", "model.npz", "--image", "1", "-o", "no/dir/out.csv"],
    "tag-missing-images-file": ["tag", "model.npz", "--images-file", "none.txt"],
    "tag-missing-labels-file": ["tag", "model.npz", "--labels-file", "none.csv"],
    "tag-labels-file-unknown-label": ["tag", "model.npz", "--labels-file", "unknown-label.csv"],
    "tag-labels-file-malformed": ["tag", "model.npz", "--labels-file", "bad.csv"],
    "tag-threads-negative": ["tag", "model.npz", "--image", "1", "--threads", "-1"],
    "tag-no-model": ["tag", "--image", "1"],
    # evaluate
    "evaluate-no-mode": ["evaluate", "model.npz"],
    "evaluate-both-modes": ["evaluate", "model.npz", "--test", "test.csv", "--leave-one-out",
                            "pairs.csv"],
    "evaluate-missing-test": ["evaluate", "model.npz", "--test", "none.csv"],
    "evaluate-test-overlaps-training": ["evaluate", "model.npz", "--test", "train.csv"],
    "evaluate-test-unknown-image": ["evaluate", "model.npz", "--test", "unknown-image.csv"],
    "evaluate-test-unknown-label": ["evaluate", "model.npz", "--test", "unknown-label.csv"],
    "evaluate-loo-without-data": ["evaluate", "model.npz", "--leave-one-out"],
    "evaluate-loo-missing-data": ["evaluate", "model.npz", "--leave-one-out", "none.csv"],
    "evaluate-bad-k": ["evaluate", "model.npz", "--test", "test.csv", "-k", "5,x"],
    "evaluate-missing-model": ["evaluate", "none.npz", "--test", "test.csv"],
    # top level and demo
    "no-command": [],
    "unknown-command": ["train"],
    "demo-bad-data-dir": ["demo", "--data-dir", "no/such/dir"],
    "demo-unknown-dataset": ["demo", "--dataset", "imagenet", "--data-dir", "."],
    "demo-images-zero": ["demo", "--images", "0"],
}


@pytest.mark.parametrize("argv", ERRORS.values(), ids=ERRORS.keys())
def test_user_errors_are_one_line_and_a_nonzero_exit(error_inputs, argv, capsys, monkeypatch):
    monkeypatch.chdir(error_inputs)
    status, out, err = call(argv, capsys)
    assert status not in (0, None)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vse-recsys") and "error:" in lines[0], err
    assert "Traceback" not in err and out == ""
    assert not (error_inputs / "m.npz").exists()


def test_skip_unknown_keeps_going_with_a_warning(error_inputs, capsys, monkeypatch):
    monkeypatch.chdir(error_inputs)
    status, out, err = call(["tag", "model.npz", "--labels", "1,zebra", "--skip-unknown",
                             "-n", "2", "--format", "json"], capsys)
    assert status == 0 and "warning" in err and "zebra" in err
    (tags,) = json.loads(out)
    assert tags["known_labels"] == [1] and len(tags["labels"]) == 2


# -- options and defaults -------------------------------------------------------------------------


def test_fit_defaults_are_the_vseens_defaults():
    args = _parser().parse_args(["fit", "data.csv", "-o", "m"])
    defaults = VSEEns()
    for name, value in _model_params(args).items():
        expected = getattr(defaults, name)
        assert value == (np.dtype(expected).name if name == "dtype" else expected), name
    # every parameter of either model is a `fit` option
    options = {name for _, name, *_ in _MODEL_OPTIONS}
    assert set(VSEEns().get_params()) == options
    assert set(EASE().get_params()) <= options


def test_fit_options_reach_the_saved_model(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    status, _, err = call(["fit", "pairs.csv", "-o", "bpr", "-q", "--factors", "4",
                           "--iterations", "2", "--loss", "bpr", "--sampler", "uniform",
                           "--learning-rate", "0.02", "--regularization", "0.001",
                           "--no-verify-negative-samples", "--dtype", "float64",
                           "--threads", "1", "--seed", "3"], capsys)
    assert status == 0, err
    model = Annotator.load(workdir / "bpr").model  # .npz appended, as numpy does
    assert (model.factors, model.iterations, model.loss, model.sampler) == (4, 2, "bpr",
                                                                            "uniform")
    assert (model.learning_rate, model.regularization, model.random_state) == (0.02, 0.001, 3)
    assert model.verify_negative_samples is False or model.verify_negative_samples == 0
    assert model.item_factors.dtype == np.float64


def test_fit_boolean_and_choice_options_reach_the_model(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    status, _, err = call(["fit", "pairs.csv", "-o", "free", "-q", "--factors", "4",
                           "--iterations", "2", "--image-vectors", "free", "--no-label-bias",
                           "--no-early-stopping", "--learning-schedule", "sgd",
                           "--label-dropout", "0", "--composition-exponent", "1",
                           "--n-iter-no-change", "3", "--validation-fraction", "0.2",
                           "--threads", "1", "--seed", "3"], capsys)
    assert status == 0, err
    model = Annotator.load(workdir / "free").model
    assert (model.image_vectors, model.label_bias, model.early_stopping) == ("free", False, False)
    assert (model.learning_schedule, model.label_dropout, model.composition_exponent) == (
        "sgd", 0.0, 1.0)
    assert (model.n_iter_no_change, model.validation_fraction) == (3, 0.2)


def test_demo_runs_small(capsys):
    status, out, _ = call(["demo", "--images", "300", "--labels", "40", "--epochs", "2",
                           "--threads", "1", "--examples", "1"], capsys)
    assert status == 0 and "held out" in out
    assert all(name in out for name in ("VSEEns()", "the paper's", "EASE()"))


def test_fit_reports_divergence_in_one_line_and_saves_nothing(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    status, _, err = call(["fit", "pairs.csv", "-o", "diverged", "-q", "--loss", "bpr",
                           "--learning-rate", "1e30", "--iterations", "2"], capsys)
    assert status == 1 and len(err.splitlines()) == 1
    assert "diverged" in err and "Nothing was saved" in err
    assert not (workdir / "diverged.npz").exists()


def test_ease_is_fitted_tagged_and_evaluated_through_the_same_file(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    status, out, err = call(["fit", "train.csv", "-o", "ease", "--model", "ease",
                             "--regularization", "5"], capsys)
    assert status == 0, err
    assert "Solved EASE for 60 labels" in out
    model = Annotator.load(workdir / "ease.npz").model
    assert type(model).__name__ == "EASE" and model.regularization == 5.0
    status, out, err = call(["tag", "ease.npz", "--image", "7", "--labels", "1,2", "-n", "3"],
                            capsys)
    assert status == 0, err
    rows = list(csv.reader(out.splitlines()))[1:]
    assert [row[0] for row in rows] == ["7"] * 3 + ["new-1"] * 3
    assert not {row[2] for row in rows[:3]} & {str(v) for v in known_labels(workdir, 7)}
    status, out, err = call(["evaluate", "ease.npz", "--test", "test.csv",
                             "--output-format", "json", "-q"], capsys)
    assert status == 0, err
    assert 0 < json.loads(out)["map"] <= 1
    status, _, err = call(["fit", "train.csv", "-o", "x", "--model", "ease", "--factors", "8"],
                          capsys)
    assert status == 2 and "--factors is not a parameter of --model ease" in err


# -- defects found by a new user (issue 13) -------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["fit", "train.csv", "-o", "m", "--seed", "99999999999999999999999"],
    ["fit", "train.csv", "-o", "m", "--seed", "-1"],
    ["evaluate", "model.npz", "--leave-one-out", "pairs.csv", "--seed", "-1"],
    ["demo", "--seed", "-1"],
])
def test_unusable_seeds_are_refused_naming_the_option(workdir, capsys, monkeypatch, argv):
    monkeypatch.chdir(workdir)
    status, _, err = call(argv, capsys)
    assert status == 2 and "--seed: expected an integer from 0 to 2**63 - 1" in err
    assert not (workdir / "m.npz").exists()


def test_output_that_is_an_existing_folder_is_refused_before_training(workdir, capsys,
                                                                      monkeypatch):
    monkeypatch.chdir(workdir)
    (workdir / "out_folder").mkdir(exist_ok=True)
    status, _, err = call(["fit", "train.csv", "-o", "out_folder", *FIT_OPTIONS], capsys)
    assert status == 1 and "out_folder: it is a folder" in err
    assert not (workdir / "out_folder.npz").exists()


def test_undefined_metrics_are_null_in_json_and_explained_in_text(tmp_path, capsys, monkeypatch):
    # every image's only candidate label is its test label: AUC has no negative to compare
    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"image": [0, 0, 1, 1], "label": [0, 1, 1, 0]}).iloc[[0, 2]].to_csv(
        "train.csv", index=False)
    pd.DataFrame({"image": [0, 1], "label": [1, 0]}).to_csv("test.csv", index=False)
    assert call(["fit", "train.csv", "-o", "m", "-q", *FIT_OPTIONS], capsys)[0] == 0
    status, out, err = call(["evaluate", "m.npz", "--test", "test.csv", "-q",
                             "--output-format", "json"], capsys)
    assert status == 0, err
    assert json.loads(out)["auc"] is None and "NaN" not in out
    status, out, _ = call(["evaluate", "m.npz", "--test", "test.csv", "-q"], capsys)
    assert "auc            undefined: no evaluated image has a negative label" in out
    assert "nan" not in out


def test_a_label_with_a_comma_can_be_given_quoted(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"image": [0, 0, 1, 1, 2], "label": ["sky, blue", "sea", "sea", "sand", "sea"]}
                 ).to_csv("pairs.csv", index=False)
    assert call(["fit", "pairs.csv", "-o", "m", "-q", *FIT_OPTIONS], capsys)[0] == 0
    status, out, err = call(["tag", "m.npz", "--labels", '"sky, blue",sea', "--format", "json"],
                            capsys)
    assert status == 0, err
    assert sorted(json.loads(out)[0]["known_labels"]) == ["sea", "sky, blue"]


@pytest.mark.parametrize("argv, option", [
    (["demo", "--examples", "-1"], "--examples"),
    (["demo", "--threads", "-1"], "--threads"),
])
def test_demo_refuses_negative_counts_before_generating_data(capsys, argv, option):
    status, out, err = call(argv, capsys)
    assert status == 2 and f"{option}: expected an integer >= 0" in err and not out


def test_help_states_each_default_once():
    help_text = _parser()._subparsers._group_actions[0].choices["fit"].format_help()
    assert "(default 1) (default 1)" not in help_text and help_text.count("(default: vse-ens 1)")
