"""Choose VSEEns's and EASE's default parameters by measurement, on validation data only.

    python benchmarks/defaults_sweep.py --data-dir ../shared/data          # the full sweep
    python benchmarks/defaults_sweep.py --quick                            # smoke run, seconds
    python benchmarks/defaults_sweep.py --report benchmarks/results/defaults.json   # tables only

Protocol (test labels never drive a choice):

* datasets: the four shared ones and three generated ones (``harness.GENERATED``: 20,000
  images, 1k / 5k / 20k labels); each split leave-one-out with seed 0 into train / test and
  train again with seed 1 into fit / validation (``harness.get_splits``). On the generated
  data a fixed random sample of ``--eval-images`` validation (and test) images is scored, so
  that scoring 20,000 labels after every epoch stays cheap next to the epoch;
* every VSEEns setting is trained on fit with ``num_threads=1``, ``random_state=0``,
  ``early_stopping=False`` and ``iterations=--epochs`` (100), every parameter given explicitly
  (so the sweep measures the same models whatever the package's defaults are). After EVERY
  epoch the validation MAP is measured, and the test MAP of the same fit-set model (composed
  image vectors from the image's train labels, train labels excluded), for reporting only. So
  any early-stopping rule can be emulated offline from the recorded validation curve;
* the grid (label-composed vectors, label bias, WARP with uniform draws, AdaGrad, alpha 0.5,
  max_sampled 100, margin 1): factors x learning_rate x regularization x label_dropout; plus
  ``ALTERNATIVES`` beside it (hinge + adaptive with 4 candidates, BPR + adaptive, the
  free-vector paper model at its old validated setting) to show what the winner beats;
* a setting's **ratio** on a dataset is its validation MAP divided by that dataset's best
  (the highest validation MAP of any setting at any epoch), taken (a) at the epoch an
  early-stopping rule with patience p would keep (best epoch so far when p epochs pass without
  improvement; the package's rule) and (b) after all epochs (fixed 100). The **criterion** at
  patience p is the worst ratio over datasets of min((a), (b)): how far below the best a
  setting can fall, whether training stops early or runs every epoch. The shipped patience
  is the shortest whose best criterion is within ``PATIENCE_TOLERANCE`` of the longest's; the
  chosen setting is the grid setting with the best criterion there;
* EASE: every lambda of ``EASE_GRID`` fitted on fit, validation MAP; lambda by the same
  worst-case ratio. Datasets above ``EASE_BOUND_LABELS`` labels (minutes per fit) get only the
  lambdas that can still win: a lambda's worst ratio on the others bounds its worst ratio
  over all, so once the best complete worst-case beats every untried lambda's bound, the
  choice is exact without them.

Results go to ``--out`` (JSON, one run per line) after every run, so ``--resume`` continues
an interrupted sweep. ``--report JSON`` prints the Markdown tables of
benchmarks/results/defaults.md.
"""

import itertools
import tempfile
import time
from pathlib import Path

import harness  # first: it sets one BLAS / OpenMP thread per process before NumPy loads

import numpy as np  # noqa: E402

from vse_recsys import EASE, VSEEns  # noqa: E402
from vse_recsys.model import DivergenceError  # noqa: E402

DATASETS = harness.DATASETS + ("generated-1k", "generated-5k", "generated-20k")
PHASES = ("grid", "alternative", "ease")

#: What every setting of the grid shares (the composed model of the package)
COMPOSED = dict(loss="warp", sampler="uniform", image_vectors="labels", label_bias=True,
                composition_exponent=0.5, learning_schedule="adagrad", margin=1.0,
                max_sampled=100, candidates=1, init_scale=0.01)
GRID = dict(factors=[64, 128], learning_rate=[0.01, 0.02, 0.05], regularization=[0.01, 0.05],
            label_dropout=[0.0, 0.3])
# Beside the grid, never chosen: the other losses on composed vectors (at the prototype's
# recommended k 128 / reg 0.05 / dropout 0.3, two learning rates each) and the free-vector
# model of the paper at its old validated setting (benchmarks/results/defaults.md before the
# composed model: hinge + adaptive, lr 0.03, reg 0.03, rank_decay 0.3, k 64, plain SGD)
_OTHER_LOSS = dict(COMPOSED, factors=128, regularization=0.05, label_dropout=0.3)
ALTERNATIVES = {
    **{f"hinge+adaptive c4, lr {lr:g}": dict(_OTHER_LOSS, loss="hinge", sampler="adaptive",
                                             rank_decay=0.3, candidates=4, learning_rate=lr)
       for lr in (0.02, 0.05)},
    **{f"BPR+adaptive, lr {lr:g}": dict(_OTHER_LOSS, loss="bpr", sampler="adaptive",
                                        rank_decay=0.3, learning_rate=lr)
       for lr in (0.02, 0.05)},
    "paper (free vectors, hinge+adaptive, SGD)": dict(
        factors=64, loss="hinge", sampler="adaptive", rank_decay=0.3, image_vectors="free",
        label_bias=False, learning_schedule="sgd", learning_rate=0.03, regularization=0.03,
        margin=1.0, candidates=1, init_scale=0.01),
}
PATIENCES = (10, 20, 30, 50)
#: A longer patience only ever keeps an epoch at least as good (on the recorded curve); the
#: shipped one is the shortest whose criterion is this close to the longest's
PATIENCE_TOLERANCE = 0.005
EASE_GRID = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 70.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0,
             2000.0]
EASE_BOUND_LABELS = 10_000
EVAL_IMAGES = 5_000

QUICK = dict(grid=dict(factors=[16], learning_rate=[0.02, 0.05], regularization=[0.05],
                       label_dropout=[0.3]),
             alternatives=["BPR+adaptive, lr 0.05", "paper (free vectors, hinge+adaptive, SGD)"],
             patiences=(2, 3), ease_grid=[10.0, 100.0], epochs=6)
QUICK_DATASET = "generated-quick"  # (harness.GENERATED) 1,500 images x 200 labels

# rough relative cost of a 100-epoch run (training and both evaluations), to start the
# longest first
_COST = {"corel5k": 1, "movielens-100k": 3, "delicious": 20, "nuswide81": 10,
         "generated-1k": 5, "generated-5k": 8, "generated-20k": 12, QUICK_DATASET: 1}

_SHORT = {"factors": "k", "learning_rate": "lr", "regularization": "reg",
          "label_dropout": "dropout"}


def setting_name(params):
    """A grid setting's name: ``k 128, lr 0.02, reg 0.05, dropout 0.3``."""
    return ", ".join(f"{_SHORT[key]} {params[key]:g}" for key in _SHORT)


def grid_settings(grid):
    """{name: full parameters} of every combination of the grid."""
    names = list(_SHORT)
    settings = {}
    for values in itertools.product(*(grid[name] for name in names)):
        params = dict(COMPOSED, **dict(zip(names, values)))
        settings[setting_name(params)] = params
    return settings


# --------------------------------------------------------------------------------------------
# Worker side

EVALUATED = {}


def evaluation_images(dataset, limit):
    """(validation images, test images): every image with a held-out label, or on generated
    data a fixed random sample of at most ``limit`` of them (seeded by the dataset only)."""
    if dataset not in EVALUATED:
        _, validation, _, test = harness.get_splits(dataset)
        chosen = []
        for which, held_out in enumerate((validation, test)):
            images = np.flatnonzero(held_out.getnnz(axis=1))
            if dataset.startswith("generated") and len(images) > limit:
                rng = np.random.default_rng([0, which])
                images = np.sort(rng.choice(images, size=limit, replace=False))
            chosen.append(images)
        EVALUATED[dataset] = tuple(chosen)
    return EVALUATED[dataset]


def _factor_scorer(vectors, item_factors):
    labels_t = np.ascontiguousarray(np.asarray(item_factors, dtype=np.float32).T)
    vectors = np.asarray(vectors, dtype=np.float32)
    return lambda positions: vectors[positions] @ labels_t


def vse_map(model, rows, held_out, images):
    """MAP of a VSEEns (mid-training or fitted) on ``held_out``, an image's vector from its
    ``rows`` labels (composed) or learned (free), ``rows`` labels excluded."""
    if model.image_vectors == "labels":
        vectors = model.recalculate_user(images, rows[images])
    else:
        vectors = model.user_factors[images]
    return harness.held_out_map(_factor_scorer(vectors, model.item_factors), rows, held_out,
                                images)


def run_vse(task):
    """Train one setting on fit for all epochs; validation and test MAP after each."""
    fit, validation, train, test = harness.get_splits(task["dataset"])
    val_images, test_images = evaluation_images(task["dataset"], task["eval_images"])
    model = VSEEns(**task["params"], iterations=task["epochs"], early_stopping=False,
                   num_threads=1, random_state=task["seed"])
    val, tst, seconds = [], [], []

    def callback(epoch, elapsed, stats):
        seconds.append(round(elapsed, 4))
        val.append(round(vse_map(model, fit, validation, val_images), 6))
        tst.append(round(vse_map(model, train, test, test_images), 6))

    started = time.perf_counter()
    status = "completed"
    try:
        model.fit(fit, show_progress=False, callback=callback)
    except DivergenceError:
        status = "diverged"
    return dict(task, status=status, val=val, test_curve=tst, epoch_seconds=seconds,
                wall_seconds=round(time.perf_counter() - started, 2))


def run_ease(task):
    """EASE with one lambda fitted on fit: validation MAP (and test MAP, reporting only)."""
    fit, validation, train, test = harness.get_splits(task["dataset"])
    val_images, test_images = evaluation_images(task["dataset"], task["eval_images"])
    model = EASE(regularization=task["params"]["regularization"], num_threads=1)
    model.fit(fit, show_progress=False)
    weights = model.item_factors.T  # B: scores = label rows @ B

    def scores_of(rows, images):
        return lambda positions: (rows[images[positions]] @ weights)

    return dict(task, status="completed", fit_seconds=round(model.fit_seconds, 3),
                val_map=harness.held_out_map(scores_of(fit, val_images), fit, validation,
                                             val_images),
                test_map=harness.held_out_map(scores_of(train, test_images), train, test,
                                              test_images))


def _dispatch(task):
    return run_ease(task) if task["phase"].startswith("ease") else run_vse(task)


# --------------------------------------------------------------------------------------------
# Analysis (also what --report uses): pure functions of the stored runs


def early_stop(curve, patience):
    """(kept epoch, stop epoch), 1-based, of the package's rule on a validation curve: keep
    the best epoch so far (strictly better), stop after ``patience`` epochs without one."""
    best, kept, since = -np.inf, 0, 0
    for epoch, value in enumerate(curve, 1):
        if value > best:
            best, kept, since = value, epoch, 0
        else:
            since += 1
        if since >= patience:
            return kept, epoch
    return kept, len(curve)


def curve_rules(run, patiences, epochs):
    """Per rule ("p10", ..., "fixed"): kept epoch, stop epoch, validation and test MAP there.
    A rule that needs an epoch a diverged run never finished gets MAP 0 (its fit raised)."""
    val, tst = run["val"], run["test_curve"]
    rules = {}
    for patience in patiences:
        kept, stop = early_stop(val, patience)
        finished = stop < len(val) or len(val) == epochs
        rules[f"p{patience}"] = dict(kept=kept, stop=stop,
                                     val=val[kept - 1] if finished and kept else 0.0,
                                     test=tst[kept - 1] if finished and kept else 0.0)
    complete = len(val) == epochs
    rules["fixed"] = dict(kept=epochs, stop=epochs, val=val[-1] if complete else 0.0,
                          test=tst[-1] if complete else 0.0)
    return rules


def analyse(data):
    """Every number of the report, from the runs: references, ratios, criteria, the choice."""
    meta, runs = data["meta"], data["runs"]
    patiences, epochs = tuple(meta["patiences"]), meta["epochs"]
    datasets = list(meta["datasets"])
    vse = [r for r in runs if r["phase"] in ("grid", "alternative")]
    reference = {}
    for run in vse:
        if run["val"]:
            best = max(run["val"])
            if best > reference.get(run["dataset"], (-1, None, None))[0]:
                reference[run["dataset"]] = (best, run["family"], run["val"].index(best) + 1)
    settings = {}
    for run in vse:
        entry = settings.setdefault(run["family"], dict(
            name=run["family"], phase=run["phase"], params=run["params"], datasets={}))
        rules = curve_rules(run, patiences, epochs)
        best = max(run["val"]) if run["val"] else 0.0
        entry["datasets"][run["dataset"]] = dict(
            rules=rules, ratio={rule: value["val"] / reference[run["dataset"]][0]
                                for rule, value in rules.items()},
            best=best, best_epoch=run["val"].index(best) + 1 if run["val"] else None,
            final_over_best=rules["fixed"]["val"] / best if best else 0.0,
            status=run["status"], seconds=sum(run["epoch_seconds"]))
    complete = {name: s for name, s in settings.items() if all(d in s["datasets"]
                                                                for d in datasets)}
    for entry in complete.values():
        per = entry["datasets"]
        entry["worst"] = {rule: min(per[d]["ratio"][rule] for d in datasets)
                          for rule in next(iter(per.values()))["ratio"]}
        entry["criterion"] = {
            f"p{p}": min(min(per[d]["ratio"][f"p{p}"], per[d]["ratio"]["fixed"])
                         for d in datasets) for p in patiences}
        entry["worst_final_over_best"] = min(per[d]["final_over_best"] for d in datasets)
        entry["mean_ratio"] = {rule: float(np.mean([per[d]["ratio"][rule] for d in datasets]))
                               for rule in entry["worst"]}
    grid = {name: s for name, s in complete.items() if s["phase"] == "grid"}
    best_at = {f"p{p}": max(s["criterion"][f"p{p}"] for s in grid.values()) for p in patiences}
    longest = best_at[f"p{max(patiences)}"]
    shipped = next(p for p in sorted(patiences)
                   if best_at[f"p{p}"] >= longest - PATIENCE_TOLERANCE)
    rule = f"p{shipped}"
    ranking = sorted(grid.values(), key=lambda s: -s["criterion"][rule])
    chosen = ranking[0] if ranking else None

    ease_runs = [r for r in runs if r["phase"].startswith("ease")]
    ease_best = {}
    for run in ease_runs:
        ease_best[run["dataset"]] = max(ease_best.get(run["dataset"], 0.0), run["val_map"])
    lambdas = sorted({r["params"]["regularization"] for r in ease_runs})
    ease = {lam: {r["dataset"]: r for r in ease_runs if r["params"]["regularization"] == lam}
            for lam in lambdas}
    ease_worst = {lam: min(per[d]["val_map"] / ease_best[d] for d in per) if per else 0.0
                  for lam, per in ease.items()}
    ease_complete = [lam for lam in lambdas if all(d in ease[lam] for d in datasets)]
    ease_chosen = max(ease_complete, key=lambda lam: ease_worst[lam]) if ease_complete else None
    return dict(datasets=datasets, patiences=patiences, epochs=epochs, reference=reference,
                settings=settings, complete=complete, ranking=ranking, chosen=chosen,
                shipped_patience=shipped, rule=rule, best_criterion=best_at,
                ease=ease, ease_best=ease_best, ease_worst=ease_worst,
                ease_chosen=ease_chosen, lambdas=lambdas)


def ease_tasks_to_run(runs, expensive, lambdas, args):
    """The next lambdas to try on the ``expensive`` datasets (branch and bound): untried ones
    whose worst ratio so far (an upper bound of their worst ratio over every dataset) is
    above the best worst ratio of a lambda tried everywhere; highest bound first."""
    best = {}
    for run in runs:
        best[run["dataset"]] = max(best.get(run["dataset"], 0.0), run["val_map"])
    by_lambda = {}
    for run in runs:
        by_lambda.setdefault(run["params"]["regularization"], {})[run["dataset"]] = run["val_map"]
    cheap = [d for d in args.datasets if d not in expensive]

    def bound(lam, over):
        ratios = [by_lambda[lam][d] / best[d] for d in over if d in by_lambda.get(lam, {})]
        return min(ratios) if ratios else 1.0  # nothing known yet: it could still win

    complete = [lam for lam in lambdas if all(d in by_lambda.get(lam, {}) for d in args.datasets)]
    floor = max((bound(lam, args.datasets) for lam in complete), default=-1.0)
    todo = []
    for lam in sorted(lambdas, key=lambda lam: -bound(lam, cheap)):
        if lam in complete or bound(lam, cheap) <= floor:
            continue
        todo += [dict(phase="ease-bound", family="EASE", dataset=d,
                      params=dict(regularization=lam), seed=0, eval_images=args.eval_images)
                 for d in expensive if d not in by_lambda.get(lam, {})]
        if len(todo) >= args.jobs:
            break
    return todo


# --------------------------------------------------------------------------------------------
# Driver


def run_phase(name, tasks, store, args):
    done = store.done()
    print(f"\n== {name}: {len(tasks)} runs ({sum(store.task_id(t) in done for t in tasks)} "
          f"already done)", flush=True)
    return harness.run_tasks(
        name, tasks, store, _dispatch, jobs=args.jobs, nice=args.nice, describe=_describe,
        cost=lambda t: _COST.get(t["dataset"], 1) * (t["params"].get("factors", 64) / 64)
        * (3 if t["params"].get("candidates", 1) > 1 else 1))


def _describe(run):
    if run["phase"].startswith("ease"):
        return (f"  {run['dataset']:<15} EASE lambda {run['params']['regularization']:g}: val "
                f"MAP {run['val_map']:.4f} (fit {run['fit_seconds']:.1f}s)")
    best = max(run["val"]) if run["val"] else float("nan")
    last = run["val"][-1] if run["val"] else float("nan")
    return (f"  {run['dataset']:<15} {run['family']}: val MAP best {best:.4f} @ "
            f"{run['val'].index(best) + 1 if run['val'] else 0}, final {last:.4f} "
            f"({run['status']}) [{run['wall_seconds']:.0f}s]")


def main(argv=None):
    parser = harness.argument_parser(__doc__)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--epochs", type=int, default=100, help="epochs of every run (100)")
    parser.add_argument("--eval-images", type=int, default=EVAL_IMAGES,
                        help="validation / test images scored on the generated data (5,000)")
    parser.add_argument("--no-ease", action="store_true", help="skip EASE's lambda grid")
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES,
                        help="the phases to run (default all); with --resume, e.g. EASE's "
                             "lambdas on datasets whose VSEEns runs are done")
    parser.add_argument("--only", nargs="+", default=None, metavar="SETTING",
                        help="run only these grid settings and alternatives, by name (e.g. "
                             "'k 64, lr 0.02, reg 0.01, dropout 0.3'); with --resume, to "
                             "complete their rows")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: corel5k and tiny generated data, 2 + 2 settings, "
                             "6 epochs")
    parser.add_argument("--out", default=None,
                        help="JSON results (default benchmarks/results/defaults.json; "
                             "with --quick a file in the temp folder)")
    harness.add_options(parser, "data_dir", "jobs", "nice", "resume", "report",
                        report=dict(help="print the Markdown tables of a results file and exit"))
    args = parser.parse_args(argv)
    if args.report:
        print(report(harness.load_results(args.report)), end="")
        return

    grid, alternatives = GRID, dict(ALTERNATIVES)
    patiences, lambdas = PATIENCES, EASE_GRID
    if args.quick:
        grid, patiences, lambdas = QUICK["grid"], QUICK["patiences"], QUICK["ease_grid"]
        alternatives = {name: ALTERNATIVES[name] for name in QUICK["alternatives"]}
        alternatives = {name: dict(params, factors=16) for name, params in alternatives.items()}
        args.epochs, args.datasets = QUICK["epochs"], ["corel5k", QUICK_DATASET]
    if args.out is None:
        args.out = (Path(tempfile.gettempdir()) / "defaults_quick.json" if args.quick
                    else harness.RESULTS_DIR / "defaults.json")
    settings = grid_settings(grid)
    meta = harness.run_meta(__file__, argv, args, datasets=args.datasets, epochs=args.epochs,
                            patiences=list(patiences), grid=grid, composed=COMPOSED,
                            alternatives=alternatives, ease_grid=lambdas,
                            eval_images=args.eval_images,
                            protocol=harness.PROTOCOL + "; choices on validation only")
    store = harness.Store(args.out, meta, args.resume)
    started = time.perf_counter()
    # made before the workers fork, so that they inherit the splits; fails fast on a missing file
    for dataset in args.datasets:
        fit, validation, train, test = harness.get_splits(dataset, args.data_dir)
        val_images, test_images = evaluation_images(dataset, args.eval_images)
        store.data["meta"].setdefault("shapes", {})[dataset] = dict(
            shape=list(train.shape), fit=fit.nnz, validation=validation.nnz, test=test.nnz,
            val_images=len(val_images), test_images=len(test_images))
        print(f"{dataset}: {train.shape[0]:,} x {train.shape[1]:,}, fit {fit.nnz:,} pairs, "
              f"validation {validation.nnz:,} ({len(val_images):,} scored), test {test.nnz:,}",
              flush=True)

    def tasks(phase, named):
        if args.only is not None:
            named = {name: params for name, params in named.items() if name in args.only}
        return [dict(phase=phase, family=name, dataset=d, params=params, seed=0,
                     epochs=args.epochs, eval_images=args.eval_images)
                for name, params in named.items() for d in args.datasets]

    if "grid" in args.phases:
        run_phase("grid", tasks("grid", settings), store, args)
    if "alternative" in args.phases:
        run_phase("alternative", tasks("alternative", alternatives), store, args)
    if "ease" in args.phases and not args.no_ease:
        expensive = [d for d in args.datasets if harness.get_splits(d)[0].shape[1]
                     > EASE_BOUND_LABELS]
        cheap = [dict(phase="ease", family="EASE", dataset=d, params=dict(regularization=lam),
                      seed=0, eval_images=args.eval_images)
                 for lam in lambdas for d in args.datasets if d not in expensive]
        run_phase("ease", cheap, store, args)
        while expensive:
            ease_runs = [r for r in store.data["runs"] if r["phase"].startswith("ease")]
            todo = ease_tasks_to_run(ease_runs, expensive, lambdas, args)
            if not todo:
                break
            run_phase("ease-bound", todo, store, args)

    store.data["meta"]["wall_seconds"] = round(time.perf_counter() - started, 1)
    store.save()
    result = analyse(store.data)
    print(f"\nwrote {args.out} in {time.perf_counter() - started:.0f}s")
    if result["chosen"]:
        print(f"chosen: {result['chosen']['name']}, patience {result['shipped_patience']} "
              f"(worst ratio {result['chosen']['criterion'][result['rule']]:.3f})")
    if result["ease_chosen"] is not None:
        print(f"EASE lambda {result['ease_chosen']:g} (worst ratio "
              f"{result['ease_worst'][result['ease_chosen']]:.3f})")


# --------------------------------------------------------------------------------------------
# Markdown report


def _ratio(value):
    return f"{value:.3f}"


def report(data):
    """The generated tables of defaults.md."""
    a = analyse(data)
    meta, datasets, patiences = data["meta"], a["datasets"], a["patiences"]
    rule, chosen = a["rule"], a["chosen"]
    rules = [f"p{p}" for p in patiences] + ["fixed"]
    heads = [f"patience {p}" for p in patiences] + [f"fixed {a['epochs']}"]
    earlier = meta.get("resumed_from_seconds")
    out = [f"command: `{meta['command']}`; wall-clock {meta.get('wall_seconds')} s"
           + (f" (resumed a run of {earlier} s)" if earlier else "") + "; started "
           + f"{meta.get('started')}", ""]
    out += ["| dataset | images × labels | fit pairs | validation images scored | test images "
            "scored | best validation MAP (setting, epoch) |", "|---|---|---|---|---|---|"]
    for d in datasets:
        shape = meta["shapes"][d]
        best, name, epoch = a["reference"][d]
        out.append(f"| {d} | {shape['shape'][0]:,} × {shape['shape'][1]:,} | {shape['fit']:,} | "
                   f"{shape['val_images']:,} | {shape['test_images']:,} | {best:.4f} ({name}, "
                   f"{epoch}) |")
    out.append("")
    if chosen is None:
        return "\n".join(out) + "\n"
    out += [f"### Chosen: {chosen['name']}, patience {a['shipped_patience']}", "",
            f"Criterion at patience p: the worst ratio over the {len(datasets)} datasets of "
            f"min(validation MAP at the epoch early stopping with patience p keeps, validation MAP "
            f"after all {a['epochs']} epochs) / the dataset's best. Best criterion of a grid "
            "setting at each patience: "
            + ", ".join(f"p {p}: {a['best_criterion'][f'p{p}']:.3f}" for p in patiences)
            + f"; shipped: the shortest within {PATIENCE_TOLERANCE} of the longest.", ""]
    out += ["Per dataset, worst first (ratio = validation MAP / the dataset's best; kept epoch "
            "→ stop epoch in brackets):", "",
            "| dataset | " + " | ".join(heads) + " | own best (epoch) | final / own best | "
            f"test MAP at patience {a['shipped_patience']} | test MAP at {a['epochs']} |",
            "|---" * (len(heads) + 5) + "|"]
    per = chosen["datasets"]
    order = sorted(datasets, key=lambda d: min(per[d]["ratio"][rule], per[d]["ratio"]["fixed"]))
    for d in order:
        cells = []
        for r in rules:
            value = per[d]["rules"][r]
            cells.append(f"{per[d]['ratio'][r]:.3f}" + (
                f" ({value['kept']}→{value['stop']})" if r != "fixed" else ""))
        out.append(f"| {d} | " + " | ".join(cells) + f" | {per[d]['best']:.4f} "
                   f"({per[d]['best_epoch']}) | {per[d]['final_over_best']:.3f} | "
                   f"{per[d]['rules'][rule]['test']:.4f} | "
                   f"{per[d]['rules']['fixed']['test']:.4f} |")
    out.append("")

    def table(rows, title):
        lines = [title, "", "| setting | criterion p " + str(a["shipped_patience"]) + " | "
                 + " | ".join(f"worst, {h}" for h in heads)
                 + " | worst final / own best | mean ratio, fixed | training s (all datasets) |",
                 "|---" * (len(heads) + 5) + "|"]
        for s in rows:
            seconds = sum(v["seconds"] for v in s["datasets"].values())
            lines.append(f"| {s['name']} | {s['criterion'][rule]:.3f} | "
                         + " | ".join(f"{s['worst'][r]:.3f}" for r in rules)
                         + f" | {s['worst_final_over_best']:.3f} | "
                         f"{s['mean_ratio']['fixed']:.3f} | {seconds:.0f} |")
        return lines + [""]

    out += table(a["ranking"], f"Every grid setting, best first by the criterion at patience "
                               f"{a['shipped_patience']} (\"worst\": the lowest ratio over the "
                               "datasets under that rule alone):")
    others = [s for s in a["complete"].values() if s["phase"] == "alternative"]
    out += table(sorted(others, key=lambda s: -s["criterion"][rule]),
                 "The alternatives (never chosen), on the same scale:")

    out += ["What each knob does (grid settings; best and mean criterion at patience "
            f"{a['shipped_patience']} over the settings with that value):", "",
            "| knob | value | best | mean | best setting with it |", "|---|---|---|---|---|"]
    for knob in _SHORT:
        values = sorted({s["params"][knob] for s in a["ranking"]})
        for value in values:
            with_it = [s for s in a["ranking"] if s["params"][knob] == value]
            top = max(with_it, key=lambda s: s["criterion"][rule])
            out.append(f"| {knob} | {value:g} | {top['criterion'][rule]:.3f} | "
                       f"{np.mean([s['criterion'][rule] for s in with_it]):.3f} | {top['name']} |")
    out.append("")

    out += ["Patience, for the chosen setting (ratio at the kept epoch; epochs trained = the stop "
            "epoch):", "", "| patience | worst ratio | mean ratio | " + " | ".join(
                f"{d} epochs" for d in datasets) + " |", "|---" * (len(datasets) + 3) + "|"]
    for p in patiences:
        r = f"p{p}"
        out.append(f"| {p} | {chosen['worst'][r]:.3f} | {chosen['mean_ratio'][r]:.3f} | "
                   + " | ".join(str(per[d]["rules"][r]["stop"]) for d in datasets) + " |")
    out.append("")

    out += ["Each dataset's best grid setting (validation MAP at its own best epoch):", "",
            "| dataset | best grid setting | val MAP (epoch) | chosen setting's best | ratio |",
            "|---|---|---|---|---|"]
    for d in datasets:
        top = max(a["ranking"], key=lambda s: s["datasets"][d]["best"])
        out.append(f"| {d} | {top['name']} | {top['datasets'][d]['best']:.4f} "
                   f"({top['datasets'][d]['best_epoch']}) | {per[d]['best']:.4f} | "
                   f"{per[d]['best'] / top['datasets'][d]['best']:.3f} |")
    out.append("")

    if a["lambdas"]:
        out += [f"### EASE: lambda {a['ease_chosen']:g}" if a["ease_chosen"] is not None
                else "### EASE", "",
                "Validation MAP / the dataset's best over lambda (— : not fitted, its bound on "
                "the other datasets already below the chosen lambda's worst ratio):", "",
                "| lambda | " + " | ".join(datasets) + " | worst |",
                "|---" * (len(datasets) + 2) + "|"]
        for lam in a["lambdas"]:
            cells = []
            for d in datasets:
                run = a["ease"][lam].get(d)
                cells.append("—" if run is None else _ratio(run["val_map"] / a["ease_best"][d]))
            mark = "**" if lam == a["ease_chosen"] else ""
            out.append(f"| {mark}{lam:g}{mark} | " + " | ".join(cells)
                       + f" | {mark}{a['ease_worst'][lam]:.3f}{mark} |")
        out.append("")
        out += ["| dataset | best lambda | val MAP | at the chosen lambda: val MAP | test MAP "
                "(fit-set model) | fit s |", "|---|---|---|---|---|---|"]
        for d in datasets:
            runs = [a["ease"][lam][d] for lam in a["lambdas"] if d in a["ease"][lam]]
            if not runs:
                continue
            top = max(runs, key=lambda r: r["val_map"])
            at = a["ease"].get(a["ease_chosen"], {}).get(d)
            out.append(f"| {d} | {top['params']['regularization']:g} | {top['val_map']:.4f} | "
                       + (f"{at['val_map']:.4f} | {at['test_map']:.4f} | {at['fit_seconds']:.2f}"
                          if at else "— | — | —") + " |")
        out.append("")

    for d in datasets:
        rows = sorted((s for s in a["settings"].values() if d in s["datasets"]),
                      key=lambda s: -s["datasets"][d]["best"])
        out += [f"<details><summary>{d}: every setting</summary>", "",
                "| setting | best val MAP (epoch) | " + " | ".join(heads)
                + " | test MAP at the best epoch | s |", "|---" * (len(heads) + 4) + "|"]
        for s in rows:
            v = s["datasets"][d]
            out.append(f"| {s['name']} | {v['best']:.4f} ({v['best_epoch']}) | "
                       + " | ".join(f"{v['ratio'][r]:.3f}" for r in rules)
                       + f" | {_test_at(data, s['name'], d, v['best_epoch'])} | "
                       f"{v['seconds']:.0f} |")
        out += ["", "</details>", ""]
    return "\n".join(out)


def _test_at(data, name, dataset, epoch):
    for run in data["runs"]:
        if run.get("family") == name and run["dataset"] == dataset and run.get("test_curve"):
            return f"{run['test_curve'][epoch - 1]:.4f}" if epoch else "—"
    return "—"


if __name__ == "__main__":
    main()
