"""Choose VSEEns's default parameters by measurement on the shared real datasets.

    python benchmarks/defaults_sweep.py --data-dir ../shared/data          # the full sweep
    python benchmarks/defaults_sweep.py --quick                            # smoke run, ~1 min
    python benchmarks/defaults_sweep.py --report benchmarks/results/defaults.json   # tables only

Protocol (test labels are never used for a choice):

* every dataset is split leave-one-out with seed 0 into train / test, and train again
  leave-one-out with seed 1 into fit / validation;
* each setting is trained on fit (factors=64, num_threads=1, random_state=0, so every run is
  bit-reproducible) for up to ``--epochs`` epochs; validation MAP is measured every
  ``--eval-every`` epochs inside ``fit``'s callback, so the model at epoch e is exactly the model
  ``VSEEns(iterations=e)`` would return. A run stops early once validation MAP has not improved
  for ``--patience`` epochs (hinge models peak, then overfit); the factors of the best
  validation epoch are kept and scored once on test, for the tables only;
* phases, each feeding the next:
    1. ``vse``        the full VSE-ens grid (hinge + adaptive) on every dataset not in
                      ``--fine-datasets``;
    2. ``vse-fine``   on ``--fine-datasets`` (NUS-WIDE-81 by default, the largest) only the
                      ``--fine-top`` best settings of phase 1 by mean relative validation MAP,
                      plus ``--fine-random`` other grid settings drawn at random as a check;
    3. ``baselines``  lr x reg grids for WARP (warp + uniform) and BPR (bpr + uniform);
    4. ``curves``     the best ``--candidates`` settings of each family re-run for all
                      ``--epochs`` epochs, no early stop, with seeds ``--curve-seeds``, on every
                      dataset; the recommended (setting, iterations) maximises the mean over
                      datasets of validation MAP at that common epoch divided by the dataset's
                      best validation MAP anywhere in the sweep ("mean relative MAP");
    5. ``final``      the recommended defaults and each dataset's own best setting (at its own
                      best epoch), retrained on the whole train split and scored on test.

Results are written to ``--out`` (JSON) after every run, so an interrupted sweep resumes with
``--resume``. ``--report JSON`` prints the Markdown tables of benchmarks/results/defaults.md.
"""

import itertools
import math
import random
import tempfile
import time
from pathlib import Path

import harness  # first: it sets one BLAS / OpenMP thread per process before NumPy loads

import numpy as np  # noqa: E402

from harness import DATASETS, FACTORS  # noqa: E402
from vse_recsys import VSEEns  # noqa: E402
from vse_recsys.model import DivergenceError  # noqa: E402

# (the free-vector families of the paper's comparison)
FAMILIES = {
    "vse": dict(harness.FREE, loss="hinge", sampler="adaptive"),
    "warp": dict(harness.FREE, loss="warp", sampler="uniform"),
    "bpr": dict(harness.FREE, loss="bpr", sampler="uniform"),
}

FULL_GRIDS = {
    "vse": dict(
        learning_rate=[0.01, 0.03, 0.05, 0.1],
        regularization=[0.001, 0.003, 0.01, 0.03],
        rank_decay=[0.02, 0.05, 0.1, 0.2, 0.3],
        init_scale=[0.01, 1 / math.sqrt(FACTORS)],
    ),
    "warp": dict(
        learning_rate=[0.001, 0.003, 0.01, 0.03],
        regularization=[0.001, 0.003, 0.01, 0.03],
    ),
    "bpr": dict(
        learning_rate=[0.01, 0.03, 0.1, 0.3],
        regularization=[0.001, 0.003, 0.01, 0.03],
    ),
}

QUICK_GRIDS = {
    "vse": dict(learning_rate=[0.05], regularization=[0.01], rank_decay=[0.1, 0.3],
                init_scale=[0.01]),
    "warp": dict(learning_rate=[0.01], regularization=[0.01]),
    "bpr": dict(learning_rate=[0.1], regularization=[0.01]),
}

# rough relative cost of one epoch, used only to start the longest runs first
_COST = {"corel5k": 1, "movielens-100k": 4, "delicious": 20, "nuswide81": 40}


def setting_key(family, params):
    parts = [family] + [f"{name}={params[name]:.4g}" for name in sorted(params)]
    return " ".join(parts)


def grid_settings(grid):
    names = sorted(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


# --------------------------------------------------------------------------------------------
# Worker side


def run_task(task):
    """Train one setting on fit, track validation MAP; returns a result record."""
    fit, validation, train, test = harness.get_splits(task["dataset"])
    family = FAMILIES[task["family"]]
    model = VSEEns(factors=FACTORS, iterations=task["epochs"], num_threads=1,
                   random_state=task["seed"], **family, **task["params"])
    eval_every, patience = task["eval_every"], task["patience"]
    curve, best = [], {"map": -1.0, "epoch": 0, "factors": None}

    def callback(epoch, seconds, stats):
        done = epoch + 1
        if done % eval_every and done != task["epochs"]:
            return
        m = harness.metrics(model.user_factors, model.item_factors, fit, validation)
        curve.append([done, round(m["map"], 6), round(m["precision@5"], 6),
                      round(stats["violation_rate"], 4)])
        if m["map"] > best["map"]:
            best.update(map=m["map"], epoch=done, p5=m["precision@5"],
                        factors=(model.user_factors.copy(), model.item_factors.copy()))
        elif patience and done - best["epoch"] >= patience:
            raise harness.StopTraining

    started = time.perf_counter()
    status = "completed"
    try:
        model.fit(fit, show_progress=False, callback=callback)
    except harness.StopTraining:
        status = "early-stopped"
    except DivergenceError:
        status = "diverged"
    seconds = time.perf_counter() - started
    record = dict(task, key=setting_key(task["family"], task["params"]), status=status,
                  seconds=round(seconds, 3), curve=curve,
                  epochs_trained=len(model.fit_history),
                  best_val_map=best["map"] if best["factors"] is not None else None,
                  best_epoch=best["epoch"] if best["factors"] is not None else None,
                  best_val_p5=best.get("p5"))
    if best["factors"] is not None and task.get("score_test", True):
        # the fit-set model at its best validation epoch, ranked for test with every train
        # label (fit + validation) excluded; reported, never used for a choice
        record["test_at_best"] = harness.metrics(*best["factors"], train, test, K=(5, 10))
    return record


def run_final(task):
    """Retrain on the whole train split for a fixed number of epochs; score on test."""
    fit, validation, train, test = harness.get_splits(task["dataset"])
    model = VSEEns(factors=FACTORS, iterations=task["iterations"], num_threads=1,
                   random_state=task["seed"], **FAMILIES[task["family"]], **task["params"])
    started = time.perf_counter()
    status = "completed"
    try:
        model.fit(train, show_progress=False)
    except DivergenceError:
        status = "diverged"
    seconds = time.perf_counter() - started
    return dict(task, key=setting_key(task["family"], task["params"]), status=status,
                seconds=round(seconds, 3),
                test=harness.metrics(model.user_factors, model.item_factors, train, test,
                                     K=(5, 10)))


def _dispatch(task):
    return (run_final if task["phase"] == "final" else run_task)(task)


# --------------------------------------------------------------------------------------------
# Driver side


def run_phase(name, tasks, store, args):
    """Run a phase's tasks not yet in ``store``; returns all its runs (see harness.run_tasks)."""
    done = store.done()
    print(f"\n== phase {name}: {len(tasks)} runs "
          f"({sum(store.task_id(t) in done for t in tasks)} already done)", flush=True)
    return harness.run_tasks(
        name, tasks, store, _dispatch, jobs=args.jobs, nice=args.nice, describe=_describe,
        cost=lambda t: _COST[t["dataset"]] * t.get("epochs", t.get("iterations", 1)))


def _describe(run):
    if run["phase"] == "final":
        detail = f"test MAP {run['test']['map']:.4f} P@5 {run['test']['precision@5']:.4f}"
    elif run["best_val_map"] is None:
        detail = run["status"]
    else:
        detail = f"val MAP {run['best_val_map']:.4f} @ epoch {run['best_epoch']} ({run['status']})"
    return (f"  {run['dataset']:<15} {run['key']} seed={run['seed']}: {detail} "
            f"[{run['seconds']:.1f}s]")


def best_by_dataset(runs, family):
    """{dataset: best validation MAP of a family} over all its runs, phases and epochs."""
    best = {}
    for run in runs:
        if run["family"] != family:
            continue
        for point in run.get("curve", []):
            best[run["dataset"]] = max(best.get(run["dataset"], 0.0), point[1])
    return best


def relative_table(runs, family, datasets, reference):
    """{key: {dataset: best val MAP / reference[dataset]}} over settings run on all datasets."""
    table = {}
    for run in runs:
        if run["family"] != family or run["phase"] not in ("vse", "vse-fine", "baselines"):
            continue
        if run["best_val_map"] is None:
            value = 0.0
        else:
            value = run["best_val_map"] / reference[run["dataset"]]
        table.setdefault(run["key"], {"params": run["params"]})[run["dataset"]] = value
    return {key: row for key, row in table.items() if all(d in row for d in datasets)}


def rank_settings(table, datasets):
    """Keys sorted by mean relative MAP (desc), with the mean and the mean rank."""
    ranks = {key: [] for key in table}
    for dataset in datasets:
        order = sorted(table, key=lambda k: -table[k][dataset])
        for position, key in enumerate(order, 1):
            ranks[key].append(position)
    rows = []
    for key, row in table.items():
        rows.append(dict(key=key, params=row["params"],
                         mean_relative=float(np.mean([row[d] for d in datasets])),
                         worst_relative=float(np.min([row[d] for d in datasets])),
                         mean_rank=float(np.mean(ranks[key])),
                         relative={d: row[d] for d in datasets}))
    rows.sort(key=lambda r: (-r["mean_relative"], r["mean_rank"]))
    return rows


def choose_iterations(curve_runs, family, datasets, reference):
    """Best (setting, epoch) by mean relative validation MAP at a common epoch (seed-averaged)."""
    curves = {}
    for run in curve_runs:
        if run["family"] != family:
            continue
        per = curves.setdefault(run["key"], {"params": run["params"], "by": {}})
        for epoch, value, *_ in run["curve"]:
            per["by"].setdefault(epoch, {}).setdefault(run["dataset"], []).append(value)
    options = []
    for key, per in curves.items():
        for epoch, values in sorted(per["by"].items()):
            if not all(d in values for d in datasets):
                continue
            relative = {d: float(np.mean(values[d])) / reference[d] for d in datasets}
            spread = {d: (float(np.min(values[d])), float(np.max(values[d])))
                      for d in datasets}
            options.append(dict(key=key, params=per["params"], iterations=epoch,
                                mean_relative=float(np.mean(list(relative.values()))),
                                relative=relative,
                                val_map={d: float(np.mean(values[d])) for d in datasets},
                                seed_range=spread))
    options.sort(key=lambda o: -o["mean_relative"])
    return options


def make_tasks(phase, family, settings, datasets, args, *, seed=0, epochs=None, patience=None):
    return [dict(phase=phase, family=family, dataset=d, params=p, seed=seed,
                 epochs=epochs or args.epochs, eval_every=args.eval_every,
                 patience=args.patience if patience is None else patience)
            for d in datasets for p in settings]


def main(argv=None):
    parser = harness.argument_parser(__doc__)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--fine-datasets", nargs="*", default=["nuswide81"], choices=DATASETS,
                        help="datasets that get only the best phase-1 settings (coarse-to-fine)")
    parser.add_argument("--fine-top", type=int, default=24)
    parser.add_argument("--fine-random", type=int, default=8)
    parser.add_argument("--baseline-datasets", nargs="*", default=None, choices=DATASETS,
                        help="datasets for the WARP / BPR grids (default: the non-fine ones)")
    parser.add_argument("--baseline-init-scale", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--patience", type=int, default=10,
                        help="epochs without a validation improvement before a run stops")
    parser.add_argument("--candidates", type=int, default=4,
                        help="settings per family re-run with full curves")
    parser.add_argument("--curve-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--edge-check", action="store_true",
                        help="after the sweep, try the recommended VSE-ens setting with "
                             "regularization and rank_decay beyond the grid's upper edge "
                             "(reported only; never changes the recommendation)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny grid, 6 epochs, corel5k + movielens-100k: a smoke test")
    parser.add_argument("--out", default=None,
                        help="JSON results (default benchmarks/results/defaults.json; "
                             "with --quick a file in the temp folder)")
    harness.add_options(parser, "data_dir", "jobs", "nice", "resume", "report",
                        report=dict(help="print the Markdown tables of a results file and exit"))
    args = parser.parse_args(argv)

    if args.report:
        print_report(harness.load_results(args.report))
        return

    grids = QUICK_GRIDS if args.quick else FULL_GRIDS
    if args.quick:
        args.datasets = [d for d in args.datasets if d in ("corel5k", "movielens-100k")] or [
            "corel5k"]
        args.fine_datasets = [d for d in args.fine_datasets if d in args.datasets]
        args.epochs, args.patience, args.candidates, args.curve_seeds = 6, 4, 1, [0]
    if args.out is None:
        args.out = (Path(tempfile.gettempdir()) / "defaults_quick.json" if args.quick
                    else harness.RESULTS_DIR / "defaults.json")
    coarse = [d for d in args.datasets if d not in args.fine_datasets]
    fine = [d for d in args.datasets if d in args.fine_datasets]
    if not coarse:
        parser.error("at least one dataset must get the full grid (not in --fine-datasets)")
    baseline_datasets = coarse if args.baseline_datasets is None else [
        d for d in args.baseline_datasets if d in args.datasets]

    meta = harness.run_meta(__file__, argv, args, jobs=args.jobs, factors=FACTORS, grids=grids,
                            protocol=harness.PROTOCOL + "; choices on validation only")
    store = harness.Store(args.out, meta, args.resume)
    started = time.perf_counter()
    # loaded before the workers fork, so they inherit the splits; fails fast on a missing file
    for dataset in args.datasets:
        fit, validation, train, test = harness.get_splits(dataset, args.data_dir)
        print(f"{dataset}: {train.shape[0]} x {train.shape[1]}, fit {fit.nnz} pairs, "
              f"validation {validation.nnz}, test {test.nnz}", flush=True)
    summary = store.data["summary"]

    # 1. VSE-ens full grid on the coarse datasets
    vse_grid = grid_settings(grids["vse"])
    runs = run_phase("vse", make_tasks("vse", "vse", vse_grid, coarse, args), store, args)
    reference = best_by_dataset(runs, "vse")
    ranked = rank_settings(relative_table(runs, "vse", coarse, reference), coarse)
    summary["vse_ranking_coarse"] = ranked

    # 2. the best of them (plus a random check) on the fine datasets
    if fine:
        chosen = [row["params"] for row in ranked[: args.fine_top]]
        others = [row["params"] for row in ranked[args.fine_top:]]
        chosen += random.Random(0).sample(others, min(args.fine_random, len(others)))
        runs += run_phase("vse-fine", make_tasks("vse-fine", "vse", chosen, fine, args),
                          store, args)

    # 3. WARP and BPR lr x reg grids
    baseline_runs = []
    for family in ("warp", "bpr"):
        settings = [dict(p, init_scale=args.baseline_init_scale)
                    for p in grid_settings(grids[family])]
        baseline_runs += run_phase(
            f"baselines-{family}",
            make_tasks("baselines", family, settings, baseline_datasets, args),
            store, args)
    runs += baseline_runs

    # 4. full curves of the best candidates of each family
    families = {"vse": args.datasets, "warp": baseline_datasets, "bpr": baseline_datasets}
    curve_tasks = []
    for family, datasets in families.items():
        reference = best_by_dataset(runs, family)
        ranking = rank_settings(relative_table(runs, family, datasets, reference), datasets)
        summary[f"{family}_ranking"] = ranking
        for seed in args.curve_seeds:
            curve_tasks += make_tasks("curves", family,
                                      [r["params"] for r in ranking[: args.candidates]],
                                      datasets, args, seed=seed, patience=0)
    curve_runs = run_phase("curves", curve_tasks, store, args)
    # the references also see the curve runs (other seeds may go higher)
    recommended, summary["reference_best_val_map"] = {}, {}
    for family, datasets in families.items():
        reference = best_by_dataset(runs + curve_runs, family)
        summary["reference_best_val_map"][family] = reference
        options = choose_iterations(curve_runs, family, datasets, reference)
        summary[f"{family}_iteration_options"] = options[:20]
        recommended[family] = options[0]
    summary["recommended"] = recommended

    # 5. retrain on train, score on test: the defaults and each dataset's own best
    final_tasks = []
    for family, datasets in families.items():
        rec = recommended[family]
        for dataset in datasets:
            final_tasks.append(dict(phase="final", role="recommended", family=family,
                                    dataset=dataset, params=rec["params"], seed=0,
                                    iterations=rec["iterations"]))
            own = max((r for r in runs if r["family"] == family and r["dataset"] == dataset
                       and r["best_val_map"] is not None),
                      key=lambda r: r["best_val_map"])
            final_tasks.append(dict(phase="final", role="own-best", family=family,
                                    dataset=dataset, params=own["params"], seed=0,
                                    iterations=own["best_epoch"]))
    summary["final"] = run_phase("final", final_tasks, store, args)

    # 6. optional: does the optimum lie beyond the grid's edge?
    if args.edge_check:
        rec = recommended["vse"]["params"]
        grid = grids["vse"]
        settings = [dict(rec, regularization=reg, rank_decay=decay)
                    for reg in (rec["regularization"], 0.1)
                    for decay in (rec["rank_decay"], 0.5, 1.0)]
        settings = [p for p in settings if not (p["regularization"] in grid["regularization"]
                                                and p["rank_decay"] in grid["rank_decay"])]
        edge_runs = run_phase("edge", make_tasks("edge", "vse", settings, args.datasets,
                                                 args), store, args)
        reference = summary["reference_best_val_map"]["vse"]
        summary["edge"] = [dict(key=r["key"], params=r["params"], dataset=r["dataset"],
                                best_val_map=r["best_val_map"], best_epoch=r["best_epoch"],
                                relative=(r["best_val_map"] or 0.0) / reference[r["dataset"]])
                           for r in edge_runs]

    store.data["meta"]["wall_seconds"] = round(time.perf_counter() - started, 1)
    store.save()
    print(f"\nwrote {args.out} in {time.perf_counter() - started:.0f}s")
    for family, rec in recommended.items():
        print(f"recommended {family}: {rec['params']} iterations={rec['iterations']} "
              f"mean relative validation MAP {rec['mean_relative']:.3f} "
              f"({', '.join(f'{d} {v:.3f}' for d, v in rec['relative'].items())})")


# --------------------------------------------------------------------------------------------
# Markdown report


def _fmt_params(params):
    short = {"learning_rate": "lr", "regularization": "reg", "rank_decay": "decay",
             "init_scale": "init"}
    return ", ".join(f"{short.get(k, k)} {params[k]:.3g}" for k in
                     ("learning_rate", "regularization", "rank_decay", "init_scale")
                     if k in params)


def print_report(data):
    runs, summary = data["runs"], data["summary"]
    meta = data["meta"]
    earlier = meta.get("resumed_from_seconds")
    print(f"command: `{meta['command']}`; wall-clock {meta.get('wall_seconds')} s"
          + (f" (resumed a run of {earlier} s)" if earlier else "") + "\n")
    for family in ("vse", "warp", "bpr"):
        rec = summary["recommended"][family]
        reference = summary["reference_best_val_map"][family]
        print(f"### {family}: recommended {_fmt_params(rec['params'])}, "
              f"iterations {rec['iterations']}\n")
        print("| dataset | val MAP at the default (seed mean) | dataset's best val MAP | "
              "relative |")
        print("|---|---|---|---|")
        for d, v in rec["val_map"].items():
            print(f"| {d} | {v:.4f} | {reference[d]:.4f} | {rec['relative'][d]:.3f} |")
        print()
        print("Top settings by mean relative validation MAP (each at its own best epoch):\n")
        ranking = summary[f"{family}_ranking"]
        datasets = list(ranking[0]["relative"])
        print("| setting | mean rel. | worst rel. | mean rank | " + " | ".join(datasets) + " |")
        print("|---|---|---|---|" + "---|" * len(datasets))
        for row in ranking[:10]:
            print(f"| {_fmt_params(row['params'])} | {row['mean_relative']:.3f} | "
                  f"{row['worst_relative']:.3f} | {row['mean_rank']:.1f} | "
                  + " | ".join(f"{row['relative'][d]:.3f}" for d in datasets) + " |")
        print()
        print("Common-epoch options (full curves, seed-averaged):\n")
        print("| setting | iterations | mean rel. | " + " | ".join(datasets) + " |")
        print("|---|---|---|" + "---|" * len(datasets))
        for option in summary[f"{family}_iteration_options"][:8]:
            print(f"| {_fmt_params(option['params'])} | {option['iterations']} | "
                  f"{option['mean_relative']:.3f} | "
                  + " | ".join(f"{option['relative'][d]:.3f}" for d in datasets) + " |")
        print()

    if summary.get("edge"):
        print("### Beyond the grid's edge (VSE-ens, own best epoch, relative to the grid's best)\n")
        print("| setting | dataset | best val MAP | best epoch | relative |")
        print("|---|---|---|---|---|")
        for e in sorted(summary["edge"], key=lambda e: (e["key"], e["dataset"])):
            print(f"| {_fmt_params(e['params'])} | {e['dataset']} | {e['best_val_map']:.4f} | "
                  f"{e['best_epoch']} | {e['relative']:.3f} |")
        print()

    print("### Test (retrained on the whole train split)\n")
    print("| family | dataset | role | setting | iterations | test MAP | test P@5 | test R@5 "
          "| test AUC |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run in sorted(summary["final"], key=lambda r: (r["family"], r["dataset"], r["role"])):
        t = run["test"]
        print(f"| {run['family']} | {run['dataset']} | {run['role']} | "
              f"{_fmt_params(run['params'])} | {run['iterations']} | {t['map']:.4f} | "
              f"{t['precision@5']:.4f} | {t['recall@5']:.4f} | {t['auc']:.4f} |")
    print()

    for family in ("vse", "warp", "bpr"):
        datasets = sorted({r["dataset"] for r in runs if r["family"] == family
                           and r["phase"] in ("vse", "vse-fine", "baselines")})
        for dataset in datasets:
            rows = [r for r in runs if r["family"] == family and r["dataset"] == dataset
                    and r["phase"] in ("vse", "vse-fine", "baselines")]
            rows.sort(key=lambda r: -(r["best_val_map"] or 0))
            print(f"<details><summary>{family} on {dataset}: {len(rows)} settings</summary>\n")
            print("| setting | best val MAP | best epoch | test MAP | test P@5 | stopped |")
            print("|---|---|---|---|---|---|")
            for r in rows:
                t = r.get("test_at_best")
                val = "—" if r["best_val_map"] is None else f"{r['best_val_map']:.4f}"
                test = f"{t['map']:.4f} | {t['precision@5']:.4f}" if t else "— | —"
                print(f"| {_fmt_params(r['params'])} | {val} | {r['best_epoch']} | {test} | "
                      f"{r['status']} at {r['epochs_trained']} |")
            print("\n</details>\n")


if __name__ == "__main__":
    main()
