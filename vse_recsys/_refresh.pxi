# The adaptive sampler's state and its refresh: per factor, the labels sorted by value
# (descending) and the column's standard deviation. Included by _sampler.pyx; the class's
# fields and C methods are declared in _sampler.pxd.

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
    whole scheduler time slice on a loaded machine; see ``_refresh_when_due`` in _sampler.pyx).

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
