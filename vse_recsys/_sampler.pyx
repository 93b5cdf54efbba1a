# cython: language_level=3
"""nogil kernels: random numbers, the uniform and adaptive negative samplers, the adaptive
sampler's refresh, the hinge / WARP / BPR pair updates and the Hogwild epoch loop.

The public model (``vse_recsys.model.VSEEns``) validates input and hands this module only
typed arrays and scalars. Small ``def`` wrappers at the end exist so tests can call the
samplers and the update directly; training never goes through them.

``_sampler.pxd`` declares the kernel API: the inline RNG, the structs, the C helpers and both
state classes' fields and C methods. All the C is in two headers: vector math (``omp simd``)
in ``_vector.h``; compiler builtins (prefetch, atomics) and the build's bounds-check flag in
``_platform.h``.
"""

from cython.parallel cimport parallel, prange, threadid
from libc.math cimport ceil, exp, expm1, log1p, sqrt
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
# Radix sort: 32-bit keys in passes of 11, 11 and 10 bits.
cdef enum:
    RADIX_BITS = 11
    RADIX_SIZE = 2048
    RADIX_MASK = 2047
# A refresh first re-sorts each factor by insertion, starting from the previous order (between
# two refreshes few labels may change places); it gives up for the radix sort once the moves
# exceed n_labels + INSERTION_BUDGET_BASE. After a factor's insertion sort gave up, the next
# INSERTION_RETRY_AFTER - 1 refreshes of that factor go straight to the radix sort, so a model
# whose orders change a lot wastes at most 1/INSERTION_RETRY_AFTER of a budget per refresh.
cdef enum:
    INSERTION_BUDGET_BASE = 1024
    INSERTION_RETRY_AFTER = 8


# ---------------------------------------------------------------------------------------------
# Random numbers: xoshiro256++ (Blackman & Vigna), one state per thread (inline in the .pxd)
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


# ---------------------------------------------------------------------------------------------
# Adaptive sampler: rank draw, factor draw, label lookup
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
                                   int32_t n_factors, int32_t positive, Positives positives,
                                   int sampler, const AdaptiveView* view, int32_t n_labels,
                                   bint verify, uint64_t* rng, int64_t* draws, int more,
                                   int32_t negative, floating* negative_score) noexcept nogil:
    """Draw ``more`` further negatives; return the highest-scoring of them and ``negative``
    (whose score is ``negative_score[0]``, updated to the winner's).

    An extra draw that is a positive of the image is skipped even without verification: a
    positive usually outscores every negative, so keeping the best of c unverified draws would
    train on a positive far more often than one unverified draw does."""
    cdef int32_t other
    cdef floating score
    cdef int draw
    for draw in range(more):
        other = _sample_negative(user, positives, sampler, view, n_labels, verify, rng, draws, -1)
        if other < 0 or other == positive or (not verify and _is_positive(positives, other)):
            continue
        score = _dot(user, item_factors + <int64_t> other * n_factors, n_factors)
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


# ---------------------------------------------------------------------------------------------
# The pair update shared by the three losses
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


cdef inline floating _loss_scale(int loss, floating positive_score, floating negative_score,
                                 floating margin, floating rank_weight) noexcept nogil:
    """Step size multiplier for one (positive, negative) pair; 0 means no update."""
    cdef floating violation = margin - positive_score + negative_score
    if loss == BPR:  # d/dz of -ln sigmoid(z) at z = s_p - s_n, i.e. 1 - sigmoid(z)
        return 1 / (1 + exp(positive_score - negative_score))
    if violation <= 0:
        return 0
    if loss == WARP:
        return rank_weight
    return 1


# ---------------------------------------------------------------------------------------------
# Refresh: per factor, labels sorted by value (descending) and the column's standard deviation
# ---------------------------------------------------------------------------------------------

cdef void _radix_argsort(uint32_t* keys, uint32_t* keys_tmp, int32_t* order,
                         int32_t* order_tmp, uint32_t* counts, int32_t n) noexcept nogil:
    """Stable LSD radix argsort of ``keys`` (clobbered) into ``order``: O(n), three passes."""
    cdef uint32_t* c0 = counts
    cdef uint32_t* c1 = counts + RADIX_SIZE
    cdef uint32_t* c2 = counts + 2 * RADIX_SIZE
    cdef uint32_t key, run0 = 0, run1 = 0, run2 = 0, tmp
    cdef int32_t a, d
    memset(counts, 0, 3 * RADIX_SIZE * sizeof(uint32_t))
    for a in range(n):
        key = keys[a]
        c0[key & RADIX_MASK] += 1
        c1[(key >> RADIX_BITS) & RADIX_MASK] += 1
        c2[key >> (2 * RADIX_BITS)] += 1
    for d in range(RADIX_SIZE):  # exclusive prefix sums: first slot of each digit
        tmp = c0[d]; c0[d] = run0; run0 += tmp
        tmp = c1[d]; c1[d] = run1; run1 += tmp
        tmp = c2[d]; c2[d] = run2; run2 += tmp
    for a in range(n):
        key = keys[a]
        d = key & RADIX_MASK
        keys_tmp[c0[d]] = key
        order_tmp[c0[d]] = a
        c0[d] += 1
    for a in range(n):
        key = keys_tmp[a]
        d = (key >> RADIX_BITS) & RADIX_MASK
        keys[c1[d]] = key
        order[c1[d]] = order_tmp[a]
        c1[d] += 1
    for a in range(n):
        d = keys[a] >> (2 * RADIX_BITS)
        order_tmp[c2[d]] = order[a]
        c2[d] += 1
    memcpy(order, order_tmp, n * sizeof(int32_t))


cdef bint _insertion_argsort(const uint32_t* keys, const int32_t* previous, int32_t* order,
                             int32_t n, int64_t budget) noexcept nogil:
    """Sort ``previous`` (a permutation of 0..n-1) by ``keys`` into ``order``, by insertion.

    O(n + moves): cheap when ``previous`` is nearly sorted. Returns False, leaving ``order``
    unusable, as soon as the moves exceed ``budget``. Equal keys keep their previous order.
    """
    cdef int32_t i, j, label
    cdef uint32_t key
    memcpy(order, previous, n * sizeof(int32_t))
    for i in range(1, n):
        label = order[i]
        key = keys[label]
        j = i
        while j > 0 and keys[order[j - 1]] > key:
            order[j] = order[j - 1]
            j -= 1
        budget -= i - j
        if budget < 0:
            return False
        order[j] = label
    return True


# PyErr_CheckSignals without Cython's exception check: the caller keeps the pending exception
# and re-raises it with _raise_pending once it is safe (outside the parallel region).
cdef extern from "Python.h":
    int _check_signals "PyErr_CheckSignals" () noexcept


cdef int _signals_pending() noexcept with gil:
    return _check_signals() != 0


cdef int _raise_pending() except -1:
    return -1  # an exception is already set: ``except -1`` makes Cython propagate it


cdef class AdaptiveSampler:
    """State of the adaptive sampler: per-factor label orders and factor spreads.

    ``refresh(item_factors)`` rebuilds both from the current label factors: one row-major pass
    turns every value into a sort key (and sums the columns for sigma), then each factor's
    labels are sorted: by insertion from the previous refresh's order when few labels changed
    places (O(n_labels + moves); the usual case with few labels), else by an LSD radix sort
    (O(n_labels)). The whole order is rebuilt, not only its top and bottom: with the default
    lambda = 0.3 * n_labels every rank can be drawn.

    The state is double-buffered. During an epoch the thread whose pairs cross the next refresh
    point rebuilds the back buffer on its own and then publishes it, while the other threads
    keep drawing from the front buffer: no thread ever waits for a refresh (a barrier costs a
    whole scheduler time slice on a loaded machine).

    Parameters
    ----------
    n_labels, n_factors : int
        Shape of the label factor matrix.
    rank_decay : float
        lambda, in ranks (not as a fraction): P(rank r) is proportional to exp(-r / lambda).
    num_threads : int
        Threads used by ``refresh`` (across factors).
    """

    def __init__(self, int32_t n_labels, int32_t n_factors, double rank_decay, int num_threads=1):
        if n_labels < 1 or n_factors < 1:
            raise ValueError(f"need at least one label and one factor, got {n_labels}, {n_factors}")
        if not (0 < rank_decay < float("inf")):
            raise ValueError(f"rank_decay must be positive and finite, got {rank_decay}")
        self.n_labels = n_labels
        self.n_factors = n_factors
        self.rank_decay = rank_decay
        self.num_threads = max(1, num_threads)
        # both buffers start as valid orders (the identity), which refresh sorts from
        self._sorted_buffers = np.broadcast_to(
            np.arange(n_labels, dtype=np.int32), (2, n_factors, n_labels)).copy()
        self._sigma_buffers = np.zeros((2, n_factors), dtype=np.float64)
        self._sorted = self._sorted_buffers
        self._sigma = self._sigma_buffers
        self._sigma32 = np.zeros((2, n_factors), dtype=np.float32)
        self._keys = np.empty((n_factors, n_labels), dtype=np.uint32)
        self._moments = np.empty((2, n_factors), dtype=np.float64)
        self._key_scratch = np.empty((self.num_threads, n_labels + 3 * RADIX_SIZE), dtype=np.uint32)
        self._order_scratch = np.empty((self.num_threads, n_labels), dtype=np.int32)
        cdef int b
        for b in range(2):
            self.views[b].sorted_labels = &self._sorted[b, 0, 0]
            self.views[b].sigma = &self._sigma[b, 0]
            self.views[b].sigma32 = &self._sigma32[b, 0]
            self.views[b].n_labels = n_labels
            self.views[b].n_factors = n_factors
            self.views[b].rank_decay = rank_decay
            self.views[b].rank_norm = _rank_norm(n_labels, rank_decay)
        self.front = 0
        self.refreshing = 0
        self.insertion_sorts = 0
        self._radix_streak = np.zeros(n_factors, dtype=np.int32)

    @property
    def sorted_labels(self):
        """(n_factors, n_labels) int32: per factor, the labels by value, largest first."""
        return self._sorted_buffers[self.front]

    @property
    def sigma(self):
        """(n_factors,) float64: the standard deviation (ddof 0) of each label factor column."""
        return self._sigma_buffers[self.front]

    def refresh(self, floating[:, ::1] item_factors):
        """Re-sort every factor's labels and recompute sigma from ``item_factors``."""
        if item_factors.shape[0] != self.n_labels or item_factors.shape[1] != self.n_factors:
            raise ValueError(f"item_factors has shape ({item_factors.shape[0]}, "
                             f"{item_factors.shape[1]}), expected ({self.n_labels}, "
                             f"{self.n_factors})")
        with nogil:
            self._rebuild(&item_factors[0, 0], self.num_threads)

    cdef void _rebuild(self, const floating* item_factors, int num_threads) noexcept nogil:
        """Rebuild the back buffer from ``item_factors`` and publish it as the front."""
        cdef int32_t n = self.n_labels, k = self.n_factors, f
        cdef int back = 1 - self.front, tid
        cdef double mean
        cdef double* shift_sum = &self._moments[0, 0]
        cdef double* shift_squares = &self._moments[1, 0]
        # one row-major pass: keys[f, a] and the column sums (see _vector.h)
        if floating is float:
            vse_refresh_keys_f(item_factors, n, k, &self._keys[0, 0], shift_sum, shift_squares)
        else:
            vse_refresh_keys_d(item_factors, n, k, &self._keys[0, 0], shift_sum, shift_squares)
        for f in range(k):
            mean = shift_sum[f] / n
            self._sigma[back, f] = sqrt(max(shift_squares[f] / n - mean * mean, 0.0))
            self._sigma32[back, f] = <float> self._sigma[back, f]
        if num_threads > 1:
            with parallel(num_threads=num_threads):
                tid = threadid()
                for f in prange(k, schedule="dynamic"):
                    self._sort_factor(f, back, tid)
        else:
            for f in range(k):
                self._sort_factor(f, back, 0)
        vse_atomic_store(&self.front, back)

    cdef void _sort_factor(self, int32_t f, int buffer, int scratch) noexcept nogil:
        """Factor f's labels by key into ``buffer``: insertion from the other buffer's order
        (the previous refresh), or the radix sort when too much has changed."""
        cdef int32_t n = self.n_labels
        cdef uint32_t* keys = &self._key_scratch[scratch, 0]
        cdef int64_t budget = <int64_t> n + INSERTION_BUDGET_BASE
        if self._radix_streak[f] == 0:
            if _insertion_argsort(&self._keys[f, 0], &self._sorted[1 - buffer, f, 0],
                                  &self._sorted[buffer, f, 0], n, budget):
                vse_atomic_add(&self.insertion_sorts, 1)
                return
        self._radix_streak[f] = (self._radix_streak[f] + 1) % INSERTION_RETRY_AFTER
        _radix_argsort(&self._keys[f, 0], keys, &self._sorted[buffer, f, 0],
                       &self._order_scratch[scratch, 0], keys + n, n)


# ---------------------------------------------------------------------------------------------
# The epoch's order: every pair once, uniformly shuffled
# ---------------------------------------------------------------------------------------------

cdef enum:
    SHUFFLE_PILE = 4096            # pairs per pile: 32 KiB of packed pairs, shuffled in L1/L2
    MAX_PILES = 65536              # pile numbers are uint16
    MAX_PILE_SIZE = 1 << 30        # pairs per pile on average: far below 2^32 (uint32 draws)


cdef inline int32_t _image_of(const int64_t* indptr, int32_t n_images, int64_t pair) noexcept nogil:
    """The image whose labels include stored pair number ``pair`` (binary search in indptr)."""
    cdef int32_t low = 0, high = n_images, middle
    while low < high:  # the largest i with indptr[i] <= pair
        middle = low + (high - low + 1) // 2
        if indptr[middle] <= pair:
            low = middle
        else:
            high = middle - 1
    return low


cdef class PairShuffler:
    """A fresh, uniformly random order of a fixed list of (image, label) pairs, per call.

    Rao-Sandelius shuffle: every pair goes to one of ``n_piles`` piles uniformly at random,
    then each pile is Fisher-Yates shuffled, and the piles are read one after the other; the
    result is a uniformly random permutation. Unlike one Fisher-Yates pass over the whole list
    (NumPy's ``permutation``: a cache miss per pair, serial), both passes are cache-friendly
    and split across threads: the shuffle of 1M pairs drops from ~70 ms to a few ms.

    With one thread (and the same RNG states) the order is reproducible; with ``T`` threads it
    is reproducible for the same ``T``. The buffers (18 bytes per pair) are allocated once and
    reused: ``shuffle`` refills and returns the same two arrays every call.

    Parameters
    ----------
    indptr : int64 array, indices : int32 array
        The pairs, as a CSR matrix's row pointers and column indices: image ``i`` has the
        labels ``indices[indptr[i]:indptr[i + 1]]``.
    num_threads : int
    pile_size : int
        Pairs per pile on average (tests make it tiny to exercise many piles).
    """

    def __init__(self, const int64_t[::1] indptr, const int32_t[::1] indices,
                 int num_threads=1, int64_t pile_size=SHUFFLE_PILE):
        if indptr.shape[0] < 1 or indptr[0] != 0 or indptr[indptr.shape[0] - 1] != indices.shape[0]:
            raise ValueError("indptr must start at 0 and end at len(indices)")
        if num_threads < 1 or not 1 <= pile_size <= MAX_PILE_SIZE:
            raise ValueError(f"need num_threads >= 1 and 1 <= pile_size <= {MAX_PILE_SIZE}")
        self.n_pairs = indices.shape[0]
        if self.n_pairs // MAX_PILES >= MAX_PILE_SIZE:
            raise ValueError(f"{self.n_pairs} pairs are more than the shuffle's piles can hold")
        self.num_threads = num_threads
        self.n_piles = <int32_t> max(1, min(MAX_PILES, self.n_pairs // pile_size
                                               + (self.n_pairs % pile_size != 0)))
        self._indptr = indptr
        self._labels = indices
        self._pile = np.empty(self.n_pairs, dtype=np.uint16)
        self._packed = np.empty(self.n_pairs, dtype=np.uint64)
        self._cursor = np.zeros((num_threads, self.n_piles), dtype=np.int64)
        self._pile_start = np.zeros(self.n_piles + 1, dtype=np.int64)
        self._users_array = np.empty(self.n_pairs, dtype=np.int32)
        self._labels_array = np.empty(self.n_pairs, dtype=np.int32)
        self._users_out = self._users_array
        self._labels_out = self._labels_array

    def shuffle(self, uint64_t[:, ::1] rng_states):
        """(pair_images, pair_labels) in a new random order; advances ``rng_states``.

        The work is split into ``num_threads`` fixed shares, each with its own RNG state,
        whatever number of threads OpenMP actually starts (it may start fewer: a build without
        OpenMP, ``OMP_THREAD_LIMIT``, nested parallelism), so every pair is always placed and
        the order depends only on the states and ``num_threads``.
        """
        cdef int T = self.num_threads, t
        cdef int64_t n = self.n_pairs, chunk = (self.n_pairs + T - 1) // T, running = 0, count
        cdef int32_t B = self.n_piles, b
        cdef uint64_t[:, ::1] thread_rng
        thread_rng = _thread_rng_copies(rng_states, T)
        self._cursor[:, :] = 0
        with nogil:
            # 1. share t deals its pairs into piles at random, counting per pile
            for t in prange(T, schedule="static", chunksize=1, num_threads=T):
                self._deal(t, t * chunk, min(n, t * chunk + chunk), &thread_rng[t, 0])
            # 2. pile b holds share 0's pairs of b, then share 1's, ...
            for b in range(B):
                self._pile_start[b] = running
                for t in range(T):
                    count = self._cursor[t, b]
                    self._cursor[t, b] = running
                    running += count
            self._pile_start[B] = running
            # 3. share t moves its pairs into their piles
            for t in prange(T, schedule="static", chunksize=1, num_threads=T):
                self._pack(t, t * chunk, min(n, t * chunk + chunk))
            # 4. share t shuffles its piles and unpacks them into the two output arrays
            for t in prange(T, schedule="static", chunksize=1, num_threads=T):
                self._shuffle_piles(<int32_t> ((<int64_t> t * B) // T),
                                    <int32_t> ((<int64_t> (t + 1) * B) // T), &thread_rng[t, 0])
        rng_states[:T, :4] = thread_rng[:, :4]
        return self._users_array, self._labels_array

    cdef void _deal(self, int t, int64_t start, int64_t stop, uint64_t* rng) noexcept nogil:
        cdef int64_t j
        cdef uint32_t b
        for j in range(start, stop):
            b = rng_below(rng, <uint32_t> self.n_piles)
            self._pile[j] = <uint16_t> b
            self._cursor[t, b] += 1

    cdef void _pack(self, int t, int64_t start, int64_t stop) noexcept nogil:
        """Pairs start..stop into their piles' slots, packed as (image << 32 | label)."""
        cdef int64_t j
        cdef int32_t image = _image_of(&self._indptr[0], self._indptr.shape[0] - 1, start)
        cdef uint16_t b
        for j in range(start, stop):
            while self._indptr[image + 1] <= j:  # (skips images without labels)
                image += 1
            b = self._pile[j]
            self._packed[self._cursor[t, b]] = (
                (<uint64_t> <uint32_t> image) << 32 | <uint32_t> self._labels[j])
            self._cursor[t, b] += 1

    cdef void _shuffle_piles(self, int32_t first_pile, int32_t end_pile,
                             uint64_t* rng) noexcept nogil:
        """Fisher-Yates within each pile of first_pile..end_pile, then unpack it."""
        cdef int32_t b
        cdef int64_t first, last, i, j
        cdef uint64_t swap
        for b in range(first_pile, end_pile):
            first = self._pile_start[b]
            last = self._pile_start[b + 1]
            for i in range(last - 1, first, -1):
                j = first + <int64_t> rng_below(rng, <uint32_t> (i - first + 1))
                swap = self._packed[i]
                self._packed[i] = self._packed[j]
                self._packed[j] = swap
            for i in range(first, last):
                self._users_out[i] = <int32_t> (self._packed[i] >> 32)
                self._labels_out[i] = <int32_t> (self._packed[i] & 0xFFFFFFFFu)


# ---------------------------------------------------------------------------------------------
# One epoch
# ---------------------------------------------------------------------------------------------

# Pairs a thread takes at a time; refreshes and Ctrl-C checks happen between chunks.
cdef enum:
    CHUNK = 256
    PREFETCH_AHEAD = 4             # pairs: the rows of pair j + 4 are fetched while j trains
    SIGNAL_CHECK_CHUNKS = 128      # the main thread checks for Ctrl-C every 128 of its chunks
    COUNTER_STRIDE = 8             # int64 counters per thread: one cache line each

cdef enum:
    SKIPPED = 0
    VIOLATIONS = 1
    UPDATES = 2
    DRAWS = 3
    SEEN = 4
    CHUNKS = 5


def train_epoch(floating[:, ::1] user_factors, floating[:, ::1] item_factors,
                const int64_t[::1] indptr, const int32_t[::1] indices,
                const int32_t[::1] pair_users, const int32_t[::1] pair_labels,
                int loss, int sampler, AdaptiveSampler adaptive,
                double learning_rate, double regularization, double margin,
                int max_sampled, bint verify_negative_samples,
                const double[::1] warp_weights, uint64_t[:, ::1] rng_states,
                int64_t refresh_interval, int num_threads, bint update_labels=True,
                int candidates=1):
    """Train on every (image, label) pair given, in the order given; Hogwild across threads.

    With ``candidates`` > 1 (hinge and BPR), each pair draws that many negatives from its
    sampler and trains on the one the model scores highest (one more dot product each).

    With ``update_labels=False`` only image vectors change (folding new images into a trained
    model): the label factors and the adaptive sampler (refreshed once, at the start) stay as
    they are.

    Threads take chunks of pairs dynamically and update the shared factors without locks. With
    the adaptive sampler the sampler state is refreshed at the start and then every
    ``refresh_interval`` pairs (one draw each, redraws of positives aside) by whichever thread
    reaches that point, without stopping the others. Ctrl-C is noticed within a few
    milliseconds and raises KeyboardInterrupt.

    Returns a dict of counters: pairs, skipped (no negative found), violations (pairs whose
    sampled negative violated the margin), updates, draws, refreshes, refresh_seconds,
    threads_used.
    """
    cdef int32_t n_labels = item_factors.shape[0], k = item_factors.shape[1]
    cdef int64_t n_pairs = pair_users.shape[0]
    cdef int64_t n_chunks = (n_pairs + CHUNK - 1) // CHUNK
    cdef int64_t chunk, j, pair_draws, tried, done
    cdef double started
    # shared between threads, so only ever touched through pointers (an assignment inside prange
    # would make Cython give each thread a private copy)
    cdef long long[::1] progress = np.array([0, refresh_interval, 0], dtype=np.longlong)
    cdef long long* pairs_done = &progress[0]
    cdef long long* next_refresh = &progress[1]
    cdef long long* refreshes = &progress[2]
    cdef double[::1] refresh_clock = np.zeros(1)
    cdef double* refresh_seconds = &refresh_clock[0]
    cdef floating lr = learning_rate, reg = regularization, m = margin
    cdef floating positive_score, negative_score, scale, weight
    cdef floating* user
    cdef int32_t image, positive, negative, rank, ahead, candidate, pending
    cdef int64_t stop
    cdef const int32_t* slot
    cdef long row_bytes = k * sizeof(floating)
    cdef Positives positives
    cdef uint64_t* rng
    cdef int64_t* counts
    cdef const AdaptiveView* view = NULL
    cdef int tid, interrupted = 0
    cdef bint adaptive_sampling = sampler == ADAPTIVE
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
    thread_rng = _thread_rng_copies(rng_states, num_threads)

    with nogil:
        if adaptive_sampling:
            started = openmp.omp_get_wtime()
            adaptive._rebuild(&item_factors[0, 0], num_threads)
            refresh_seconds[0] += openmp.omp_get_wtime() - started
            refreshes[0] += 1
        with parallel(num_threads=num_threads):
            tid = threadid()
            rng = &thread_rng[tid, 0]
            counts = &counters[tid, 0]
            counts[SEEN] = 1
            for chunk in prange(n_chunks, schedule="dynamic"):
                if vse_atomic_load(&interrupted):
                    continue
                if adaptive_sampling:
                    view = adaptive.view()
                pending = -1
                slot = NULL
                stop = min(chunk * CHUNK + CHUNK, n_pairs)
                for j in range(chunk * CHUNK, stop):
                    if j + PREFETCH_AHEAD < n_pairs:
                        ahead = pair_users[j + PREFETCH_AHEAD]
                        vse_prefetch(&user_factors[ahead, 0], row_bytes)
                        vse_prefetch(&item_factors[pair_labels[j + PREFETCH_AHEAD], 0], row_bytes)
                        vse_prefetch_read(&indptr[ahead], 16)
                    if j + 1 < n_pairs:  # indptr of pair j + 1 was fetched a few pairs ago
                        vse_prefetch_read(&indices[0] + indptr[pair_users[j + 1]], 64)
                    image = pair_users[j]
                    positive = pair_labels[j]
                    user = &user_factors[image, 0]
                    positives.labels = &indices[0] + indptr[image]
                    positives.count = indptr[image + 1] - indptr[image]
                    # The first candidate negatives are drawn ahead, so that their cache misses
                    # overlap this pair's arithmetic: pair j + 1's label is read now (from the
                    # slot of the sorted lists chosen one pair ago) and its row fetched; for the
                    # adaptive sampler, pair j + 2's slot is chosen and fetched.
                    candidate = pending
                    pending = -1
                    if loss != WARP and j + 1 < stop:
                        if adaptive_sampling and slot != NULL:
                            pending = slot[0]
                        else:
                            pending = _draw_label(&user_factors[pair_users[j + 1], 0], sampler,
                                                  view, n_labels, rng)
                        vse_prefetch(&item_factors[pending, 0], row_bytes)
                        slot = NULL
                        if adaptive_sampling and j + 2 < stop:
                            slot = _adaptive_slot(&user_factors[pair_users[j + 2], 0], view, rng)
                            if slot != NULL:
                                vse_prefetch_read(slot, 4)
                    positive_score = _dot(user, &item_factors[positive, 0], k)
                    pair_draws = 0
                    tried = 0  # assigned here so that each thread has its own copy
                    weight = 1
                    if loss == WARP:
                        negative = _warp_search(user, positive_score, &item_factors[0, 0], k,
                                                positives, n_labels, m, max_sampled,
                                                verify_negative_samples, rng, &pair_draws, &tried)
                        if negative >= 0:
                            rank = <int32_t> ((n_labels - 1) / tried)
                            weight = <floating> warp_weights[max(rank, 1)]
                    else:
                        negative = _sample_negative(user, positives, sampler, view, n_labels,
                                                    verify_negative_samples, rng, &pair_draws,
                                                    candidate)
                    counts[DRAWS] += pair_draws
                    if negative < 0 or negative == positive:  # (== only without verification)
                        counts[SKIPPED] += 1
                        continue
                    negative_score = _dot(user, &item_factors[negative, 0], k)
                    if candidates > 1:
                        negative = _best_candidate(user, &item_factors[0, 0], k, positive,
                                                   positives, sampler, view, n_labels,
                                                   verify_negative_samples, rng,
                                                   &counts[DRAWS], candidates - 1, negative,
                                                   &negative_score)
                    if m - positive_score + negative_score > 0:
                        counts[VIOLATIONS] += 1
                    scale = _loss_scale(loss, positive_score, negative_score, m, weight)
                    # BPR's gradient is never exactly 0, so its step (and weight decay) always
                    # applies, even when the sigmoid underflows in float32
                    if scale != 0 or loss == BPR:
                        counts[UPDATES] += 1
                        if update_labels:
                            _pair_step(user, &item_factors[positive, 0],
                                       &item_factors[negative, 0], k, scale, lr, reg)
                        else:
                            _user_step(user, &item_factors[positive, 0],
                                       &item_factors[negative, 0], k, scale, lr, reg)

                if adaptive_sampling and update_labels:
                    done = vse_atomic_add(pairs_done, min(CHUNK, n_pairs - chunk * CHUNK))
                    if done >= vse_atomic_load_ll(next_refresh) and vse_try_lock(&adaptive.refreshing):
                        if done >= next_refresh[0]:  # re-check: another thread may have just refreshed
                            started = openmp.omp_get_wtime()
                            adaptive._rebuild(&item_factors[0, 0], 1)
                            refresh_seconds[0] += openmp.omp_get_wtime() - started
                            refreshes[0] += 1
                            next_refresh[0] = done + refresh_interval
                        vse_atomic_store(&adaptive.refreshing, 0)
                counts[CHUNKS] += 1
                if tid == 0 and counts[CHUNKS] % SIGNAL_CHECK_CHUNKS == 0 and _signals_pending():
                    vse_atomic_store(&interrupted, 1)
    rng_states[:num_threads, :4] = thread_rng[:, :4]
    if interrupted:
        _raise_pending()

    totals = np.asarray(counters).sum(axis=0)
    return {
        "pairs": n_pairs,
        "skipped": int(totals[SKIPPED]),
        "violations": int(totals[VIOLATIONS]),
        "updates": int(totals[UPDATES]),
        "draws": int(totals[DRAWS]),
        "refreshes": int(progress[2]),
        "refresh_seconds": float(refresh_clock[0]),
        "threads_used": int(np.count_nonzero(np.asarray(counters)[:, SEEN])),
        "chunks_per_thread": np.asarray(counters)[:, CHUNKS].tolist(),
    }


def warp_rank_weights(int32_t n_labels):
    """L(rank) = sum_{j=1..rank} 1/j for rank 0..n_labels-1 (index = estimated rank)."""
    weights = np.zeros(max(n_labels, 2), dtype=np.float64)
    weights[1:] = np.cumsum(1.0 / np.arange(1, weights.shape[0]))
    return weights


# ---------------------------------------------------------------------------------------------
# Test-only wrappers (with the GIL; training never uses them)
# ---------------------------------------------------------------------------------------------

cdef inline Positives _as_positives(const int32_t[::1] labels):
    cdef Positives positives
    positives.labels = &labels[0] if labels.shape[0] > 0 else NULL
    positives.count = labels.shape[0]
    return positives


def draw_ranks(int32_t n_labels, double rank_decay, Py_ssize_t size, uint64_t[:, ::1] rng_state):
    """``size`` 1-based ranks from the truncated exp(-r / rank_decay) distribution on 1..n."""
    if not (0 < rank_decay < float("inf")) or n_labels < 1:
        raise ValueError("need n_labels >= 1 and a positive finite rank_decay")
    out = np.empty(size, dtype=np.int64)
    cdef int64_t[::1] ranks = out
    cdef double norm = _rank_norm(n_labels, rank_decay)
    cdef Py_ssize_t t
    for t in range(size):
        ranks[t] = _draw_rank(&rng_state[0, 0], n_labels, rank_decay, norm) + 1
    return out


def draw_factors(floating[::1] user, const double[::1] sigma, Py_ssize_t size,
                 uint64_t[:, ::1] rng_state):
    """``size`` factor draws with P(f) proportional to |user_f| * sigma_f (-1: all weights 0).

    As in training, a float32 ``user`` is weighted with ``sigma`` rounded to float32.
    """
    if user.shape[0] != sigma.shape[0]:
        raise ValueError("user and sigma must have the same length")
    out = np.empty(size, dtype=np.int32)
    cdef int32_t[::1] factors = out
    cdef float[::1] sigma32 = np.asarray(sigma, dtype=np.float32)
    cdef AdaptiveView view
    view.sigma = &sigma[0]
    view.sigma32 = &sigma32[0]
    view.n_factors = user.shape[0]
    cdef Py_ssize_t t
    for t in range(size):
        factors[t] = _draw_factor(&user[0], &view, &rng_state[0, 0])
    return out


def draw_negatives(floating[::1] user, AdaptiveSampler adaptive not None,
                   const int32_t[::1] positives, int sampler, Py_ssize_t size,
                   uint64_t[:, ::1] rng_state, bint verify=True):
    """``size`` negatives for one image vector, as training draws them (-1: no negative).

    ``adaptive`` must have been refreshed; for the uniform sampler only its n_labels is used.
    Also returns the number of draws made (rejected positives included).
    """
    if sampler == ADAPTIVE and user.shape[0] != adaptive.n_factors:
        raise ValueError("user vector length must equal the sampler's n_factors")
    out = np.empty(size, dtype=np.int32)
    cdef int32_t[::1] labels = out
    cdef Positives pos = _as_positives(positives)
    cdef int64_t draws = 0
    cdef Py_ssize_t t
    for t in range(size):
        labels[t] = _sample_negative(&user[0], pos, sampler, adaptive.view(), adaptive.n_labels,
                                     verify, &rng_state[0, 0], &draws, -1)
    return out, draws


def pair_update(floating[::1] user, floating[::1] pos, floating[::1] neg, int loss,
                double learning_rate, double regularization, double margin,
                double rank_weight=1.0):
    """One training step on (user, positive, negative) in place; returns the scale used."""
    cdef int32_t k = user.shape[0]
    if pos.shape[0] != k or neg.shape[0] != k:
        raise ValueError("vectors must have the same length")
    cdef floating s_pos = _dot(&user[0], &pos[0], k)
    cdef floating s_neg = _dot(&user[0], &neg[0], k)
    cdef floating scale = _loss_scale(loss, s_pos, s_neg, <floating> margin, <floating> rank_weight)
    if (scale != 0 or loss == BPR) and &pos[0] != &neg[0]:
        _pair_step(&user[0], &pos[0], &neg[0], k, scale, <floating> learning_rate,
                   <floating> regularization)
    return float(scale)


def draw_ranks_parallel(int32_t n_labels, double rank_decay, Py_ssize_t size_per_thread,
                        uint64_t[:, ::1] rng_states, int num_threads):
    """Rank draws made inside an OpenMP team, each thread from its own RNG state.

    Returns a (num_threads, size_per_thread) array: row t holds thread t's 1-based ranks.
    """
    if not (0 < rank_decay < float("inf")) or n_labels < 1:
        raise ValueError("need n_labels >= 1 and a positive finite rank_decay")
    out = np.zeros((num_threads, size_per_thread), dtype=np.int64)
    cdef int64_t[:, ::1] ranks = out
    cdef double norm = _rank_norm(n_labels, rank_decay)
    cdef int t
    cdef Py_ssize_t i
    with nogil, parallel(num_threads=num_threads):
        for t in prange(num_threads, schedule="static", chunksize=1):
            for i in range(size_per_thread):
                ranks[t, i] = _draw_rank(&rng_states[t, 0], n_labels, rank_decay, norm) + 1
    return out
