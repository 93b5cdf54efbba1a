"""Where EASE cannot go: generated data with 100,000 labels, VSEEns() against the baselines.

    python benchmarks/many_labels.py                  # generated-100k (100,000 x 100,000)
    python benchmarks/many_labels.py --quick          # generated-quick, seconds

The split of ``harness.get_splits`` (leave-one-out seed 0 into train / test). On train:

* ``VSEEns()`` with every default (its own early stopping on labels it holds out), 1 and 2
  threads: fit seconds, the epochs it trained and kept, and the test MAP of the model it returns;
* ``EASE()``: refused before allocating (``InsufficientMemoryError``, its message recorded),
  unless the machine has the memory for its dense label x label matrices;
* co-occurrence (no training: score(j) = sum over the image's labels i of P(j | i)) and
  popularity, the baselines every peer in ``compare.py`` is measured against.

Test MAP is the mean reciprocal rank of each image's held-out label among all labels but its
training ones, on a fixed sample of ``--eval-images`` test images (seeded), as in
``defaults_sweep.py``: scoring 100,000 labels for every test image would take longer than the
training. Results: ``benchmarks/results/many_labels.json`` (``--output``).
"""

import time
from pathlib import Path

import harness  # first: one BLAS / OpenMP thread per process unless --threads says otherwise

import numpy as np  # noqa: E402

from vse_recsys import EASE, VSEEns  # noqa: E402
from vse_recsys.memory import InsufficientMemoryError  # noqa: E402


def test_images(test, limit):
    """A fixed random sample of at most ``limit`` of the images with a test label."""
    images = np.flatnonzero(test.getnnz(axis=1))
    if len(images) > limit:
        images = np.sort(np.random.default_rng(0).choice(images, size=limit, replace=False))
    return images


def main(argv=None):
    parser = harness.argument_parser(__doc__)
    parser.add_argument("--eval-images", type=int, default=10_000,
                        help="test images scored (a fixed sample; default 10,000)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="VSEEns training threads, one fit each (default 1 2)")
    parser.add_argument("--quick", action="store_true", help="generated-quick: a smoke run")
    parser.add_argument("--output", default=None,
                        help="results JSON (default benchmarks/results/many_labels.json)")
    args = parser.parse_args(argv)
    dataset = "generated-quick" if args.quick else "generated-100k"
    _, _, train, test = harness.get_splits(dataset)
    images = test_images(test, args.eval_images)
    record = dict(meta=harness.run_meta(__file__, argv, args, dataset=dataset,
                                        shape=list(train.shape), train_pairs=int(train.nnz),
                                        test_images=len(images)), runs=[])
    print(f"{dataset}: {train.shape[0]:,} images x {train.shape[1]:,} labels, "
          f"{train.nnz:,} training pairs; {len(images):,} test images scored", flush=True)

    def add(model, seconds, score_rows, **extra):
        started = time.perf_counter()
        value = harness.held_out_map(score_rows, train, test, images)
        run = dict(model=model, fit_seconds=round(seconds, 3), test_map=round(value, 5),
                   eval_seconds=round(time.perf_counter() - started, 1), **extra)
        record["runs"].append(run)
        print(f"  {model:<28} test MAP {value:.4f}, fit {seconds:.1f} s"
              + "".join(f", {key} {value}" for key, value in extra.items()), flush=True)

    for threads in args.threads:
        model = VSEEns(num_threads=threads, random_state=0)
        started = time.perf_counter()
        model.fit(train, show_progress=False)
        seconds = time.perf_counter() - started
        vectors = model.user_factors[images]
        labels_t = np.ascontiguousarray(model.item_factors.T)
        add(f"VSEEns() ({threads} thread{'s' * (threads > 1)})", seconds,
            lambda positions: vectors[positions] @ labels_t,
            epochs=len(model.fit_history), kept_epoch=model.best_iteration_,
            epoch_seconds=round(float(np.median([e["seconds"] for e in model.fit_history])),
                                3))

    ease = EASE()
    estimate = ease.estimate_memory(*train.shape, train.nnz)
    try:
        started = time.perf_counter()
        ease.fit(train, show_progress=False)
    except InsufficientMemoryError as error:
        record["ease"] = dict(refused=str(error), estimate_bytes=int(estimate.total))
        print(f"  EASE() refused: {error}", flush=True)
    else:
        weights_t = np.ascontiguousarray(ease.item_factors.T)
        rows = train[images]
        add("EASE()", time.perf_counter() - started, lambda positions: rows[positions] @ weights_t)

    started = time.perf_counter()
    scores = harness.cooccurrence_scorer(train)
    add("co-occurrence", time.perf_counter() - started,
        lambda positions: scores(images[positions]))
    popularity = np.asarray(train.getnnz(axis=0), dtype=np.float32)
    add("popularity", 0.0, lambda positions: np.broadcast_to(popularity,
                                                             (len(positions), popularity.size)))

    output = Path(args.output) if args.output else (
        harness.RESULTS_DIR / ("many_labels_quick.json" if args.quick else "many_labels.json"))
    harness.write_json(output, record)
    print(f"wrote {harness.portable_path(output)}")


if __name__ == "__main__":
    main()
