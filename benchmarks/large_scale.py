"""Training cost at tens to hundreds of millions of pairs: epoch time, time outside the epochs,
peak memory against the estimate (generated data, one fresh process per run).

    python benchmarks/large_scale.py                       # 10M .. 300M pairs, 1k .. 1M labels
    python benchmarks/large_scale.py --pairs-sweep 10 30   # some sizes only (millions of pairs)
    python benchmarks/large_scale.py --quick               # tiny smoke run, seconds
    python benchmarks/large_scale.py --report benchmarks/results/large_scale.json

Two sweeps of ``generate_image_labels(n_images, n_labels, labels_per_image=10, random_state=0)``:

* **pairs**: 20,000 labels, 1M / 3M / 10M / 30M images: 10M, 30M, 100M and 300M pairs;
* **labels**: 1M images (10M pairs), 1,000 / 10,000 / 100,000 / 1,000,000 labels.

Each run is a child process (``--child``) that generates its dataset, then fits ``VSEEns()``
with its defaults except ``iterations`` (``--epochs``, default 2: the cost per epoch is the
point, not the accuracy) and ``num_threads`` (``--threads``, default 2). It reports the
generation time, the fit's phases (input check, validation split, initialisation, each epoch,
each validation scoring, the final image vectors; "outside the epochs" is the fit's wall time
less its epochs), the peak resident memory of the fit above what the process held before it
(``VmHWM`` of ``/proc/self/status``, reset before the fit through ``/proc/self/clear_refs``)
next to ``VSEEns.estimate_memory`` for the same data, and the time ``recommend`` takes for
100,000 images (or all, when fewer) at N = 10. The kernels and BLAS use the machine's threads as a user's would.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# the children keep the environment this script was started with (harness, imported by the
# parent for its store and reports, would pin BLAS to one thread)
_ENVIRONMENT = dict(os.environ)

PAIRS_SWEEP = (1, 3, 10, 30)  # millions of images, at 20,000 labels and 10 labels an image
LABELS_SWEEP = (1_000, 10_000, 100_000, 1_000_000)  # at 1M images, 10 labels an image
QUICK = dict(pairs=(0.005, 0.01), labels=(100, 500), images=0.005)
RECOMMEND_IMAGES = 100_000


# --------------------------------------------------------------------------------------------
# One run (in a child process)


def _status(field):
    """A ``/proc/self/status`` value in bytes (VmRSS, VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


class PhaseClock:
    """Seconds spent in wrapped functions, by phase name (summed over calls)."""

    def __init__(self):
        self.seconds, self.calls = {}, {}

    def wrap(self, owner, name, phase):
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started
                self.calls[phase] = self.calls.get(phase, 0) + 1

        setattr(owner, name, timed)


def run_child(task):
    """Generate, fit and measure one dataset; returns the run record."""
    import numpy as np

    import vse_recsys.model as model_module
    from vse_recsys import VSEEns
    from vse_recsys._validation import _is_canonical_binary
    from vse_recsys.adapters import generate_image_labels

    started = time.perf_counter()
    data = generate_image_labels(n_images=task["n_images"], n_labels=task["n_labels"],
                                 labels_per_image=task["labels_per_image"], random_state=0)
    generation = dict(seconds=time.perf_counter() - started, peak_rss=_status("VmHWM"))
    user_items = data.user_items
    del data  # (its ID arrays: a user's fit would have them, the measurement need not)

    model = VSEEns(iterations=task["epochs"], num_threads=task["threads"], random_state=0)
    most = int(np.diff(user_items.indptr).max())
    estimate = model.estimate_memory(*user_items.shape, user_items.nnz, most,
                                     _is_canonical_binary(user_items))
    clock = PhaseClock()
    clock.wrap(model_module, "binary_csr", "input check")
    clock.wrap(model_module, "check_memory", "memory check")
    clock.wrap(model_module, "split_validation", "validation split")
    clock.wrap(model_module, "validation_map", "validation scoring")
    clock.wrap(VSEEns, "_init_vectors", "initialisation")
    clock.wrap(VSEEns, "_epoch_runner", "epoch set-up")
    clock.wrap(VSEEns, "_finish", "image vectors")

    baseline = _status("VmRSS")
    peak_reset = _reset_peak()
    started = time.perf_counter()
    model.fit(user_items, show_progress=False)
    fit_seconds = time.perf_counter() - started
    peak = _status("VmHWM")
    epochs = [epoch["seconds"] for epoch in model.fit_history]

    images = np.arange(min(RECOMMEND_IMAGES, user_items.shape[0]))
    started = time.perf_counter()
    model.recommend(images, user_items[images], N=10)
    recommend_seconds = time.perf_counter() - started

    return dict(
        task, nnz=int(user_items.nnz), generation=generation,
        fit_seconds=fit_seconds, epoch_seconds=epochs,
        outside_epochs_seconds=fit_seconds - sum(epochs),
        phases={name: round(value, 3) for name, value in clock.seconds.items()},
        baseline_rss=baseline, peak_rss=peak, peak_reset=peak_reset,
        fit_peak=None if peak is None or baseline is None or not peak_reset else peak - baseline,
        estimate=estimate.total, estimate_terms=estimate.terms,
        recommend=dict(images=int(len(images)), N=10, seconds=recommend_seconds),
    )


# --------------------------------------------------------------------------------------------
# The sweeps (in the parent)


def tasks(args):
    scale = 1_000_000
    pairs = QUICK["pairs"] if args.quick else args.pairs_sweep
    labels = QUICK["labels"] if args.quick else args.labels_sweep
    images = QUICK["images"] if args.quick else 1
    common = dict(labels_per_image=10, epochs=args.epochs, threads=args.threads)
    return ([dict(common, sweep="pairs", n_images=int(m * scale), n_labels=20_000 if not
                  args.quick else 1_000) for m in pairs]
            + [dict(common, sweep="labels", n_images=int(images * scale), n_labels=int(n))
               for n in labels])


def run_in_child(task):
    """``task`` measured by a fresh ``python large_scale.py --child`` process."""
    result = subprocess.run([sys.executable, __file__, "--child", json.dumps(task)],
                            capture_output=True, text=True, env=_ENVIRONMENT)
    if result.returncode != 0:
        return dict(task, error=result.stderr.strip().splitlines()[-1:] or ["killed"],
                    returncode=result.returncode)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _gib(value):
    return "—" if value is None else f"{value / 2**30:.2f}"


def describe(run):
    if "error" in run:
        return f"{run['n_images']:,} x {run['n_labels']:,}: failed: {run['error']}"
    return (f"{run['nnz'] / 1e6:.0f}M pairs, {run['n_labels']:,} labels: epochs "
            f"{', '.join(f'{s:.1f}' for s in run['epoch_seconds'])} s, outside "
            f"{run['outside_epochs_seconds']:.1f} s, fit peak {_gib(run['fit_peak'])} GiB "
            f"(estimate {_gib(run['estimate'])} GiB)")


def report(results, stem):
    import harness

    runs = [run for run in results["runs"] if "error" not in run]
    lines = [
        "# Training at scale (`benchmarks/large_scale.py`)", "",
        f"`{results['meta']['command']}`; {results['meta']['cpus']} CPUs; generated data, 10 "
        f"labels an image; `VSEEns()` defaults with {runs[0]['epochs'] if runs else '?'} "
        f"epochs, {runs[0]['threads'] if runs else '?'} threads.", "",
        "Fit peak: the fit's peak resident memory above the process's before it (the data "
        "included there). Outside: the fit's wall time less its epochs (input check, "
        "validation split, initialisation, validation scoring, the final image vectors).", "",
    ]
    for sweep in ("pairs", "labels"):
        chosen = [run for run in runs if run["sweep"] == sweep]
        if not chosen:
            continue
        fixed = (f"{chosen[0]['n_labels']:,} labels" if sweep == "pairs" else
                 f"{chosen[0]['n_images']:,} images, {chosen[0]['nnz'] / 1e6:.1f}M pairs")
        lines += [f"## By {sweep} ({fixed})", "",
                  "| images | labels | pairs | generate s | epoch s | pairs/s per epoch | "
                  "outside s | of which: split / init / validation / image vectors | "
                  "fit peak GiB | estimate GiB | peak / estimate | bytes per pair | "
                  "recommend s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for run in chosen:
            epoch = sum(run["epoch_seconds"]) / max(1, len(run["epoch_seconds"]))
            phases = run["phases"]
            parts = " / ".join(f"{phases.get(name, 0):.1f}" for name in (
                "validation split", "initialisation", "validation scoring", "image vectors"))
            ratio = "—" if not run["fit_peak"] else f"{run['fit_peak'] / run['estimate']:.2f}"
            per_pair = "—" if not run["fit_peak"] else f"{run['fit_peak'] / run['nnz']:.1f}"
            lines.append(
                f"| {run['n_images']:,} | {run['n_labels']:,} | {run['nnz'] / 1e6:.1f}M | "
                f"{run['generation']['seconds']:.0f} | {epoch:.1f} | "
                f"{run['nnz'] / epoch / 1e6:.2f}M | {run['outside_epochs_seconds']:.1f} | "
                f"{parts} | {_gib(run['fit_peak'])} | {_gib(run['estimate'])} | {ratio} | "
                f"{per_pair} | {run['recommend']['seconds']:.1f} |")
        lines.append("")
    failed = [run for run in results["runs"] if "error" in run]
    if failed:
        lines += ["Failed runs: " + "; ".join(describe(run) for run in failed), ""]

    def plot(path):
        plt = harness.pyplot()
        if plt is None:
            return
        figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        for sweep, x_key, axis_label in (("pairs", "nnz", "pairs"),
                                         ("labels", "n_labels", "labels (10M pairs)")):
            chosen = [run for run in runs if run["sweep"] == sweep]
            if not chosen:
                continue
            x = [run[x_key] for run in chosen]
            epoch = [sum(r["epoch_seconds"]) / len(r["epoch_seconds"]) for r in chosen]
            axis = axes[0] if sweep == "pairs" else axes[2]
            axis.loglog(x, epoch, "o-", label="epoch")
            axis.loglog(x, [r["outside_epochs_seconds"] for r in chosen], "s--",
                        label="outside the epochs")
            axis.set_xlabel(axis_label)
            axis.set_ylabel("seconds")
            axis.legend()
            if sweep == "pairs":
                axes[1].loglog(x, [r["fit_peak"] / 2**30 for r in chosen], "o-",
                               label="fit peak (measured)")
                axes[1].loglog(x, [r["estimate"] / 2**30 for r in chosen], "x--",
                               label="estimate")
                axes[1].set_xlabel("pairs")
                axes[1].set_ylabel("GiB")
                axes[1].legend()
        figure.tight_layout()
        figure.savefig(path, dpi=110)

    harness.write_report(stem, "\n".join(lines), plot)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", metavar="TASK", help=argparse.SUPPRESS)
    parser.add_argument("--pairs-sweep", type=float, nargs="*", default=PAIRS_SWEEP,
                        metavar="MILLION_IMAGES",
                        help="images (millions) of the pairs sweep (default 1 3 10 30)")
    parser.add_argument("--labels-sweep", type=int, nargs="*", default=LABELS_SWEEP,
                        metavar="LABELS", help="label counts of the labels sweep")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per fit (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="training threads (default 2)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--output", default=None,
                        help="results JSON (default benchmarks/results/large_scale.json; "
                        "large_scale_quick.json with --quick)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in the results file and skip them")
    parser.add_argument("--report", metavar="JSON", help="only write the tables and plot")
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return
    import harness

    if args.report:
        report(harness.load_results(args.report), str(Path(args.report).with_suffix("")))
        return
    output = Path(args.output or harness.RESULTS_DIR / (
        "large_scale_quick.json" if args.quick else "large_scale.json"))
    store = harness.Store(output, harness.run_meta(__file__, argv, args), args.resume)
    store.TASK_KEYS = ("sweep", "n_images", "n_labels", "labels_per_image", "epochs", "threads")
    done = store.done()
    started = time.perf_counter()
    for task in tasks(args):
        if store.task_id(task) in done:
            continue
        run = run_in_child(task)
        store.add(run)
        print(describe(run), flush=True)
    store.data["meta"]["wall_seconds"] = time.perf_counter() - started
    store.save()
    report(store.data, str(output.with_suffix("")))


if __name__ == "__main__":
    main()
