"""``VSEEns``: the VSE-ens label-ranking model as an ``implicit`` matrix-factorisation model."""

import math
import time

import numpy as np
import scipy.sparse
from implicit.recommender_base import ModelFitError
from tqdm.auto import tqdm

from . import _sampler
from ._base import LabelModel
from ._npz import ModelFileError, read_model_file, read_params, source_name, write_model_file
from ._validation import (
    binary_csr,
    check_ids,
    check_number,
    check_seed,
    resolve_random_state,
    scores_finite,
)
from .memory import check_memory, estimate_fit_memory

LOSSES = {"hinge": _sampler.Loss.HINGE, "warp": _sampler.Loss.WARP, "bpr": _sampler.Loss.BPR}
SAMPLERS = {"uniform": _sampler.Sampler.UNIFORM, "adaptive": _sampler.Sampler.ADAPTIVE}
# constructor arguments stored by ``save`` (besides dtype and an int random_state)
_SAVED_PARAMS = (
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
    "candidates",
    "verify_negative_samples",
    "init_scale",
    "fold_in_iterations",
    "num_threads",
)

class DivergenceError(ModelFitError, FloatingPointError):
    """Training produced non-finite factors (the learning rate is too high for the data)."""


class VSEEns(LabelModel):
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
    candidates : int
        Hinge and BPR: negatives drawn per positive pair; the one the model scores highest is
        trained on (one more dot product per extra candidate). 1 is the paper's VSE-ens; more
        makes every negative harder (see the README for what it measured). The extra
        candidates are never positives of the image, even without verification. WARP needs 1.
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
        candidates=1,
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
        self.candidates = candidates
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
            completed epoch (a model that was not fitted before and completed no epoch stays
            unfitted), so no NaN ever reaches a recommendation.
        KeyboardInterrupt
            Ctrl-C stops the kernels within milliseconds; the model keeps the factors of the
            last completed epoch (a model that was not fitted before and completed no epoch
            stays unfitted), and the interrupt propagates.
        vse_recsys.memory.InsufficientMemoryError (a MemoryError)
            Before anything is allocated, when :meth:`estimate_memory` exceeds the memory
            available to this process.
        """
        self._check_params()
        if scipy.sparse.issparse(user_items) and len(user_items.shape) == 2:
            check_memory(self.estimate_memory(*user_items.shape, user_items.nnz), "VSEEns.fit")
        user_items = binary_csr(user_items)
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
        except (KeyboardInterrupt, DivergenceError):
            if was_fitted or self.fit_history:
                self.user_factors, self.item_factors = self._last_good
            else:  # stopped in the first epoch of a fresh model: it stays unfitted
                self.user_factors = self.item_factors = None
            raise
        finally:
            del self._last_good
            self._user_norms = self._item_norms = None
        # a label no image has was only ever a negative: its vector holds no co-occurrence, so
        # it gets zeros (as in implicit's ALS) and is similar to nothing
        unused = np.bincount(user_items.indices, minlength=user_items.shape[1]) == 0
        self.item_factors[unused] = 0
        return self

    def estimate_memory(self, n_images, n_labels, nnz):
        """Estimate the memory ``fit`` allocates for an (n_images, n_labels) matrix of ``nnz``
        stored entries, with this model's factors, dtype, sampler and threads.

        Returns a :class:`vse_recsys.memory.MemoryEstimate`: ``total`` bytes and ``terms``, a
        dict of its parts (factors, initialisation, training matrix, pairs, adaptive sampler,
        WARP weights); ``str()`` gives a readable summary. The formula is in the README's
        "Memory" section. ``fit`` compares it with the available memory before allocating.
        """
        return estimate_fit_memory(
            n_images,
            n_labels,
            nnz,
            self.factors,
            itemsize=np.dtype(self.dtype).itemsize,
            adaptive=self.sampler == "adaptive",
            num_threads=self._threads(),
            new_model=self.user_factors is None or self.item_factors is None,
        )

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
        rng_states = _sampler.make_rng_states(generator, num_threads)
        # each epoch's fresh order of the pairs, from its own RNG streams
        shuffler = _sampler.PairShuffler(indptr, indices, num_threads)
        shuffle_states = _sampler.make_rng_states(generator, num_threads)
        warp_weights = _sampler.warp_rank_weights(n_labels)

        with tqdm(total=self.iterations, disable=not show_progress, desc="VSEEns") as progress:
            for epoch in range(self.iterations):
                started = time.perf_counter()
                epoch_images, epoch_labels = shuffler.shuffle(shuffle_states)
                stats = self._train_pairs(
                    self.user_factors,
                    self.item_factors,
                    indptr,
                    indices,
                    epoch_images,
                    epoch_labels,
                    adaptive=adaptive,
                    warp_weights=warp_weights,
                    rng_states=rng_states,
                    refresh_interval=self._refresh_interval(n_labels),
                    num_threads=num_threads,
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

    def _train_pairs(self, user_factors, item_factors, indptr, indices, pair_images, pair_labels,
                     *, adaptive, warp_weights, rng_states, refresh_interval, num_threads,
                     update_labels=True):
        """One kernel call over the given pairs with this model's loss, sampler and step
        settings (fit's epochs and fold-in both train through here); returns its counters."""
        return _sampler.train_epoch(
            user_factors,
            item_factors,
            indptr,
            indices,
            pair_images,
            pair_labels,
            loss=LOSSES[self.loss],
            sampler=SAMPLERS[self.sampler],
            adaptive=adaptive,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            margin=self.margin,
            max_sampled=self.max_sampled,
            candidates=self.candidates,
            verify_negative_samples=self.verify_negative_samples,
            warp_weights=warp_weights,
            rng_states=rng_states,
            refresh_interval=refresh_interval,
            num_threads=num_threads,
            update_labels=update_labels,
        )

    def _keep_if_finite(self, epoch):
        """Remember this epoch's factors, or roll back to the last finite ones and raise."""
        good_users, good_items = self._last_good
        if not scores_finite(self.user_factors, self.item_factors):
            self.user_factors, self.item_factors = good_users, good_items
            raise DivergenceError(
                f"training diverged in epoch {epoch + 1} of {self.iterations}: the factors "
                f"became NaN, infinite or so large that scores overflow, with "
                f"learning_rate={self.learning_rate}. Try a lower "
                f"learning_rate (e.g. {self.learning_rate / 10:g}) or a higher regularization. "
                f"The model keeps the factors of the last completed epoch (a new model that "
                f"completed none stays unfitted)."
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
        check_number("factors", self.factors, integer=True, low=1)
        check_number("iterations", self.iterations, integer=True, low=0)
        check_number("max_sampled", self.max_sampled, integer=True, low=1)
        check_number("candidates", self.candidates, integer=True, low=1)
        if self.loss == "warp" and self.candidates != 1:
            raise ValueError(
                f"loss='warp' needs candidates=1, got {self.candidates}: WARP searches for a "
                "violating negative itself (max_sampled)"
            )
        check_number("learning_rate", self.learning_rate, low=0, strict=True)
        check_number("regularization", self.regularization, low=0)
        check_number("margin", self.margin, low=0)
        check_number("rank_decay", self.rank_decay, low=0, strict=True)
        check_number("init_scale", self.init_scale, low=0, strict=True)
        check_number("fold_in_iterations", self.fold_in_iterations, integer=True, low=1)
        check_number("num_threads", self.num_threads, integer=True, low=0)
        if self.refresh_interval is not None:
            check_number("refresh_interval", self.refresh_interval, integer=True, low=1)
        if np.dtype(self.dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        check_seed(self.random_state)

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
        expected = 1 if np.isscalar(userid) else len(userid)
        if rows.shape[0] != expected:
            raise ValueError(
                f"user_items has {rows.shape[0]} rows for {expected} userid(s): give one row of "
                f"known labels per image"
            )
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
        check_ids("userids", userids, np.iinfo(np.int32).max, "images at most")
        if len(userids) and userids.max() >= self.user_factors.shape[0]:
            grown = np.zeros((userids.max() + 1, self.user_factors.shape[1]),
                             dtype=self.user_factors.dtype)
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
        return binary_csr(user_items, allow_empty=True, stacklevel=4)

    def _fold_in(self, rows):
        """Vectors for the images in ``rows`` (CSR) learned against the fixed label vectors."""
        self._check_params()
        n_images, n_labels = rows.shape
        seed = self.random_state if isinstance(self.random_state, (int, np.integer)) else 0
        generator = np.random.default_rng(seed)
        # the label vectors' width, not self.factors, which a caller may have changed since fit
        vectors = np.zeros((n_images, self.item_factors.shape[1]), dtype=self.item_factors.dtype)
        if rows.nnz == 0:
            return vectors
        vectors[:] = generator.normal(0, self.init_scale, vectors.shape)
        # one image's pairs are few: one thread, so a fold-in is deterministic; batches of
        # images use every thread (rows are independent, so only order effects remain)
        num_threads = 1 if n_images < 64 else self._threads()
        adaptive = None
        if self.sampler == "adaptive":
            adaptive = _sampler.AdaptiveSampler(
                n_labels, vectors.shape[1], self.rank_decay * n_labels, num_threads
            )
        indptr = rows.indptr.astype(np.int64)
        pair_images = np.repeat(np.arange(n_images, dtype=np.int32), np.diff(indptr))
        # every pass in one kernel call, each in a fresh order: one refresh of the sampler
        order = np.concatenate(
            [generator.permutation(rows.nnz) for _ in range(self.fold_in_iterations)]
        )
        self._train_pairs(
            vectors,
            np.ascontiguousarray(self.item_factors),
            indptr,
            rows.indices,
            pair_images[order],
            rows.indices[order],
            adaptive=adaptive,
            warp_weights=_sampler.warp_rank_weights(n_labels),
            rng_states=_sampler.make_rng_states(generator, num_threads),
            refresh_interval=max(1, len(order)),
            num_threads=num_threads,
            update_labels=False,
        )
        if not scores_finite(vectors, self.item_factors):
            raise DivergenceError(
                f"folding in {n_images} images diverged with learning_rate="
                f"{self.learning_rate}; refit with a lower learning_rate"
            )
        vectors[np.diff(indptr) == 0] = 0  # no known label: no vector, whatever the batch
        return vectors

    # -- persistence ------------------------------------------------------------------------

    def save(self, fileobj_or_path):
        """Save parameters and factors to a ``.npz`` file (no pickled objects).

        A path is written atomically: to a temporary file in the same folder, flushed to disk,
        then renamed, so an interrupted save never leaves a truncated model behind. As with
        ``numpy.savez``, a path without the ``.npz`` suffix gets it appended. The file carries
        ``format`` and ``format_version`` (see :mod:`vse_recsys._npz`); ``load`` refuses newer
        versions.
        """
        arrays = {name: getattr(self, name) for name in _SAVED_PARAMS}
        arrays["user_factors"] = self.user_factors
        arrays["item_factors"] = self.item_factors
        arrays["dtype"] = np.dtype(self.dtype).name
        if isinstance(self.random_state, (int, np.integer)):  # Generators can't go in an .npz
            arrays["random_state"] = int(self.random_state)
        arrays = {name: value for name, value in arrays.items() if value is not None}
        write_model_file(fileobj_or_path, "VSEEns", arrays)

    @classmethod
    def load(cls, fileobj_or_path):
        """Load a model written by :meth:`save`, from a path or a binary file object.

        Nothing in the file is unpickled or executed. Every array is checked before the model
        is built, so a damaged file fails here, with its name and the problem, and never later
        in ``recommend``. A path that does not exist is retried with ``.npz`` appended.

        Raises
        ------
        FileNotFoundError
            No such file.
        ModelFileError (a ValueError)
            Not an ``.npz`` model, a file of another kind (an Annotator file, another tool's
            model: the message says which), a truncated or corrupted file, a
            ``format_version`` newer than this vse-recsys reads, an unknown entry, a missing or
            invalid parameter, or factors that are not finite 2-D float arrays of matching
            shapes and dtype.
        """
        arrays, _ = read_model_file(fileobj_or_path, "VSEEns")
        return cls._from_arrays(arrays, source_name(fileobj_or_path))

    @classmethod
    def _from_arrays(cls, arrays, name):
        """A model from the arrays of a saved file (without ``format`` and ``format_version``),
        validated; ModelFileError names ``name``."""

        def fail(problem):
            return ModelFileError(f"{name} is not a valid VSEEns model file: {problem}")

        known = {*_SAVED_PARAMS, "dtype", "random_state"}
        unknown = sorted(set(arrays) - known - {"user_factors", "item_factors"})
        if unknown:
            raise fail(f"unknown entry {unknown[0]!r} (is it from a newer vse-recsys?)")

        params = read_params(arrays, known, fail)
        missing = sorted({"factors", "dtype"} - set(params))
        if missing:
            raise fail(f"parameter {missing[0]!r} is missing")
        seed = params.get("random_state")
        if seed is not None and (isinstance(seed, (bool, str, float)) or seed < 0):
            raise fail(f"random_state must be a non-negative integer seed, got {seed!r}")
        try:
            model = cls(**params)
            model._check_params()
        except (TypeError, ValueError) as error:
            raise fail(f"bad parameter: {error}") from None

        present = [key for key in ("user_factors", "item_factors") if key in arrays]
        if len(present) == 1:
            other = ({"user_factors", "item_factors"} - set(present)).pop()
            raise fail(f"it has {present[0]} but no {other}")
        if present:
            model.user_factors, model.item_factors = (
                _checked_factors(arrays[key], key, model, fail)
                for key in ("user_factors", "item_factors")
            )
            if model.item_factors.shape[0] == 0:
                raise fail("item_factors has no rows: a fitted model has at least one label")
            if not scores_finite(model.user_factors, model.item_factors):
                raise fail("the factors are so large that scores overflow")
        return model


def _checked_factors(array, key, model, fail):
    """A saved factor matrix as a native-order, C-contiguous array, or ``fail(problem)``."""
    if array.ndim != 2:
        raise fail(f"{key} must be a 2-D array, got shape {array.shape}")
    if array.dtype.kind != "f" or array.dtype.itemsize not in (4, 8):
        raise fail(f"{key} must hold float32 or float64 values, got {array.dtype}")
    if np.dtype(array.dtype.name) != np.dtype(model.dtype):
        raise fail(f"{key} is {array.dtype.name} but the model's dtype is {model.dtype}")
    if array.shape[1] != model.factors:
        raise fail(
            f"{key} has {array.shape[1]} columns but the model has factors={model.factors}"
        )
    finite = np.isfinite(array)
    if not finite.all():
        raise fail(f"{key} holds {array.size - np.count_nonzero(finite):,} NaN or infinite values")
    return np.ascontiguousarray(array, dtype=model.dtype)
