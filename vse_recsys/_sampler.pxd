# cython: language_level=3
"""Declarations for the nogil training kernels (bodies in ``_sampler.pyx``).

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


# -- random numbers: one xoshiro256++ state per thread -------------------------------------------
# A state is 4 words; each thread's state sits in its own 64-byte row (8 words) of the
# (n_threads, 8) state array so two threads never write the same cache line.
cdef enum:
    RNG_STRIDE = 8

cdef uint64_t rng_next(uint64_t* state) noexcept nogil
cdef double rng_uniform(uint64_t* state) noexcept nogil
cdef uint32_t rng_below(uint64_t* state, uint32_t n) noexcept nogil


# -- the adaptive sampler's read-only view, valid between two refreshes --------------------------
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
