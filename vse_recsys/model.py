"""``VSEEns``: the VSE-ens label-ranking model as an ``implicit`` matrix-factorisation model."""

import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse
from implicit.cpu.matrix_factorization_base import MatrixFactorizationBase
from implicit.recommender_base import ModelFitError
from tqdm.auto import tqdm

from . import _sampler
from ._npz import ModelFileError, atomic_savez, npz_path, read_npz, source_name
from .memory import check_memory, estimate_fit_memory

LOSSES = {"hinge": _sampler.Loss.HINGE, "warp": _sampler.Loss.WARP, "bpr": _sampler.Loss.BPR}
SAMPLERS = {"uniform": _sampler.Sampler.UNIFORM, "adaptive": _sampler.Sampler.ADAPTIVE}
#: Version of the layout ``VSEEns.save`` writes (``format_version`` in the file); ``load``
#: refuses higher ones. Files written before the key existed read as version 1; version 2
#: added ``candidates``.
FORMAT_VERSION = 2
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
        except (KeyboardInterrupt, DivergenceError):
            if was_fitted or self.fit_history:
                self.user_factors, self.item_factors = self._last_good
            else:  # stopped in the first epoch of a fresh model: it stays unfitted
                self.user_factors = self.item_factors = None
            raise
        finally:
            del self._last_good
            self._user_norms = self._item_norms = None
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
        if not _scores_finite(self.user_factors, self.item_factors):
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
        _check_number("factors", self.factors, integer=True, low=1)
        _check_number("iterations", self.iterations, integer=True, low=0)
        _check_number("max_sampled", self.max_sampled, integer=True, low=1)
        _check_number("candidates", self.candidates, integer=True, low=1)
        if self.loss == "warp" and self.candidates != 1:
            raise ValueError(
                f"loss='warp' needs candidates=1, got {self.candidates}: WARP searches for a "
                "violating negative itself (max_sampled)"
            )
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
            check_sparse_structure(user_items, "user_items")
            if user_items.shape[1] != self.item_factors.shape[0]:
                raise ValueError(
                    f"user_items has {user_items.shape[1]} columns but the model knows "
                    f"{self.item_factors.shape[0]} labels; pass the rows of the training matrix"
                )
            # as in fit: one 1 per label, explicit zeros are no labels (and any format works)
            user_items = _binary_csr(user_items)
            user_items.eliminate_zeros()
        if filter_items is not None:
            _check_ids("filter_items", filter_items, self.item_factors.shape[0], "labels")
        if items is not None:
            _check_ids("items", items, self.item_factors.shape[0], "labels")
            if filter_items is not None:
                raise ValueError("give either items (labels to rank) or filter_items, not both")
            if np.size(items) == 0 or np.ndim(items) != 1:
                raise ValueError("items must be a non-empty 1-d list of label ids to rank")
            if len(np.unique(items)) != len(items):
                raise ValueError("items has repeated label ids; each label can be ranked once")
        if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
            raise ValueError(f"N must be a positive integer, got {N!r}")
        # implicit pads rows beyond the last label with label 0 and score 0; never ask for more
        N = min(int(N), self.item_factors.shape[0] if items is None else len(items))
        return super().recommend(
            userid,
            user_items,
            N=N,
            filter_already_liked_items=filter_already_liked_items,
            filter_items=filter_items,
            recalculate_user=recalculate_user,
            items=items,
        )

    recommend.__doc__ = (MatrixFactorizationBase.recommend.__doc__ or "") + """
        Notes
        -----
        ``N`` larger than the number of labels (or of ``items``) returns every label once,
        not ``N`` entries. As in implicit, when filtering leaves fewer than ``N`` labels, each
        row ends with the filtered labels at score ``-numpy.finfo(model.dtype).max``: keep the
        entries whose score is above that. Explicitly stored zeros in ``user_items`` are not
        labels (as in ``fit``) and are not filtered.
        """

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
        _check_ids("userids", userids, np.iinfo(np.int32).max, "images at most")
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
        return check_user_items(user_items, allow_empty=True)

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
        if not _scores_finite(vectors, self.item_factors):
            raise DivergenceError(
                f"folding in {n_images} images diverged with learning_rate="
                f"{self.learning_rate}; refit with a lower learning_rate"
            )
        vectors[np.diff(indptr) == 0] = 0  # no known label: no vector, whatever the batch
        return vectors

    def _check_fitted(self):
        if self.user_factors is None or self.item_factors is None:
            raise ValueError("this VSEEns model is not fitted yet: call fit(user_items) first")

    # -- persistence ------------------------------------------------------------------------

    def save(self, fileobj_or_path):
        """Save parameters and factors to a ``.npz`` file (no pickled objects).

        A path is written atomically: to a temporary file in the same folder, flushed to disk,
        then renamed, so an interrupted save never leaves a truncated model behind. As with
        ``numpy.savez``, a path without the ``.npz`` suffix gets it appended. The file carries
        ``format_version`` (:data:`FORMAT_VERSION`); ``load`` refuses newer versions.
        """
        args = {name: getattr(self, name) for name in _SAVED_PARAMS}
        args["user_factors"] = self.user_factors
        args["item_factors"] = self.item_factors
        args["dtype"] = np.dtype(self.dtype).name
        if isinstance(self.random_state, (int, np.integer)):  # Generators can't go in an .npz
            args["random_state"] = int(self.random_state)
        args = {name: value for name, value in args.items() if value is not None}
        args["format_version"] = np.int64(FORMAT_VERSION)

        if isinstance(fileobj_or_path, (str, os.PathLike)):
            atomic_savez(fileobj_or_path, args)
        else:
            np.savez(fileobj_or_path, **args)

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
            Not an ``.npz`` model, a truncated or corrupted file, a ``format_version`` newer
            than this vse-recsys reads, an unknown entry, a missing or invalid parameter, or
            factors that are not finite 2-D float arrays of matching shapes and dtype.
        """
        source = fileobj_or_path
        if isinstance(source, (str, os.PathLike)) and not Path(source).exists():
            with_suffix = npz_path(source)
            source = with_suffix if with_suffix.exists() else source
        return cls._from_arrays(read_npz(source), source_name(source))

    @classmethod
    def _from_arrays(cls, arrays, name):
        """A model from the arrays of a saved file, validated; ModelFileError names ``name``."""

        def fail(problem):
            return ModelFileError(f"{name} is not a valid VSEEns model file: {problem}")

        version = arrays.get("format_version", np.int64(1))  # files before versioning: 1
        if version.shape != () or version.dtype.kind not in "iu":
            raise fail(f"format_version must be an integer, got {version!r}")
        if int(version) > FORMAT_VERSION:
            from . import __version__

            raise ModelFileError(
                f"{name} has VSEEns format version {int(version)}, newer than this vse-recsys "
                f"({__version__}) can read (up to version {FORMAT_VERSION}); upgrade vse-recsys "
                f"to load it"
            )
        if int(version) < 1:
            raise fail(f"unknown format_version {int(version)}")
        known = {*_SAVED_PARAMS, "dtype", "random_state", "format_version"}
        unknown = sorted(set(arrays) - known - {"user_factors", "item_factors"})
        if unknown:
            raise fail(f"unknown entry {unknown[0]!r} (is it from a newer vse-recsys?)")

        params = {}
        for key in known - {"format_version"}:
            if key not in arrays:
                continue
            value = arrays[key]
            if value.shape != () or value.dtype.kind not in "biufU":
                raise fail(f"parameter {key!r} must be a single number or string, got {value!r}")
            params[key] = value.item()
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
            if not _scores_finite(model.user_factors, model.item_factors):
                raise fail("the factors are so large that scores overflow")
        return model


# -- input checks (also used by the CLI and adapters) -------------------------------------------


def check_user_items(user_items, allow_empty=False):
    """Validate a training matrix and return a canonical CSR copy (the input is not modified).

    Converts other sparse formats (with a warning), merges duplicate entries and drops explicit
    zeros (each with a warning saying how many), sorts indices, makes the indices int32 and
    every value 1. ``allow_empty`` accepts a matrix without rows or without positives (folding
    in images that have no known label).
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
    if n_labels == 0 or (n_images == 0 and not allow_empty):
        raise ValueError(
            f"user_items has shape {user_items.shape}: need at least one image and one label"
        )
    if n_labels >= 2**31 - 1:
        raise ValueError(f"too many labels ({n_labels}); at most 2**31 - 2 are supported")
    check_sparse_structure(user_items, "user_items")
    # check the values as stored: converting COO or CSC to CSR sums duplicates, which could
    # hide a negative or NaN entry
    compressed = user_items.format in ("csr", "csc", "coo", "bsr")
    if compressed:  # (CSR/CSC arrays may be longer than the stored entries)
        data = np.asarray(user_items.data).reshape(-1)[: user_items.nnz]
    else:
        data = scipy.sparse.csr_matrix(user_items).data
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
    matrix = _binary_csr(user_items)
    stored = user_items.nnz  # with duplicates, also of a COO matrix that conversion merged
    matrix.sum_duplicates()
    if matrix.nnz != stored:
        warnings.warn(
            f"user_items has {stored - matrix.nnz} duplicate (image, label) entries; "
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
    if matrix.nnz == 0 and not allow_empty:
        raise ValueError("user_items has no positive entries: nothing to train on")
    matrix.indices = matrix.indices.astype(np.int32, copy=False)
    return matrix


def _binary_csr(matrix):
    """A CSR copy of a sparse matrix with 1 for every stored non-zero (explicit zeros stay).

    Values are made 1 before duplicates are summed (converting a COO matrix sums them), so the
    sum cannot overflow: two uint8 entries of 128 would wrap to 0 and lose the label.
    """
    if matrix.format in ("csr", "csc", "coo", "bsr"):
        binary = matrix.copy()
        binary.data = (np.asarray(binary.data) != 0).astype(np.float32)
        return scipy.sparse.csr_matrix(binary)  # shares binary's arrays when it is CSR
    # LIL, DOK and DIA cannot hold duplicates
    result = scipy.sparse.csr_matrix(matrix, dtype=np.float32, copy=True)
    result.data = (result.data != 0).astype(np.float32)
    return result


def check_sparse_structure(matrix, name):
    """Refuse a CSR/CSC/COO matrix whose index arrays are inconsistent with its shape.

    scipy checks them only when the matrix is built, so arrays changed afterwards (or built with
    ``check_format`` skipped) can hold out-of-range indices, which would make scipy's
    conversions and the compiled kernels read and write outside the arrays. Only reads the
    arrays; raises ValueError saying what is wrong.
    """
    problem = None
    if matrix.format in ("csr", "csc"):
        major, minor = matrix.shape if matrix.format == "csr" else matrix.shape[::-1]
        indptr, indices = np.asarray(matrix.indptr), np.asarray(matrix.indices)
        if indptr.ndim != 1 or indices.ndim != 1 or indptr.dtype.kind not in "iu":
            problem = "indptr and indices must be 1-d integer arrays"
        elif len(indptr) != major + 1:
            problem = f"indptr has {len(indptr)} entries for {major} rows (needs {major + 1})"
        elif indptr[0] != 0 or (major and (np.diff(indptr) < 0).any()):
            problem = "indptr must start at 0 and never decrease"
        elif indptr[-1] > min(len(indices), len(np.asarray(matrix.data))):
            problem = f"indptr ends at {indptr[-1]} but only {len(indices)} indices are stored"
        else:
            problem = _index_problem(indices[: indptr[-1]], minor, "indices")
    elif matrix.format == "coo":
        problem = _index_problem(np.asarray(matrix.row), matrix.shape[0], "row indices")
        problem = problem or _index_problem(np.asarray(matrix.col), matrix.shape[1], "col indices")
    if problem:
        raise ValueError(
            f"{name} is not a valid {matrix.format.upper()} matrix of shape {matrix.shape}: "
            f"{problem}. Was an index array changed after the matrix was built?"
        )


def _index_problem(indices, count, what):
    if indices.dtype.kind not in "iu":
        return f"{what} must be integers, got {indices.dtype}"
    if indices.size and (indices.min() < 0 or indices.max() >= count):
        bad = indices.min() if indices.min() < 0 else indices.max()
        return f"{what} hold {bad}, outside 0..{count - 1}"
    return None


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


def _max_row_norm(array):
    """The largest Euclidean row norm, in float64 (NaN if any value is NaN)."""
    if array.size == 0:
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        return math.sqrt(np.einsum("ij,ij->i", array, array, dtype=np.float64).max())


def _scores_finite(users, items):
    """True when every score ``users[i] @ items[a]`` is finite in the factors' precision.

    By Cauchy-Schwarz ``|u . v| <= |u| |v|``, so bounding the product of the largest row norms
    by half the dtype's largest value (room for rounding) rules out NaN, infinite and
    overflowing scores at once.
    """
    bound = _max_row_norm(users) * _max_row_norm(items)
    return bool(bound < float(np.finfo(items.dtype).max) / 2)  # False for NaN
