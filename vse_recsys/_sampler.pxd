# cython: language_level=3
"""Declarations for the nogil training kernels: the kernel API without the bodies.

Here: the fused float type, the loss and sampler codes, the per-thread RNG (inline, so its
bodies live here too), the structs the kernels pass around, the C helpers of ``_vector.h`` and
``_platform.h``, and the two state classes with their fields and C methods (bodies in
``_refresh.pxi`` and ``_shuffle.pxi``, included by ``_sampler.pyx``).

Everything here runs without the GIL. Helpers used in hot loops are ``inline ... noexcept
nogil`` so Cython never has to take the GIL to check for an exception.
"""

from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t, uint64_t

ctypedef fused floating:
    float
    double

# Loss and sampler codes shared with model.py (see LOSSES / SAMPLERS there).
cpdef enum Loss:
    HINGE = 0
    WARP = 1
    BPR = 2

cpdef enum Sampler:
    UNIFORM = 0
    ADAPTIVE = 1


# -- random numbers: xoshiro256++ (Blackman & Vigna), one state per thread -----------------------
# A state is 4 words; each thread's state sits in its own 64-byte row (8 words) of the
# (n_threads, 8) state array so two threads never write the same cache line.
cdef enum:
    RNG_STRIDE = 8

cdef inline uint64_t _rotl(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef inline uint64_t rng_next(uint64_t* s) noexcept nogil:
    cdef uint64_t result = _rotl(s[0] + s[3], 23) + s[0]
    cdef uint64_t t = s[1] << 17
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = _rotl(s[3], 45)
    return result


cdef inline double rng_uniform(uint64_t* s) noexcept nogil:
    """Uniform double in [0, 1) with 53 random bits."""
    return <double> (rng_next(s) >> 11) * (1.0 / 9007199254740992.0)


cdef inline uint32_t rng_below(uint64_t* s, uint32_t n) noexcept nogil:
    """Unbiased integer in [0, n) by Lemire's multiply-and-reject method."""
    cdef uint64_t m = (rng_next(s) >> 32) * <uint64_t> n
    if <uint32_t> m < n:  # rarely (p < n / 2^32): maybe biased, see _rng_below_rejecting
        return _rng_below_rejecting(s, n, m)
    return <uint32_t> (m >> 32)


# rng_below's rare path, kept out of line so that the inline fast path stays small
cdef uint32_t _rng_below_rejecting(uint64_t* s, uint32_t n, uint64_t m) noexcept nogil


# -- what the kernels pass around ----------------------------------------------------------------

# The adaptive sampler's read-only view, valid between two refreshes.
cdef struct AdaptiveView:
    const int32_t* sorted_labels    # (n_factors, n_labels): per factor, labels by value, descending
    const double* sigma             # (n_factors,): standard deviation of each factor column
    const float* sigma32            # the same in float32, for float32 models' factor draws
    int32_t n_labels
    int32_t n_factors
    double rank_decay               # lambda, in ranks
    double rank_norm                # expm1(-n_labels / lambda), for inverse-CDF rank draws


# One image's positives: a sorted slice of the CSR indices.
cdef struct Positives:
    const int32_t* labels
    int64_t count


# How an epoch trains, fixed for the whole call: what choosing a negative and taking a step need
# besides the vectors. The float settings are cast to the factors' type where they are used.
cdef struct EpochSettings:
    int loss                        # HINGE, WARP or BPR
    int sampler                     # UNIFORM or ADAPTIVE
    int32_t n_labels
    int32_t n_factors
    double learning_rate
    double regularization
    double margin
    int max_sampled                 # WARP: most draws per pair before giving up on it
    int candidates                  # hinge, BPR: negatives drawn per pair, the best one trains
    bint verify                     # redraw a sampled label that is a positive of the image
    bint update_labels              # False: only image vectors move (fold-in)
    bint bias                       # the vectors' last entry is a label bias (the image's is 1)
    const double* warp_weights      # WARP: step weight per estimated rank (n_labels entries)


# A step's AdaGrad accumulators: those of the image vector and the two label vectors, and a
# scratch of 2 n_factors values (void*: float or double, as the factors are).
cdef struct StepSums:
    void* user
    void* positive
    void* negative
    void* scratch


# How the label-composed model builds an image's vector (see _composed.pxi).
cdef struct ComposedSettings:
    double exponent                 # alpha: a sum of m label inputs is scaled by m^-alpha
    double dropout                  # chance a label is left out of one visit's sum
    int32_t n_inputs                # k, the label inputs' width (label vectors: k + bias)
    bint bias                       # the label vectors' last column is a per-label bias


# When the adaptive sampler is refreshed during an epoch; shared by all threads, so only ever
# reached through a pointer (the counters through the atomics below).
cdef struct RefreshSchedule:
    long long pairs_done            # pairs trained so far (atomic add)
    long long next_refresh          # pairs_done at which the next refresh is due (atomic read)
    long long interval              # refresh_interval
    long long refreshes             # refreshes done, the one at the start included
    double seconds                  # time spent refreshing


# -- the C helpers: vector math (_vector.h), builtins and build flags (_platform.h) --------------

cdef extern from "_vector.h" nogil:
    float vse_dot_f(const float* a, const float* b, int n) noexcept
    double vse_dot_d(const double* a, const double* b, int n) noexcept
    void vse_step_f(float* user, float* pos, float* neg, int n, float scale, float lr,
                    float reg) noexcept
    void vse_step_d(double* user, double* pos, double* neg, int n, double scale, double lr,
                    double reg) noexcept
    void vse_step_user_f(float* user, const float* pos, const float* neg, int n, float scale,
                         float lr, float reg) noexcept
    void vse_step_user_d(double* user, const double* pos, const double* neg, int n,
                         double scale, double lr, double reg) noexcept
    int vse_draw_factor_f(const float* user, const float* sigma, int n, double u01) noexcept
    int vse_draw_factor_d(const double* user, const double* sigma, int n, double u01) noexcept
    void vse_refresh_keys_f(const float* factors, int n, int k, uint32_t* keys, double* sum,
                            double* squares) noexcept
    void vse_refresh_keys_d(const double* factors, int n, int k, uint32_t* keys, double* sum,
                            double* squares) noexcept
    void vse_ascend_f(float* x, float* acc, const float* d, int n, float scale, float lr,
                      float reg) noexcept
    void vse_ascend_d(double* x, double* acc, const double* d, int n, double scale, double lr,
                      double reg) noexcept
    void vse_scaled_difference_f(float* out, const float* a, const float* b, int n,
                                 float scale) noexcept
    void vse_scaled_difference_d(double* out, const double* a, const double* b, int n,
                                 double scale) noexcept
    void vse_axpy_f(float* out, const float* a, int n, float scale) noexcept
    void vse_axpy_d(double* out, const double* a, int n, double scale) noexcept

cdef extern from "_platform.h" nogil:
    int VSE_RECSYS_BOUNDSCHECK
    void vse_prefetch(const void* p, long bytes) noexcept
    void vse_prefetch_read(const void* p, long bytes) noexcept
    long long vse_atomic_add(long long* p, long long v) noexcept
    long long vse_atomic_load_ll(long long* p) noexcept
    int vse_atomic_load(int* p) noexcept
    void vse_atomic_store(int* p, int v) noexcept
    int vse_try_lock(int* p) noexcept


# -- the state classes (bodies in _refresh.pxi and _shuffle.pxi) ---------------------------------

cdef class AdaptiveSampler:
    cdef readonly int32_t n_labels
    cdef readonly int32_t n_factors
    cdef readonly double rank_decay
    cdef readonly int num_threads
    cdef object _sorted_buffers          # (2, n_factors, n_labels) int32, descending by value
    cdef object _sigma_buffers           # (2, n_factors) float64
    cdef float[:, ::1] _sigma32          # the same in float32
    cdef int32_t[:, :, ::1] _sorted
    cdef double[:, ::1] _sigma
    cdef uint32_t[:, ::1] _keys          # (n_factors, n_labels) sort keys, rebuilt each refresh
    cdef double[:, ::1] _moments         # (2, n_factors): shifted sums and sums of squares
    cdef uint32_t[:, ::1] _key_scratch   # per thread: n_labels keys + radix counts
    cdef int32_t[:, ::1] _order_scratch  # per thread: n_labels indices
    cdef AdaptiveView views[2]
    cdef int front                       # which buffer the samplers read
    cdef int refreshing                  # lock: one refresh at a time
    cdef readonly long long insertion_sorts  # factor sorts done by insertion (the rest: radix)
    cdef int32_t[::1] _radix_streak      # per factor: radix sorts since insertion last gave up

    # the front buffer, what draws read (a thread may publish a new one at any time)
    cdef inline const AdaptiveView* view(self) noexcept nogil:
        return &self.views[vse_atomic_load(&self.front)]

    cdef void _rebuild(self, const floating* item_factors, int num_threads) noexcept nogil
    cdef void _sort_factor(self, int32_t f, int buffer, int scratch) noexcept nogil


cdef class PairShuffler:
    cdef readonly int64_t n_pairs
    cdef readonly int32_t n_piles
    cdef readonly int num_threads
    cdef const int64_t[::1] _indptr
    cdef const int32_t[::1] _labels
    cdef uint16_t[::1] _pile
    cdef uint64_t[::1] _packed
    cdef int64_t[:, ::1] _cursor       # (threads, piles): next slot of each thread in each pile
    cdef int64_t[::1] _pile_start      # (piles + 1): where each pile starts
    cdef int32_t[::1] _users_out
    cdef int32_t[::1] _labels_out
    cdef object _users_array, _labels_array

    cdef void _deal(self, int t, int64_t start, int64_t stop, uint64_t* rng) noexcept nogil
    cdef void _pack(self, int t, int64_t start, int64_t stop) noexcept nogil
    cdef void _shuffle_piles(self, int32_t first_pile, int32_t end_pile,
                             uint64_t* rng) noexcept nogil
