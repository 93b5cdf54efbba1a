"""What the benchmark scripts share: splits, the result store, the worker pool, timing, reports.

``compare.py``, ``defaults_sweep.py`` and ``scaling.py`` import this module and the package,
never one another. Import it before NumPy: importing it sets one BLAS / OpenMP thread per
process (unless the environment already sets one), so that timings are single-threaded unless
a model asks for threads, and worker processes side by side do not compete for cores.
``throughput.py``, ``foldin.py`` and ``reading.py`` need none of it (no splits, no store, no
pool) and keep the machine's thread defaults, so they do not import it.

* **Splits** (``split``, ``get_splits``): leave-one-out with seed 0 into train / test, then train
  leave-one-out with seed 1 into fit / validation, of a shared dataset or of one of the
  ``GENERATED`` ones; cached per process, so workers forked after the driver loaded a dataset
  inherit its splits.
* **Result store** (``Store``): one JSON file per script run, ``{"meta", "runs", "summary"}``,
  rewritten atomically after every finished run, so ``--resume`` continues an interrupted run.
  It is compact, one run per line (``dumps``), and records no machine paths: the command and
  arguments keep paths relative to the repository (``portable_path``), and the code state is
  git HEAD, the changed files (repository-relative) and a hash of the built kernels.
* **Worker pool** (``run_tasks``): the tasks not yet in the store, slowest first, in forked,
  niced, single-threaded processes (in-process with one job), each result stored as it ends.
* **Timing** (``TrainingClock``, ``StopTraining``, ``curve_epochs``, ``time_to_target``) and our
  engine's named models (``OUR_MODELS``, ``train_ours``, ``evaluate``, ``held_out_map``).
* **Reports** (``fmt_*``, ``pyplot``, ``write_report``) and the command-line options the
  scripts have in common (``argument_parser``, ``add_options``).
"""

import os

# Before NumPy (and the kernels' OpenMP runtime) load: they read these once, at load time.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from vse_recsys import VSEEns  # noqa: E402
from vse_recsys.adapters import (  # noqa: E402
    generate_image_labels,
    leave_one_out_split,
    load_dataset,
)
from vse_recsys.evaluation import factor_metrics, score_metrics  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DATASETS = ("corel5k", "delicious", "movielens-100k", "nuswide81")
#: Generated data sets (``generate_image_labels(**spec, random_state=0)``: 5 labels per image on
#: average, 16 planted topics, Zipf label popularity): name -> spec. The defaults sweep uses
#: the three of 20,000 images; 100k labels are beyond EASE's memory; "quick" is for smoke tests.
GENERATED = {
    "generated-1k": dict(n_images=20_000, n_labels=1_000),
    "generated-5k": dict(n_images=20_000, n_labels=5_000),
    "generated-20k": dict(n_images=20_000, n_labels=20_000),
    "generated-100k": dict(n_images=100_000, n_labels=100_000),
    "generated-quick": dict(n_images=1_500, n_labels=200),
}
FACTORS = 64
PROTOCOL = "leave-one-out seed 0 -> train/test; train leave-one-out seed 1 -> fit/validation"

# Our engine's named configurations: the same name means the same model in every benchmark.
REFERENCE_WARP = "WARP (ours)"
# the free-vector models of the paper's comparison: plain SGD, no bias, no early stopping
FREE = dict(image_vectors="free", label_bias=False, learning_schedule="sgd",
             early_stopping=False)
OUR_MODELS = {
    # VSEEns as shipped (label-composed image vectors, bias, AdaGrad, WARP) at its default
    # factors (128, where the defaults sweep put it; the other models keep FACTORS), epochs tuned
    "VSEEns": dict(early_stopping=False, factors=VSEEns().factors),
    "VSE-ens": dict(FREE, loss="hinge", sampler="adaptive", rank_decay=0.3),
    "uniform hinge": dict(FREE, loss="hinge", sampler="uniform"),
    REFERENCE_WARP: dict(FREE, loss="warp", sampler="uniform"),
    "AOBPR": dict(FREE, loss="bpr", sampler="adaptive", rank_decay=0.3),
    "BPR (ours)": dict(FREE, loss="bpr", sampler="uniform"),
}


# --------------------------------------------------------------------------------------------
# Splits

SPLITS = {}


def split(data):
    """(fit, validation, train, test) CSR matrices of a dataset (or a user-item matrix).

    Leave-one-out with seed 0 into train / test, then train leave-one-out with seed 1 into fit
    / validation: every choice is made on validation, test is scored only.
    """
    train, test = leave_one_out_split(data, random_state=0)
    fit, validation = leave_one_out_split(train, random_state=1)
    return fit, validation, train, test


def get_splits(name, data_dir=None):
    """``split`` of a shared dataset or of a ``GENERATED`` one, made once per process (forked
    workers inherit it)."""
    if name not in SPLITS:
        if name in GENERATED:
            data = generate_image_labels(**GENERATED[name], random_state=0)
        else:
            data = load_dataset(name, data_dir=data_dir)
        SPLITS[name] = split(data)
    return SPLITS[name]


# --------------------------------------------------------------------------------------------
# Paths and the code state: what a results file may record about the machine


def portable_path(path):
    """``path`` as a results file records it: never absolute, so no machine's folders in it.

    A relative path stays as given; an absolute one inside the repository becomes relative to
    the repository root, one beside it (the shared data next to the checkouts) ``../...``, and
    any other keeps only its last component, after ``.../``.
    """
    if path is None:
        return None
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    path = Path(os.path.abspath(path))
    bases = [(REPO_ROOT, "")]
    if REPO_ROOT.parent != Path(REPO_ROOT.anchor):  # "../x" of a repository at /repo is /x
        bases.append((REPO_ROOT.parent, "../"))
    for base, prefix in bases:
        if path.is_relative_to(base):
            return prefix + path.relative_to(base).as_posix()
    return ".../" + path.name


def portable(value):
    """``value`` (arguments: dicts, lists, strings, paths) with every absolute path made
    portable (``portable_path``), including the value of a ``--option=/path`` token."""
    if isinstance(value, dict):
        return {key: portable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(item) for item in value]
    if isinstance(value, Path):
        return portable_path(value)
    if isinstance(value, str):
        option, equals, rest = value.partition("=")
        if equals and option.startswith("--") and os.path.isabs(rest):
            return f"{option}={portable_path(rest)}"
        return portable_path(value) if os.path.isabs(value) else value
    return value


def command_line(script, argv):
    """The command that ran ``script`` (its ``__file__``) with ``argv``, paths made portable:
    a shell command to run from the repository root."""
    script = Path(script).resolve()
    name = script.relative_to(REPO_ROOT).as_posix() if script.is_relative_to(REPO_ROOT) \
        else script.name
    return shlex.join(["python", name, *portable(list(argv))])


def code_state():
    """Which code ran: git HEAD, the files changed since it (``git status --porcelain`` lines,
    paths relative to the repository) and the SHA-256 of the built kernels."""
    import vse_recsys._sampler as kernels

    def git(*command):
        try:
            return subprocess.run(["git", *command], cwd=REPO_ROOT, capture_output=True,
                                  text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None

    head = git("rev-parse", "HEAD")
    # only trailing newlines go: a porcelain line starts with a two-letter status whose first
    # letter may be a space (" M file": changed, not staged)
    changed = git("status", "--porcelain", "--untracked-files=no")
    return dict(head=head.strip() if head else None,
                changed_files=changed.rstrip("\n").splitlines() if changed else [],
                kernels_sha256=hashlib.sha256(Path(kernels.__file__).read_bytes()).hexdigest())


def run_meta(script, argv, args, **extra):
    """The ``meta`` record of a results file: the command, the machine, the code state, the
    arguments (paths made portable), the start time; then ``extra``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    arguments = {key: value for key, value in vars(args).items()
                 if key not in ("report", "summary")}  # modes that write no results file
    return dict(command=command_line(script, argv), python=sys.version.split()[0],
                platform=platform.platform(), cpus=os.cpu_count(), code=code_state(),
                load_average=os.getloadavg(), args=portable(arguments),
                started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), **extra)


# --------------------------------------------------------------------------------------------
# The result store


def dumps(data):
    """Compact JSON, one entry of the top-level lists and dicts per line.

    One run per line: a resumed run shows in a diff as the lines it added, the files are half
    the size of an indented dump, and ``json.loads`` reads them as any JSON.
    """
    def compact(value):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    def block(value):
        if isinstance(value, list) and value:
            return "[\n" + ",\n".join(compact(item) for item in value) + "\n]"
        if isinstance(value, dict) and value:
            return "{\n" + ",\n".join(f"{compact(key)}:{compact(item)}"
                                      for key, item in value.items()) + "\n}"
        return compact(value)

    return "{\n" + ",\n".join(f"{compact(key)}:{block(value)}"
                              for key, value in data.items()) + "\n}\n"


def write_json(path, data):
    """Write ``dumps(data)`` to ``path`` atomically (a reader never sees half a file)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.")
    os.fchmod(fd, 0o644)  # mkstemp's 0600 would make the results private
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(dumps(data))
    os.replace(tmp, path)


def load_results(path):
    """A results file's data."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


class Store:
    """The JSON results file of a script run, rewritten after every finished run.

    ``{"meta": meta, "runs": [...], "summary": {...}}``. With ``resume`` the runs already in
    the file are kept (``done()`` tells a script which tasks to skip) and ``meta`` notes the
    earlier run's wall-clock; ``keep_summary`` keeps the earlier summary as well.
    """

    # what identifies a task: a run whose task has these values is not run again on --resume
    TASK_KEYS = ("phase", "role", "family", "dataset", "params", "seed", "epochs", "iterations")

    def __init__(self, path, meta, resume, keep_summary=False):
        self.path = Path(path)
        self.data = {"meta": meta, "runs": [], "summary": {}}
        if resume and self.path.exists():
            old = load_results(self.path)
            self.data["runs"] = old.get("runs", [])
            self.data["meta"]["resumed_from_seconds"] = old.get("meta", {}).get("wall_seconds")
            if keep_summary:
                self.data["summary"] = old.get("summary", {})
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def task_id(self, task):
        return json.dumps({key: task[key] for key in self.TASK_KEYS if key in task},
                          sort_keys=True)

    def done(self):
        return {self.task_id(run): run for run in self.data["runs"]}

    def add(self, run):
        self.data["runs"].append(run)
        self.save()

    def save(self):
        write_json(self.path, self.data)


# --------------------------------------------------------------------------------------------
# The worker pool


def _worker_init(nice):
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass


def run_tasks(label, tasks, store, worker, *, jobs, nice, cost, describe):
    """Run the ``tasks`` not yet in ``store``; return every task's result.

    ``worker(task)`` (a module-level function) returns a run record; ``jobs`` forked worker
    processes, niced by ``nice``, run them (one job: in this process), the highest
    ``cost(task)`` first so that the workers finish together. Each run is added to ``store`` as
    it ends, and ``describe(run)`` printed under a progress bar. The results are the runs
    already stored (in task order), then the new ones as they finished.
    """
    done = store.done()
    todo = [task for task in tasks if store.task_id(task) not in done]
    results = [done[store.task_id(task)] for task in tasks if store.task_id(task) in done]
    if not todo:
        return results
    todo.sort(key=lambda task: -cost(task))
    if jobs > 1:
        pool = multiprocessing.get_context("fork").Pool(jobs, _worker_init, (nice,))
        finished = pool.imap_unordered(worker, todo)
    else:
        pool, finished = None, map(worker, todo)
    try:
        with tqdm(total=len(todo), desc=label, unit="run", file=sys.stderr) as progress:
            for run in finished:
                store.add(run)
                results.append(run)
                progress.update(1)
                progress.write(describe(run))
    finally:
        if pool is not None:
            pool.terminate()
    return results


# --------------------------------------------------------------------------------------------
# Timing and schedules


class StopTraining(Exception):
    """Raised from a per-epoch callback to end a fit early."""


class TrainingClock:
    """Cumulative training wall-clock that leaves out the time spent in evaluation.

    ``start()`` before training; ``pause()`` when an epoch ends (returns the training seconds
    so far); ``start()`` again when the evaluation is done.
    """

    def __init__(self):
        self.seconds = 0.0
        self._since = None

    def start(self):
        self._since = time.perf_counter()

    def pause(self):
        if self._since is not None:
            self.seconds += time.perf_counter() - self._since
            self._since = None
        return self.seconds


def curve_epochs(last):
    """A log-ish schedule up to ``last``: every epoch to 8, every 2nd to 16, every 4th after."""
    epochs = [e for e in range(1, last + 1) if e <= 8 or (e <= 16 and e % 2 == 0) or e % 4 == 0]
    if last >= 1 and epochs[-1] != last:
        epochs.append(last)
    return epochs


def time_to_target(curve, target, key="map"):
    """Training seconds at the first curve point whose ``key`` is >= ``target``, else None.

    Exact up to the evaluation schedule (the model may have crossed the target earlier,
    between two evaluated epochs).
    """
    for point in curve:
        if point[key] >= target:
            return point["seconds"]
    return None


# --------------------------------------------------------------------------------------------
# Training and scoring our engine


def train_ours(train, params, *, threads, seed, epochs, on_epoch, clock=None):
    """Fit ``VSEEns(**params)`` (``factors=FACTORS`` unless ``params`` say otherwise).

    After every epoch ``on_epoch(epoch, training seconds, scorer, stats)`` is called, where
    ``scorer()`` returns ``("factors", user_factors, item_factors)`` and ``stats`` is the epoch's
    ``fit_history`` entry; it may raise ``StopTraining``. ``clock`` (a ``TrainingClock``) leaves
    the time spent in ``on_epoch`` out of the training seconds.
    """
    model = VSEEns(**{"factors": FACTORS, **params}, iterations=epochs, num_threads=threads,
                   random_state=seed)
    fit_reporting_epochs(model, train, on_epoch, clock or TrainingClock())


def fit_reporting_epochs(model, train, on_epoch, clock):
    """``model.fit(train)`` with ``on_epoch`` called after every epoch (as ``train_ours``
    describes); returns the scorer of the model, which ``fit`` then returned."""

    def scorer():
        # composed image vectors exist during training only as a function of the labels
        users = model.user_factors
        if users is None:
            users = model.recalculate_user(np.arange(train.shape[0]), train)
        return "factors", users, model.item_factors

    def callback(epoch, _seconds, stats):
        on_epoch(epoch + 1, clock.pause(), scorer, stats)
        clock.start()

    clock.start()
    model.fit(train, show_progress=False, callback=callback)
    return scorer


def cooccurrence_scorer(train):
    """The no-training baseline: ``scores(ids)`` of the images ``ids`` are the sums over each
    image's training labels i of P(j | i) = #images with i and j / #images with i."""
    binary = train.copy()
    binary.data[:] = 1.0
    counts = (binary.T @ binary).tocsr()  # counts[i, j] = images with labels i and j
    conditional = (sp.diags(1.0 / np.maximum(counts.diagonal(), 1)) @ counts).tocsr()
    return lambda ids: (binary[ids] @ conditional).toarray()


def metrics(user_factors, item_factors, known, held_out, K=(5,)):
    """Ranking metrics of factor scores; the ``known`` (training) labels are excluded."""
    result = factor_metrics(user_factors, item_factors, known, held_out, K=K)
    return {key: value for key, value in result.items() if key != "n_images"}


def held_out_map(score_rows, known, held_out, images, block_scores=1 << 22):
    """MAP of one held-out label per image of ``images`` (rows of ``held_out``, each with exactly
    one label, as a leave-one-out split makes): the mean reciprocal rank of that label among
    every label but the image's ``known`` ones, ties counted against it (the rule of
    ``vse_recsys.evaluation``). ``score_rows(positions)`` returns the dense scores (one row per
    position into ``images``); images are scored ``block_scores`` scores at a time."""
    images = np.asarray(images)
    held = held_out[images]
    if not (np.diff(held.indptr) == 1).all():
        raise ValueError("held_out_map needs exactly one held-out label per image")
    known = known[images]
    step = max(1, min(len(images), block_scores // max(1, held_out.shape[1])))
    total = 0.0
    for start in range(0, len(images), step):
        stop = min(len(images), start + step)
        scores = np.array(score_rows(np.arange(start, stop)), dtype=np.float32)
        rows = np.arange(stop - start)
        target = scores[rows, held.indices[start:stop]]
        part = known[start:stop]
        scores[np.repeat(rows, np.diff(part.indptr)), part.indices] = -np.inf
        rank = (scores >= target[:, None]).sum(axis=1)  # the label itself counts once
        total += float(np.sum(1.0 / rank))
    return total / len(images)


def evaluate(scorer, known, held_out, K=(5, 10)):
    """Metrics of a scorer: ``scorer()`` returns ``("factors", U, V)`` or ``("scores", fn)``
    (``fn(image_ids)`` a dense score matrix); training labels ``known`` are excluded."""
    kind, *rest = scorer()
    if kind == "factors":
        return metrics(*rest, known, held_out, K=K)
    result = score_metrics(rest[0], known, held_out, K=K)
    return {key: value for key, value in result.items() if key != "n_images"}


# --------------------------------------------------------------------------------------------
# Reports


def fmt_number(value, digits=4, missing="—"):
    return missing if value is None else f"{value:.{digits}f}"


def fmt_seconds(value):
    """Seconds to a target: two decimals below 10 s, one above; "not reached" for None."""
    return "not reached" if value is None else (f"{value:.2f}" if value < 10 else f"{value:.1f}")


def fmt_speedup(value):
    return "—" if value is None else f"{value:.2f}×"


def pyplot():
    """matplotlib.pyplot with a file-only backend, or None (with a note) if not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not importable, no plot (pip install -e '.[bench]')")
        return None
    return plt


def write_report(stem, text, plot):
    """Write ``<stem>.md`` (``text``) and ``<stem>.png`` (``plot(path)``); print the text."""
    Path(f"{stem}.md").write_text(text, encoding="utf-8")
    plot(f"{stem}.png")
    print(text, end="")


# --------------------------------------------------------------------------------------------
# Command-line options


def argument_parser(doc):
    """An argument parser whose description is ``doc``'s first paragraph and whose epilog (in
    ``--help``) the rest of it."""
    paragraphs = doc.split("\n\n")
    return argparse.ArgumentParser(description=paragraphs[0], epilog="\n\n".join(paragraphs[1:]),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


OPTIONS = {
    "data_dir": (["--data-dir"], dict(
        default=None,
        help="folder of the shared datasets (default: $VSE_RECSYS_DATA or ../shared/data)")),
    "jobs": (["--jobs"], dict(type=int, default=2,
                              help="worker processes, each single-threaded (default 2)")),
    "nice": (["--nice"], dict(type=int, default=5,
                              help="niceness added to the worker processes (default 5)")),
    "seed": (["--seed"], dict(type=int, default=0, help="random_state of every model")),
    "resume": (["--resume"], dict(action="store_true",
                                  help="keep the runs already in the JSON results and skip "
                                       "them")),
    "report": (["--report"], dict(metavar="JSON",
                                  help="only write the tables (and plot) of a results file")),
}


def add_options(parser, *names, **changes):
    """Add the shared options ``names`` (keys of ``OPTIONS``) to ``parser``; ``changes`` maps a
    name to the settings this script gives it otherwise (``jobs=dict(help=...)``)."""
    for name in names:
        flags, settings = OPTIONS[name]
        parser.add_argument(*flags, **{**settings, **changes.get(name, {})})
