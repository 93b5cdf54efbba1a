"""How much memory a fit needs, and how much the machine has: fail fast instead of being killed.

``VSEEns.fit`` calls :func:`check_memory` before it copies the training matrix or allocates a
factor. When the estimate exceeds the memory available to this process (``MemAvailable`` of
``/proc/meminfo``, and the cgroup limit of a container when there is one) it raises
:class:`InsufficientMemoryError` with the estimate and its main terms, instead of letting the
operating system kill the process halfway through. Where the available memory cannot be read
(not Linux), nothing is checked. ``VSE_RECSYS_MEMORY_CHECK=0`` turns the check off (e.g. to rely
on swap).

The estimate of :func:`estimate_fit_memory` (bytes; ``k`` factors, ``w = k + 1`` with a label
bias, else ``k``; ``s`` bytes per value, 4 for float32, 8 for float64; ``T`` threads; ``nnz``
pairs; ``V`` images held out for early stopping (``_holdout.held_out_images``, with every
image counted as having two labels: ``validation_fraction`` of them, at least 1,000 or all
while that is at most that share of the pairs, at most 10,000 and 2^28 / n_labels); ``M`` the
most labels of one image; "trained" the arrays training moves: the label vectors ``n_labels * w * s``, plus
the label inputs ``n_labels * k * s`` (composed image vectors) or the image vectors
``n_images * w * s`` (free ones))::

    total = training matrix + max(validation split, initialisation, training, finish)

    training matrix    14 nnz + 16 (n_images + 1)      fit's canonical copy of the input
                                                       (0 when the input is canonical already)
    validation split   9 nnz                           early stopping: making the split
    initialisation     trained + 8 min(2^15, R) w      new vectors, drawn in float64 blocks of
                                                       at most 2^15 rows of the largest table
                                                       (R: n_labels, or n_images with free ones)
    training           (2 + adagrad) x trained         the vectors, the copy of what fit keeps
                                                       (the best or last epoch), AdaGrad's sums
                       + 34 n_images  (composed)       the epoch's image order, or
                       + 18 nnz + 8 T ceil(nnz/4096)   (free) the epoch's shuffled pairs
                       + T ((4 + M) 16 s + 8 M)        composed: each thread's visit scratch
                       + 8 nnz + 16 (n_images + 1)     early stopping: the training pairs
                       + V (w s + 4 w) + 4 w n_labels          and scoring the held out
                       + 6 min(V n_labels, 2^22)
                       + 12 w n_labels + T (8 n_labels + 24 KiB)   adaptive sampler
                       + 8 n_labels + 8 max(n_images, n_labels) + 256 KiB
                                                       WARP weights, divergence check, other
    finish             trained (new models) + n_images w s    composed: the training images'
                       + 20 max(2^20, M) + 2^15 (8 k + 64)    vectors, made from all their
                                                       labels at the end, in blocks of at most
                                                       2^15 images and 2^20 pairs (float64)

When a fit continues from fitted vectors, they exist already: only their copy counts, and there
is no initialisation. ``estimate_ease_memory`` documents EASE's.
"""

import os
from pathlib import Path
from typing import NamedTuple

from ._holdout import held_out_images

__all__ = [
    "InsufficientMemoryError",
    "MemoryEstimate",
    "available_memory",
    "estimate_ease_memory",
    "estimate_fit_memory",
]

_RADIX_SCRATCH = 3 * 2048 * 4  # per thread: the radix sort's three digit-count tables (uint32)
_FIXED_OVERHEAD = 64 * 1024  # RNG states, counters, progress bar and other Python objects
_EINSUM_BUFFERS = 3 * 8192 * 8  # the row-norm einsum casts in buffers of 8,192 float64 values
# terms that are not part of the training phase
_OUTSIDE_TRAINING = ("training matrix", "initialisation", "validation split", "image vectors")


class InsufficientMemoryError(MemoryError):
    """A fit would need more memory than this process has; raised before allocating it."""


class MemoryEstimate(NamedTuple):
    """Bytes a fit needs at its peak: ``total``, and ``terms`` (name -> bytes) it is made of.

    ``terms["factors"]`` is the training phase's (with the copy); see the module notes for how
    the terms combine into ``total``.
    """

    total: int
    terms: dict

    def __str__(self):
        parts = ", ".join(f"{name} {_size(size)}" for name, size in self.terms.items() if size)
        return f"{_size(self.total)} ({parts})"


def estimate_fit_memory(
    n_images, n_labels, nnz, factors, *, itemsize=4, adaptive=True, num_threads=1,
    new_model=True, image_vectors="free", label_bias=False, adagrad=False,
    early_stopping=False, validation_fraction=0.1, max_labels=None, canonical_input=False,
):
    """Estimate the peak memory (bytes) ``VSEEns.fit`` allocates; see the module notes.

    Parameters
    ----------
    n_images, n_labels : int
        Shape of the training matrix.
    nnz : int
        Its stored entries (positive pairs).
    factors : int
        Dimension of the vectors (a label bias adds a column).
    itemsize : int
        Bytes per value: 4 (float32) or 8 (float64).
    adaptive : bool
        Whether the adaptive sampler is used (its label orders are the largest term when
        labels are many).
    num_threads : int
        Training threads (each has its own scratch).
    new_model : bool
        False when continuing a fit: the vectors exist already.
    image_vectors : {"free", "labels", "labels+free"}
        How image vectors are made (composed ones need label inputs, not one vector per image
        during training, and a visit scratch per thread).
    label_bias, adagrad, early_stopping : bool
        A bias column; AdaGrad's accumulators (one value per trained value); a validation
        split and its scoring.
    validation_fraction : float
        Early stopping's share of held-out images (``VSEEns.validation_fraction``).
    max_labels : int, optional
        The most labels of one image (sizes the composed model's per-thread scratch; at most
        ``n_labels`` when not given).
    canonical_input : bool
        The matrix is canonical binary CSR already, so fit does not copy it.

    Returns
    -------
    MemoryEstimate
    """
    n_images, n_labels, nnz, k = (int(v) for v in (n_images, n_labels, nnz, factors))
    threads = max(1, int(num_threads))
    width = k + bool(label_bias)
    composed = image_vectors != "free"
    # the arrays training moves
    trained = n_labels * width * itemsize
    if composed:
        trained += n_labels * k * itemsize
        if image_vectors == "labels+free":
            trained += n_images * k * itemsize
    else:
        trained += n_images * width * itemsize
    most = n_labels if max_labels is None else min(int(max_labels), n_labels)
    stride = -(-width // 16) * 16
    # (every image may have two labels: an upper bound of what split_validation holds out)
    validation_images = (held_out_images(n_images, nnz, n_labels, validation_fraction)
                         if early_stopping else 0)
    terms = {
        "training matrix": 0 if canonical_input else 14 * nnz + 16 * (n_images + 1),
        # the vectors, the copy of what fit keeps (best or last epoch) and AdaGrad's sums
        "factors": (2 + bool(adagrad)) * trained if new_model else (1 + bool(adagrad)) * trained,
        # normal draws in float64 blocks of at most 2^15 rows (model._BLOCK_ROWS) of the
        # largest table drawn: the labels', or the free image vectors'
        "initialisation": 8 * min(n_labels if image_vectors == "labels"
                                  else max(n_images, n_labels), 1 << 15) * width
        if new_model else 0,
        "pairs": (
            34 * n_images + 8 * threads * min(65536, -(-n_images // 4096)) if composed
            else 18 * nnz + 8 * threads * min(65536, -(-nnz // 4096))
        ),
        "visit scratch": (
            threads * ((4 + most) * stride * itemsize + 8 * most + 64) if composed
            else threads * (2 * width * 8 + 64)
        ),
        # the split's copy of the pairs, and scoring up to 2,048 held-out images at a time
        "validation pairs": 8 * nnz + 16 * (n_images + 1) if early_stopping else 0,
        "validation scoring": (
            # the held-out images' vectors, the label vectors transposed (float32), their
            # scores in blocks of at most 2^22 (float32, and a comparison's and a temporary's
            # byte each)
            validation_images * (width * itemsize + 4 * width) + 4 * width * n_labels + 6 * min(
                validation_images * n_labels, max(n_labels, 1 << 22)) if early_stopping else 0
        ),
        "validation split": 9 * nnz if early_stopping else 0,
        # composed: the training images' vectors, made at the end from every label, a block
        # of images at a time (its CSR slice and float64 copy, and its float64 sums)
        "image vectors": (
            n_images * width * itemsize + 20 * min(nnz, max(1 << 20, most))
            + min(n_images, 1 << 15) * (8 * k + 64) if composed else 0
        ),
        "adaptive sampler": (
            12 * width * n_labels + threads * (8 * n_labels + _RADIX_SCRATCH) if adaptive else 0
        ),
        "WARP weights": 8 * max(n_labels, 2),
        "divergence check": 8 * max(n_images, n_labels) + _EINSUM_BUFFERS,
        "other": _FIXED_OVERHEAD,
    }
    # the phases after the input's copy, each freed before the next: the validation split,
    # the initialisation (float64 draws), training, and the composed images' vectors
    initialisation = (trained + terms["initialisation"]) if new_model else 0
    training = sum(value for name, value in terms.items() if name not in _OUTSIDE_TRAINING)
    # (a continued fit's vectors were allocated before it: only a new model's count here)
    # (early stopping's copy of the pairs is freed before it)
    finish = (trained if new_model else 0) + terms["image vectors"] + terms["other"]
    phases = (terms["validation split"], initialisation, training, finish)
    return MemoryEstimate(terms["training matrix"] + max(phases), terms)


def estimate_ease_memory(n_images, n_labels, nnz, *, itemsize=4):
    """Estimate the peak memory (bytes) ``EASE.fit`` allocates.

    ::

        training matrix   12 * nnz + 16 * (n_images + 1)     the checked CSR copy
        gram inputs       48 * nnz + 16 * (n_labels + 1)     float64 CSR and CSC copies and
                                                             their float32 predecessors
        gram              8 * n_labels**2                    XᵀX + λI, then its inverse (in place)
        weights           itemsize * n_labels**2             B, kept
        scratch           20 * min(n_labels**2, 2**22)       a block of the Gram product (at most;
                          + 8 * min(n_labels, 1024) * n_labels   sparse when labels rarely meet),
                                                             and of the mirrored triangle
    """
    n_images, n_labels, nnz = int(n_images), int(n_labels), int(nnz)
    terms = {
        "training matrix": 12 * nnz + 16 * (n_images + 1),
        "gram inputs": 48 * nnz + 16 * (n_labels + 1),
        "gram": 8 * n_labels * n_labels,
        "weights": int(itemsize) * n_labels * n_labels,
        "scratch": 20 * min(n_labels * n_labels, 2**22) + 8 * min(n_labels, 1024) * n_labels,
        "other": _FIXED_OVERHEAD,
    }
    return MemoryEstimate(sum(terms.values()), terms)


def available_memory(meminfo="/proc/meminfo", cgroup_root="/sys/fs/cgroup",
                     proc_cgroup="/proc/self/cgroup"):
    """Bytes this process can still allocate without swapping, or None when unknown.

    The smaller of the kernel's ``MemAvailable`` and the room left under this process's
    cgroup memory limit (v2 ``memory.max``, or v1 ``memory.limit_in_bytes``), whichever of
    them can be read. The paths are parameters so that tests can point them at fake files.
    """
    known = [
        value
        for value in (_meminfo_available(meminfo), _cgroup_room(cgroup_root, proc_cgroup))
        if value is not None
    ]
    return min(known) if known else None


_VSEENS_ADVICE = (
    "Use fewer factors, dtype=float32, sampler='uniform' (no per-factor label orders) or fewer "
    "threads, or train on a subset"
)


def check_memory(estimate, what="this fit", advice=_VSEENS_ADVICE):
    """Raise InsufficientMemoryError when ``estimate`` exceeds :func:`available_memory`;
    ``advice`` says what to change."""
    if os.environ.get("VSE_RECSYS_MEMORY_CHECK", "").strip().lower() in {"0", "false", "no", "off"}:
        return
    available = available_memory()
    if available is None or estimate.total <= available:
        return
    raise InsufficientMemoryError(
        f"{what} needs about {estimate}, but only {_size(available)} of memory is available. "
        f"{advice}; set VSE_RECSYS_MEMORY_CHECK=0 to try anyway (e.g. with swap). The formula "
        f"is in the README's 'Memory' section."
    )


def _meminfo_available(path):
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    value, *unit = line.split()[1:]
                    return int(value) * (1024 if unit == ["kB"] else 1)
    except (OSError, ValueError):
        pass
    return None


def _cgroup_room(root, proc_cgroup):
    """Limit minus usage of this process's memory cgroup (v2, else v1); None if unlimited."""
    root = Path(root)
    v2_path = v1_path = ""
    try:
        for line in Path(proc_cgroup).read_text(encoding="utf-8").splitlines():
            hierarchy, controllers, group = line.split(":", 2)
            if hierarchy == "0" and controllers == "":
                v2_path = group
            elif "memory" in controllers.split(","):
                v1_path = group
    except (OSError, ValueError):
        pass
    candidates = [  # (limit file, usage file), most specific first
        (root / v2_path.lstrip("/") / "memory.max", root / v2_path.lstrip("/") / "memory.current"),
        (root / "memory.max", root / "memory.current"),
        (
            root / "memory" / v1_path.lstrip("/") / "memory.limit_in_bytes",
            root / "memory" / v1_path.lstrip("/") / "memory.usage_in_bytes",
        ),
        (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes"),
    ]
    for limit_file, usage_file in candidates:
        limit, usage = _read_number(limit_file), _read_number(usage_file)
        if limit is None:
            continue
        if limit >= 2**60:  # "max", or v1's "unlimited" (a page-rounded LONG_MAX)
            return None
        return max(0, limit - (usage or 0))
    return None


def _read_number(path):
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        return None
    if text == "max":
        return 2**63 - 1
    try:
        return int(text)
    except ValueError:
        return None


def _size(nbytes):
    """``1536`` -> ``"1.5 KiB"``."""
    if nbytes < 1024:
        return f"{int(nbytes):,} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        nbytes /= 1024
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:,.1f} {unit}"

