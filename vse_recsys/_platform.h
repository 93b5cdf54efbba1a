/* What the kernels take from the compiler and the build, beside the vector math of _vector.h:
 * the bounds-check flag, cache prefetch hints and the atomics of the lock-free refresh hand-off
 * (GCC / Clang builtins). Declared for Cython in _sampler.pxd.
 */
#ifndef VSE_RECSYS_PLATFORM_H
#define VSE_RECSYS_PLATFORM_H

/* Set by setup.py (VSE_RECSYS_BOUNDSCHECK=1) together with Cython's boundscheck directive, so
 * that tests can tell which build they run against (vse_recsys._sampler.BOUNDSCHECK). */
#ifndef VSE_RECSYS_BOUNDSCHECK
#define VSE_RECSYS_BOUNDSCHECK 0
#endif

/* Ask for the cache lines of [p, p + bytes) ahead of use: training touches rows of large
 * arrays in random order, and a miss costs more than the arithmetic on the row.
 * vse_prefetch is for data about to be written; vse_prefetch_read for data that is only read
 * (sorted lists, CSR arrays): a read prefetch leaves other threads' cached copies of the line
 * alone, where a write prefetch would take it from them. */
#if defined(__GNUC__) || defined(__clang__)
#define VSE_PREFETCH(NAME, RW)                                                  \
    static inline void NAME(const void* p, long bytes) {                       \
        const char* c = (const char*) p;                                        \
        for (long offset = 0; offset < bytes; offset += 64)                     \
            __builtin_prefetch(c + offset, RW, 3);                              \
    }
#else
#define VSE_PREFETCH(NAME, RW)                                                  \
    static inline void NAME(const void* p, long bytes) { (void) p; (void) bytes; }
#endif
VSE_PREFETCH(vse_prefetch, 1)
VSE_PREFETCH(vse_prefetch_read, 0)

/* Atomics for the refresh hand-off between threads: counters are relaxed (only their values
 * matter); the published buffer index and the refresh lock use acquire / release, so a thread
 * that sees the new front buffer also sees the contents written before it was published. */
static inline long long vse_atomic_add(long long* p, long long v) {
    return __atomic_add_fetch(p, v, __ATOMIC_RELAXED);
}
static inline long long vse_atomic_load_ll(long long* p) {
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}
static inline int vse_atomic_load(int* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void vse_atomic_store(int* p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline int vse_try_lock(int* p) {
    int expected = 0;
    return __atomic_compare_exchange_n(p, &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}

#endif
