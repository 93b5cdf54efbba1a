"""Where EASE stops being the cheaper model: its fit time and peak memory against the label
count, next to one VSEEns epoch on the same data.

    python benchmarks/ease_scaling.py                          # 1k, 5k, 10k, 20k labels
    python benchmarks/ease_scaling.py --labels 1000 2000 --images 20000   # a smaller sweep
    python benchmarks/ease_scaling.py --quick                  # smoke run, seconds

Each measurement runs in a fresh process (so its peak resident memory, ``ru_maxrss``, is its
own): generated data (``--images`` images, ``--per-image`` labels each), then EASE's ``fit``
or ``--vse-epochs`` VSEEns epochs. A fit's peak memory is what ``tracemalloc`` saw it allocate
(every array here, the LAPACK work included, is a NumPy allocation: the factorisation runs in
place), printed beside the memory estimate that ``fit`` checks before allocating, and beside
the process's peak resident memory (data generation included). Times are wall-clock seconds of ``fit``
(EASE) and the median epoch (VSEEns), with ``--threads`` threads; the machines here are shared,
so compare within one run.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc


def _peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def measure(model, n_labels, args):
    """One measurement, in this process; returns a dict."""
    from vse_recsys import EASE, VSEEns
    from vse_recsys.adapters import generate_image_labels

    data = generate_image_labels(n_images=args.images, n_labels=n_labels,
                                 labels_per_image=args.per_image, random_state=0)
    user_items = data.user_items
    del data
    result = dict(model=model, n_labels=n_labels, n_images=user_items.shape[0],
                  nnz=int(user_items.nnz), threads=args.threads)
    if model == "EASE":
        fitted = EASE(num_threads=args.threads)
    else:
        fitted = VSEEns(iterations=args.vse_epochs, num_threads=args.threads, random_state=0)
    result["estimate"] = fitted.estimate_memory(*user_items.shape, user_items.nnz).total
    tracemalloc.start()
    started = time.perf_counter()
    fitted.fit(user_items, show_progress=False)
    result["fit_seconds"] = time.perf_counter() - started
    result["fit_peak"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    if model == "EASE":
        result["seconds"] = result["fit_seconds"]
    else:  # tracemalloc slows Python's allocations, not the kernels: epochs time as usual
        seconds = sorted(epoch["seconds"] for epoch in fitted.fit_history)
        result["seconds"] = seconds[len(seconds) // 2]
    result["process_peak_rss"] = _peak_rss()
    return result


def _in_child(model, n_labels, args):
    command = [sys.executable, __file__, "--one", model, str(n_labels), "--images",
               str(args.images), "--per-image", str(args.per_image), "--threads",
               str(args.threads), "--vse-epochs", str(args.vse_epochs)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def report(results):
    mib = 2**20
    print(f"\n{'labels':>7} {'pairs':>10} {'EASE fit s':>11} {'VSEEns epoch s':>15} "
          f"{'EASE/epoch':>10} {'EASE peak MiB':>14} {'(estimate)':>11} {'VSEEns peak MiB':>16} "
          f"{'(estimate)':>11}")
    by_labels = {}
    for result in results:
        by_labels.setdefault(result["n_labels"], {})[result["model"]] = result
    for n_labels, pair in sorted(by_labels.items()):
        ease, vse = pair.get("EASE"), pair.get("VSEEns")
        ratio = ease["seconds"] / vse["seconds"] if ease and vse else float("nan")
        nan = float("nan")
        print(f"{n_labels:>7,} {(ease or vse)['nnz']:>10,} "
              f"{ease['seconds'] if ease else nan:>11.2f} "
              f"{vse['seconds'] if vse else nan:>15.3f} {ratio:>10.1f} "
              f"{ease['fit_peak'] / mib if ease else nan:>14,.0f} "
              f"{ease['estimate'] / mib if ease else nan:>11,.0f} "
              f"{vse['fit_peak'] / mib if vse else nan:>16,.0f} "
              f"{vse['estimate'] / mib if vse else nan:>11,.0f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[1000, 5000, 10000, 20000])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--per-image", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vse-epochs", type=int, default=3,
                        help="VSEEns epochs per measurement (the median epoch is reported)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "LABELS"), help=argparse.SUPPRESS)
    parser.add_argument("--json", metavar="FILE", help="also write the measurements as JSON")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args)))
        return 0
    if args.quick:
        args.labels, args.images, args.vse_epochs = [50, 200], 2_000, 1
    results = []
    for n_labels in args.labels:
        for model in ("VSEEns", "EASE"):
            results.append(_in_child(model, n_labels, args))
            print(json.dumps(results[-1]), flush=True)
    report(results)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, separators=(",", ":"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
