"""Tagging throughput on Dask: images per second with 1 and 2 local worker processes.

    python benchmarks/dask_tagging.py                      # 10M new images, 1,000 labels
    python benchmarks/dask_tagging.py --images 1000000 --labels 20000
    python benchmarks/dask_tagging.py --quick              # tiny smoke run, seconds

A model (``VSEEns()`` defaults, ``--epochs`` epochs: the accuracy is not the point) is fitted on
``--train-images`` generated images (seed 0); ``--images`` new images (seed 1, the same label
count, 10 labels an image) are written as a Parquet dataset of (image, label) pairs,
``--images-per-part`` images a part file, partitioned by image as Spark or Dask write one.
Then ``vse_recsys.distributed.tag_parquet`` tags them, top 10 labels an image, on a
``LocalCluster`` of 1 and of 2 single-threaded worker processes (``--workers``); the time
includes starting the cluster, shipping the model, reading every part and writing every
output part. Each run checks that every image got its 10 labels, once.
"""

import shutil
import tempfile
import time
from pathlib import Path

import harness  # its results store; it sets one BLAS thread, as each worker here has one

import numpy as np  # noqa: E402


def write_parts(user_items, folder, images_per_part, first_id):
    """The pairs of ``user_items`` as Parquet part files of ``images_per_part`` images each
    (image IDs from ``first_id``); returns the number of parts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    parts = 0
    for start in range(0, user_items.shape[0], images_per_part):
        stop = min(user_items.shape[0], start + images_per_part)
        lo, hi = user_items.indptr[start], user_items.indptr[stop]
        images = np.repeat(np.arange(start, stop, dtype=np.int64) + first_id,
                           np.diff(user_items.indptr[start:stop + 1]))
        table = pa.table({"image": images, "label": user_items.indices[lo:hi].astype(np.int64)})
        pq.write_table(table, folder / f"part-{parts:05d}.parquet")
        parts += 1
    return parts


def main(argv=None):
    parser = harness.argument_parser(__doc__)
    parser.add_argument("--images", type=int, default=10_000_000, help="new images to tag")
    parser.add_argument("--labels", type=int, default=1_000, help="labels of the model")
    parser.add_argument("--train-images", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images-per-part", type=int, default=250_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--work-dir", default=None,
                        help="where the Parquet input and output go (default: a temporary "
                        "folder, removed at the end)")
    parser.add_argument("--output", default=None,
                        help="results JSON (default benchmarks/results/dask_tagging.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.labels, args.train_images, args.images_per_part = 4_000, 50, 2_000, 1_000

    import pyarrow.parquet as pq
    from dask.distributed import Client, LocalCluster

    from vse_recsys import VSEEns
    from vse_recsys.adapters import generate_image_labels
    from vse_recsys.annotator import Annotator
    from vse_recsys.distributed import tag_parquet

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="dask-tagging-"))
    # (the work folder is a machine path: not part of the record)
    record = dict(meta=harness.run_meta(__file__, argv, args), runs=[])
    record["meta"]["args"].pop("work_dir", None)
    try:
        started = time.perf_counter()
        train = generate_image_labels(n_images=args.train_images, n_labels=args.labels,
                                      labels_per_image=10, random_state=0)
        model = VSEEns(iterations=args.epochs, random_state=0)
        annotator = Annotator.from_dataset(train, model).fit(show_progress=False)
        record["fit_seconds"] = time.perf_counter() - started

        started = time.perf_counter()
        new = generate_image_labels(n_images=args.images, n_labels=args.labels,
                                    labels_per_image=10, random_state=1).user_items
        parts = write_parts(new, work / "pairs", args.images_per_part, first_id=10**9)
        record.update(pairs=int(new.nnz), parts=parts,
                      prepare_seconds=time.perf_counter() - started)
        del new
        print(f"{args.images:,} new images, {record['pairs']:,} pairs in {parts} parts; model "
              f"of {args.labels:,} labels fitted in {record['fit_seconds']:.0f} s", flush=True)

        for workers in args.workers:
            output = work / f"tags-{workers}"
            started = time.perf_counter()
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                summary = tag_parquet(annotator, work / "pairs", output, N=10, client=client)
            seconds = time.perf_counter() - started
            images = pq.read_table(output, columns=["image"]).column("image").to_numpy()
            counts = np.unique(images, return_counts=True)[1]
            assert len(counts) == args.images and (counts == 10).all(), "images lost or doubled"
            run = dict(workers=workers, seconds=seconds, images=summary["images"],
                       rows=summary["rows"], images_per_second=summary["images"] / seconds)
            record["runs"].append(run)
            print(f"{workers} worker(s): {seconds:.1f} s, {run['images_per_second']:,.0f} "
                  f"images/s", flush=True)
            shutil.rmtree(output)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    if len(record["runs"]) == 2:
        record["speedup"] = record["runs"][0]["seconds"] / record["runs"][1]["seconds"]
        print(f"2 workers vs 1: {record['speedup']:.2f}x")
    output = Path(args.output or harness.RESULTS_DIR / ("dask_tagging_quick.json" if args.quick
                                                        else "dask_tagging.json"))
    harness.write_json(output, record)


if __name__ == "__main__":
    main()
