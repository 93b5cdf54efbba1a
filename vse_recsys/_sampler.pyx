# cython: language_level=3
"""nogil kernels: the uniform and adaptive negative samplers, the hinge / WARP / BPR step and
the Hogwild epoch loop.

The public model (``vse_recsys.model.VSEEns``) validates input and hands this module only
typed arrays and scalars. It is one extension module, built from these files:

``_sampler.pxd``
    The kernel API: the fused float type, loss and sampler codes, the per-thread RNG (inline,
    bodies included), the structs, the C helpers and the two state classes' fields and methods.
``_sampler.pyx`` (this file)
    Per-thread state, choosing a negative, the loss step, the epoch loop, Ctrl-C handling.
``_refresh.pxi``
    ``AdaptiveSampler``: per-factor label orders and spreads, and their refresh.
``_shuffle.pxi``
    ``PairShuffler``: each epoch's fresh random order of the pairs.
``_composed.pxi``
    The label-composed model's epoch: an image's vector summed from its labels' inputs.
``_foldin.pxi``
    Folding new images into a free-vector model, each image on its own random stream.
``_testing.pxi``
    Small ``def`` wrappers so that tests can call the samplers and the step directly; training
    never goes through them.
``_vector.h``, ``_platform.h``
    All the C: vector math (``omp simd``) in the first; compiler builtins (prefetch, atomics)
    and the build's bounds-check flag in the second.
"""

from cython.parallel cimport parallel, prange, threadid
from libc.math cimport ceil, exp, expm1, log1p, pow, sqrt
from libc.string cimport memcpy, memset

cimport openmp

import numpy as np

#: True when the kernels were compiled with Cython's bounds checks: an out-of-range index into
#: a typed array (negative ones included) then raises IndexError instead of corrupting memory.
BOUNDSCHECK = bool(VSE_RECSYS_BOUNDSCHECK)

# A sampler gives up on rejection after this many draws that hit a positive of the image and
# takes a uniformly drawn negative instead (exact, O(#positives)); see _sample_negative.
cdef enum:
    MAX_REJECTIONS = 32

# What _choose_negative returns instead of a label when a pair has none to train against
cdef enum:
    NO_NEGATIVE = -1               # the image has every label
    NO_VIOLATOR = -2               # WARP: no negative violated the margin in max_sampled draws


# ---------------------------------------------------------------------------------------------
# Per-thread state: RNG states (the generator itself is in _sampler.pxd), cache-aligned rows
# ---------------------------------------------------------------------------------------------

cdef uint32_t _rng_below_rejecting(uint64_t* s, uint32_t n, uint64_t m) noexcept nogil:
    """rng_below once the first product ``m`` landed in the low band: reject and redraw while
    it is below the threshold that makes the result unbiased."""
    cdef uint32_t threshold = (<uint32_t> (0 - n)) % n
    while <uint32_t> m < threshold:
        m = (rng_next(s) >> 32) * <uint64_t> n
    return <uint32_t> (m >> 32)


def make_rng_states(generator, int n_threads):
    """Independent xoshiro256++ states for ``n_threads`` threads, drawn from a NumPy Generator.

    Returns a (n_threads, 8) uint64 array; a thread uses the first 4 words of its row (the rest
    is padding so that threads never share a cache line).
    """
    states = np.zeros((n_threads, RNG_STRIDE), dtype=np.uint64)
    states[:, :4] = generator.integers(0, np.iinfo(np.uint64).max, size=(n_threads, 4),
                                       dtype=np.uint64, endpoint=True)
    # xoshiro's only bad state is all zeros
    states[np.all(states[:, :4] == 0, axis=1), 0] = 1
    return states


def _thread_rng_copies(uint64_t[:, ::1] rng_states, int n_threads):
    """Each thread's RNG state copied onto its own cache line (the caller writes them back)."""
    if rng_states.shape[0] < n_threads or rng_states.shape[1] < 4:
        raise ValueError(f"need one RNG state per thread ({n_threads})")
    copies = _cache_aligned_rows(n_threads, RNG_STRIDE, np.uint64)
    copies[:, :4] = rng_states[:n_threads, :4]
    return copies


def _cache_aligned_rows(Py_ssize_t n_rows, Py_ssize_t stride, dtype):
    """A zeroed (n_rows, stride) array whose rows start on 64-byte cache-line boundaries.

    NumPy only promises 16-byte alignment, so a row of 64 bytes can straddle two cache lines
    and share one with its neighbour: threads writing their own rows would then fight over it
    (false sharing) on every update.
    """
    itemsize = np.dtype(dtype).itemsize
    if (stride * itemsize) % 64:
        raise ValueError("rows must be a whole number of cache lines")
    buffer = np.zeros(n_rows * stride + 64 // itemsize, dtype=dtype)
    offset = (-buffer.ctypes.data % 64) // itemsize
    return buffer[offset:offset + n_rows * stride].reshape(n_rows, stride)


# ---------------------------------------------------------------------------------------------
# Scores and an image's positives
# ---------------------------------------------------------------------------------------------

cdef inline floating _dot(const floating* a, const floating* b, int32_t k) noexcept nogil:
    if floating is float:
        return vse_dot_f(a, b, k)
    else:
        return vse_dot_d(a, b, k)


cdef inline bint _is_positive(Positives positives, int32_t label) noexcept nogil:
    """Binary search in the image's sorted positive labels."""
    cdef int64_t lo = 0, hi = positives.count, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if positives.labels[mid] < label:
            lo = mid + 1
        else:
            hi = mid
    return lo < positives.count and positives.labels[lo] == label


cdef inline int32_t _nth_negative(Positives positives, int32_t n) noexcept nogil:
    """The n-th (0-based) label that is not a positive: skip every positive at or below it."""
    cdef int64_t t
    for t in range(positives.count):
        if positives.labels[t] <= n:
            n += 1
        else:
            break
    return n


cdef inline Positives _positives_of(const int64_t* indptr, const int32_t* indices,
                                    int32_t image) noexcept nogil:
    """The positives of row ``image`` of a CSR matrix."""
    cdef Positives positives
    positives.labels = indices + indptr[image]
    positives.count = indptr[image + 1] - indptr[image]
    return positives


# ---------------------------------------------------------------------------------------------
# Choosing a negative: uniform and adaptive draws, WARP's search, the best of c candidates
# ---------------------------------------------------------------------------------------------

cdef inline double _rank_norm(int32_t n_labels, double rank_decay) noexcept nogil:
    return expm1(-n_labels / rank_decay)


cdef inline int32_t _draw_rank(uint64_t* rng, int32_t n_labels, double rank_decay,
                               double rank_norm) noexcept nogil:
    """0-based rank r with P(r) proportional to exp(-(r + 1) / rank_decay), r < n_labels.

    Inverse CDF of the truncated geometric distribution: with q = exp(-1/lambda),
    F(R) = (1 - q^R) / (1 - q^n), so R = ceil(-lambda * log1p(u * (q^n - 1))). O(1), and exact
    for tiny lambda (always rank 1) and huge lambda (uniform ranks) thanks to log1p/expm1.
    """
    cdef double rank = ceil(-rank_decay * log1p(rng_uniform(rng) * rank_norm))
    if rank < 1:  # u == 0 exactly
        rank = 1
    elif rank > n_labels:  # rounding at the far end
        rank = n_labels
    return <int32_t> rank - 1


cdef inline int32_t _draw_factor(const floating* user, const AdaptiveView* view,
                                 uint64_t* rng) noexcept nogil:
    """Factor f with P(f) proportional to |user_f| * sigma_f; -1 when every weight is zero."""
    if floating is float:
        return vse_draw_factor_f(user, view.sigma32, view.n_factors, rng_uniform(rng))
    else:
        return vse_draw_factor_d(user, view.sigma, view.n_factors, rng_uniform(rng))


cdef inline const int32_t* _adaptive_slot(const floating* user, const AdaptiveView* view,
                                          uint64_t* rng) noexcept nogil:
    """Where an adaptive draw's label lies in the sorted lists (steps 2-4 without the read).

    NULL when every factor weight |user_f| * sigma_f is zero (then any label is as good).
    Training takes the slot two pairs ahead and reads it one pair ahead: the read misses the
    cache (the lists are n_factors x n_labels), and this way the miss overlaps other work.
    """
    cdef int32_t f = _draw_factor(user, view, rng)
    if f < 0:
        return NULL
    cdef int32_t rank = _draw_rank(rng, view.n_labels, view.rank_decay, view.rank_norm)
    cdef const int32_t* by_value = view.sorted_labels + <int64_t> f * view.n_labels
    if user[f] > 0:
        return &by_value[rank]                     # rank-th largest v_{., f}
    return &by_value[view.n_labels - 1 - rank]     # rank-th smallest v_{., f}


cdef inline int32_t _draw_adaptive(const floating* user, const AdaptiveView* view,
                                   uint64_t* rng) noexcept nogil:
    """One adaptive draw: a label the model probably ranks high for this image."""
    cdef const int32_t* slot = _adaptive_slot(user, view, rng)
    if slot == NULL:
        return <int32_t> rng_below(rng, view.n_labels)
    return slot[0]


cdef inline int32_t _draw_label(const floating* user, int sampler, const AdaptiveView* view,
                                int32_t n_labels, uint64_t* rng) noexcept nogil:
    """One draw of the sampler, before any check against the image's positives."""
    if sampler == ADAPTIVE:
        return _draw_adaptive(user, view, rng)
    return <int32_t> rng_below(rng, n_labels)


cdef inline int32_t _sample_negative(const floating* user, Positives positives, int sampler,
                                     const AdaptiveView* view, int32_t n_labels, bint verify,
                                     uint64_t* rng, int64_t* draws,
                                     int32_t candidate) noexcept nogil:
    """A negative label for the image, or -1 if the image has every label.

    ``candidate`` is a first draw made earlier by the caller (-1: none). Rejection: a draw that
    hits a positive of the image is redrawn. After MAX_REJECTIONS such draws the sampler falls
    back to a uniformly drawn negative, so an image with nearly every label still costs
    O(#positives) and never loops.
    """
    cdef int attempt
    if positives.count >= n_labels:
        return -1
    for attempt in range(MAX_REJECTIONS):
        if attempt > 0 or candidate < 0:
            candidate = _draw_label(user, sampler, view, n_labels, rng)
        draws[0] += 1
        if not verify or not _is_positive(positives, candidate):
            return candidate
    draws[0] += 1
    return _nth_negative(positives, <int32_t> rng_below(rng, <uint32_t> (n_labels - positives.count)))


cdef inline int32_t _best_candidate(const floating* user, const floating* item_factors,
                                    int32_t positive, Positives positives,
                                    const EpochSettings* settings, const AdaptiveView* view,
                                    uint64_t* rng, int64_t* draws, int32_t negative,
                                    floating* negative_score) noexcept nogil:
    """Draw ``candidates - 1`` further negatives; return the highest-scoring of them and
    ``negative`` (whose score is ``negative_score[0]``, updated to the winner's).

    An extra draw that is a positive of the image is skipped even without verification: a
    positive usually outscores every negative, so keeping the best of c unverified draws would
    train on a positive far more often than one unverified draw does."""
    cdef int32_t other, k = settings.n_factors
    cdef floating score
    cdef int draw
    for draw in range(settings.candidates - 1):
        other = _sample_negative(user, positives, settings.sampler, view, settings.n_labels,
                                 settings.verify, rng, draws, -1)
        if other < 0 or other == positive or (not settings.verify
                                              and _is_positive(positives, other)):
            continue
        score = _dot(user, item_factors + <int64_t> other * k, k)
        if score > negative_score[0]:
            negative = other
            negative_score[0] = score
    return negative


cdef inline int32_t _warp_search(const floating* user, floating positive_score,
                                 const floating* item_factors, int32_t n_factors,
                                 Positives positives, int32_t n_labels, floating margin,
                                 int max_sampled, bint verify, uint64_t* rng,
                                 int64_t* draws, int64_t* negatives_tried) noexcept nogil:
    """WARP: uniform draws until a negative violates the margin; -1 if none in max_sampled."""
    cdef int attempt
    cdef int32_t label
    negatives_tried[0] = 0
    if positives.count >= n_labels:
        return -1
    for attempt in range(max_sampled):
        draws[0] += 1
        label = <int32_t> rng_below(rng, n_labels)
        if verify and _is_positive(positives, label):
            continue
        negatives_tried[0] += 1
        if margin + _dot(user, item_factors + <int64_t> label * n_factors, n_factors) > positive_score:
            return label
    return -1


cdef inline int32_t _choose_negative(const floating* user, int32_t positive,
                                     floating positive_score, Positives positives,
                                     const floating* item_factors, const EpochSettings* settings,
                                     const AdaptiveView* view, uint64_t* rng, int32_t candidate,
                                     int64_t* draws, floating* negative_score,
                                     floating* rank_weight) noexcept nogil:
    """The negative to train (``user``, ``positive``) against; -1 when the image has no
    negative, -2 when WARP's search found no violator in ``max_sampled`` draws.

    ``user`` is any image vector, ``positives`` the labels that are not negatives for it and
    ``positive_score`` its score for ``positive``. WARP searches uniform draws for a violator
    and sets ``rank_weight`` from the number of negatives it tried (else it is 1); the samplers
    draw one negative, starting from ``candidate`` (a first draw made ahead by the caller, -1:
    none), and with ``candidates`` > 1 keep the best-scoring of that many. Sets
    ``negative_score`` to the chosen negative's score and adds every draw made to ``draws``.
    """
    cdef int32_t negative, k = settings.n_factors
    cdef int64_t pair_draws = 0, tried = 0
    rank_weight[0] = 1
    if settings.loss == WARP:
        negative = _warp_search(user, positive_score, item_factors, k, positives,
                                settings.n_labels, <floating> settings.margin,
                                settings.max_sampled, settings.verify, rng, &pair_draws, &tried)
        if negative >= 0:
            rank_weight[0] = <floating> settings.warp_weights[
                max(<int32_t> ((settings.n_labels - 1) / tried), 1)]
        elif positives.count < settings.n_labels:
            draws[0] += pair_draws
            return NO_VIOLATOR
    else:
        negative = _sample_negative(user, positives, settings.sampler, view, settings.n_labels,
                                    settings.verify, rng, &pair_draws, candidate)
    draws[0] += pair_draws
    if negative < 0 or negative == positive:  # (== only without verification)
        return -1
    negative_score[0] = _dot(user, item_factors + <int64_t> negative * k, k)
    if settings.candidates > 1:
        negative = _best_candidate(user, item_factors, positive, positives, settings, view, rng,
                                   draws, negative, negative_score)
    return negative


# ---------------------------------------------------------------------------------------------
# The loss step shared by the three losses
# ---------------------------------------------------------------------------------------------

cdef inline void _pair_step(floating* user, floating* pos, floating* neg, int32_t n_factors,
                            floating scale, floating learning_rate,
                            floating regularization) noexcept nogil:
    """SGD on scale * (s(i,n) - s(i,p)) + L2; every update uses the old values of all three."""
    if floating is float:
        vse_step_f(user, pos, neg, n_factors, scale, learning_rate, regularization)
    else:
        vse_step_d(user, pos, neg, n_factors, scale, learning_rate, regularization)


cdef inline void _user_step(floating* user, const floating* pos, const floating* neg,
                            int32_t n_factors, floating scale, floating learning_rate,
                            floating regularization) noexcept nogil:
    """The user part of _pair_step only: label vectors stay fixed."""
    if floating is float:
        vse_step_user_f(user, pos, neg, n_factors, scale, learning_rate, regularization)
    else:
        vse_step_user_d(user, pos, neg, n_factors, scale, learning_rate, regularization)


cdef inline floating _violation(floating margin, floating positive_score,
                                floating negative_score) noexcept nogil:
    """How far the negative's score reaches into the margin: > 0 is a violation."""
    return margin - positive_score + negative_score


cdef inline floating _loss_scale(int loss, floating positive_score, floating negative_score,
                                 floating margin, floating rank_weight) noexcept nogil:
    """Step size multiplier for one (positive, negative) pair; 0 means no update."""
    if loss == BPR:  # d/dz of -ln sigmoid(z) at z = s_p - s_n, i.e. 1 - sigmoid(z)
        return 1 / (1 + exp(positive_score - negative_score))
    if _violation(margin, positive_score, negative_score) <= 0:
        return 0
    if loss == WARP:
        return rank_weight
    return 1


cdef inline bint _takes_step(int loss, floating scale) noexcept nogil:
    # BPR's gradient is never exactly 0, so its step (and weight decay) always applies, even
    # when the sigmoid underflows in float32
    return scale != 0 or loss == BPR


cdef inline void _ascend(floating* x, floating* accumulator, const floating* direction,
                         int32_t n, floating scale, floating learning_rate,
                         floating regularization) noexcept nogil:
    """x along scale * direction, with L2; AdaGrad when ``accumulator`` is not NULL."""
    if floating is float:
        vse_ascend_f(x, accumulator, direction, n, scale, learning_rate, regularization)
    else:
        vse_ascend_d(x, accumulator, direction, n, scale, learning_rate, regularization)


cdef inline void _scaled_difference(floating* out, const floating* a, const floating* b,
                                    int32_t n, floating scale) noexcept nogil:
    if floating is float:
        vse_scaled_difference_f(out, a, b, n, scale)
    else:
        vse_scaled_difference_d(out, a, b, n, scale)


cdef inline void _add_scaled(floating* out, const floating* a, int32_t n,
                             floating scale) noexcept nogil:
    if floating is float:
        vse_axpy_f(out, a, n, scale)
    else:
        vse_axpy_d(out, a, n, scale)


cdef inline floating* _row_or_null(floating* base, int64_t row, int32_t width) noexcept nogil:
    return NULL if base == NULL else base + row * width


cdef inline void _adagrad_pair_step(floating* user, floating* pos, floating* neg,
                                    floating* user_sums, floating* pos_sums, floating* neg_sums,
                                    int32_t n, floating scale, floating learning_rate,
                                    floating regularization, bint update_labels,
                                    floating* scratch) noexcept nogil:
    """_pair_step with AdaGrad accumulators (LightFM's schedule): each vector moves along its
    gradient, from the old values of the other two (``scratch``: 2 n floats)."""
    cdef floating* old_user = scratch
    cdef floating* direction = scratch + n
    memcpy(old_user, user, n * sizeof(floating))
    _scaled_difference(direction, pos, neg, n, 1)
    _ascend(user, user_sums, direction, n, scale, learning_rate, regularization)
    if update_labels:
        _ascend(pos, pos_sums, old_user, n, scale, learning_rate, regularization)
        _ascend(neg, neg_sums, old_user, n, -scale, learning_rate, regularization)


cdef inline bint _loss_step(floating* user, floating* pos, floating* neg,
                            floating positive_score, floating negative_score,
                            floating rank_weight, const EpochSettings* settings,
                            const StepSums* sums) noexcept nogil:
    """One step on (``user``, ``pos``, ``neg``) scaled by the loss; False if there is none.

    The scores are the ones the negative was chosen with. Without ``update_labels`` only
    ``user`` moves; with ``sums`` (AdaGrad accumulators of the three vectors and a scratch of
    2 n_factors) the step is AdaGrad's, else SGD's. With a bias the image vector's last entry
    stays 1.
    """
    cdef floating scale = _loss_scale(settings.loss, positive_score, negative_score,
                                      <floating> settings.margin, rank_weight)
    cdef int32_t n = settings.n_factors
    cdef floating lr = <floating> settings.learning_rate
    cdef floating reg = <floating> settings.regularization
    if not _takes_step(settings.loss, scale):
        return False
    if sums != NULL:
        _adagrad_pair_step(user, pos, neg, <floating*> sums.user, <floating*> sums.positive,
                           <floating*> sums.negative, n, scale, lr, reg, settings.update_labels,
                           <floating*> sums.scratch)
    elif settings.update_labels:
        _pair_step(user, pos, neg, n, scale, lr, reg)
    else:
        _user_step(user, pos, neg, n, scale, lr, reg)
    if settings.bias:
        user[n - 1] = 1
    return True


# ---------------------------------------------------------------------------------------------
# Ctrl-C during an epoch
# ---------------------------------------------------------------------------------------------

# PyErr_CheckSignals without Cython's exception check: the caller keeps the pending exception
# and re-raises it with _raise_pending once it is safe (outside the parallel region).
cdef extern from "Python.h":
    int _check_signals "PyErr_CheckSignals" () noexcept


cdef int _signals_pending() noexcept with gil:
    return _check_signals() != 0


cdef int _raise_pending() except -1:
    return -1  # an exception is already set: ``except -1`` makes Cython propagate it


# ---------------------------------------------------------------------------------------------
# The adaptive sampler's state and refresh; the epoch's order of the pairs
# ---------------------------------------------------------------------------------------------

include "_refresh.pxi"
include "_shuffle.pxi"


# ---------------------------------------------------------------------------------------------
# One epoch
# ---------------------------------------------------------------------------------------------

# Pairs a thread takes at a time; refreshes and Ctrl-C checks happen between chunks.
cdef enum:
    CHUNK = 256
    PREFETCH_AHEAD = 4             # pairs: the rows of pair j + 4 are fetched while j trains
    SIGNAL_CHECK_CHUNKS = 128      # the main thread checks for Ctrl-C every 128 of its chunks
    COUNTER_STRIDE = 8             # int64 counters per thread: one cache line each

# A thread's counters, one row of COUNTER_STRIDE
cdef enum:
    SKIPPED = 0
    VIOLATIONS = 1
    UPDATES = 2
    DRAWS = 3
    SEEN = 4
    CHUNKS = 5
    PAIRS = 6                      # (the composed epoch: pairs of the images it visited)
    UNVIOLATED = 7                 # WARP: pairs whose search found no violator

# A thread's draw-ahead pipeline within a chunk. The first candidate negatives are drawn ahead,
# so that their cache misses overlap the arithmetic of the pairs before them.
cdef struct DrawAhead:
    int32_t pending                # the next pair's first candidate (-1: none)
    const int32_t* slot            # adaptive: the slot of the sorted lists chosen for the pair
                                   # after it, its label not yet read (NULL: none)


cdef inline int32_t _draw_ahead(DrawAhead* ahead, const floating* next_user,
                                const floating* later_user, const floating* item_factors,
                                const EpochSettings* settings, const AdaptiveView* view,
                                uint64_t* rng) noexcept nogil:
    """This pair's first candidate negative (drawn a pair ago; -1: none), and the draws ahead.

    The next pair's candidate is read now (from the slot chosen a pair ago; uniform: drawn now)
    and its row fetched; for the adaptive sampler, the slot of the pair after it is chosen and
    fetched. ``next_user`` and ``later_user`` are those two pairs' image vectors (NULL: the
    chunk ends first). WARP makes its own draws and takes no candidate.
    """
    cdef int32_t candidate = ahead.pending
    ahead.pending = -1
    if settings.loss == WARP or next_user == NULL:
        return candidate
    if ahead.slot != NULL:
        ahead.pending = ahead.slot[0]
    else:
        ahead.pending = _draw_label(next_user, settings.sampler, view, settings.n_labels, rng)
    vse_prefetch(item_factors + <int64_t> ahead.pending * settings.n_factors,
                 settings.n_factors * sizeof(floating))
    ahead.slot = NULL
    if settings.sampler == ADAPTIVE and later_user != NULL:
        ahead.slot = _adaptive_slot(later_user, view, rng)
        if ahead.slot != NULL:
            vse_prefetch_read(ahead.slot, 4)
    return candidate


cdef int _train_chunk(floating[:, ::1] user_factors, floating[:, ::1] item_factors,
                      const int64_t[::1] indptr, const int32_t[::1] indices,
                      const int32_t[::1] pair_users, const int32_t[::1] pair_labels,
                      int64_t start, int64_t stop, EpochSettings settings,
                      const AdaptiveView* view, uint64_t* rng, int64_t* counts,
                      floating* user_sums, floating* item_sums,
                      floating* scratch) except -1 nogil:
    """Train the pairs start..stop - 1 in order on one thread, adding to its ``counts``.

    ``user_sums`` / ``item_sums`` are the AdaGrad accumulators of the two factor matrices
    (NULL: SGD; ``item_sums`` may be NULL when labels are fixed), ``scratch`` this thread's
    2 n_factors values for AdaGrad's step.

    This is where the caller's pair arrays are indexed: in the bounds-checked build an image or
    label out of range raises IndexError here, and ``except -1`` carries it to train_epoch (a
    ``noexcept`` function could only print it). The helpers it calls get plain pointers.

    ``settings`` comes by value: the compiler keeps this thread's copy in registers, where it
    would reload the fields behind a shared pointer after every call into libm.
    """
    cdef int64_t j, n_pairs = pair_users.shape[0]
    cdef int32_t image, negative, candidate
    cdef long row_bytes = settings.n_factors * sizeof(floating)
    cdef const floating* labels = &item_factors[0, 0]
    cdef floating* user
    cdef floating* positive
    cdef floating positive_score, negative_score, rank_weight
    cdef Positives positives
    cdef DrawAhead ahead
    cdef StepSums sums
    cdef int32_t k = settings.n_factors
    ahead.pending = -1
    ahead.slot = NULL
    sums.scratch = scratch
    for j in range(start, stop):
        if j + PREFETCH_AHEAD < n_pairs:
            image = pair_users[j + PREFETCH_AHEAD]
            vse_prefetch(&user_factors[image, 0], row_bytes)
            vse_prefetch(&item_factors[pair_labels[j + PREFETCH_AHEAD], 0], row_bytes)
            vse_prefetch_read(&indptr[image], 16)
        if j + 1 < n_pairs:  # indptr of pair j + 1 was fetched a few pairs ago
            vse_prefetch_read(&indices[0] + indptr[pair_users[j + 1]], 64)
        image = pair_users[j]
        user = &user_factors[image, 0]
        positive = &item_factors[pair_labels[j], 0]
        positives = _positives_of(&indptr[0], &indices[0], image)
        candidate = _draw_ahead(&ahead,
                                &user_factors[pair_users[j + 1], 0] if j + 1 < stop else NULL,
                                &user_factors[pair_users[j + 2], 0] if j + 2 < stop else NULL,
                                labels, &settings, view, rng)
        positive_score = _dot(user, positive, settings.n_factors)
        negative = _choose_negative(user, pair_labels[j], positive_score, positives, labels,
                                    &settings, view, rng, candidate, &counts[DRAWS],
                                    &negative_score, &rank_weight)
        if negative < 0:
            counts[UNVIOLATED if negative == NO_VIOLATOR else SKIPPED] += 1
            continue
        counts[VIOLATIONS] += _violation(<floating> settings.margin, positive_score,
                                         negative_score) > 0
        if user_sums != NULL:
            sums.user = user_sums + <int64_t> image * k
            sums.positive = _row_or_null(item_sums, pair_labels[j], k)
            sums.negative = _row_or_null(item_sums, negative, k)
        counts[UPDATES] += _loss_step(user, positive, &item_factors[negative, 0], positive_score,
                                      negative_score, rank_weight, &settings,
                                      &sums if user_sums != NULL else NULL)
    return 0


cdef inline void _timed_refresh(AdaptiveSampler adaptive, const floating* item_factors,
                                int num_threads, RefreshSchedule* schedule) noexcept nogil:
    """Refresh the sampler from ``item_factors`` (publishing it), timed and counted."""
    cdef double started = openmp.omp_get_wtime()
    adaptive._rebuild(item_factors, num_threads)
    schedule.seconds += openmp.omp_get_wtime() - started
    schedule.refreshes += 1


cdef inline void _refresh_when_due(AdaptiveSampler adaptive, const floating* item_factors,
                                   int64_t pairs, RefreshSchedule* schedule) noexcept nogil:
    """Count ``pairs`` more trained pairs; refresh the sampler if that crosses the next point.

    The lock-free hand-off: the thread that crosses the point rebuilds the back buffer on its
    own and publishes it, while the other threads keep drawing from the front buffer; a thread
    that finds a refresh running goes on training.
    """
    cdef long long done = vse_atomic_add(&schedule.pairs_done, pairs)
    if done < vse_atomic_load_ll(&schedule.next_refresh) or not vse_try_lock(&adaptive.refreshing):
        return
    if done >= schedule.next_refresh:  # re-check: another thread may have just refreshed
        _timed_refresh(adaptive, item_factors, 1, schedule)
        schedule.next_refresh = done + schedule.interval
    vse_atomic_store(&adaptive.refreshing, 0)


def train_epoch(floating[:, ::1] user_factors, floating[:, ::1] item_factors,
                const int64_t[::1] indptr, const int32_t[::1] indices,
                const int32_t[::1] pair_users, const int32_t[::1] pair_labels, *,
                int loss, int sampler, AdaptiveSampler adaptive=None,
                double learning_rate, double regularization, double margin,
                int max_sampled, bint verify_negative_samples,
                const double[::1] warp_weights, uint64_t[:, ::1] rng_states,
                int64_t refresh_interval, int num_threads, bint update_labels=True,
                int candidates=1, bint bias=False, floating[:, ::1] user_sums=None,
                floating[:, ::1] item_sums=None):
    """Train on every (image, label) pair given, in the order given; Hogwild across threads.

    The data (the factors, the CSR ``indptr`` / ``indices`` of every image's positives and the
    pairs) is positional; everything else is keyword-only. ``adaptive`` is the sampler state
    for ``sampler=ADAPTIVE`` (unused otherwise).

    With ``candidates`` > 1 (hinge and BPR), each pair draws that many negatives from its
    sampler and trains on the one the model scores highest (one more dot product each).

    With ``update_labels=False`` only image vectors change (folding new images into a trained
    model): the label factors and the adaptive sampler (refreshed once, at the start) stay as
    they are.

    With ``bias`` the factors' last column is a per-label bias: the image vectors' last entry
    is 1 and stays 1. ``user_sums`` and ``item_sums`` (the factors' shapes) are AdaGrad
    accumulators (LightFM's schedule); without them the steps are plain SGD.

    Threads take chunks of pairs dynamically and update the shared factors without locks. With
    the adaptive sampler the sampler state is refreshed at the start and then every
    ``refresh_interval`` pairs (one draw each, redraws of positives aside) by whichever thread
    reaches that point, without stopping the others. Ctrl-C is noticed within a few
    milliseconds and raises KeyboardInterrupt.

    Returns a dict of counters: pairs, skipped (the image has every label: no negative),
    unviolated (WARP: no negative violated the margin in ``max_sampled`` draws), violations
    (pairs whose sampled negative violated the margin), updates, draws, refreshes,
    refresh_seconds, threads_used.
    """
    cdef int32_t n_labels = item_factors.shape[0], k = item_factors.shape[1]
    cdef int64_t n_pairs = pair_users.shape[0]
    cdef int64_t n_chunks = (n_pairs + CHUNK - 1) // CHUNK
    cdef int64_t chunk, start, stop
    cdef bint adaptive_sampling = sampler == ADAPTIVE
    # shared between threads: the settings are only read; the schedule and the Ctrl-C flag are
    # only ever touched through pointers (an assignment inside prange would make Cython give
    # each thread a private copy)
    cdef EpochSettings settings
    cdef RefreshSchedule schedule
    cdef int interrupted = 0
    # each thread's own
    cdef int tid
    cdef uint64_t* rng
    cdef int64_t* counts
    # every thread's counters and RNG state on its own cache lines (copied back at the end)
    cdef int64_t[:, ::1] counters = _cache_aligned_rows(max(1, num_threads), COUNTER_STRIDE,
                                                        np.int64)
    cdef uint64_t[:, ::1] thread_rng

    # O(1) shape checks; the caller (model.py) guarantees that every index is in range
    if user_factors.shape[1] != k:
        raise ValueError(f"user_factors has {user_factors.shape[1]} columns, item_factors {k}")
    if indptr.shape[0] != user_factors.shape[0] + 1:
        raise ValueError(f"indptr has {indptr.shape[0]} entries for {user_factors.shape[0]} "
                         f"images (needs one more)")
    if pair_labels.shape[0] != n_pairs:
        raise ValueError("pair_users and pair_labels must have the same length")
    if warp_weights.shape[0] < max(n_labels, 2):
        raise ValueError("warp_weights needs one weight per rank")
    if adaptive_sampling:
        if adaptive is None:
            raise ValueError("the adaptive sampler needs its AdaptiveSampler state")
        if adaptive.n_labels != n_labels or adaptive.n_factors != k:
            raise ValueError("the AdaptiveSampler does not match item_factors' shape")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if adaptive_sampling and num_threads > adaptive.num_threads:
        raise ValueError(f"the AdaptiveSampler was built for {adaptive.num_threads} threads, "
                         f"not {num_threads}: build it with num_threads={num_threads}")
    if refresh_interval < 1:
        raise ValueError("refresh_interval must be >= 1")
    if candidates < 1 or (candidates > 1 and loss == WARP):
        raise ValueError(f"candidates must be >= 1, and 1 for WARP (got {candidates})")
    if user_sums is not None and (user_sums.shape[0] != user_factors.shape[0]
                                  or user_sums.shape[1] != k):
        raise ValueError("user_sums must have user_factors' shape")
    if item_sums is not None and (item_sums.shape[0] != n_labels or item_sums.shape[1] != k):
        raise ValueError("item_sums must have item_factors' shape")
    if update_labels and (user_sums is None) != (item_sums is None):
        raise ValueError("AdaGrad needs both user_sums and item_sums (or neither: SGD)")
    thread_rng = _thread_rng_copies(rng_states, num_threads)
    settings = EpochSettings(
        loss=loss, sampler=sampler, n_labels=n_labels, n_factors=k,
        learning_rate=learning_rate, regularization=regularization, margin=margin,
        max_sampled=max_sampled, candidates=candidates, verify=verify_negative_samples,
        update_labels=update_labels, bias=bias, warp_weights=&warp_weights[0])
    cdef floating* user_sum_base = &user_sums[0, 0] if user_sums is not None and user_sums.shape[0] else NULL
    cdef floating* item_sum_base = &item_sums[0, 0] if item_sums is not None else NULL
    cdef floating[:, ::1] scratch
    if floating is float:
        scratch = _cache_aligned_rows(max(1, num_threads), _padded(2 * k), np.float32)
    else:
        scratch = _cache_aligned_rows(max(1, num_threads), _padded(2 * k), np.float64)
    schedule = RefreshSchedule(pairs_done=0, next_refresh=refresh_interval,
                               interval=refresh_interval, refreshes=0, seconds=0)

    if adaptive_sampling:
        with nogil:
            _timed_refresh(adaptive, &item_factors[0, 0], num_threads, &schedule)
    with nogil, parallel(num_threads=num_threads):
        tid = threadid()
        rng = &thread_rng[tid, 0]
        counts = &counters[tid, 0]
        counts[SEEN] = 1
        for chunk in prange(n_chunks, schedule="dynamic"):
            if vse_atomic_load(&interrupted):
                continue
            start = chunk * CHUNK
            stop = min(start + CHUNK, n_pairs)
            _train_chunk(user_factors, item_factors, indptr, indices, pair_users, pair_labels,
                         start, stop, settings, adaptive.view() if adaptive_sampling else NULL,
                         rng, counts, user_sum_base, item_sum_base, &scratch[tid, 0])
            if adaptive_sampling and update_labels:
                _refresh_when_due(adaptive, &item_factors[0, 0], stop - start, &schedule)
            counts[CHUNKS] += 1
            if tid == 0 and counts[CHUNKS] % SIGNAL_CHECK_CHUNKS == 0 and _signals_pending():
                vse_atomic_store(&interrupted, 1)
    rng_states[:num_threads, :4] = thread_rng[:, :4]
    if interrupted:
        _raise_pending()

    return _epoch_counters(counters, schedule, n_pairs)


def _padded(Py_ssize_t n):
    """``n`` values rounded up to whole 64-byte cache lines of float32 (16 per line), so that
    each thread's scratch row, float32 or float64, has lines of its own."""
    return (n + 15) // 16 * 16


def _epoch_counters(counters, RefreshSchedule schedule, int64_t n_pairs):
    """An epoch's counters, summed over the threads, as the dict the kernels return."""
    counters = np.asarray(counters)
    totals = counters.sum(axis=0)
    return {
        "pairs": int(n_pairs),
        "skipped": int(totals[SKIPPED]),
        "unviolated": int(totals[UNVIOLATED]),
        "violations": int(totals[VIOLATIONS]),
        "updates": int(totals[UPDATES]),
        "draws": int(totals[DRAWS]),
        "refreshes": int(schedule.refreshes),
        "refresh_seconds": float(schedule.seconds),
        "threads_used": int(np.count_nonzero(counters[:, SEEN])),
        "chunks_per_thread": counters[:, CHUNKS].tolist(),
    }


# ---------------------------------------------------------------------------------------------
# The label-composed model's epoch
# ---------------------------------------------------------------------------------------------

include "_composed.pxi"


# ---------------------------------------------------------------------------------------------
# Folding new images into a trained free-vector model
# ---------------------------------------------------------------------------------------------

include "_foldin.pxi"


def warp_rank_weights(int32_t n_labels):
    """L(rank) = sum_{j=1..rank} 1/j for rank 0..n_labels-1 (index = estimated rank)."""
    weights = np.zeros(max(n_labels, 2), dtype=np.float64)
    weights[1:] = np.cumsum(1.0 / np.arange(1, weights.shape[0]))
    return weights



# ---------------------------------------------------------------------------------------------
# Test-only wrappers (with the GIL; training never uses them)
# ---------------------------------------------------------------------------------------------

include "_testing.pxi"
