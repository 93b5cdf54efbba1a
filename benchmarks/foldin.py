"""Fold-in quality: images folded in from their labels vs the same images trained in the model.

    python benchmarks/foldin.py                           # delicious, ../shared/data
    python benchmarks/foldin.py --data-dir PATH --fold-in-iterations 5 10 20 40

Protocol (leave-one-out on delicious, bookmarks as images and tags as labels):

1. Hold out one tag of every bookmark with two or more (``leave_one_out_split``).
2. Fit ``VSEEns`` on the training part. The MAP of the test bookmarks, ranked by their trained
   vectors, is the reference ("trained").
3. **seen**: discard the vectors of every test bookmark and recompute them by folding in
   (``partial_fit_users``, the same computation as ``recommend(..., recalculate_user=True)``)
   from their training tags alone, with the label vectors fixed; MAP again. The label vectors
   were trained with these bookmarks in the data: this is the question "does fold-in recover the
   vector training would give?".
4. **unseen** (stricter, the real use of ``vse-recsys tag --labels``): a random
   ``--unseen-fraction`` of the bookmarks is removed from the training matrix altogether (the
   label vectors never see them), a second model is fitted on the rest, and those bookmarks are
   folded in from their training tags. Compared with their MAP in the model of step 2.

Only learned ("free") image vectors are folded in: a composed one (``VSEEns``'s default,
``image_vectors="labels"``) is a function of the image's labels and is recomputed exactly, so
the script trains ``image_vectors="free"`` (or ``"labels+free"``, ``--image-vectors``) with the
other parameters at their defaults.

The figure reported is MAP(folded in) / MAP(trained), per ``fold_in_iterations`` value
(``--fold-in-iterations``; the model's own default is included). Folding in only touches the
image vectors, so one fitted model serves every value.
"""

import argparse
import copy
import time

import numpy as np

from vse_recsys import VSEEns
from vse_recsys.adapters import leave_one_out_split, load_dataset
from vse_recsys.evaluation import ranking_metrics


def mean_map(model, train, test, images):
    """MAP over `images` (the per-image values of ranking_metrics, averaged)."""
    _, per_image = ranking_metrics(model, train, test, K=(5,), return_per_image=True)
    keep = np.isin(per_image["image_ids"], images)
    return float(per_image["map"][keep].mean()), per_image


def folded(model, images, rows, fold_in_iterations):
    """A copy of `model` whose `images` vectors are recomputed from `rows` by fold-in."""
    result = copy.copy(model)
    result.user_factors = model.user_factors.copy()
    result.user_factors[images] = 0.0  # discard the trained vectors first
    result.fold_in_iterations = fold_in_iterations
    started = time.perf_counter()
    result.partial_fit_users(images, rows)
    return result, time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="delicious",
                        help="a shared dataset name (load_dataset), default delicious")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the shared datasets (default: $VSE_RECSYS_DATA or "
                        "../shared/data)")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=VSEEns().iterations,
                        help="training epochs (default: VSEEns's default)")
    parser.add_argument("--image-vectors", choices=("free", "labels+free"), default="free",
                        help="the image vectors to fold in (default free)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fold-in-iterations", type=int, nargs="+", default=None,
                        help="values to try (default: 5 10 and the model's default, 20, 40)")
    parser.add_argument("--unseen-fraction", type=float, default=0.1,
                        help="fraction of images left out of training for the 'unseen' case; "
                        "0 skips it")
    args = parser.parse_args(argv)

    data = load_dataset(args.dataset, args.data_dir)
    train, test = leave_one_out_split(data, random_state=args.seed)
    test_images = np.flatnonzero(np.diff(test.indptr))
    print(f"{args.dataset}: {data.n_images:,} images x {data.n_labels:,} labels, "
          f"{data.n_pairs:,} pairs; {len(test_images):,} test images (one held-out label each)")

    params = dict(factors=args.factors, iterations=args.iterations,
                  image_vectors=args.image_vectors, num_threads=args.threads,
                  random_state=args.seed)
    default_fold_in = VSEEns().fold_in_iterations
    values = args.fold_in_iterations or sorted({5, 10, default_fold_in, 40})

    started = time.perf_counter()
    model = VSEEns(**params).fit(train, show_progress=False)
    print(f"fitted VSEEns({', '.join(f'{k}={v}' for k, v in params.items())}) in "
          f"{time.perf_counter() - started:.1f} s")
    trained_map, _ = mean_map(model, train, test, test_images)

    unseen = None
    if args.unseen_fraction > 0:
        rng = np.random.default_rng(args.seed + 1)
        unseen = np.sort(rng.choice(test_images, int(args.unseen_fraction * len(test_images)),
                                    replace=False))
        reduced = train.tolil(copy=True)
        reduced[unseen] = 0
        reduced = reduced.tocsr()
        reduced.eliminate_zeros()
        started = time.perf_counter()
        model_without = VSEEns(**params).fit(reduced, show_progress=False)
        print(f"fitted a second model without {len(unseen):,} images in "
              f"{time.perf_counter() - started:.1f} s")
        unseen_trained_map, _ = mean_map(model, train, test, unseen)

    print(f"\nMAP of the {len(test_images):,} test images with their trained vectors: "
          f"{trained_map:.4f}")
    if unseen is not None:
        print(f"MAP of the {len(unseen):,} 'unseen' images in the same model: "
              f"{unseen_trained_map:.4f}")
    header = f"{'fold_in_iterations':>18} {'seen MAP':>9} {'ratio':>7} {'seconds':>8}"
    if unseen is not None:
        header += f" {'unseen MAP':>11} {'ratio':>7}"
    print("\n" + header)
    for value in values:
        seen_model, seconds = folded(model, test_images, train[test_images], value)
        seen_map, _ = mean_map(seen_model, train, test, test_images)
        line = (f"{value:>18} {seen_map:>9.4f} {seen_map / trained_map:>7.1%} "
                f"{seconds:>8.2f}")
        if unseen is not None:
            unseen_model, _ = folded(model_without, unseen, train[unseen], value)
            unseen_map, _ = mean_map(unseen_model, train, test, unseen)
            line += f" {unseen_map:>11.4f} {unseen_map / unseen_trained_map:>7.1%}"
        if value == default_fold_in:
            line += "   (VSEEns default)"
        print(line)


if __name__ == "__main__":
    main()
