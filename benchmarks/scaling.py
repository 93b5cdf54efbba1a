"""How VSE-ens and uniform WARP scale with the number of labels (generated data).

    python benchmarks/scaling.py                          # 1k .. 100k labels, ~10-15 min
    python benchmarks/scaling.py --quick                  # tiny smoke run, seconds
    python benchmarks/scaling.py --report benchmarks/results/scaling.json

For each label count (``--labels``) the generator (``generate_image_labels``) makes a dataset
with the same number of images (``--images``) and labels per image (``--labels-per-image``), so
the number of training pairs stays fixed while the label list grows. It is split leave-one-out
(seed 0) into train / test. Each model is trained on train with 1 and with 2 threads, WARP for
``--epochs`` epochs and VSE-ens for ``--vse-epochs`` (its epochs are several times cheaper).
After the epochs of a log-ish schedule the test MAP is measured on a fixed random sample of
``--eval-images`` test images (evaluation time excluded from the clock).

Measured per run: the mean epoch time; *draws per useful update* (negatives drawn per SGD
step that changed the factors, from the kernels' counters, mean over epochs, and in the last
epoch); and **time-to-target**: training seconds to reach 95% of the best MAP that uniform
WARP reaches with the same thread count on that dataset.

The learning rates are chosen once, before the sweep, on a validation split (train split again
leave-one-out, seed 1) of the ``--tune-labels`` dataset: each model's best of ``--tune-lrs``
by validation MAP after ``--epochs`` epochs. The same rates are then used at every size.
"""

import os
import tempfile
import time
from pathlib import Path

import harness  # first: it sets one BLAS / OpenMP thread per process before NumPy loads

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from harness import OUR_MODELS, REFERENCE_WARP  # noqa: E402
from vse_recsys.adapters import generate_image_labels, leave_one_out_split  # noqa: E402
from vse_recsys.model import DivergenceError  # noqa: E402

MODELS = ("VSE-ens", REFERENCE_WARP)
REGULARIZATION = 0.03


def sample_rows(held_out, n_rows, seed):
    """``held_out`` with only ``n_rows`` random non-empty rows kept (same shape)."""
    rows = np.flatnonzero(np.diff(held_out.indptr))
    keep = np.random.default_rng(seed).choice(rows, min(n_rows, rows.size), replace=False)
    mask = np.isin(np.arange(held_out.shape[0]), keep).astype(np.float32)
    sample = (sp.diags(mask) @ held_out).tocsr()
    sample.eliminate_zeros()
    return sample


def make_data(n_images, n_labels, labels_per_image, seed):
    """Generated data split leave-one-out (seed 0): train, test."""
    data = generate_image_labels(n_images=n_images, n_labels=n_labels,
                                 labels_per_image=labels_per_image, random_state=seed)
    return leave_one_out_split(data, random_state=0)


def run_model(name, train, known, held_out, lr, threads, epochs, seed):
    """Train; returns the curve (test metrics vs training seconds), per-epoch statistics and
    the status ("completed", or "diverged" with the epochs before the divergence)."""
    wanted = set(harness.curve_epochs(epochs))
    curve, history = [], []

    def on_epoch(epoch, seconds, scorer, stats):
        history.append(dict(seconds=stats["seconds"], draws=stats["draws"],
                            updates=stats["updates"], pairs=stats["pairs"],
                            violations=stats["violations"], refreshes=stats["refreshes"]))
        if epoch in wanted:
            metrics = harness.evaluate(scorer, known, held_out, K=(5,))
            curve.append(dict(epoch=epoch, seconds=round(seconds, 4), map=metrics["map"],
                              **{"precision@5": metrics["precision@5"]}))

    try:
        harness.train_ours(train, dict(OUR_MODELS[name], learning_rate=lr,
                                       regularization=REGULARIZATION),
                           threads=threads, seed=seed, epochs=epochs, on_epoch=on_epoch)
    except DivergenceError:
        return curve, history, "diverged"
    return curve, history, "completed"


def tune_learning_rates(args):
    """Each model's best learning rate on a validation split of the --tune-labels dataset."""
    train, _ = make_data(args.images, args.tune_labels, args.labels_per_image, args.seed)
    fit, validation = leave_one_out_split(train, random_state=1)
    validation = sample_rows(validation, args.eval_images, args.seed)
    chosen, table = {}, {}
    for name in MODELS:
        for lr in args.tune_lrs:
            curve, _, status = run_model(name, fit, fit, validation, lr, 1, args.epochs,
                                         args.seed)
            # a rate that diverges is not a candidate
            table[f"{name} lr {lr:g}"] = max(p["map"] for p in curve) if (
                status == "completed") else None
            print(f"  tune {name:<12} lr {lr:<6g} best validation MAP "
                  f"{table[f'{name} lr {lr:g}']}", flush=True)
        chosen[name] = max((lr for lr in args.tune_lrs if table[f"{name} lr {lr:g}"]),
                           key=lambda lr: table[f"{name} lr {lr:g}"])
    return chosen, table


def main(argv=None):
    parser = harness.argument_parser(__doc__)
    parser.add_argument("--labels", type=int, nargs="+",
                        default=[1_000, 3_000, 10_000, 30_000, 100_000],
                        help="label counts to measure (default 1k 3k 10k 30k 100k)")
    parser.add_argument("--images", type=int, default=50_000, help="images (default 50,000)")
    parser.add_argument("--labels-per-image", type=float, default=5.0,
                        help="mean labels per image (default 5)")
    parser.add_argument("--epochs", type=int, default=20,
                        help="epochs of a WARP run and of the learning-rate choice (default 20)")
    parser.add_argument("--vse-epochs", type=int, default=80,
                        help="epochs of a VSE-ens run (default 80: its epochs cost a fraction "
                             "of WARP's, and at 20 it is still improving on the larger sizes)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="thread counts (default 1 2)")
    parser.add_argument("--eval-images", type=int, default=2_000,
                        help="test images sampled for the MAP curves (default 2,000)")
    parser.add_argument("--tune-labels", type=int, default=10_000,
                        help="label count of the learning-rate choice (default 10,000)")
    parser.add_argument("--tune-lrs", type=float, nargs="+", default=[0.003, 0.01, 0.03, 0.1],
                        help="learning rates tried for each model (default .003 .01 .03 .1)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 2,000 images, 200 and 600 labels, 4 epochs")
    parser.add_argument("--out", default=None,
                        help="JSON results (default benchmarks/results/scaling.json; with "
                             "--quick a file in the temp folder); .md and .png beside it")
    harness.add_options(parser, "seed", "resume", "report", seed=dict(
        help="random_state of the generated data, the test sample and every model"))
    args = parser.parse_args(argv)

    if args.report:
        path = Path(args.report)
        write_report(harness.load_results(path), path.with_suffix(""))
        return
    if args.quick:
        args.images, args.labels, args.epochs, args.eval_images = 2_000, [200, 600], 4, 500
        args.vse_epochs = 6
        args.tune_labels, args.tune_lrs = 200, [0.01, 0.03]
    if args.out is None:
        args.out = (Path(tempfile.gettempdir()) / "scaling_quick.json" if args.quick
                    else harness.RESULTS_DIR / "scaling.json")
    started = time.perf_counter()
    # the learning rates are chosen once: a resumed sweep keeps the earlier choice
    store = harness.Store(args.out, harness.run_meta(__file__, argv, args), args.resume,
                          keep_summary=True)
    summary = store.data["summary"]
    if "learning_rates" not in summary:
        print(f"choosing learning rates at {args.tune_labels:,} labels", flush=True)
        summary["learning_rates"], summary["tuning"] = tune_learning_rates(args)
        store.save()
    rates = summary["learning_rates"]

    tasks = [dict(phase="scaling", family=name, dataset=f"{n_labels} labels",
                  params=dict(learning_rate=rates[name], regularization=REGULARIZATION),
                  seed=args.seed, role=f"{threads} thread(s)",
                  epochs=args.vse_epochs if name == "VSE-ens" else args.epochs,
                  threads=threads, n_labels=n_labels)
             for n_labels in args.labels for threads in args.threads for name in MODELS]
    data_for = {}  # the current size's train split and test sample, made when first needed

    def run(task):
        if task["n_labels"] not in data_for:
            data_for.clear()
            train, test = make_data(args.images, task["n_labels"], args.labels_per_image,
                                    args.seed)
            data_for[task["n_labels"]] = train, sample_rows(test, args.eval_images, args.seed)
        train, sample = data_for[task["n_labels"]]
        load_before = os.getloadavg()[0]  # other processes on the machine skew timings
        curve, history, status = run_model(task["family"], train, train, sample,
                                           task["params"]["learning_rate"], task["threads"],
                                           task["epochs"], task["seed"])
        return dict(task, curve=curve, history=history, status=status, pairs=int(train.nnz),
                    load_average=[load_before, os.getloadavg()[0]])

    # timed runs, so one at a time, in this process, in the order above (all costs equal)
    harness.run_tasks("scaling", tasks, store, run, jobs=1, nice=0, cost=lambda task: 0,
                      describe=_describe)
    store.data["meta"]["wall_seconds"] = round(time.perf_counter() - started, 1)
    store.save()
    write_report(store.data, Path(args.out).with_suffix(""))


def _describe(run):
    curve, history = run["curve"], run["history"]
    result = f"MAP {curve[-1]['map']:.4f} after {curve[-1]['seconds']:.1f}s" if curve else (
        "no curve")
    return (f"  {run['n_labels']:>7,} labels {run['family']:<12} {run['threads']} thr: "
            f"{np.mean([h['seconds'] for h in history]):.3f} s/epoch, {result} "
            f"({run['status']})")


# --------------------------------------------------------------------------------------------
# Report


def summarise(data):
    """One row per (labels, threads, model) with epoch time, draws per update, time-to-target."""
    runs = [r for r in data["runs"] if r["phase"] == "scaling" and r["curve"]]
    rows = []
    for run in runs:
        warp = next((r for r in runs if r["family"] == REFERENCE_WARP and
                     r["n_labels"] == run["n_labels"] and r["threads"] == run["threads"]), None)
        history = run["history"]
        row = dict(model=run["family"], labels=run["n_labels"], threads=run["threads"],
                   epoch_seconds=float(np.mean([h["seconds"] for h in history])),
                   draws_per_update=sum(h["draws"] for h in history)
                   / max(1, sum(h["updates"] for h in history)),
                   draws_per_update_last=history[-1]["draws"] / max(1, history[-1]["updates"]),
                   best_map=max(p["map"] for p in run["curve"]),
                   final_map=run["curve"][-1]["map"])
        if warp is not None:
            target = 0.95 * max(p["map"] for p in warp["curve"])
            row["target"] = target
            row["seconds_to_target"] = harness.time_to_target(run["curve"], target)
            own = harness.time_to_target(warp["curve"], target)
            row["speedup"] = own / row["seconds_to_target"] if (
                own and row["seconds_to_target"]) else None
        rows.append(row)
    rows.sort(key=lambda r: (r["labels"], r["threads"], MODELS.index(r["model"])))
    return rows


def markdown(data):
    rows = summarise(data)
    meta, summary = data["meta"], data["summary"]
    args = meta["args"]
    lines = [f"`{meta['command']}` — {meta.get('wall_seconds', '?')} s wall-clock, started "
             f"{meta.get('started', '?')}.", "",
             f"{args['images']:,} images, {args['labels_per_image']:g} labels per image, "
             f"{args['epochs']} epochs of WARP, {args.get('vse_epochs', args['epochs'])} of "
             f"VSE-ens, k = 64, reg {REGULARIZATION}; learning rates chosen on "
             f"validation at {args['tune_labels']:,} labels: "
             + ", ".join(f"{m} {lr:g}" for m, lr in summary["learning_rates"].items())
             + f". MAP on {args['eval_images']:,} sampled test images.", "",
             "| labels | threads | model | s / epoch | draws per update (all / last epoch) | "
             "best MAP | final MAP | s to 95% of WARP's best | speed-up vs WARP |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['labels']:,} | {row['threads']} | {row['model']} | "
            f"{row['epoch_seconds']:.3f} | {row['draws_per_update']:.1f} / "
            f"{row['draws_per_update_last']:.1f} | {row['best_map']:.4f} | "
            f"{row['final_map']:.4f} | "
            f"{harness.fmt_number(row.get('seconds_to_target'), 2, missing='not reached')} | "
            f"{harness.fmt_speedup(row.get('speedup'))} |")
    return "\n".join(lines) + "\n"


def plot(data, path):
    """Epoch time and time-to-target vs label count (log-log), one line per model/threads."""
    plt = harness.pyplot()
    if plt is None:
        return False
    rows = summarise(data)
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    keys = sorted({(r["model"], r["threads"]) for r in rows})
    for model, threads in keys:
        mine = [r for r in rows if r["model"] == model and r["threads"] == threads]
        style = dict(marker="o", linestyle="-" if threads == 1 else "--",
                     label=f"{model}, {threads} thread(s)")
        axes[0].plot([r["labels"] for r in mine], [r["epoch_seconds"] for r in mine], **style)
        axes[1].plot([r["labels"] for r in mine], [r["draws_per_update"] for r in mine], **style)
        reached = [r for r in mine if r.get("seconds_to_target")]
        axes[2].plot([r["labels"] for r in reached], [r["seconds_to_target"] for r in reached],
                     **style)
    titles = ("seconds per epoch", "draws per useful update", "seconds to 95% of WARP's best MAP")
    for axis, title in zip(axes, titles):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("labels")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def write_report(data, stem):
    """Write ``<stem>.md`` (the table) and ``<stem>.png`` (the plots); print the table."""
    harness.write_report(stem, markdown(data), lambda path: plot(data, path))


if __name__ == "__main__":
    main()
