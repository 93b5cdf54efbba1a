"""Training throughput of the kernels, 1 and 2 threads, against implicit's CPU BPR.

    python benchmarks/throughput.py                 # ~1M pairs, 5,000 labels, 64 factors
    python benchmarks/throughput.py --quick         # small smoke run

For each model it prints training pairs per second (whole ``fit`` wall-clock, set-up included,
divided into epochs x pairs), and for the samplers the fraction of pairs whose negative violated
the margin. For VSE-ens it also prints the share of thread time spent refreshing the adaptive
sampler. Ratios at the end are from this one run (the machines here are shared and noisy, so
compare ratios, not absolute numbers across runs).
"""

import argparse
import time

import numpy as np
from implicit.cpu.bpr import BayesianPersonalizedRanking
from threadpoolctl import threadpool_limits

from vse_recsys import VSEEns
from vse_recsys.adapters import generate_image_labels

MODELS = {
    "VSE-ens (adaptive+hinge)": dict(loss="hinge", sampler="adaptive"),
    "uniform+hinge": dict(loss="hinge", sampler="uniform"),
    "uniform+bpr": dict(loss="bpr", sampler="uniform"),
}


def measure(user_items, threads, epochs, factors, seed):
    """Fit every model once; returns {name: row dict}."""
    rows = {}
    for name, params in MODELS.items():
        model = VSEEns(factors=factors, iterations=epochs, num_threads=threads,
                       random_state=seed, **params)
        started = time.perf_counter()
        model.fit(user_items, show_progress=False)
        seconds = time.perf_counter() - started
        history = model.fit_history
        thread_seconds = sum(e["seconds"] * e["threads_used"] for e in history)
        rows[name] = {
            "pairs_per_second": user_items.nnz * epochs / seconds,
            "epoch_seconds": seconds / epochs,
            "violation_rate": np.mean([e["violation_rate"] for e in history]),
            "refresh_share": sum(e["refresh_seconds"] for e in history) / thread_seconds,
            "refreshes_per_epoch": np.mean([e["refreshes"] for e in history]),
            "threads_used": history[-1]["threads_used"],
        }
    bpr = BayesianPersonalizedRanking(factors=factors, iterations=epochs, num_threads=threads,
                                      random_state=seed)
    started = time.perf_counter()
    bpr.fit(user_items, show_progress=False)
    seconds = time.perf_counter() - started
    rows["implicit BPR"] = {"pairs_per_second": user_items.nnz * epochs / seconds,
                            "epoch_seconds": seconds / epochs}
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--labels", type=int, default=5_000)
    parser.add_argument("--labels-per-image", type=float, default=5.0)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small data, one epoch")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.labels, args.epochs = 5_000, 500, 1

    data = generate_image_labels(n_images=args.images, n_labels=args.labels,
                                 labels_per_image=args.labels_per_image, random_state=args.seed)
    user_items = data.user_items
    print(f"data: {user_items.shape[0]:,} images x {user_items.shape[1]:,} labels, "
          f"{user_items.nnz:,} pairs; factors={args.factors}, epochs={args.epochs}")

    results = {}
    with threadpool_limits(1, "blas"):  # implicit warns (and slows down) otherwise
        for threads in args.threads:
            results[threads] = measure(user_items, threads, args.epochs, args.factors,
                                       args.seed)

    print(f"\n{'threads':>7}  {'model':<26} {'pairs/s':>11} {'epoch s':>8} {'violated':>9} "
          f"{'refresh':>8}")
    for threads, rows in results.items():
        for name, row in rows.items():
            violated = f"{row['violation_rate']:.1%}" if "violation_rate" in row else "-"
            refresh = f"{row['refresh_share']:.1%}" if row.get("refresh_share") else "-"
            print(f"{threads:>7}  {name:<26} {row['pairs_per_second']:>11,.0f} "
                  f"{row['epoch_seconds']:>8.3f} {violated:>9} {refresh:>8}")

    print("\nratios (this run):")
    for threads, rows in results.items():
        vse, hinge = rows["VSE-ens (adaptive+hinge)"], rows["uniform+hinge"]
        ours, theirs = rows["uniform+bpr"], rows["implicit BPR"]
        print(f"  {threads} thread(s): uniform+bpr / implicit BPR pairs/s = "
              f"{ours['pairs_per_second'] / theirs['pairs_per_second']:.2f}; "
              f"VSE-ens epoch / uniform-hinge epoch = "
              f"{vse['epoch_seconds'] / hinge['epoch_seconds']:.2f}; "
              f"VSE-ens refresh share = {vse['refresh_share']:.1%}; "
              f"violations adaptive / uniform = "
              f"{vse['violation_rate'] / max(hinge['violation_rate'], 1e-12):.2f}")
    if 1 in results and 2 in results:
        for name in results[1]:
            speedup = results[2][name]["pairs_per_second"] / results[1][name]["pairs_per_second"]
            print(f"  2 threads / 1 thread, {name}: {speedup:.2f}x")


if __name__ == "__main__":
    main()
