"""``VSEEns``: label ranking as an ``implicit`` matrix-factorisation model, trained by the VSE-ens
engine (hinge / WARP / BPR losses, uniform or adaptive negative sampling, nogil kernels)."""

import math
import time
import warnings

import numpy as np
import scipy.sparse
from implicit.recommender_base import ModelFitError
from tqdm.auto import tqdm

from . import _sampler
from ._base import LabelModel
from ._holdout import split_validation, validation_map
from ._npz import ModelFileError, read_model_file, read_params, source_name, write_model_file
from ._validation import (
    _is_canonical_binary,
    binary_csr,
    check_ids,
    check_number,
    check_seed,
    max_row_norm,
    resolve_random_state,
    scores_finite,
)
from .memory import check_memory, estimate_fit_memory

LOSSES = {"hinge": _sampler.Loss.HINGE, "warp": _sampler.Loss.WARP, "bpr": _sampler.Loss.BPR}
SAMPLERS = {"uniform": _sampler.Sampler.UNIFORM, "adaptive": _sampler.Sampler.ADAPTIVE}
#: How an image's vector is made: from its labels (FISM's composition), a free vector of its
#: own learned in training (the paper's matrix factorisation), or both added.
IMAGE_VECTORS = ("labels", "free", "labels+free")
LEARNING_SCHEDULES = ("adagrad", "sgd")

#: The configuration of the VSE-ens paper (Guo et al., AAAI 2018, section "Experiments"): free
#: image vectors, no label bias, hinge loss on one adaptively sampled negative per pair, plain
#: SGD with lr 0.01 and L2 0.01, k = 100, N(0, 0.01) initialisation; the paper trains to
#: convergence, here a fixed 50 epochs. ``VSEEns.paper()`` builds it.
PAPER = dict(
    factors=100, learning_rate=0.01, regularization=0.01, iterations=50, loss="hinge",
    sampler="adaptive", image_vectors="free", label_bias=False, learning_schedule="sgd",
    init_scale=0.01, early_stopping=False,
)

# What the parameters added in format version 3 meant before it: files of versions 1 and 2
# were trained this way, whatever today's defaults are.
_BEFORE_VERSION_3 = dict(
    image_vectors="free", label_bias=False, learning_schedule="sgd", early_stopping=False,
)
# constructor arguments stored by ``save`` (besides dtype and an int random_state)
_SAVED_PARAMS = (
    "factors", "learning_rate", "regularization", "iterations", "margin", "loss", "sampler",
    "image_vectors", "label_bias", "composition_exponent", "label_dropout", "learning_schedule",
    "early_stopping", "validation_fraction", "n_iter_no_change", "rank_decay",
    "refresh_interval", "max_sampled", "candidates", "verify_negative_samples", "init_scale",
    "fold_in_iterations", "num_threads",
)
# the arrays a fitted model keeps: name -> when it has it
_SAVED_ARRAYS = ("user_factors", "item_factors", "label_inputs", "free_factors")


class DivergenceError(ModelFitError, FloatingPointError):
    """Training produced non-finite factors (a step size too large for the data)."""


class VSEEns(LabelModel):
    """Label ranking by matrix factorisation, trained for ranking with negative sampling.

    Images are users and labels are items of ``implicit``'s interface: ``fit`` takes an
    (n_images, n_labels) CSR matrix whose non-zero entries are the labels an image has, and
    ``recommend``, ``similar_items``, ``similar_users``, ``save``/``load`` and
    ``implicit.evaluation`` work as for implicit's models. The score of label ``a`` for image
    ``i`` is ``user_factors[i] @ item_factors[a]``; with ``label_bias`` the last column of
    ``item_factors`` is the label's bias and that of ``user_factors`` is 1.

    By default an image's vector is **composed from its labels** (FISM, Kabbur et al. KDD
    2013): ``u_i = |L_i|^-alpha * sum of label_inputs[a]`` over its labels ``L_i``, so every
    image, trained or new, is scored from its labels alone, exactly, in O(labels x factors);
    when training on the pair (i, p), p is left out of the sum (otherwise the model learns to
    copy its input). It is trained with the WARP loss (Weston et al. 2011), AdaGrad steps and
    early stopping on held-out labels. ``image_vectors="free"`` gives the classic factorisation
    of the VSE-ens paper (Guo et al., AAAI 2018), trained with the paper's adaptive sampler of
    Rendle & Freudenthaler (WSDM 2014) when ``sampler="adaptive"``; :meth:`paper` builds its
    exact configuration. Every loss and sampler works with every kind of image vector.

    Parameters
    ----------
    factors : int
        Dimension k of the image and label vectors (the bias column comes on top).
    learning_rate : float
        Step size (AdaGrad's base rate, or SGD's step).
    regularization : float
        L2 weight decay of every vector a step moves.
    iterations : int
        Most epochs; with ``early_stopping`` training stops earlier when the validation MAP
        has not improved for ``n_iter_no_change`` epochs. One epoch visits every positive
        (image, label) pair once, in a fresh random order.
    margin : float
        Hinge / WARP margin: a negative ``n`` violates when ``margin + s(i,n) > s(i,p)``.
    loss : {"warp", "hinge", "bpr"}
        ``warp``: uniform draws until a violator, step scaled by ``sum_{j<=rank} 1/j`` of the
        estimated rank ``floor((n_labels - 1) / draws)``. ``hinge``: ``max(0, margin -
        s(i,p) + s(i,n))``, one negative per pair (VSE-ens). ``bpr``: ``-ln sigmoid(s(i,p) -
        s(i,n))`` (Rendle et al. 2009).
    sampler : {"uniform", "adaptive"}
        How hinge and BPR draw negatives. ``adaptive`` (VSE-ens / AOBPR) prefers the labels the
        current model ranks high for the image, in O(factors) per draw; WARP needs ``uniform``
        (its rank estimate assumes uniform draws).
    image_vectors : {"labels", "free", "labels+free"}
        ``labels``: composed from the image's labels (the default, see above). ``free``: a
        vector per image learned in training; a new image is folded in (``fold_in_iterations``
        SGD passes). ``labels+free``: the two added.
    label_bias : bool
        A per-label bias in the score, trained by every loss (label popularity).
    composition_exponent : float
        alpha of the composition: a sum of m label inputs is scaled by ``m^-alpha`` (0: the
        plain sum, 1: the mean).
    label_dropout : float
        Chance that a label is left out of an image's sum in one visit (composed vectors):
        keeps the model from leaning on a few labels, and its validation curve from falling in
        long training.
    learning_schedule : {"adagrad", "sgd"}
        ``adagrad``: per-parameter steps ``learning_rate / sqrt(sum of squared gradients)``
        (LightFM's default schedule); ``sgd``: a fixed step.
    early_stopping : bool
        Hold out labels for validation (see ``validation_fraction``) or take
        ``fit(..., validation=...)``, stop when the validation MAP has not improved for
        ``n_iter_no_change`` epochs, and keep the parameters of the best epoch.
    validation_fraction : float
        Share of the images with two or more labels whose one random label is held out for
        early stopping (at least 1,000 images, or every image with two labels, as long as
        that holds out at most this share of the pairs; at most 10,000 images, fewer past
        ~27,000 labels so that scoring them stays cheap).
    n_iter_no_change : int
        Epochs without a better validation MAP before early stopping stops.
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
        trained on (one more dot product per extra candidate). WARP needs 1.
    verify_negative_samples : bool
        Redraw a sampled label that is a positive of the image. With ``False`` sampling is a
        little faster, and a positive is sometimes used as a negative.
    init_scale : float
        Standard deviation of the normal initialisation of the vectors (biases start at 0).
    fold_in_iterations : int
        Free image vectors: passes over a new image's labels when it is folded in
        (``recommend(..., recalculate_user=True)``, ``partial_fit_users``).
    num_threads : int
        Threads for training and batch recommendation; 0 uses every core this process may run
        on. With one thread and a fixed ``random_state`` two fits are bit-identical; with more,
        threads update shared vectors without locks (Hogwild) and results vary slightly.
    random_state : None, int, numpy.random.Generator or numpy.random.RandomState
        Seed for initialisation, the validation split, the epoch orders and the samplers.
    dtype : numpy dtype
        ``float32`` (default) or ``float64`` vectors.

    Attributes
    ----------
    user_factors : ndarray, shape (n_images, factors + label_bias)
        The training images' vectors (composed ones from all their training labels).
    item_factors : ndarray, shape (n_labels, factors + label_bias)
        The label vectors (and biases) images are scored against.
    label_inputs : ndarray, shape (n_labels, factors) or None
        Composed image vectors: the label vectors summed into an image's vector.
    free_factors : ndarray, shape (n_images, factors) or None
        ``image_vectors="labels+free"``: the images' own vectors, added to the composed ones.
    fit_history : list of dict
        Per-epoch training statistics of the last ``fit`` (see ``fit``).
    best_iteration_ : int or None
        With early stopping: the epoch (1-based) whose parameters the model kept.
    validation_scores_ : list of float
        With early stopping: the validation MAP after each epoch.

    Notes
    -----
    Calling ``fit`` on a fitted model continues training from its vectors (like implicit's
    BPR), provided the matrix has the same shape; the AdaGrad sums start again. With an int
    ``random_state`` each continued fit draws from its own stream (derived from the seed and
    the number of earlier continued fits), so ``fit`` called twice is not one fit replayed.

    The defaults were chosen on validation splits of Corel5k, delicious, NUS-WIDE-81,
    MovieLens-100k and generated data by ``benchmarks/defaults_sweep.py``: one setting, the one
    whose worst ratio to each dataset's best is highest (``benchmarks/results/defaults.md``).
    """

    def __init__(
        self,
        factors=128,
        learning_rate=0.02,
        regularization=0.01,
        iterations=100,
        margin=1.0,
        loss="warp",
        sampler="uniform",
        image_vectors="labels",
        label_bias=True,
        composition_exponent=0.5,
        label_dropout=0.3,
        learning_schedule="adagrad",
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=20,
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
        self.image_vectors = image_vectors
        self.label_bias = label_bias
        self.composition_exponent = composition_exponent
        self.label_dropout = label_dropout
        self.learning_schedule = learning_schedule
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.rank_decay = rank_decay
        self.refresh_interval = refresh_interval
        self.max_sampled = max_sampled
        self.candidates = candidates
        self.verify_negative_samples = verify_negative_samples
        self.init_scale = init_scale
        self.fold_in_iterations = fold_in_iterations
        self.random_state = random_state
        self.dtype = np.dtype(dtype)
        self.label_inputs = None
        self.free_factors = None
        self.fit_history = []
        self.best_iteration_ = None
        self.validation_scores_ = []

    @classmethod
    def paper(cls, **overrides):
        """The VSE-ens paper's configuration (:data:`PAPER`), with ``overrides`` on top."""
        return cls(**{**PAPER, **overrides})

    @property
    def _scores_from_rows(self):
        # a composed image vector is a function of the image's labels: recommend computes it
        # from the rows given, for training and new images alike
        return self.image_vectors == "labels"

    @property
    def _composed(self):
        return self.image_vectors != "free"

    # -- training ---------------------------------------------------------------------------

    def fit(self, user_items, show_progress=True, callback=None, validation=None):
        """Train on an (n_images, n_labels) sparse matrix of positive labels.

        Parameters
        ----------
        user_items : scipy.sparse CSR matrix
            Non-zero entries are an image's labels (values are not used as weights). Other
            sparse formats are converted with a warning.
        show_progress : bool
            Show a tqdm bar whose postfix reports the validation MAP (with early stopping), the
            fraction of sampled negatives that violated the margin, and the fractions of pairs
            skipped (no negative: the image has every label) and, for WARP, unviolated (no
            violator in ``max_sampled`` draws).
        callback : callable, optional
            ``callback(epoch, elapsed_seconds, stats)`` after every epoch; ``stats`` holds the
            epoch's counters: pairs, skipped, unviolated, violations, updates, draws,
            refreshes, refresh_seconds, threads_used, violation_rate, skip_rate,
            unviolated_rate, and validation_map with early stopping.
        validation : scipy.sparse matrix, optional
            Held-out (image, label) pairs of the same shape, none of them in ``user_items``:
            used for early stopping instead of a split of ``user_items`` (so every pair of
            ``user_items`` trains). Needs ``early_stopping=True``.

        Raises
        ------
        DivergenceError
            When an epoch leaves non-finite vectors; the message names the setting to change.
            The model keeps the parameters it would have had, had training stopped before that
            epoch (a new model that completed no epoch stays unfitted), so no NaN ever reaches
            a recommendation.
        KeyboardInterrupt
            Ctrl-C stops the kernels within milliseconds; the model keeps what it would have
            kept had training stopped after the last completed epoch (the best epoch so far
            with early stopping), and the interrupt propagates.
        vse_recsys.memory.InsufficientMemoryError (a MemoryError)
            Before anything is allocated, when :meth:`estimate_memory` exceeds the memory
            available to this process.
        """
        self._check_params()
        if validation is not None and not self.early_stopping:
            raise ValueError("validation pairs are for early stopping: set early_stopping=True")
        if scipy.sparse.issparse(user_items) and len(user_items.shape) == 2:
            most, canonical = None, False
            if user_items.format == "csr" and user_items.shape[0]:
                most = int(np.diff(user_items.indptr).max())
                canonical = _is_canonical_binary(user_items)
            check_memory(self.estimate_memory(*user_items.shape, user_items.nnz, most, canonical),
                         "VSEEns.fit")
        user_items = binary_csr(user_items)
        generator = resolve_random_state(self.random_state)
        was_fitted = self.item_factors is not None
        if was_fitted and isinstance(self.random_state, (int, np.integer)):
            # a continued fit must not replay the first fit's pair orders and sampler streams
            self._continued_fits = getattr(self, "_continued_fits", 0) + 1
            generator = np.random.default_rng([int(self.random_state), self._continued_fits])
        train, held_out = self._split(user_items, validation, generator)
        self._init_vectors(*user_items.shape, generator)
        # what fit returns if it stops now: restored on divergence or Ctrl-C
        self._kept = self._snapshot()
        self.fit_history, self.validation_scores_, self.best_iteration_ = [], [], None
        self._user_norms = self._item_norms = None
        try:
            self._run_epochs(train, held_out, generator, show_progress, callback)
            if held_out is not None:  # the best epoch's parameters, not the last one's
                self._restore(self._kept)
        except (KeyboardInterrupt, DivergenceError):
            if was_fitted or self.fit_history:
                self._restore(self._kept)
                self._finish(user_items)
            else:  # stopped in the first epoch of a fresh model: it stays unfitted
                self.user_factors = self.item_factors = None
                self.label_inputs = self.free_factors = None
            raise
        finally:
            del self._kept
            self.__dict__.pop("_sums", None)  # AdaGrad's sums start again in a continued fit
            self._user_norms = self._item_norms = None
        del train, held_out  # (early stopping's copy of the pairs, before the images' vectors)
        self._finish(user_items)
        if self.fit_history and not any(epoch["updates"] for epoch in self.fit_history):
            warnings.warn(
                "nothing was trained: no pair found a negative to be ranked above (every image "
                "has every label, or no label violated the margin in max_sampled draws); the "
                "model ranks labels as initialised",
                stacklevel=2,
            )
        return self

    def estimate_memory(self, n_images, n_labels, nnz, max_labels=None, canonical_input=False):
        """Estimate the memory ``fit`` allocates for an (n_images, n_labels) matrix of ``nnz``
        stored entries (``max_labels`` at most on one image; ``canonical_input``: a binary CSR
        matrix fit need not copy), with this model's settings and threads.

        Returns a :class:`vse_recsys.memory.MemoryEstimate`: ``total`` bytes and ``terms``, a
        dict of its parts; ``str()`` gives a readable summary. The formula is in the README's
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
            new_model=self.item_factors is None,
            image_vectors=self.image_vectors,
            label_bias=bool(self.label_bias),
            adagrad=self.learning_schedule == "adagrad",
            early_stopping=bool(self.early_stopping),
            validation_fraction=float(self.validation_fraction),
            max_labels=max_labels,
            canonical_input=canonical_input,
        )

    def _split(self, user_items, validation, generator):
        """(train, held_out): the pairs to train on and those early stopping scores."""
        if validation is not None:
            held_out = binary_csr(validation, "validation", allow_empty=True, stacklevel=4)
            if held_out.shape != user_items.shape:
                raise ValueError(f"validation has shape {held_out.shape}, user_items "
                                 f"{user_items.shape}; they must match")
            if user_items.multiply(held_out).nnz:
                raise ValueError("validation pairs must not be in user_items (they would be "
                                 "trained on)")
            return user_items, held_out if held_out.nnz else None
        if not self.early_stopping:
            return user_items, None
        train, held_out = split_validation(user_items, self.validation_fraction, generator)
        if held_out is None:
            warnings.warn("early stopping needs images with two or more labels to hold one "
                          "out; training all iterations without it", stacklevel=3)
        return train, held_out

    def _run_epochs(self, train, held_out, generator, show_progress, callback):
        epoch_of = self._epoch_runner(train, generator)
        validation_images = None if held_out is None else np.flatnonzero(held_out.getnnz(axis=1))
        best, since_best = -np.inf, 0
        with tqdm(total=self.iterations, disable=not show_progress, desc="VSEEns") as progress:
            for epoch in range(self.iterations):
                started = time.perf_counter()
                stats = epoch_of()
                elapsed = time.perf_counter() - started
                self._check_finite(epoch)
                stats.update(epoch=epoch, seconds=elapsed)
                for name in ("violation", "skip", "unviolated"):
                    counter = {"violation": "violations", "skip": "skipped"}.get(name, name)
                    stats[f"{name}_rate"] = stats[counter] / max(1, stats["pairs"])
                postfix = dict(violated=f"{stats['violation_rate']:.1%}",
                               skipped=f"{stats['skip_rate']:.1%}")
                if self.loss == "warp":
                    postfix["unviolated"] = f"{stats['unviolated_rate']:.1%}"
                if held_out is not None:
                    score = validation_map(self._image_vectors_of(train, validation_images),
                                           self.item_factors, train, held_out,
                                           validation_images)
                    stats["validation_map"] = score
                    self.validation_scores_.append(score)
                    postfix = dict(val_map=f"{score:.4f}", **postfix)
                    if score > best:
                        best, since_best, self.best_iteration_ = score, 0, epoch + 1
                        self._copy_into(self._kept)
                    else:
                        since_best += 1
                else:
                    self._copy_into(self._kept)
                self.fit_history.append(stats)
                # (postfix first, without a refresh: a log gets one line per epoch, not two)
                progress.set_postfix(postfix, refresh=False)
                progress.update(1)
                if callback is not None:
                    callback(epoch, elapsed, stats)
                if held_out is not None and since_best >= self.n_iter_no_change:
                    break

    def _epoch_runner(self, train, generator):
        """A function training one epoch on ``train`` and returning its counters."""
        n_images, n_labels = train.shape
        num_threads = self._threads()
        width = self.item_factors.shape[1]
        adaptive = None
        if self.sampler == "adaptive":
            adaptive = _sampler.AdaptiveSampler(n_labels, width, self.rank_decay * n_labels,
                                                num_threads)
        indptr = train.indptr.astype(np.int64)
        indices = train.indices
        self._most_labels = int(np.diff(indptr).max()) if n_images else 1  # (divergence bound)
        rng_states = _sampler.make_rng_states(generator, num_threads)
        shuffle_states = _sampler.make_rng_states(generator, num_threads)
        warp_weights = _sampler.warp_rank_weights(n_labels)
        sums = self._sums = self._new_sums() if self.learning_schedule == "adagrad" else {}

        def settings():
            # read every epoch, so that a callback may change the step settings between epochs
            return dict(self._step_settings(warp_weights), adaptive=adaptive,
                        rng_states=rng_states, refresh_interval=self._refresh_interval(n_labels),
                        num_threads=num_threads)
        if not self._composed:
            # each epoch's fresh order of the pairs, from its own RNG streams
            shuffler = _sampler.PairShuffler(indptr, indices, num_threads)

            def epoch():
                images, labels = shuffler.shuffle(shuffle_states)
                return _sampler.train_epoch(
                    self.user_factors, self.item_factors, indptr, indices, images, labels,
                    user_sums=sums.get("user_factors"), item_sums=sums.get("item_factors"),
                    **settings())

            return epoch
        # the images, each once, in a fresh order: PairShuffler over one "pair" per image
        with_labels = np.flatnonzero(np.diff(indptr) > 0).astype(np.int32)
        image_shuffler = _sampler.PairShuffler(np.arange(len(with_labels) + 1, dtype=np.int64),
                                               with_labels, num_threads)
        free = self.image_vectors == "labels+free"
        no_free = np.zeros((0, self.factors), dtype=self.dtype)

        def epoch():
            _, order = image_shuffler.shuffle(shuffle_states)
            return _sampler.train_composed_epoch(
                self.label_inputs, self.item_factors, self.free_factors if free else no_free,
                indptr, indices, order, exponent=float(self.composition_exponent),
                dropout=float(self.label_dropout), free=free,
                input_sums=sums.get("label_inputs"), item_sums=sums.get("item_factors"),
                free_sums=sums.get("free_factors"), **settings())

        return epoch

    def _step_settings(self, warp_weights):
        """The kernels' loss, sampler and step arguments (training and folding in)."""
        return dict(
            loss=LOSSES[self.loss], sampler=SAMPLERS[self.sampler],
            learning_rate=float(self.learning_rate), regularization=float(self.regularization),
            margin=float(self.margin), max_sampled=int(self.max_sampled),
            candidates=int(self.candidates),
            verify_negative_samples=bool(self.verify_negative_samples),
            warp_weights=warp_weights, bias=bool(self.label_bias),
        )

    def _new_sums(self):
        """AdaGrad's accumulators, one per entry of every trained array, starting at 1."""
        trained = ["item_factors", "label_inputs", "free_factors"] if self._composed else [
            "user_factors", "item_factors"]
        return {name: np.ones_like(getattr(self, name)) for name in trained
                if getattr(self, name) is not None}

    # -- the vectors ------------------------------------------------------------------------

    def _init_vectors(self, n_images, n_labels, generator):
        """New vectors (a new model), or the fitted ones checked against the data's shape."""
        dtype = np.dtype(self.dtype)
        width = self.factors + bool(self.label_bias)
        if self.item_factors is not None:
            if self.item_factors.shape != (n_labels, width) or (
                    not self._composed and self.user_factors.shape[0] != n_images) or (
                    self.free_factors is not None and self.free_factors.shape[0] != n_images):
                raise ValueError(
                    f"this model is fitted with {self.item_factors.shape[0]} labels and vectors "
                    f"of {self.item_factors.shape[1]}, but user_items is {n_images} x "
                    f"{n_labels} with factors={self.factors}, label_bias={self.label_bias}. "
                    f"Re-fitting continues from the fitted vectors and needs the same shape; "
                    f"create a new VSEEns to train from scratch."
                )
            if self._composed:
                # derived from the labels, made again at the end: not trained, not copied
                self.user_factors = None
            for name in _SAVED_ARRAYS:
                if getattr(self, name) is not None:
                    setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=dtype))
            return

        def normal(rows, columns):
            # drawn in blocks: the same values as one draw (the stream is consumed in order),
            # without a float64 array of every image's vector
            vectors = np.empty((rows, columns), dtype=dtype)
            for start in range(0, rows, _BLOCK_ROWS):
                stop = min(rows, start + _BLOCK_ROWS)
                vectors[start:stop] = generator.normal(0, self.init_scale, (stop - start, columns))
            return vectors

        self.item_factors = normal(n_labels, width)
        if self.label_bias:
            self.item_factors[:, -1] = 0
        if self._composed:
            self.label_inputs = normal(n_labels, self.factors)
            self.free_factors = normal(n_images, self.factors) if self.image_vectors != "labels" \
                else None
            self.user_factors = None
        else:
            self.user_factors = normal(n_images, width)
            if self.label_bias:
                self.user_factors[:, -1] = 1

    def _trained_arrays(self):
        return [name for name in ("user_factors", "item_factors", "label_inputs", "free_factors")
                if getattr(self, name) is not None]

    def _snapshot(self):
        return {name: getattr(self, name).copy() for name in self._trained_arrays()}

    def _copy_into(self, snapshot):
        for name, array in snapshot.items():
            np.copyto(array, getattr(self, name))

    def _restore(self, snapshot):
        for name, array in snapshot.items():
            setattr(self, name, array.copy())

    def _finish(self, user_items):
        """After training: zero vectors for labels no image has, and the training images'
        vectors (composed from all their labels, held-out ones included)."""
        # a label no image has was only ever a negative: its vector holds no co-occurrence, so
        # it gets zeros (as in implicit's ALS) and is similar to nothing; its bias stays low
        unused = np.bincount(user_items.indices, minlength=user_items.shape[1]) == 0
        self.item_factors[unused, : self.factors] = 0
        if self._composed:
            self.user_factors = self._image_vectors_of(user_items)

    def _untrained_rows(self, factors):
        # a label no image has keeps its (low) bias for recommend, but its vector is zero:
        # judged by the vector alone, or its bias would make it "similar" to every rare label
        if factors is self.item_factors:
            return ~factors[:, : self.factors].any(axis=1)
        return super()._untrained_rows(factors)

    def _image_vectors_of(self, rows, images=None):
        """The vectors of training images ``images`` (default: all), their labels being those
        rows of ``rows``: stored free vectors, or composed ones (plus their free vectors)."""
        every = slice(None) if images is None else images
        if not self._composed:
            return self.user_factors[every]
        vectors = self._compose(rows if images is None else rows[images])
        if self.free_factors is not None:
            vectors[:, : self.factors] += self.free_factors[every]
        return vectors

    def _compose(self, rows):
        """Composed vectors of the images of ``rows`` (CSR): the scaled sum of their labels'
        inputs (zeros without labels), with the bias entry 1."""
        vectors = np.empty((rows.shape[0], self.item_factors.shape[1]),
                           dtype=self.item_factors.dtype)
        # in blocks of images, summed in float64: only the result is as large as the images
        for start, stop in _row_blocks(rows.indptr):
            block = rows[start:stop]
            counts = np.diff(block.indptr).astype(np.float64)
            scale = np.zeros_like(counts)
            np.power(counts, -float(self.composition_exponent), out=scale, where=counts > 0)
            vectors[start:stop, : self.factors] = (
                scipy.sparse.diags(scale) @ block) @ self.label_inputs
        if self.label_bias:
            vectors[:, -1] = 1
        return vectors

    def _check_finite(self, epoch):
        """Raise DivergenceError (the model rolled back) when an epoch left vectors that could
        give a NaN or infinite score, naming the setting most likely to blame."""
        if self._vectors_finite():
            return
        self._restore(self._kept)
        raise DivergenceError(
            f"training diverged in epoch {epoch + 1} of {self.iterations}: the vectors became "
            f"NaN, infinite or so large that scores overflow. {self._divergence_advice()} The "
            f"model keeps what it had before that epoch (a new model that completed none stays "
            f"unfitted)."
        )

    def _vectors_finite(self):
        users = self.user_factors
        if self._composed:
            # a composed vector is at most max_labels^(1 - alpha) times the largest input
            # (Cauchy-Schwarz on the sum), plus the free vector and the bias entry
            inputs = self.label_inputs
            bound = np.ones((1, 1), dtype=inputs.dtype) * max_row_norm(inputs) * max(
                1.0, float(self._max_labels) ** (1 - float(self.composition_exponent)))
            if self.free_factors is not None:
                bound = bound + max_row_norm(self.free_factors)
            users = np.asarray(bound + 1, dtype=inputs.dtype)
        return scores_finite(users, self.item_factors)

    def _divergence_advice(self):
        step_shrink = float(self.learning_rate) * float(self.regularization)
        if self.learning_schedule == "sgd" and step_shrink >= 1 and self.regularization >= 1:
            return (f"regularization={self.regularization:g} with learning_rate="
                    f"{self.learning_rate:g} makes every L2 step overshoot (their product is "
                    f"{step_shrink:g}, it must stay below 1): use a regularization of about "
                    f"0.01-0.1.")
        if self.learning_schedule == "adagrad" and self.regularization >= 1e6:
            # AdaGrad normalises the step, so only an L2 term whose square overflows diverges
            return (f"regularization={self.regularization:g} is far beyond its useful range "
                    f"(its AdaGrad steps overflow): use a regularization of about 0.001-0.1.")
        if float(self.init_scale) > 1:
            return (f"init_scale={self.init_scale:g} starts the vectors far too large: use about "
                    f"0.01.")
        return (f"Try a lower learning_rate (now {self.learning_rate:g}, e.g. "
                f"{self.learning_rate / 10:g}).")

    # -- parameters -------------------------------------------------------------------------

    def _check_params(self):
        _check_choice("loss", self.loss, LOSSES)
        _check_choice("sampler", self.sampler, SAMPLERS)
        _check_choice("image_vectors", self.image_vectors, IMAGE_VECTORS)
        _check_choice("learning_schedule", self.learning_schedule, LEARNING_SCHEDULES)
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
        check_number("composition_exponent", self.composition_exponent, low=0)
        check_number("label_dropout", self.label_dropout, low=0)
        if self.label_dropout >= 1:
            raise ValueError(f"label_dropout must be below 1, got {self.label_dropout!r}")
        check_number("validation_fraction", self.validation_fraction, low=0, strict=True)
        if self.validation_fraction >= 1:
            raise ValueError(f"validation_fraction must be below 1, got "
                             f"{self.validation_fraction!r}")
        check_number("n_iter_no_change", self.n_iter_no_change, integer=True, low=1)
        check_number("rank_decay", self.rank_decay, low=0, strict=True)
        check_number("init_scale", self.init_scale, low=0, strict=True)
        check_number("fold_in_iterations", self.fold_in_iterations, integer=True, low=1)
        check_number("num_threads", self.num_threads, integer=True, low=0)
        if self.refresh_interval is not None:
            check_number("refresh_interval", self.refresh_interval, integer=True, low=1)
        for name in ("label_bias", "early_stopping", "verify_negative_samples"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if np.dtype(self.dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        check_seed(self.random_state)

    def _refresh_interval(self, n_labels):
        if self.refresh_interval is not None:
            return int(self.refresh_interval)
        return max(1, math.ceil(n_labels * math.log(max(n_labels, 2))))

    @property
    def _max_labels(self):
        return getattr(self, "_most_labels", 1)

    # -- new images -------------------------------------------------------------------------

    def recalculate_user(self, userid, user_items):
        """Image vector(s) computed from known labels alone, with the label vectors fixed.

        ``recommend(userid, user_items, recalculate_user=True)`` calls this, so a new image
        (or an image whose labels changed) gets recommendations from its rows of
        ``user_items`` without retraining. Composed image vectors are computed exactly, as for
        a training image. Free ones are folded in: ``fold_in_iterations`` SGD passes over the
        image's labels with this model's loss and sampler, on the image's own random stream
        (seeded from its labels and the model's seed), so the same labels always give the same
        vector, whatever else is in the batch. ``userid`` only decides the shape of the result
        (scalar: one vector).
        """
        self._check_fitted()
        rows = self._rows_of_new(user_items)
        expected = 1 if np.isscalar(userid) else len(userid)
        if rows.shape[0] != expected:
            raise ValueError(
                f"user_items has {rows.shape[0]} rows for {expected} userid(s): give one row of "
                f"known labels per image"
            )
        vectors = self._new_vectors(rows)
        return vectors[0] if np.isscalar(userid) else vectors

    def partial_fit_users(self, userids, user_items):
        """Add or update images in a fitted model without retraining the labels.

        As implicit's ``AlternatingLeastSquares.partial_fit_users``: row ``j`` of ``user_items``
        holds the labels of image ``userids[j]``; that image's vector is recomputed from them
        (see ``recalculate_user``). Ids beyond the model's images grow ``user_factors``; images
        between the old end and a new id get zero vectors.
        """
        self._check_fitted()
        userids = np.asarray(userids)
        rows = self._rows_of_new(user_items)
        if userids.ndim != 1 or len(userids) != rows.shape[0]:
            raise ValueError(
                f"userids must be a 1-d list with one id per row of user_items, got "
                f"{userids.shape} ids for {rows.shape[0]} rows"
            )
        check_ids("userids", userids, np.iinfo(np.int32).max, "images at most")
        vectors = self._new_vectors(rows)
        if self.user_factors is None:
            self.user_factors = np.zeros((0, vectors.shape[1]), dtype=vectors.dtype)
        if len(userids) and userids.max() >= self.user_factors.shape[0]:
            grown = np.zeros((userids.max() + 1, self.user_factors.shape[1]),
                             dtype=self.user_factors.dtype)
            grown[: self.user_factors.shape[0]] = self.user_factors
            self.user_factors = grown
        self.user_factors[userids] = vectors
        self._user_norms = None

    def _rows_of_new(self, user_items):
        if not scipy.sparse.issparse(user_items):
            raise ValueError("user_items must be a scipy.sparse CSR matrix of known labels")
        if user_items.shape[1] != self.item_factors.shape[0]:
            raise ValueError(
                f"user_items has {user_items.shape[1]} columns but the model knows "
                f"{self.item_factors.shape[0]} labels"
            )
        return binary_csr(user_items, allow_empty=True, stacklevel=4)

    def _new_vectors(self, rows):
        """Vectors for the images in ``rows`` (CSR): composed, or folded in (free vectors)."""
        self._check_params()
        if self.image_vectors == "labels":
            return self._compose(rows)
        return self._fold_in(rows)

    def _fold_in(self, rows):
        """Vectors for ``rows`` learned against the fixed label vectors (the free part; with
        ``labels+free`` on top of the composed one), each image on its own random stream
        seeded from its labels (see :func:`vse_recsys._sampler.fold_in`)."""
        n_images, n_labels = rows.shape
        width = self.item_factors.shape[1]
        # a free vector starts at zero (the composed one, with labels+free): a start that
        # depends on nothing but the image's labels
        if self._composed:
            vectors = self._compose(rows)
        else:
            vectors = np.zeros((n_images, width), dtype=self.item_factors.dtype)
            if self.label_bias:
                vectors[:, -1] = 1
        if rows.nnz == 0:
            return vectors
        adaptive = None
        num_threads = self._threads()
        if self.sampler == "adaptive":
            adaptive = _sampler.AdaptiveSampler(n_labels, width, self.rank_decay * n_labels,
                                                num_threads)
        _sampler.fold_in(vectors, np.ascontiguousarray(self.item_factors),
                         rows.indptr.astype(np.int64), rows.indices,
                         _image_seeds(rows, self.random_state),
                         passes=int(self.fold_in_iterations), adaptive=adaptive,
                         num_threads=num_threads, adagrad=self.learning_schedule == "adagrad",
                         **self._step_settings(_sampler.warp_rank_weights(n_labels)))
        if not scores_finite(vectors, self.item_factors):
            raise DivergenceError(
                f"folding in {n_images} images diverged with learning_rate="
                f"{self.learning_rate}; refit with a lower learning_rate"
            )
        return vectors

    # -- persistence ------------------------------------------------------------------------

    def save(self, fileobj_or_path):
        """Save parameters and vectors to a ``.npz`` file (no pickled objects).

        A path is written atomically: to a temporary file in the same folder, flushed to disk,
        then renamed, so an interrupted save never leaves a truncated model behind. As with
        ``numpy.savez``, a path without the ``.npz`` suffix gets it appended. The file carries
        ``format`` and ``format_version`` (see :mod:`vse_recsys._npz`); ``load`` refuses newer
        versions.
        """
        arrays = {name: getattr(self, name) for name in _SAVED_PARAMS}
        for name in _SAVED_ARRAYS:
            arrays[name] = getattr(self, name)
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
        in ``recommend``. A path that does not exist is retried with ``.npz`` appended. Files of
        format versions 1 and 2 load as the free-vector models they were.

        Raises
        ------
        FileNotFoundError
            No such file.
        ModelFileError (a ValueError)
            Not an ``.npz`` model, a file of another kind (an Annotator file, another tool's
            model: the message says which), a truncated or corrupted file, a
            ``format_version`` newer than this vse-recsys reads, an unknown entry, a missing or
            invalid parameter, or vectors that are not finite 2-D float arrays of matching
            shapes and dtype.
        """
        arrays, version = read_model_file(fileobj_or_path, "VSEEns")
        return cls._from_arrays(arrays, source_name(fileobj_or_path), version)

    @classmethod
    def _from_arrays(cls, arrays, name, version=3):
        """A model from the arrays of a saved file (without ``format`` and ``format_version``),
        validated; ModelFileError names ``name``."""

        def fail(problem):
            return ModelFileError(f"{name} is not a valid VSEEns model file: {problem}")

        known = {*_SAVED_PARAMS, "dtype", "random_state"}
        unknown = sorted(set(arrays) - known - set(_SAVED_ARRAYS))
        if unknown:
            raise fail(f"unknown entry {unknown[0]!r} (is it from a newer vse-recsys?)")
        params = read_params(arrays, known, fail)
        if version < 3:
            params = {**_BEFORE_VERSION_3, **params}
        missing = sorted({"factors", "dtype"} - set(params))
        if missing:
            raise fail(f"parameter {missing[0]!r} is missing")
        try:
            model = cls(**params)
            model._check_params()
        except (TypeError, ValueError) as error:
            raise fail(f"bad parameter: {error}") from None
        _load_vectors(model, arrays, fail)
        return model


def _load_vectors(model, arrays, fail):
    """The saved vectors into ``model``, each checked against its parameters and the others."""
    width = model.factors + bool(model.label_bias)
    needed = {"item_factors": width, "user_factors": width}
    if model._composed:
        needed["label_inputs"] = model.factors
        if model.image_vectors == "labels+free":
            needed["free_factors"] = model.factors
    present = [name for name in needed if name in arrays]
    if not present:
        return
    for name in needed:
        if name not in arrays:
            raise fail(f"it has {present[0]} but no {name}")
    for name, columns in needed.items():
        setattr(model, name, _checked_vectors(arrays[name], name, columns, model, fail))
    if model.item_factors.shape[0] == 0:
        raise fail("item_factors has no rows: a fitted model has at least one label")
    if model.label_inputs is not None and model.label_inputs.shape[0] != len(model.item_factors):
        raise fail("label_inputs and item_factors must have a row per label")
    if model.free_factors is not None and model.free_factors.shape[0] != len(model.user_factors):
        raise fail("free_factors and user_factors must have a row per image")
    if model.label_bias and len(model.user_factors) and not (model.user_factors[:, -1] == 1).all():
        raise fail("with label_bias the last column of user_factors must be 1")
    if not scores_finite(model.user_factors, model.item_factors):
        raise fail("the vectors are so large that scores overflow")


def _checked_vectors(array, key, columns, model, fail):
    """A saved vector matrix as a native-order, C-contiguous array, or ``fail(problem)``."""
    if array.ndim != 2:
        raise fail(f"{key} must be a 2-D array, got shape {array.shape}")
    if array.dtype.kind != "f" or array.dtype.itemsize not in (4, 8):
        raise fail(f"{key} must hold float32 or float64 values, got {array.dtype}")
    if np.dtype(array.dtype.name) != np.dtype(model.dtype):
        raise fail(f"{key} is {array.dtype.name} but the model's dtype is {model.dtype}")
    if array.shape[1] != columns:
        bias = " and a bias column" if columns > model.factors else ""
        raise fail(f"{key} has {array.shape[1]} columns but the model has "
                   f"factors={model.factors}{bias}")
    finite = np.isfinite(array)
    if not finite.all():
        raise fail(f"{key} holds {array.size - np.count_nonzero(finite):,} NaN or infinite values")
    return np.ascontiguousarray(array, dtype=model.dtype)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


# images per block when a step runs over every image (at most 2^20 pairs a block): the block's
# float64 temporaries stay a few MiB whatever the number of images
_BLOCK_ROWS = 1 << 15
_BLOCK_PAIRS = 1 << 20


def _row_blocks(indptr):
    """(start, stop) row ranges covering a CSR matrix: at most _BLOCK_ROWS rows and, unless
    one row has more, _BLOCK_PAIRS stored entries each."""
    n_rows = len(indptr) - 1
    start = 0
    while start < n_rows:
        stop = min(n_rows, start + _BLOCK_ROWS)
        by_pairs = int(np.searchsorted(indptr, indptr[start] + _BLOCK_PAIRS, side="right")) - 1
        stop = max(start + 1, min(stop, by_pairs))
        yield start, stop
        start = stop


_SPLITMIX_GAMMA = np.uint64(0x9E3779B97F4A7C15)


def _splitmix(values):
    """SplitMix64's finaliser of uint64 values (wrapping arithmetic, vectorised)."""
    with np.errstate(over="ignore"):
        z = values + _SPLITMIX_GAMMA
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _image_seeds(rows, random_state):
    """One 64-bit seed per row of ``rows`` from its labels and the model's seed: the same
    labels give the same seed, in any batch."""
    seed = np.uint64(int(random_state) if isinstance(random_state, (int, np.integer)) else 0)
    mixed = _splitmix(rows.indices.astype(np.uint64))
    sums = np.zeros(rows.shape[0], dtype=np.uint64)
    counts = np.diff(rows.indptr)
    if rows.nnz:
        with np.errstate(over="ignore"):
            nonempty = counts > 0
            sums[nonempty] = np.add.reduceat(mixed, rows.indptr[:-1][nonempty])
    return _splitmix(_splitmix(sums ^ seed) + counts.astype(np.uint64))
