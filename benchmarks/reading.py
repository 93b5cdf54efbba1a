"""How long the adapters take to read the shared datasets and to generate the demo data.

    python benchmarks/reading.py                       # ../shared/data or $VSE_RECSYS_DATA
    python benchmarks/reading.py --data-dir PATH --repeats 5

Prints, per dataset, the fastest of ``--repeats`` reads (seconds) and the counts read, then the
time of ``generate_image_labels(200_000, 5_000, 5)`` (about 1M pairs, the throughput
benchmark's size). The goal is "seconds, not minutes" for the delicious ARFF and the NUS-WIDE
pairs file; these numbers are what the closing note of the adapters issue quotes.
"""

import argparse
import time

from vse_recsys.adapters import generate_image_labels, load_dataset, resolve_data_dir
from vse_recsys.adapters.datasets import DATASETS


def fastest(function, repeats):
    """(result, fastest wall-clock seconds) of `repeats` calls of `function`."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return result, best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None,
                        help="folder of the shared datasets (default: $VSE_RECSYS_DATA or "
                             "../shared/data)")
    parser.add_argument("--repeats", type=int, default=3, help="reads per dataset (default 3)")
    args = parser.parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir)

    print(f"{'dataset':<22}{'seconds':>9}{'images':>9}{'labels':>8}{'pairs':>9}")
    for name in DATASETS:
        data, seconds = fastest(lambda: load_dataset(name, data_dir), args.repeats)
        print(f"{name:<22}{seconds:>9.3f}{data.n_images:>9}{data.n_labels:>8}{data.n_pairs:>9}")
    data, seconds = fastest(
        lambda: generate_image_labels(200_000, 5_000, 5.0, random_state=0), args.repeats
    )
    print(f"{'generated 200k x 5k':<22}{seconds:>9.3f}{data.n_images:>9}{data.n_labels:>8}"
          f"{data.n_pairs:>9}")


if __name__ == "__main__":
    main()
