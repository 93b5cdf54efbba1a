"""The ``vse-recsys`` command line (also ``python -m vse_recsys``)."""

import argparse
import sys
import time

import numpy as np

from . import __version__


class UserError(Exception):
    """A mistake in the command line or its files: reported in one line, exit status 2."""


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except UserError as error:
        print(f"vse-recsys: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vse-recsys: interrupted", file=sys.stderr)
        return 130


def _parser():
    parser = argparse.ArgumentParser(
        prog="vse-recsys",
        description="Label ranking for images (and tagging for items) with VSE-ens.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="train VSE-ens and WARP side by side on a generated image-label dataset",
        description="Generate an image-label dataset with planted structure, hold out one label "
        "per image, train VSE-ens (adaptive sampler + hinge) and WARP (uniform sampler) on the "
        "rest and compare how well each ranks the held-out labels.",
    )
    demo.add_argument("--images", type=int, default=30_000, help="generated images")
    demo.add_argument("--labels", type=int, default=2_000, help="generated labels")
    demo.add_argument("--labels-per-image", type=float, default=6.0)
    demo.add_argument("--factors", type=int, default=64)
    demo.add_argument("--epochs", type=int, default=15)
    demo.add_argument("--threads", type=int, default=0, help="0: every available core")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--examples", type=int, default=3, help="images to show with their labels")
    demo.set_defaults(run=_demo)
    return parser


def _demo(args):
    from .adapters import generate_image_labels, leave_one_out_split
    from .evaluation import ranking_metrics
    from .model import VSEEns

    dataset = generate_image_labels(
        n_images=args.images,
        n_labels=args.labels,
        labels_per_image=args.labels_per_image,
        random_state=args.seed,
    )
    train, test = leave_one_out_split(dataset, random_state=args.seed)
    print(
        f"Generated {dataset.n_images:,} images x {dataset.n_labels:,} labels with "
        f"{dataset.n_pairs:,} pairs; one label of each image with two or more is held out "
        f"({test.nnz:,} test labels)."
    )
    models = {
        "VSE-ens (adaptive + hinge)": VSEEns(
            factors=args.factors, iterations=args.epochs, num_threads=args.threads,
            random_state=args.seed,
        ),
        "WARP (uniform)": VSEEns(
            factors=args.factors, iterations=args.epochs, loss="warp", sampler="uniform",
            learning_rate=0.01, num_threads=args.threads, random_state=args.seed,
        ),
    }
    rows = []
    for name, model in models.items():
        print(f"\nTraining {name}")
        started = time.perf_counter()
        model.fit(train, show_progress=True)
        seconds = time.perf_counter() - started
        metrics = ranking_metrics(model, train, test, K=(5,))
        rows.append((name, metrics["precision@5"], metrics["recall@5"], metrics["map"], seconds))

    print(f"\n{'model':<28} {'P@5':>7} {'R@5':>7} {'MAP':>7} {'seconds':>8}")
    for name, precision, recall, mean_ap, seconds in rows:
        print(f"{name:<28} {precision:7.4f} {recall:7.4f} {mean_ap:7.4f} {seconds:8.1f}")

    model = models["VSE-ens (adaptive + hinge)"]
    images = np.flatnonzero(np.diff(test.indptr))[: args.examples]
    names = dataset.label_names
    ids, _ = model.recommend(images, train[images], N=5)
    for image, suggested in zip(images, ids):
        held_out = names[test[image].indices]
        known = names[train[image].indices]
        print(f"\nimage {dataset.image_ids[image]}: known labels {', '.join(map(str, known))}")
        print(f"  held out: {', '.join(map(str, held_out))}")
        print(f"  VSE-ens suggests: {', '.join(map(str, names[suggested]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
