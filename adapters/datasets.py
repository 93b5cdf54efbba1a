"""The project's shared real datasets: where they are and how to load each by name."""

import os
from pathlib import Path

from .movielens import read_movielens
from .mulan import read_mulan
from .nuswide import read_nuswide_pairs

__all__ = ["resolve_data_dir", "load_dataset", "DATASETS"]

ENV_VAR = "VSE_RECSYS_DATA"

# name -> (reader, paths relative to the data folder)
DATASETS = {
    "corel5k": (read_mulan, ("corel5k/Corel5k-sparse.arff", "corel5k/Corel5k.xml")),
    "delicious": (read_mulan, ("delicious/delicious.arff", "delicious/delicious.xml")),
    "nuswide81": (read_nuswide_pairs, ("nuswide81/nuswide81_pairs.tsv.gz",)),
    "movielens-100k": (read_movielens, ("movielens-100k/u.data",)),
}


def resolve_data_dir(path=None):
    """Find the folder of the shared real datasets.

    Tried in order: `path`; the ``VSE_RECSYS_DATA`` environment variable; ``../shared/data``
    from the current directory; ``../shared/data`` beside the repository this package was
    loaded from. An explicit `path` or variable that does not exist is an error, not skipped.

    Parameters
    ----------
    path : path-like, optional

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileNotFoundError
        Saying what was tried and how to point at the data.
    """
    if path is not None:
        return _existing(Path(path), "the given data_dir")
    configured = os.environ.get(ENV_VAR)
    if configured:
        return _existing(Path(configured), f"${ENV_VAR}")
    # adapters/ sits at the repository root, so the repository's parent is parents[2]
    candidates = [
        Path.cwd().parent / "shared" / "data",
        Path(__file__).resolve().parents[2] / "shared" / "data",
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    tried = ", ".join(str(candidate) for candidate in candidates)
    raise FileNotFoundError(
        f"the shared datasets were not found (tried {tried}); pass data_dir=... or set "
        f"{ENV_VAR} to the folder that holds corel5k/, delicious/, nuswide81/, movielens-100k/"
    )


def _existing(path, origin):
    if not path.is_dir():
        raise FileNotFoundError(f"{origin} is {path}, which is not a folder")
    return path


def load_dataset(name, data_dir=None, **options):
    """Load one of the shared datasets by name.

    Parameters
    ----------
    name : {"corel5k", "delicious", "nuswide81", "movielens-100k"}
        ``corel5k`` is the union file (5,000 images); ``movielens-100k`` keeps ratings >= 4.
    data_dir : path-like, optional
        The data folder (see :func:`resolve_data_dir`).
    **options
        Passed to the reader (e.g. ``min_rating=3`` for MovieLens, ``split="train"`` for
        NUS-WIDE).

    Returns
    -------
    ImageLabels
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    reader, files = DATASETS[name]
    root = resolve_data_dir(data_dir)
    return reader(*(root / file for file in files), **options)
