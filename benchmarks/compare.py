"""VSE-ens and its peers side by side on one dataset: tuned on validation, timed, plotted.

    python benchmarks/compare.py corel5k --data-dir ../shared/data      # one dataset
    python benchmarks/compare.py nuswide81 --small-grid                  # fewer grid points
    python benchmarks/compare.py --quick                                 # generated data, ~1 min
    python benchmarks/compare.py --report benchmarks/results/compare_corel5k.json

Models (``factors=64`` for every tuned factor model, ``num_threads=1`` for every model):

* ours, one engine (``VSEEns``): VSEEns (label-composed image vectors, label bias, WARP,
  AdaGrad: the package's model, tuned like every model), "VSEEns defaults" (``VSEEns()`` as
  shipped: no tuning, every parameter at its default, its own early stopping on labels it
  holds out of train), and the free-vector models of the paper's comparison: VSE-ens
  (adaptive + hinge), WARP (uniform + warp), AOBPR (adaptive + bpr), BPR (uniform + bpr);
  uniform hinge on request;
* EASE (closed form, lambda tuned on validation);
* LightFM WARP with ``max_sampled`` 10 and 100 (optional: skipped with a note when ``lightfm``
  is not importable; it does not install with build isolation, see README.md);
* implicit's BPR and ALS, its item-item recommenders (cosine and BM25);
* a label co-occurrence baseline, ``score(j) = sum over the image's training labels i of
  P(j | i)`` with ``P(j | i) = #images with i and j / #images with i``, and popularity.

Protocol (the test labels never drive a choice):

1. **split**: leave-one-out with seed 0 into train / test, then train leave-one-out with seed 1
   into fit / validation (``harness.split``, the same splits as the defaults sweep).
2. **tune**: every setting of a model's small grid (learning rate x regularisation; K for
   item-item; regularisation x alpha for ALS; lambda for EASE) is trained on fit for at most
   ``--max-epochs`` epochs. Validation MAP is measured after epoch 1 and every 2nd epoch; a
   run stops when it has not improved for ``--patience`` epochs (the same rule for every
   iterative model). The setting with the best validation MAP wins, with its best epoch as
   the epoch count. "VSEEns defaults" is not tuned.
3. **retrain**: the winner is trained on the whole train split for exactly that many epochs;
   test metrics are measured on a log-ish epoch schedule (1..8, every 2 to 16, every 4 after,
   and the last epoch), against cumulative *training* wall-clock (evaluation time excluded).
   ``final`` is the last point (the model one would ship); ``best`` is the best point of the
   test curve, for orientation only.
4. **threads**: VSE-ens and our WARP are retrained again with 2 threads (``--no-threads-row``
   skips this).

From the test curves, the report derives **time-to-target**: the training seconds each model
needs to reach 95% of the best test MAP of LightFM WARP (the better ``max_sampled``), of our
WARP and of EASE, and the speed-up over those models' own time to that target (the analogue of
the paper's Table 4; EASE's own time is its fit time).

Output: ``<out-dir>/compare_<dataset>.json`` (every run, curve and chosen setting, one run per
line; rewritten after every run, so ``--resume`` continues an interrupted run),
``compare_<dataset>.md`` (the tables) and ``compare_<dataset>.png`` (test MAP vs training time,
one line per model).
"""

import os
import tempfile
import time
import warnings
from pathlib import Path

import harness  # first: it sets one BLAS / OpenMP thread per process before NumPy loads

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from harness import DATASETS, FACTORS, GENERATED, OUR_MODELS, REFERENCE_WARP  # noqa: E402
from vse_recsys import VSEEns  # noqa: E402
from vse_recsys.adapters import generate_image_labels  # noqa: E402
from vse_recsys.model import DivergenceError  # noqa: E402

TARGET_FRACTION = 0.95
THREAD_ROW_MODELS = ("VSE-ens", REFERENCE_WARP)


def _grid(**axes):
    """All combinations of the named axes, as a list of dicts (first axis varies slowest)."""
    settings = [{}]
    for name, values in axes.items():
        settings = [dict(s, **{name: v}) for s in settings for v in values]
    return settings


# LightFM is the slowest model by far (seconds per epoch on delicious), so its grid is 4 points:
# three learning rates (its default, 0.05, in the middle) without regularisation, plus one
# regularised setting. alpha is LightFM's L2 penalty on the user and item embeddings.
LIGHTFM_GRID = _grid(alpha=[0.0], learning_rate=[0.02, 0.05, 0.1]) + [
    dict(alpha=1e-5, learning_rate=0.05)]

# Each model: how it is trained ("kind"), fixed parameters, its tuning grid, and the smaller
# grid used with --small-grid (the grid's centre regularisation only). The grids are centred on
# the validation-tuned defaults of benchmarks/results/defaults.md.
MODELS = {
    # the package's model (label-composed vectors, bias, AdaGrad, WARP) at its default factors,
    # on the grid of benchmarks/defaults_sweep.py
    "VSEEns": dict(kind="ours", fixed=OUR_MODELS["VSEEns"],
                   grid=_grid(regularization=[0.01, 0.05], learning_rate=[0.01, 0.02, 0.05],
                              label_dropout=[0.3, 0.0])),
    # VSEEns() as shipped: nothing tuned, its own early stopping
    "VSEEns defaults": dict(kind="shipped", fixed={}, grid=[{}]),
    "VSE-ens": dict(kind="ours", fixed=OUR_MODELS["VSE-ens"],
                    grid=_grid(regularization=[0.03, 0.01],
                               learning_rate=[0.015, 0.03, 0.06])),
    REFERENCE_WARP: dict(kind="ours", fixed=OUR_MODELS[REFERENCE_WARP],
                         grid=_grid(regularization=[0.03, 0.01],
                                    learning_rate=[0.001, 0.003, 0.01])),
    "AOBPR": dict(kind="ours", fixed=OUR_MODELS["AOBPR"],
                  grid=_grid(regularization=[0.001, 0.01], learning_rate=[0.03, 0.1, 0.3])),
    "BPR (ours)": dict(kind="ours", fixed=OUR_MODELS["BPR (ours)"],
                       grid=_grid(regularization=[0.001, 0.01], learning_rate=[0.03, 0.1, 0.3])),
    "LightFM WARP ms10": dict(kind="lightfm", fixed=dict(max_sampled=10), grid=LIGHTFM_GRID),
    "LightFM WARP ms100": dict(kind="lightfm", fixed=dict(max_sampled=100), grid=LIGHTFM_GRID),
    "implicit BPR": dict(kind="implicit_bpr", fixed={},
                         grid=_grid(regularization=[0.01, 0.001],
                                    learning_rate=[0.01, 0.03, 0.1])),
    "implicit ALS": dict(kind="implicit_als", fixed={},
                         grid=_grid(alpha=[1.0, 10.0], regularization=[0.01, 0.1, 1.0])),
    "item-item cosine": dict(kind="cosine", fixed={}, grid=_grid(K=[10, 50, 200])),
    "item-item BM25": dict(kind="bm25", fixed={}, grid=_grid(K=[10, 50, 200])),
    # EASE (Steck 2019): closed form, lambda tuned on validation like every other model
    "EASE": dict(kind="ease", fixed={},
                 grid=_grid(regularization=[1.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0])),
    "co-occurrence": dict(kind="cooccurrence", fixed={}, grid=[{}]),
    "popularity": dict(kind="popularity", fixed={}, grid=[{}]),
}
ITERATIVE = ("ours", "shipped", "lightfm", "implicit_bpr", "implicit_als")
DEFAULT_MODELS = list(MODELS)

# Not in the default run: the uniform-hinge free-vector model (VSE-ens without its sampler)
MODELS["uniform hinge"] = dict(kind="ours", fixed=OUR_MODELS["uniform hinge"],
                               grid=_grid(regularization=[0.03, 0.01],
                                          learning_rate=[0.015, 0.03, 0.06]))

# Not in the default run: VSE-ens beyond the common setting (more factors, stronger
# regularisation, a flatter sampler), for investigating where it falls short. Its rows use
# other factor counts than 64, so they are reported apart from the main comparison.
MODELS["VSE-ens explore"] = dict(
    kind="ours", fixed=dict(OUR_MODELS["VSE-ens"], learning_rate=0.03, regularization=0.03),
    grid=[dict(factors=128), dict(regularization=0.1), dict(rank_decay=1.0),
          dict(factors=128, regularization=0.1), dict(factors=128, rank_decay=1.0),
          dict(factors=32)])

# Not in the default run either: the "sharper sampler" experiment. Each pair draws 2 or 4
# adaptive negatives and trains on the one the model scores highest (VSEEns(candidates=c)).
MODELS["VSE-ens best-of-c"] = dict(
    kind="ours", fixed=OUR_MODELS["VSE-ens"],
    grid=_grid(regularization=[0.03], candidates=[2, 4], learning_rate=[0.015, 0.03, 0.06]))


def small_grid(grid):
    """The settings of a grid that keep its first axis at its first (centre) value.

    A grid with a single axis (K of the item-item models) is kept whole.
    """
    if not grid or len(grid[0]) < 2:
        return grid
    first = next(iter(grid[0]))
    return [s for s in grid if s[first] == grid[0][first]]


def lightfm_available():
    try:
        import lightfm  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Training: every trainer calls on_epoch(epoch, seconds, scorer, stats) after each epoch, where
# scorer() returns ("factors", U, V) or ("scores", fn); on_epoch raises StopTraining to stop.


def _train_ours(train, spec, params, threads, seed, epochs, on_epoch, clock):
    # a setting may override the fixed parameters, factors included (the exploration grid)
    harness.train_ours(train, {**spec["fixed"], **params}, threads=threads, seed=seed,
                       epochs=epochs, on_epoch=on_epoch, clock=clock)


def _train_shipped(train, spec, params, threads, seed, epochs, on_epoch, clock):
    """``VSEEns()`` with every parameter at its default: early stopping on labels it holds out
    of ``train`` itself, the best epoch's parameters kept. After training, one more
    ``on_epoch`` call with ``stats["final"]`` scores the model ``fit`` returned; its seconds
    include the package's own validation scoring, part of its ``fit``."""
    model = VSEEns(num_threads=threads, random_state=seed, **params)
    scorer = harness.fit_reporting_epochs(model, train, on_epoch, clock)
    stopped = len(model.fit_history)
    on_epoch(model.best_iteration_ or stopped, clock.pause(), scorer,
             dict(final=True, stopped_epoch=stopped, kept_epoch=model.best_iteration_,
                  iterations=model.iterations))


def _train_lightfm(train, spec, params, threads, seed, epochs, on_epoch, clock):
    from lightfm import LightFM

    model = LightFM(no_components=FACTORS, loss="warp", learning_rate=params["learning_rate"],
                    item_alpha=params["alpha"], user_alpha=params["alpha"],
                    max_sampled=spec["fixed"]["max_sampled"], random_state=seed)

    def factors():
        # s(i, a) = u_i . v_a + b_a (+ b_i, constant per image): a bias column makes it a dot
        ones = np.ones((model.user_embeddings.shape[0], 1), dtype=np.float32)
        return ("factors", np.hstack([model.user_embeddings, ones]),
                np.hstack([model.item_embeddings, model.item_biases[:, None]]))

    interactions = train.tocoo()
    clock.start()
    for epoch in range(epochs):
        model.fit_partial(interactions, epochs=1, num_threads=threads)
        seconds = clock.pause()
        if not (np.isfinite(model.item_embeddings).all() and np.isfinite(model.item_biases).all()):
            raise DivergenceError(f"LightFM diverged in epoch {epoch + 1}")
        on_epoch(epoch + 1, seconds, factors, {})
        clock.start()


def _train_implicit(train, spec, params, threads, seed, epochs, on_epoch, clock):
    if spec["kind"] == "implicit_bpr":
        from implicit.cpu.bpr import BayesianPersonalizedRanking as Model
    else:
        from implicit.cpu.als import AlternatingLeastSquares as Model
    with threadpool_limits(1, "blas"):  # implicit warns (and slows down) otherwise
        model = Model(factors=FACTORS, iterations=epochs, num_threads=threads,
                      random_state=seed, **params)
    done = [0]

    def callback(*_args):
        done[0] += 1
        on_epoch(done[0], clock.pause(), lambda: ("factors", model.user_factors,
                                                   model.item_factors), {})
        clock.start()

    clock.start()
    with threadpool_limits(1, "blas"):
        model.fit(train.astype(np.float32), show_progress=False, callback=callback)


def _train_static(train, spec, params, threads, seed, epochs, on_epoch, clock):
    """The non-iterative models: one 'epoch' that builds the scorer."""
    clock.start()
    kind = spec["kind"]
    if kind in ("cosine", "bm25"):
        from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

        model = (CosineRecommender if kind == "cosine" else BM25Recommender)(
            K=params["K"], num_threads=threads)
        model.fit(train, show_progress=False)
        similarity = model.similarity.tocsr()

        def scores(ids):
            return (train[ids] @ similarity).toarray()
    elif kind == "ease":
        from vse_recsys import EASE

        model = EASE(regularization=params["regularization"], num_threads=threads)
        model.fit(train, show_progress=False)
        weights_t = np.ascontiguousarray(model.item_factors.T)  # B

        def scores(ids):
            return train[ids] @ weights_t
    elif kind == "cooccurrence":
        scores = harness.cooccurrence_scorer(train)
    elif kind == "popularity":
        popularity = np.asarray(train.getnnz(axis=0), dtype=np.float64)

        def scores(ids):
            return np.broadcast_to(popularity, (len(ids), popularity.size))
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    on_epoch(1, clock.pause(), lambda: ("scores", scores), {})


TRAINERS = {"ours": _train_ours, "shipped": _train_shipped, "lightfm": _train_lightfm,
            "implicit_bpr": _train_implicit, "implicit_als": _train_implicit}


def train_model(name, train, params, *, threads, seed, epochs, on_epoch):
    """Train model ``name`` with ``params``, calling ``on_epoch`` after every epoch."""
    spec = MODELS[name]
    trainer = TRAINERS.get(spec["kind"], _train_static)
    trainer(train, spec, params, threads, seed, epochs, on_epoch, harness.TrainingClock())


# --------------------------------------------------------------------------------------------
# Tasks (run in worker processes)

def load_splits(dataset, data_dir=None, quick_images=None):
    """(fit, validation, train, test) of a shared dataset, or of generated data for --quick.

    Generated data is made again on every call (``quick_images`` may differ between calls);
    the worker processes find either in ``harness.SPLITS``.
    """
    if dataset != "generated":
        return harness.get_splits(dataset, data_dir)  # a shared or a harness.GENERATED one
    data = generate_image_labels(n_images=quick_images, n_labels=quick_images // 8,
                                 labels_per_image=5, random_state=0)
    harness.SPLITS[dataset] = harness.split(data)
    return harness.SPLITS[dataset]


def run_tune(task):
    """Train one setting on fit with early stopping on validation MAP."""
    fit, validation, _, _ = harness.SPLITS[task["dataset"]]
    patience = task["patience"]
    curve, best = [], dict(map=-1.0, epoch=0)

    def on_epoch(epoch, seconds, scorer, stats):
        if epoch != 1 and epoch % 2 and epoch != task["epochs"]:
            return
        metrics = harness.evaluate(scorer, fit, validation, K=(5,))
        curve.append(dict(epoch=epoch, seconds=round(seconds, 4), map=metrics["map"],
                          **{"precision@5": metrics["precision@5"]}))
        if metrics["map"] > best["map"]:
            best.update(map=metrics["map"], epoch=epoch)
        elif epoch - best["epoch"] >= patience:
            raise harness.StopTraining

    status = "completed"
    started = time.perf_counter()
    try:
        train_model(task["family"], fit, task["params"], threads=1, seed=task["seed"],
                    epochs=task["epochs"], on_epoch=on_epoch)
    except harness.StopTraining:
        status = "early-stopped"
    except (DivergenceError, ValueError, FloatingPointError) as error:
        status = f"diverged: {error}"[:200]
    return dict(task, status=status, curve=curve,
                best_val_map=best["map"] if best["epoch"] else None,
                best_epoch=best["epoch"] or None,
                wall_seconds=round(time.perf_counter() - started, 2))


def run_retrain(task):
    """Train the chosen setting on train for the chosen epochs; test curve vs training time."""
    _, _, train, test = harness.SPLITS[task["dataset"]]
    wanted = set(harness.curve_epochs(task["epochs"]))
    curve = []

    def on_epoch(epoch, seconds, scorer, stats):
        final = stats.get("final", False)  # the model a shipped fit returned: always scored
        if epoch not in wanted and not final:
            return
        point = dict(epoch=epoch, seconds=round(seconds, 4),
                     **harness.evaluate(scorer, train, test))
        if final:
            point.update(kept_epoch=stats["kept_epoch"], stopped_epoch=stats["stopped_epoch"])
        elif "draws" in stats:
            point["draws_per_update"] = stats["draws"] / max(1, stats["updates"])
            point["violation_rate"] = stats["violation_rate"]
        curve.append(point)

    status = "completed"
    load_before = os.getloadavg()[0]  # other processes on the machine skew the timings
    try:
        train_model(task["family"], train, task["params"], threads=task["threads"],
                    seed=task["seed"], epochs=task["epochs"], on_epoch=on_epoch)
    except (DivergenceError, ValueError, FloatingPointError) as error:
        status = f"diverged: {error}"[:200]
    return dict(task, status=status, curve=curve,
                load_average=[load_before, os.getloadavg()[0]])


def _dispatch(task):
    return (run_tune if task["phase"] == "tune" else run_retrain)(task)


def run_tasks(label, tasks, store, jobs, nice):
    """Run the tasks not yet in ``store`` (``jobs`` processes), adding each result as it ends."""
    # LightFM's epochs are the slowest: its runs go first, so that two workers finish together
    return harness.run_tasks(
        label, tasks, store, _dispatch, jobs=jobs, nice=nice, describe=_describe,
        cost=lambda task: task["epochs"] * (3 if "LightFM" in task["family"] else 1))


def _describe(run):
    setting = _fmt_params(run["params"]) or "-"
    if run["phase"] == "tune":
        result = ("no result" if run["best_val_map"] is None else
                  f"val MAP {run['best_val_map']:.4f} @ epoch {run['best_epoch']}")
        return f"  tune    {run['family']:<20} {setting:<28} {result} ({run['status']})"
    last = run["curve"][-1] if run["curve"] else None
    result = (f"test MAP {last['map']:.4f} P@5 {last['precision@5']:.4f} in "
              f"{last['seconds']:.1f}s" if last else run["status"])
    return f"  retrain {run['family']:<20} {run['threads']} thread(s) {setting:<20} {result}"


def _fmt_params(params):
    short = {"learning_rate": "lr", "regularization": "reg", "alpha": "alpha", "K": "K"}
    return ", ".join(f"{short.get(k, k)} {v:g}" for k, v in params.items())


# --------------------------------------------------------------------------------------------
# Driver


def choose(tune_runs, name):
    """The best tuning run of a model (highest validation MAP), or None if none produced one."""
    runs = [r for r in tune_runs if r["family"] == name and r["best_val_map"] is not None]
    return max(runs, key=lambda r: r["best_val_map"]) if runs else None


def main(argv=None):
    parser = harness.argument_parser(__doc__)
    parser.add_argument("dataset", nargs="?", choices=DATASETS + tuple(GENERATED),
                        help="a shared dataset, or generated data of harness.GENERATED (not "
                             "needed with --quick or --report)")
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=list(MODELS),
                        metavar="MODEL",
                        help="models to run (default: all but 'uniform hinge', 'VSE-ens "
                             "explore' and 'VSE-ens best-of-c'; names: "
                             + ", ".join(MODELS) + ")")
    parser.add_argument("--small-grid", action="store_true",
                        help="tune only the grid points at the centre regularisation (ALS: "
                             "alpha 1; LightFM: alpha 0), for the largest datasets")
    parser.add_argument("--max-epochs", type=int, default=100,
                        help="epoch budget of a tuning run (default 100)")
    parser.add_argument("--patience", type=int, default=20,
                        help="a tuning run stops after this many epochs without a validation "
                             "improvement (default 20)")
    parser.add_argument("--retrain-jobs", type=int, default=1,
                        help="processes for the timed retraining runs; default 1, so that no "
                             "two timed runs share the machine")
    parser.add_argument("--no-threads-row", action="store_true",
                        help="skip the 2-thread retraining of VSE-ens and our WARP")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: generated data, one setting per model, 8 epochs")
    parser.add_argument("--quick-images", type=int, default=1500,
                        help="images of the generated data with --quick (labels = images / 8)")
    parser.add_argument("--out-dir", default=None,
                        help="where the JSON / Markdown / PNG go (default benchmarks/results, "
                             "with --quick a temporary folder)")
    parser.add_argument("--summary", metavar="JSON", nargs="+",
                        help="print the cross-dataset tables of several results files")
    harness.add_options(parser, "data_dir", "seed", "jobs", "nice", "resume", "report",
                        jobs=dict(help="processes for the tuning runs (each single-threaded); "
                                       "default 2"))
    args = parser.parse_args(argv)
    # implicit's BM25 hands its own weighting to all_pairs_knn as COO and warns about it
    warnings.filterwarnings("ignore", message="Method expects CSR input")

    if args.report:
        path = Path(args.report)
        write_report(harness.load_results(path), path.with_suffix(""))
        return
    if args.summary:
        datasets = {}
        for path in args.summary:
            data = harness.load_results(path)
            datasets[data["meta"]["dataset"]] = data
        print(cross_dataset_tables(datasets))
        return
    if args.quick:
        args.dataset, args.max_epochs, args.patience, args.jobs = "generated", 8, 4, 1
    elif args.dataset is None:
        parser.error("give a dataset, or --quick")
    out_dir = Path(args.out_dir) if args.out_dir else (
        Path(tempfile.gettempdir()) / "compare_quick" if args.quick else harness.RESULTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"compare_{args.dataset}"

    models = list(args.models)
    if not lightfm_available():
        skipped = [m for m in models if MODELS[m]["kind"] == "lightfm"]
        models = [m for m in models if m not in skipped]
        if skipped:
            print(f"note: lightfm is not importable, skipping {', '.join(skipped)} (install it "
                  f"as README.md's benchmarks section says)", flush=True)

    started = time.perf_counter()
    fit, validation, train, test = load_splits(args.dataset, args.data_dir, args.quick_images)
    print(f"{args.dataset}: {train.shape[0]:,} images x {train.shape[1]:,} labels; fit "
          f"{fit.nnz:,} pairs, validation {validation.nnz:,}, train {train.nnz:,}, "
          f"test {test.nnz:,}", flush=True)
    meta = harness.run_meta(
        __file__, argv, args, factors=FACTORS, dataset=args.dataset, models=models,
        shape=list(train.shape),
        pairs=dict(fit=fit.nnz, validation=validation.nnz, train=train.nnz, test=test.nnz),
        protocol=harness.PROTOCOL + "; settings and epochs chosen on validation MAP only")
    store = harness.Store(f"{stem}.json", meta, args.resume)

    # 1. tune every model on fit / validation
    tasks = []
    for name in models:
        spec = MODELS[name]
        if spec["kind"] == "shipped":
            continue  # nothing to tune
        grid = spec["grid"][:1] if args.quick else (
            small_grid(spec["grid"]) if args.small_grid else spec["grid"])
        epochs = args.max_epochs if spec["kind"] in ITERATIVE else 1
        tasks += [dict(phase="tune", role="1 thread", family=name, dataset=args.dataset,
                       params=params, seed=args.seed, epochs=epochs, patience=args.patience)
                  for params in grid]
    tune_runs = run_tasks("tune", tasks, store, args.jobs, args.nice)

    # 2. retrain the winners on train, 1 thread; 3. VSE-ens and our WARP again with 2
    chosen = {name: choose(tune_runs, name) for name in models}
    for name in models:
        if MODELS[name]["kind"] == "shipped":  # as shipped: up to its own iterations
            chosen[name] = dict(params={}, best_epoch=VSEEns().iterations, best_val_map=None)
    tasks = []
    for name, run in chosen.items():
        if run is None:
            print(f"note: no setting of {name} produced a validation result", flush=True)
            continue
        roles = [1] + ([2] if name in THREAD_ROW_MODELS and not args.no_threads_row else [])
        tasks += [dict(phase="retrain", role=f"{threads} thread(s)", family=name,
                       dataset=args.dataset, params=run["params"], seed=args.seed,
                       epochs=run["best_epoch"], threads=threads,
                       best_val_map=run["best_val_map"]) for threads in roles]
    run_tasks("retrain", [t for t in tasks if t["threads"] == 1], store, args.retrain_jobs,
              args.nice)
    run_tasks("threads", [t for t in tasks if t["threads"] > 1], store, 1, args.nice)

    store.data["meta"]["wall_seconds"] = round(time.perf_counter() - started, 1)
    store.data["meta"]["load_average_at_end"] = os.getloadavg()
    store.save()
    write_report(store.data, stem)
    print(f"wrote {stem}.json/.md/.png in {time.perf_counter() - started:.0f}s", flush=True)


# --------------------------------------------------------------------------------------------
# Report


TARGETS = {"lightfm": "LightFM WARP", "warp": "our WARP", "ease": "EASE"}


def summarise(data):
    """Per-model rows (chosen setting, final/best test metrics, time-to-target, speed-ups)."""
    runs = data["runs"]
    retrains = {(r["family"], r["threads"]): r for r in runs if r["phase"] == "retrain"}
    tune = [r for r in runs if r["phase"] == "tune"]

    def best_map(name):
        run = retrains.get((name, 1))
        return max((p["map"] for p in run["curve"]), default=None) if run else None

    lightfm = [n for n in ("LightFM WARP ms10", "LightFM WARP ms100") if best_map(n)]
    reference_lfm = max(lightfm, key=best_map) if lightfm else None
    targets = {}
    if reference_lfm:
        targets["lightfm"] = (reference_lfm, TARGET_FRACTION * best_map(reference_lfm))
    if best_map(REFERENCE_WARP):
        targets["warp"] = (REFERENCE_WARP, TARGET_FRACTION * best_map(REFERENCE_WARP))
    if best_map("EASE"):  # EASE's own time to its target is its fit time
        targets["ease"] = ("EASE", TARGET_FRACTION * best_map("EASE"))

    rows = []
    for (name, threads), run in retrains.items():
        if not run["curve"]:
            rows.append(dict(model=name, threads=threads, status=run["status"]))
            continue
        final = run["curve"][-1]
        best = max(run["curve"], key=lambda p: p["map"])
        epochs = run["epochs"]
        if "stopped_epoch" in final:  # as shipped: its own early stopping chose the epoch
            epochs = f"{final['kept_epoch']} of {final['stopped_epoch']}"
        row = dict(model=name, threads=threads, params=run["params"], epochs=epochs,
                   status=run["status"], best_val_map=run["best_val_map"],
                   grid_size=sum(1 for r in tune if r["family"] == name),
                   seconds=final["seconds"], final=final, best=best)
        for key, (reference, target) in targets.items():
            seconds = harness.time_to_target(run["curve"], target)
            own = harness.time_to_target(retrains[(reference, 1)]["curve"], target)
            row[f"target_{key}"] = target
            row[f"seconds_to_{key}"] = seconds
            row[f"speedup_{key}"] = (own / seconds) if (seconds and own) else None
        rows.append(row)
    order = list(MODELS)
    rows.sort(key=lambda r: (order.index(r["model"]), r["threads"]))
    return rows, targets


def markdown(data):
    rows, targets = summarise(data)
    meta = data["meta"]
    lines = [f"### {meta['dataset']}: {meta['shape'][0]:,} images × {meta['shape'][1]:,} labels",
             "",
             f"`{meta['command']}` — {meta.get('wall_seconds', '?')} s wall-clock, "
             f"started {meta.get('started', '?')}.", ""]
    lines += ["Test metrics of the validation-chosen setting retrained on the whole train split "
              "for the validation-chosen number of epochs (*final*), and the best test MAP "
              "along its curve (*best*, for orientation only). VSEEns defaults is `VSEEns()` "
              "as shipped, untuned: its epochs are the one its own early stopping kept, of "
              "those it trained. Seconds are training wall-clock (evaluation excluded).", ""]
    header = ("| model | thr | setting (grid size) | epochs | train s | P@5 | R@5 | P@10 | R@10 "
              "| MAP | NDCG@10 | AUC | best MAP (epoch) |")
    lines += [header, "|---" * (header.count("|") - 1) + "|"]
    for row in rows:
        if "final" not in row:
            lines.append(f"| {row['model']} | {row['threads']} | {row['status']} |" + " |" * 10)
            continue
        final, best = row["final"], row["best"]
        metrics = [harness.fmt_number(final[key]) for key in
                   ("precision@5", "recall@5", "precision@10", "recall@10", "map", "ndcg@10",
                    "auc")]
        setting = "defaults" if MODELS[row["model"]]["kind"] == "shipped" else (
            _fmt_params(row["params"]) or "—")
        lines.append(
            f"| {row['model']} | {row['threads']} | {setting} "
            f"({row['grid_size']}) | {row['epochs']} | {harness.fmt_seconds(row['seconds'])} | "
            + " | ".join(metrics) + f" | {harness.fmt_number(best['map'])} ({best['epoch']}) |")
    lines.append("")
    if targets:
        lines += ["Time-to-target: training seconds to reach 95% of the reference model's best "
                  "test MAP; speed-up = the reference's own time to that target ÷ the model's "
                  "(EASE's own time is its fit time). "
                  + "; ".join(f"{TARGETS[key]} target = 0.95 × {ref} = {value:.4f}"
                              for key, (ref, value) in targets.items()) + ".", ""]
        columns = [key for key in TARGETS if key in targets]
        lines.append("| model | thr | " + " | ".join(
            f"s to 95% {TARGETS[k]} | speed-up vs {TARGETS[k]}" for k in columns) + " |")
        lines.append("|---|---|" + "---|---|" * len(columns))
        for row in rows:
            if "final" not in row or (MODELS[row["model"]]["kind"] not in ITERATIVE
                                      and row["model"] != "EASE"):
                continue
            cells = []
            for key in columns:
                cells += [harness.fmt_seconds(row[f"seconds_to_{key}"]),
                          harness.fmt_speedup(row[f"speedup_{key}"])]
            lines.append(f"| {row['model']} | {row['threads']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(data, path):
    """Test MAP (left) and P@5 (right) vs training seconds, one line per model (1 thread)."""
    plt = harness.pyplot()
    if plt is None:
        return False
    runs = [r for r in data["runs"] if r["phase"] == "retrain" and r["curve"]]
    figure, axes = plt.subplots(1, 2, figsize=(13, 5))
    colours = plt.get_cmap("tab20")
    order = list(MODELS)
    for run in sorted(runs, key=lambda r: (order.index(r["family"]), r["threads"])):
        seconds = [max(p["seconds"], 1e-3) for p in run["curve"]]
        label = run["family"] + (f" ({run['threads']} threads)" if run["threads"] > 1 else "")
        style = dict(color=colours(order.index(run["family"]) % 20),
                     linestyle="--" if run["threads"] > 1 else "-",
                     marker="o" if len(seconds) == 1 else ".", label=label)
        for axis, key in zip(axes, ("map", "precision@5")):
            axis.plot(seconds, [p[key] for p in run["curve"]], **style)
    for axis, key in zip(axes, ("MAP", "P@5")):
        axis.set_xscale("log")
        axis.set_xlabel("training wall-clock, seconds (log; evaluation excluded)")
        axis.set_ylabel(f"test {key}")
        axis.grid(True, alpha=0.3)
    meta = data["meta"]
    figure.suptitle(f"{meta['dataset']}: {meta['shape'][0]:,} images × {meta['shape'][1]:,} "
                    f"labels, k = {meta['factors']}, validation-tuned")
    axes[1].legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def cross_dataset_tables(datasets):
    """Markdown: final test MAP and P@5 of every model (rows) on every dataset (columns), and
    the time-to-target table of our models, our WARP, LightFM WARP and EASE's fit time;
    ``datasets`` maps a name to its results JSON data."""
    summaries = {name: summarise(data) for name, data in datasets.items()}
    names = list(datasets)

    def final_row(dataset, model):
        """The model's 1-thread row with a final point on ``dataset``, or None."""
        return next((r for r in summaries[dataset][0] if r["model"] == model
                     and r["threads"] == 1 and "final" in r), None)

    models = [m for m in MODELS if any(final_row(n, m) for n in names)]
    lines = []
    for key, title in (("map", "MAP"), ("precision@5", "P@5")):
        lines += [f"Final test {title} (1 thread; best value of each column in bold):", "",
                  "| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        best = {n: max((r["final"][key] for r in summaries[n][0] if "final" in r
                        and r["threads"] == 1), default=None) for n in names}
        for model in models:
            cells = []
            for n in names:
                row = final_row(n, model)
                value = None if row is None else row["final"][key]
                text = harness.fmt_number(value)
                cells.append(f"**{text}**" if value is not None and value == best[n] else text)
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")

    def lightfm_row(dataset):
        """The LightFM WARP row of the reference max_sampled (the better best MAP)."""
        targets = summaries[dataset][1]
        return final_row(dataset, targets["lightfm"][0]) if "lightfm" in targets else None

    lines += ["Training seconds to 95% of the reference's best test MAP (speed-up over the "
              "reference's own time; EASE's own time is its fit time), 1 thread. \"LightFM "
              "WARP\" is the max_sampled (10 or 100) with the higher best test MAP on that "
              "dataset:", "",
              "| model | target | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for model in ("VSEEns", "VSEEns defaults", "VSE-ens", REFERENCE_WARP, "LightFM WARP",
                  "EASE"):
        for key, label in TARGETS.items():
            cells = []
            for n in names:
                row = lightfm_row(n) if model == "LightFM WARP" else final_row(n, model)
                if row is None or f"seconds_to_{key}" not in row:
                    cells.append("—")
                    continue
                speedup = row[f"speedup_{key}"]
                cells.append(harness.fmt_seconds(row[f"seconds_to_{key}"]) + (
                    "" if speedup is None else f" ({speedup:.2f}×)"))
            lines.append(f"| {model} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(data, stem):
    """Write ``<stem>.md`` (tables) and ``<stem>.png`` (curves); print the tables."""
    harness.write_report(stem, markdown(data) + "\n", lambda path: plot(data, path))


if __name__ == "__main__":
    main()
