"""``VSEEns``: the VSE-ens label-ranking model as an ``implicit`` matrix-factorisation model."""

import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse
from implicit.cpu.matrix_factorization_base import MatrixFactorizationBase
from implicit.recommender_base import ModelFitError
from tqdm.auto import tqdm

from . import _sampler

LOSSES = {"hinge": _sampler.Loss.HINGE, "warp": _sampler.Loss.WARP, "bpr": _sampler.Loss.BPR}
SAMPLERS = {"uniform": _sampler.Sampler.UNIFORM, "adaptive": _sampler.Sampler.ADAPTIVE}

class DivergenceError(ModelFitError, FloatingPointError):
    """Training produced non-finite factors (the learning rate is too high for the data)."""


class VSEEns(MatrixFactorizationBase):
    """VSE-ens: matrix factorisation ranked by a margin loss with adaptive negative sampling.

    Images are users and labels are items of ``implicit``'s interface: ``fit`` takes an
    (n_images, n_labels) CSR matrix whose non-zero entries are the labels an image has, and
    ``recommend``, ``similar_items``, ``similar_users``, ``save``/``load`` and
    ``implicit.evaluation`` work as for implicit's BPR. The score of label ``a`` for image
    ``i`` is the dot product ``user_factors[i] @ item_factors[a]``.

    The default configuration is VSE-ens (Guo et al., AAAI 2018): hinge loss, one negative per
    positive pair, drawn by the adaptive sampler of Rendle & Freudenthaler (WSDM 2014), which
    prefers the labels the current model ranks high for the image, in O(factors) per draw.
    ``loss`` and ``sampler`` select the baselines on the same engine: uniform hinge, WARP
    (``loss="warp", sampler="uniform"``), BPR and AOBPR (``loss="bpr"``).

    Parameters
    ----------
    factors : int
        Dimension k of the image and label vectors.
    learning_rate : float
        SGD step size.
    regularization : float
        L2 weight decay applied to the three vectors of each update.
    iterations : int
        Epochs; one epoch visits every positive (image, label) pair once, in a fresh random
        order.
    margin : float
        Hinge / WARP margin: a negative ``n`` violates when ``margin + s(i,n) > s(i,p)``.
    loss : {"hinge", "warp", "bpr"}
        ``hinge``: ``max(0, margin - s(i,p) + s(i,n))``, one negative per pair (VSE-ens).
        ``warp``: uniform draws until a violator, step scaled by ``sum_{j<=rank} 1/j`` of the
        estimated rank ``floor((n_labels - 1) / draws)`` (Weston et al. 2011).
        ``bpr``: ``-ln sigmoid(s(i,p) - s(i,n))`` (Rendle et al. 2009).
    sampler : {"adaptive", "uniform"}
        How negatives are drawn. ``adaptive`` needs ``loss`` "hinge" or "bpr" (WARP's rank
        estimate assumes uniform draws).
    rank_decay : float
        lambda of the adaptive sampler as a fraction of the label count: a label at rank ``r``
        of a factor's order is drawn with probability proportional to
        ``exp(-r / (rank_decay * n_labels))``. Small values sample only the very top.
    refresh_interval : int or None
        Sampled pairs between two refreshes of the adaptive sampler's per-factor label orders
        and spreads. ``None``: ``n_labels * ln(n_labels)`` (the paper's choice).
    max_sampled : int
        WARP: most uniform draws per positive pair before giving up on it.
    verify_negative_samples : bool
        Redraw a sampled label that is a positive of the image. With ``False`` sampling is a
        little faster, and a positive is sometimes used as a negative.
    init_scale : float
        Standard deviation of the normal initialisation of all factors.
    fold_in_iterations : int
        Passes over a new image's labels when it is folded into the fitted model
        (``recommend(..., recalculate_user=True)``, ``partial_fit_users``).
    num_threads : int
        Threads for training and batch recommendation; 0 uses every core this process may run
        on. With one thread and a fixed ``random_state`` two fits are bit-identical; with more,
        threads update shared factors without locks (Hogwild) and results vary slightly.
    random_state : None, int, numpy.random.Generator or numpy.random.RandomState
        Seed for initialisation, the epoch orders and the samplers.
    dtype : numpy dtype
        ``float32`` (default) or ``float64`` factors.

    Attributes
    ----------
    user_factors, item_factors : ndarray
        Image and label vectors, shapes (n_images, factors) and (n_labels, factors).
    fit_history : list of dict
        Per-epoch training statistics of the last ``fit`` (see ``fit``).

    Notes
    -----
    Calling ``fit`` on a fitted model continues training from its factors (like implicit's
    BPR), provided the matrix has the same shape. With an int ``random_state`` each continued
    fit draws from its own stream (derived from the seed and the number of earlier continued
    fits), so ``fit`` called twice with 10 iterations is not 10 epochs replayed twice.

    Defaults (lr 0.03, regularization 0.03, rank_decay 0.3, 28 iterations) were chosen on
    validation splits of Corel5k, delicious, NUS-WIDE-81 and MovieLens-100k; see
    ``benchmarks/results/defaults.md``. For ``loss="warp"`` use about lr 0.003 with early
    stopping; for ``loss="bpr"`` about lr 0.1, regularization 0.001.
    """

    def __init__(
        self,
        factors=64,
        learning_rate=0.03,
        regularization=0.03,
        iterations=28,
        margin=1.0,
        loss="hinge",
        sampler="adaptive",
        rank_decay=0.3,
        refresh_interval=None,
        max_sampled=100,
        verify_negative_samples=True,
        init_scale=0.01,
        fold_in_iterations=20,
        num_threads=0,
        random_state=None,
        dtype=np.float32,
    ):
        super().__init__(num_threads=num_threads)
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.margin = margin
        self.loss = loss
        self.sampler = sampler
        self.rank_decay = rank_decay
        self.refresh_interval = refresh_interval
        self.max_sampled = max_sampled
        self.verify_negative_samples = verify_negative_samples
        self.init_scale = init_scale
        self.fold_in_iterations = fold_in_iterations
        self.random_state = random_state
        self.dtype = np.dtype(dtype)
        self.fit_history = []

    # -- training ---------------------------------------------------------------------------

    def fit(self, user_items, show_progress=True, callback=None):
        """Train on an (n_images, n_labels) sparse matrix of positive labels.

        Parameters
        ----------
        user_items : scipy.sparse CSR matrix
            Non-zero entries are an image's labels (values are not used as weights). Other
            sparse formats are converted with a warning.
        show_progress : bool
            Show a tqdm bar whose postfix reports the fraction of sampled negatives that
            violated the margin and the fraction of pairs skipped (no negative found).
        callback : callable, optional
            ``callback(epoch, elapsed_seconds, stats)`` after every epoch; ``stats`` holds the
            epoch's counters: pairs, skipped, violations, updates, draws, refreshes,
            refresh_seconds, threads_used, violation_rate, skip_rate.

        Raises
        ------
        DivergenceError
            When an epoch leaves non-finite factors; the model keeps the factors of the last
            finite epoch.
        KeyboardInterrupt
            Ctrl-C stops the kernels within milliseconds; the model keeps the factors of the
            last completed epoch (a model that was not fitted before and completed no epoch
            stays unfitted), and the interrupt propagates.
        """
        self._check_params()
        user_items = check_user_items(user_items)
        was_fitted = self.user_factors is not None
        generator = resolve_random_state(self.random_state)
        if was_fitted and isinstance(self.random_state, (int, np.integer)):
            # a continued fit must not replay the first fit's pair orders and sampler streams
            self._continued_fits = getattr(self, "_continued_fits", 0) + 1
            generator = np.random.default_rng([int(self.random_state), self._continued_fits])
        self._init_factors(*user_items.shape, generator)
        # the factors of the last completed epoch: restored on divergence or Ctrl-C
        self._last_good = (self.user_factors.copy(), self.item_factors.copy())
        self.fit_history = []
        self._user_norms = self._item_norms = None
        try:
            self._run_epochs(user_items, generator, show_progress, callback)
        except KeyboardInterrupt:
            if was_fitted or self.fit_history:
                self.user_factors, self.item_factors = self._last_good
            else:  # interrupted in the first epoch of a fresh model: it stays unfitted
                self.user_factors = self.item_factors = None
            raise
        finally:
            del self._last_good
            self._user_norms = self._item_norms = None
        return self

    def _run_epochs(self, user_items, generator, show_progress, callback):
        n_images, n_labels = user_items.shape
        num_threads = self._threads()
        adaptive = None
        if self.sampler == "adaptive":
            adaptive = _sampler.AdaptiveSampler(
                n_labels, self.factors, self.rank_decay * n_labels, num_threads
            )
        indptr = user_items.indptr.astype(np.int64)
        indices = user_items.indices
        pair_images = np.repeat(np.arange(n_images, dtype=np.int32), np.diff(indptr))
        rng_states = _sampler.make_rng_states(generator, num_threads)
        warp_weights = _sampler.warp_rank_weights(n_labels)

        with tqdm(total=self.iterations, disable=not show_progress, desc="VSEEns") as progress:
            for epoch in range(self.iterations):
                started = time.perf_counter()
                order = generator.permutation(len(indices))
                stats = _sampler.train_epoch(
                    self.user_factors,
                    self.item_factors,
                    indptr,
                    indices,
                    pair_images[order],
                    indices[order],
                    LOSSES[self.loss],
                    SAMPLERS[self.sampler],
                    adaptive,
                    self.learning_rate,
                    self.regularization,
                    self.margin,
                    self.max_sampled,
                    self.verify_negative_samples,
                    warp_weights,
                    rng_states,
                    self._refresh_interval(n_labels),
                    num_threads,
                )
                elapsed = time.perf_counter() - started
                self._keep_if_finite(epoch)

                stats["epoch"] = epoch
                stats["seconds"] = elapsed
                stats["violation_rate"] = stats["violations"] / max(1, stats["pairs"])
                stats["skip_rate"] = stats["skipped"] / max(1, stats["pairs"])
                self.fit_history.append(stats)
                progress.update(1)
                progress.set_postfix(
                    violated=f"{stats['violation_rate']:.1%}", skipped=f"{stats['skip_rate']:.1%}"
                )
                if callback is not None:
                    callback(epoch, elapsed, stats)

    def _keep_if_finite(self, epoch):
        """Remember this epoch's factors, or roll back to the last finite ones and raise."""
        good_users, good_items = self._last_good
        if not (_all_finite(self.user_factors) and _all_finite(self.item_factors)):
            self.user_factors, self.item_factors = good_users, good_items
            raise DivergenceError(
                f"training diverged in epoch {epoch + 1} of {self.iterations}: the factors "
                f"became NaN or infinite with learning_rate={self.learning_rate}. Try a lower "
                f"learning_rate (e.g. {self.learning_rate / 10:g}) or a higher regularization. "
                f"The model keeps the factors of the last finite epoch."
            )
        np.copyto(good_users, self.user_factors)
        np.copyto(good_items, self.item_factors)

    def _check_params(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {self.sampler!r}")
        if self.loss == "warp" and self.sampler == "adaptive":
            raise ValueError(
                "loss='warp' needs sampler='uniform': WARP estimates a positive's rank from the "
                "number of uniform draws it takes to find a violating label, which adaptive "
                "draws would bias. Use loss='hinge' with sampler='adaptive' (VSE-ens) instead."
            )
        _check_number("factors", self.factors, integer=True, low=1)
        _check_number("iterations", self.iterations, integer=True, low=0)
        _check_number("max_sampled", self.max_sampled, integer=True, low=1)
        _check_number("learning_rate", self.learning_rate, low=0, strict=True)
        _check_number("regularization", self.regularization, low=0)
        _check_number("margin", self.margin, low=0)
        _check_number("rank_decay", self.rank_decay, low=0, strict=True)
        _check_number("init_scale", self.init_scale, low=0, strict=True)
        _check_number("fold_in_iterations", self.fold_in_iterations, integer=True, low=1)
        _check_number("num_threads", self.num_threads, integer=True, low=0)
        if self.refresh_interval is not None:
            _check_number("refresh_interval", self.refresh_interval, integer=True, low=1)
        if np.dtype(self.dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")

    def _threads(self):
        if self.num_threads:
            return int(self.num_threads)
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1

    def _refresh_interval(self, n_labels):
        if self.refresh_interval is not None:
            return int(self.refresh_interval)
        return max(1, math.ceil(n_labels * math.log(max(n_labels, 2))))

    def _init_factors(self, n_images, n_labels, generator):
        dtype = np.dtype(self.dtype)
        if self.user_factors is not None and self.item_factors is not None:
            expected = ((n_images, self.factors), (n_labels, self.factors))
            actual = (self.user_factors.shape, self.item_factors.shape)
            if actual != expected:
                raise ValueError(
                    f"this model is fitted with {actual[0][0]} images x {actual[1][0]} labels and "
                    f"{actual[0][1]} factors, but user_items is {n_images} x {n_labels} with "
                    f"factors={self.factors}. Re-fitting continues from the fitted factors and "
                    f"needs the same shape; create a new VSEEns to train from scratch."
                )
            self.user_factors = np.ascontiguousarray(self.user_factors, dtype=dtype)
            self.item_factors = np.ascontiguousarray(self.item_factors, dtype=dtype)
            return
        scale = self.init_scale
        self.user_factors = generator.normal(0, scale, (n_images, self.factors)).astype(dtype)
        self.item_factors = generator.normal(0, scale, (n_labels, self.factors)).astype(dtype)

    # -- prediction -------------------------------------------------------------------------

    def recommend(
        self,
        userid,
        user_items,
        N=10,
        filter_already_liked_items=True,
        filter_items=None,
        recalculate_user=False,
        items=None,
    ):
        self._check_fitted()
        if not recalculate_user:  # folded-in images need not be in the model
            _check_ids("userid", userid, self.user_factors.shape[0], "images")
        if user_items is not None and scipy.sparse.issparse(user_items):
            if user_items.shape[1] != self.item_factors.shape[0]:
                raise ValueError(
                    f"user_items has {user_items.shape[1]} columns but the model knows "
                    f"{self.item_factors.shape[0]} labels; pass the rows of the training matrix"
                )
            if not isinstance(user_items, scipy.sparse.csr_matrix):
                user_items = scipy.sparse.csr_matrix(user_items)
        if filter_items is not None:
            _check_ids("filter_items", filter_items, self.item_factors.shape[0], "labels")
        if items is not None:
            _check_ids("items", items, self.item_factors.shape[0], "labels")
        return super().recommend(
            userid,
            user_items,
            N=N,
            filter_already_liked_items=filter_already_liked_items,
            filter_items=filter_items,
            recalculate_user=recalculate_user,
            items=items,
        )

    recommend.__doc__ = MatrixFactorizationBase.recommend.__doc__

    def similar_items(
        self, itemid, N=10, recalculate_item=False, item_users=None, filter_items=None, items=None
    ):
        self._check_fitted()
        if not recalculate_item:
            _check_ids("itemid", itemid, self.item_factors.shape[0], "labels")
        return super().similar_items(itemid, N, recalculate_item, item_users, filter_items, items)

    similar_items.__doc__ = MatrixFactorizationBase.similar_items.__doc__

    def similar_users(self, userid, N=10, filter_users=None, users=None):
        self._check_fitted()
        _check_ids("userid", userid, self.user_factors.shape[0], "images")
        return super().similar_users(userid, N, filter_users, users)

    similar_users.__doc__ = MatrixFactorizationBase.similar_users.__doc__

    # -- folding in new images ---------------------------------------------------------------

    def recalculate_user(self, userid, user_items):
        """Image vector(s) computed from known labels alone, with the label vectors fixed.

        ``recommend(userid, user_items, recalculate_user=True)`` calls this, so a new image
        (or an image whose labels changed) gets recommendations from its rows of
        ``user_items`` without retraining: ``fold_in_iterations`` SGD passes over its labels,
        with this model's loss, sampler and learning rate, seeded (the same input gives the
        same vector). ``userid`` only decides the shape of the result (scalar: one vector).
        """
        self._check_fitted()
        rows = self._fold_in_rows(user_items)
        vectors = self._fold_in(rows)
        return vectors[0] if np.isscalar(userid) else vectors

    def partial_fit_users(self, userids, user_items):
        """Add or update images in a fitted model without retraining the labels.

        As implicit's ``AlternatingLeastSquares.partial_fit_users``: row ``j`` of ``user_items``
        holds the labels of image ``userids[j]``; that image's vector is recomputed by folding
        in (see ``recalculate_user``). Ids beyond the model's images grow ``user_factors``;
        images between the old end and a new id get zero vectors.
        """
        self._check_fitted()
        userids = np.asarray(userids)
        rows = self._fold_in_rows(user_items)
        if userids.ndim != 1 or len(userids) != rows.shape[0]:
            raise ValueError(
                f"userids must be a 1-d list with one id per row of user_items, got "
                f"{userids.shape} ids for {rows.shape[0]} rows"
            )
        _check_ids("userids", userids, np.iinfo(np.int32).max, "images at most")
        if len(userids) and userids.max() >= self.user_factors.shape[0]:
            grown = np.zeros((userids.max() + 1, self.factors), dtype=self.user_factors.dtype)
            grown[: self.user_factors.shape[0]] = self.user_factors
            self.user_factors = grown
        self.user_factors[userids] = self._fold_in(rows)
        self._user_norms = None

    def _fold_in_rows(self, user_items):
        if not scipy.sparse.issparse(user_items):
            raise ValueError("user_items must be a scipy.sparse CSR matrix of known labels")
        if user_items.shape[1] != self.item_factors.shape[0]:
            raise ValueError(
                f"user_items has {user_items.shape[1]} columns but the model knows "
                f"{self.item_factors.shape[0]} labels"
            )
        if user_items.nnz == 0:  # nothing to fold in; zero vectors score every label 0
            return scipy.sparse.csr_matrix(user_items.shape, dtype=np.float32)
        return check_user_items(user_items)

    def _fold_in(self, rows):
        """Vectors for the images in ``rows`` (CSR) learned against the fixed label vectors."""
        self._check_params()
        n_images, n_labels = rows.shape
        seed = self.random_state if isinstance(self.random_state, (int, np.integer)) else 0
        generator = np.random.default_rng(seed)
        vectors = np.zeros((n_images, self.factors), dtype=self.item_factors.dtype)
        if rows.nnz == 0:
            return vectors
        vectors[:] = generator.normal(0, self.init_scale, vectors.shape)
        # one image's pairs are few: one thread, so a fold-in is deterministic; batches of
        # images use every thread (rows are independent, so only order effects remain)
        num_threads = 1 if n_images < 64 else self._threads()
        adaptive = None
        if self.sampler == "adaptive":
            adaptive = _sampler.AdaptiveSampler(
                n_labels, self.factors, self.rank_decay * n_labels, num_threads
            )
        indptr = rows.indptr.astype(np.int64)
        pair_images = np.repeat(np.arange(n_images, dtype=np.int32), np.diff(indptr))
        # every pass in one kernel call, each in a fresh order: one refresh of the sampler
        order = np.concatenate(
            [generator.permutation(rows.nnz) for _ in range(self.fold_in_iterations)]
        )
        _sampler.train_epoch(
            vectors,
            np.ascontiguousarray(self.item_factors),
            indptr,
            rows.indices,
            pair_images[order],
            rows.indices[order],
            LOSSES[self.loss],
            SAMPLERS[self.sampler],
            adaptive,
            self.learning_rate,
            self.regularization,
            self.margin,
            self.max_sampled,
            self.verify_negative_samples,
            _sampler.warp_rank_weights(n_labels),
            _sampler.make_rng_states(generator, num_threads),
            max(1, len(order)),
            num_threads,
            False,
        )
        if not _all_finite(vectors):
            raise DivergenceError(
                f"folding in {n_images} images diverged with learning_rate="
                f"{self.learning_rate}; refit with a lower learning_rate"
            )
        return vectors

    def _check_fitted(self):
        if self.user_factors is None or self.item_factors is None:
            raise ValueError("this VSEEns model is not fitted yet: call fit(user_items) first")

    # -- persistence ------------------------------------------------------------------------

    def save(self, fileobj_or_path):
        """Save parameters and factors to a ``.npz`` file (no pickled objects).

        A path is written atomically: to a temporary file in the same folder, then renamed, so
        an interrupted save never leaves a truncated model behind. As with ``numpy.savez``, a
        path without the ``.npz`` suffix gets it appended.
        """
        args = {
            name: getattr(self, name)
            for name in (
                "factors",
                "learning_rate",
                "regularization",
                "iterations",
                "margin",
                "loss",
                "sampler",
                "rank_decay",
                "refresh_interval",
                "max_sampled",
                "verify_negative_samples",
                "init_scale",
                "fold_in_iterations",
                "num_threads",
                "user_factors",
                "item_factors",
            )
        }
        args["dtype"] = np.dtype(self.dtype).name
        if isinstance(self.random_state, (int, np.integer)):  # Generators can't go in an .npz
            args["random_state"] = int(self.random_state)
        args = {name: value for name, value in args.items() if value is not None}

        if not isinstance(fileobj_or_path, (str, os.PathLike)):
            np.savez(fileobj_or_path, **args)
            return
        path = Path(fileobj_or_path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **args)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise


# -- input checks (also used by the CLI and adapters) -------------------------------------------


def check_user_items(user_items):
    """Validate a training matrix and return a canonical CSR copy (the input is not modified).

    Converts other sparse formats (with a warning), merges duplicate entries and drops explicit
    zeros (each with a warning saying how many), sorts indices, and makes the indices int32.
    """
    if not scipy.sparse.issparse(user_items):
        raise ValueError(
            f"user_items must be a scipy.sparse CSR matrix of shape (n_images, n_labels), got "
            f"{type(user_items).__name__}; convert with scipy.sparse.csr_matrix(user_items)"
        )
    if user_items.format != "csr":
        warnings.warn(
            f"user_items is a {user_items.format.upper()} matrix; converting it to CSR (pass CSR "
            f"to avoid the copy)",
            stacklevel=3,
        )
    n_images, n_labels = user_items.shape
    if n_labels == 0 or n_images == 0:
        raise ValueError(
            f"user_items has shape {user_items.shape}: need at least one image and one label"
        )
    if n_labels >= 2**31 - 1:
        raise ValueError(f"too many labels ({n_labels}); at most 2**31 - 2 are supported")
    matrix = scipy.sparse.csr_matrix(user_items, copy=True)
    data = matrix.data
    if data.dtype.kind not in "biuf":
        raise ValueError(f"user_items must hold numbers, got dtype {data.dtype}")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise ValueError(
            f"user_items has {np.count_nonzero(~np.isfinite(data))} NaN or infinite values; "
            f"entries must be finite and positive (1 for 'image has label')"
        )
    if (data < 0).any():
        raise ValueError(
            f"user_items has {np.count_nonzero(data < 0)} negative values; entries must be "
            f"positive (1 for 'image has label'), negatives are not supported"
        )
    if not matrix.has_canonical_format:
        before = matrix.nnz
        matrix.sum_duplicates()
        if matrix.nnz != before:
            warnings.warn(
                f"user_items has {before - matrix.nnz} duplicate (image, label) entries; "
                f"they were merged",
                stacklevel=3,
            )
    zeros = matrix.nnz - np.count_nonzero(matrix.data)
    if zeros:
        matrix.eliminate_zeros()
        warnings.warn(
            f"user_items has {zeros} explicitly stored zeros; they are not positives and were "
            f"dropped",
            stacklevel=3,
        )
    if matrix.nnz == 0:
        raise ValueError("user_items has no positive entries: nothing to train on")
    matrix.indices = matrix.indices.astype(np.int32, copy=False)
    return matrix


def resolve_random_state(random_state):
    """A ``numpy.random.Generator`` from None, an int, a Generator or a legacy RandomState."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**63 - 1, dtype=np.int64))
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return np.random.default_rng(random_state)
    raise TypeError(
        f"random_state must be None, an int, a numpy Generator or RandomState, got "
        f"{type(random_state).__name__}"
    )


def _check_number(name, value, *, integer=False, low=None, strict=False):
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kind) or not np.isfinite(value):
        expected = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    if low is not None and (value <= low if strict else value < low):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {value!r}")


def _check_ids(name, ids, count, what):
    ids = np.asarray(ids)
    if ids.size == 0:
        return
    if ids.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integer ids, got dtype {ids.dtype}")
    low, high = ids.min(), ids.max()
    if low < 0 or high >= count:
        bad = low if low < 0 else high
        raise IndexError(f"{name} {bad} is out of range: the model has {count} {what} (0..{count - 1})")


def _all_finite(array):
    # one float64 sum is NaN or infinite exactly when an element is (float64 cannot overflow
    # on float32 inputs), and needs no temporary array
    return bool(np.isfinite(array.sum(dtype=np.float64)))
