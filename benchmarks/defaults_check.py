"""``VSEEns()`` as shipped, with no parameter set, against its tuned self, EASE and co-occurrence.

    python benchmarks/defaults_check.py --data-dir ../shared/data      # the 7 sweep datasets
    python benchmarks/defaults_check.py --datasets generated-100k --only shipped EASE \\
        --test-images 10000 --out benchmarks/results/defaults_check_100k.json
    python benchmarks/defaults_check.py --quick                        # smoke run, seconds
    python benchmarks/defaults_check.py --report benchmarks/results/defaults_check.json \\
        [--compare benchmarks/results/compare_*.json]

Per dataset (``harness.get_splits``: train / test, leave-one-out seed 0), each fitted on the
whole train split with ``num_threads=1`` and scored by test MAP (one held-out label per image,
its train labels excluded):

* ``shipped``: ``VSEEns(random_state=0, num_threads=1)`` — every other parameter at its
  default, so its own early stopping on labels it holds out of train;
* ``curve``: the same with ``early_stopping=False, iterations=100``, test MAP after every
  epoch (does it collapse? final / best along the curve);
* ``tuned``: the best grid setting of the defaults sweep (``--sweep``, by validation MAP at
  its best epoch) retrained for that many epochs, early stopping off;
* ``EASE``: lambda chosen on validation by the sweep for that dataset; ``EASE()``: its default
  lambda; ``co-occurrence`` (``score(j) = sum over the image's labels i of P(j | i)``).

Nothing here is a choice: the settings come from the sweep's validation runs. ``--report``
prints the Markdown table; with ``--compare`` it adds the best of every other model of those
``compare.py`` results files (the shared datasets' peers).
"""

import tempfile
import time
from pathlib import Path

import harness  # first: it sets one BLAS / OpenMP thread per process before NumPy loads

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from vse_recsys import EASE, VSEEns  # noqa: E402
from vse_recsys.memory import InsufficientMemoryError  # noqa: E402

DATASETS = harness.DATASETS + ("generated-1k", "generated-5k", "generated-20k")
FAMILIES = ("shipped", "curve", "tuned", "EASE", "EASE()", "co-occurrence")
CURVE_EPOCHS = 100
# not peers of "VSEEns defaults" in a compare.py file: itself and its tuned self
_OURS = ("VSEEns", "VSEEns defaults")

TEST_IMAGES = {}


def test_images(dataset, limit):
    """Every image with a test label, or a fixed random ``limit`` of them."""
    if dataset not in TEST_IMAGES:
        test = harness.get_splits(dataset)[3]
        images = np.flatnonzero(test.getnnz(axis=1))
        if limit and len(images) > limit:
            images = np.sort(np.random.default_rng([0, 1]).choice(images, limit, replace=False))
        TEST_IMAGES[dataset] = images
    return TEST_IMAGES[dataset]


def vse_scorer(model, rows, images):
    if model.image_vectors == "labels":
        vectors = model.recalculate_user(images, rows[images])
    else:
        vectors = model.user_factors[images]
    labels_t = np.ascontiguousarray(model.item_factors.T, dtype=np.float32)
    vectors = np.asarray(vectors, dtype=np.float32)
    return lambda positions: vectors[positions] @ labels_t


def run(task):
    """One model of one dataset: fitted on train, scored on test."""
    _, _, train, test = harness.get_splits(task["dataset"])
    images = test_images(task["dataset"], task["test_images"])
    family, params = task["family"], task["params"]
    record = dict(task, status="completed")
    started = time.perf_counter()
    if family in ("shipped", "curve", "tuned"):
        model = VSEEns(random_state=task["seed"], num_threads=1, **params)
        curve = []

        def callback(epoch, seconds, stats):
            if family == "curve":
                curve.append(round(harness.held_out_map(vse_scorer(model, train, images),
                                                        train, test, images), 6))

        model.fit(train, show_progress=False, callback=callback)
        record.update(fit_seconds=round(time.perf_counter() - started, 3),
                      epochs_trained=len(model.fit_history), kept_epoch=model.best_iteration_,
                      train_seconds=round(sum(e["seconds"] for e in model.fit_history), 3))
        if family == "curve":
            record.update(curve=curve, map=curve[-1])
            record["fit_seconds"] = record["train_seconds"]  # (its scoring is not training)
        else:
            record["map"] = harness.held_out_map(vse_scorer(model, train, images), train, test,
                                                 images)
        if model.validation_scores_:
            record["validation_scores"] = [round(v, 6) for v in model.validation_scores_]
        return record
    if family in ("EASE", "EASE()"):
        model = EASE(num_threads=1, **params)
        try:
            model.fit(train, show_progress=False)
        except InsufficientMemoryError as error:
            return dict(record, status=f"refused: {error}"[:300],
                        regularization=model.regularization)
        weights = model.item_factors.T
        record.update(fit_seconds=round(model.fit_seconds, 3), regularization=model.regularization,
                      map=harness.held_out_map(lambda p: train[images[p]] @ weights, train, test,
                                               images))
        return record
    if family == "co-occurrence":
        counts = (train.T @ train).tocsr()
        conditional = (sp.diags(1.0 / np.maximum(counts.diagonal(), 1)) @ counts).tocsr()
        record["fit_seconds"] = round(time.perf_counter() - started, 3)
        record["map"] = harness.held_out_map(
            lambda p: (train[images[p]] @ conditional).toarray(), train, test, images)
        return record
    raise ValueError(f"unknown family {family!r}")


def tasks_for(dataset, sweep, args):
    """The tasks of one dataset; ``tuned`` and ``EASE`` take their settings from the sweep."""
    tasks = []
    common = dict(dataset=dataset, seed=args.seed, test_images=args.test_images)
    shipped = {} if args.iterations is None else dict(iterations=args.iterations)
    for family in args.only:
        if family == "shipped":
            tasks.append(dict(common, phase="check", family=family, params=shipped))
        elif family == "curve":
            tasks.append(dict(common, phase="check", family=family,
                              params=dict(early_stopping=False, iterations=CURVE_EPOCHS)))
        elif family == "tuned":
            best = best_grid_setting(sweep, dataset)
            if best is not None:
                params, epoch, value = best
                tasks.append(dict(common, phase="check", family=family,
                                  params=dict(params, iterations=epoch, early_stopping=False),
                                  validation_map=value))
        elif family == "EASE":
            lam = best_lambda(sweep, dataset)
            tasks.append(dict(common, phase="check", family=family,
                              params={} if lam is None else dict(regularization=lam)))
        else:
            tasks.append(dict(common, phase="check", family=family, params={}))
    return tasks


def best_grid_setting(sweep, dataset):
    """(params, epoch, validation MAP) of the sweep's best grid setting and epoch, or None."""
    best = None
    for r in (sweep or {}).get("runs", []):
        if r["phase"] == "grid" and r["dataset"] == dataset and r["val"]:
            value = max(r["val"])
            if best is None or value > best[2]:
                best = (r["params"], r["val"].index(value) + 1, value)
    return best


def best_lambda(sweep, dataset):
    runs = [r for r in (sweep or {}).get("runs", []) if r["phase"].startswith("ease")
            and r["dataset"] == dataset]
    return max(runs, key=lambda r: r["val_map"])["params"]["regularization"] if runs else None


def _describe(r):
    value = f"test MAP {r['map']:.4f}" if "map" in r else r["status"]
    extra = f" (epoch {r['kept_epoch']} of {r['epochs_trained']})" if r.get("kept_epoch") else ""
    return f"  {r['dataset']:<15} {r['family']:<14} {value}{extra} [{r.get('fit_seconds', 0)}s]"


def main(argv=None):
    parser = harness.argument_parser(__doc__)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS),
                        choices=harness.DATASETS + tuple(harness.GENERATED))
    parser.add_argument("--only", nargs="+", default=list(FAMILIES), choices=FAMILIES,
                        help="models to run (default: all)")
    parser.add_argument("--sweep", default=str(harness.RESULTS_DIR / "defaults.json"),
                        help="the defaults sweep's results (the tuned settings and lambdas)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="the shipped model's iterations, if not its default (a time cap)")
    parser.add_argument("--test-images", type=int, default=None,
                        help="score a fixed random sample of this many test images (default all)")
    parser.add_argument("--compare", nargs="*", default=[], metavar="JSON",
                        help="with --report: compare.py results whose other models are peers")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: corel5k and tiny generated data")
    parser.add_argument("--out", default=None,
                        help="JSON results (default benchmarks/results/defaults_check.json; "
                             "with --quick a file in the temp folder)")
    harness.add_options(parser, "data_dir", "seed", "jobs", "nice", "resume", "report",
                        report=dict(help="print the Markdown table of a results file and exit"))
    args = parser.parse_args(argv)
    if args.report:
        compare = [harness.load_results(path) for path in args.compare]
        print(report(harness.load_results(args.report), compare), end="")
        return
    if args.quick:
        args.datasets = ["corel5k", "generated-quick"]
    if args.out is None:
        args.out = (Path(tempfile.gettempdir()) / "defaults_check_quick.json" if args.quick
                    else harness.RESULTS_DIR / "defaults_check.json")
    sweep = harness.load_results(args.sweep) if Path(args.sweep).exists() else None
    defaults = {name: getattr(VSEEns(), name) for name in (
        "factors", "learning_rate", "regularization", "label_dropout", "iterations",
        "n_iter_no_change", "validation_fraction")}
    meta = harness.run_meta(__file__, argv, args, datasets=args.datasets,
                            vseens_defaults=defaults,
                            ease_default=EASE().regularization,
                            sweep=harness.portable_path(Path(args.sweep).resolve())
                            if sweep else None, protocol=harness.PROTOCOL)
    store = harness.Store(args.out, meta, args.resume)
    started = time.perf_counter()
    tasks = []
    for dataset in args.datasets:
        _, _, train, test = harness.get_splits(dataset, args.data_dir)
        images = test_images(dataset, args.test_images)
        store.data["meta"].setdefault("shapes", {})[dataset] = dict(
            shape=list(train.shape), train=train.nnz, test_images=len(images))
        print(f"{dataset}: {train.shape[0]:,} x {train.shape[1]:,}, train {train.nnz:,} pairs, "
              f"{len(images):,} test images scored", flush=True)
        tasks += tasks_for(dataset, sweep, args)
    harness.run_tasks("check", tasks, store, run, jobs=args.jobs, nice=args.nice,
                      describe=_describe,
                      cost=lambda t: harness.get_splits(t["dataset"])[2].nnz
                      * (2 if t["family"] == "curve" else 1))
    store.data["meta"]["wall_seconds"] = round(time.perf_counter() - started, 1)
    store.save()
    print(report(store.data, []), end="")


# --------------------------------------------------------------------------------------------
# Report


def _peers(compare, dataset):
    """{model: final test MAP} of the 1-thread retrains of a compare.py file of ``dataset``."""
    for data in compare:
        if data["meta"]["dataset"] == dataset:
            return {r["family"]: r["curve"][-1]["map"] for r in data["runs"]
                    if r["phase"] == "retrain" and r["threads"] == 1 and r["curve"]}
    return {}


def _fmt(value, digits=4):
    return "—" if value is None else f"{value:.{digits}f}"


def report(data, compare):
    runs = {(r["dataset"], r["family"]): r for r in data["runs"]}
    meta = data["meta"]
    defaults = ", ".join(f"{k} {v:g}" for k, v in meta["vseens_defaults"].items())
    out = [f"command: `{meta['command']}`; wall-clock {meta.get('wall_seconds')} s; started "
           f"{meta.get('started')}; VSEEns defaults: {defaults}; EASE default lambda "
           f"{meta['ease_default']:g}", ""]
    head = ("| dataset | VSEEns() test MAP | epoch kept / trained | fit s | tuned (epochs) | "
            "÷ tuned | EASE, lambda on validation | ÷ EASE | EASE() | co-occurrence | "
            "best other peer | ÷ best peer | curve: final / best (best epoch) |")
    out += [head, "|---" * (head.count("|") - 1) + "|"]
    for dataset in meta["datasets"]:
        shipped = runs.get((dataset, "shipped"), {})
        value = shipped.get("map")

        def get(family, key="map"):
            return runs.get((dataset, family), {}).get(key)

        def ratio(other):
            return f"{value / other:.3f}" if value and other else "—"

        tuned = runs.get((dataset, "tuned"))
        tuned_text = "—" if not tuned else (
            f"{tuned['map']:.4f} ({tuned['params']['iterations']})")
        ease = runs.get((dataset, "EASE"), {})
        ease_text = (f"{ease['map']:.4f} (λ {ease['regularization']:g})" if "map" in ease
                     else ("refused (memory)" if ease.get("status", "").startswith("refused")
                           else "—"))
        peers = {name: v for name, v in _peers(compare, dataset).items() if name not in _OURS}
        peers.update({"EASE": get("EASE"), "EASE()": get("EASE()"),
                      "co-occurrence": get("co-occurrence")})
        peers = {name: v for name, v in peers.items() if v is not None}
        top = max(peers, key=peers.get) if peers else None
        curve = runs.get((dataset, "curve"))
        curve_text = "—"
        if curve and curve.get("curve"):
            best = max(curve["curve"])
            curve_text = (f"{curve['curve'][-1]:.4f} / {best:.4f} "
                          f"({curve['curve'].index(best) + 1}): {curve['curve'][-1] / best:.3f}")
        kept = (f"{shipped['kept_epoch']} / {shipped['epochs_trained']}"
                if shipped.get("kept_epoch") else (f"— / {shipped['epochs_trained']}"
                                                   if shipped else "—"))
        out.append(
            f"| {dataset} | {_fmt(value)} | {kept} | {_fmt(shipped.get('fit_seconds'), 1)} | "
            f"{tuned_text} | {ratio(tuned and tuned['map'])} | {ease_text} | "
            f"{ratio(ease.get('map'))} | {_fmt(get('EASE()'))} | {_fmt(get('co-occurrence'))} | "
            + (f"{peers[top]:.4f} ({top}) | {ratio(peers[top])}" if top else "— | —")
            + f" | {curve_text} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
