/* Dense vector kernels for _sampler.pyx (declared for Cython in _sampler.pxd; compiler builtins
 * and build flags are in _platform.h).
 *
 * `omp simd` lets the compiler vectorise the dot-product reductions without -ffast-math (the
 * summation order is fixed at compile time, so results stay reproducible). The update assumes
 * its three vectors do not overlap; the caller never passes the same label twice.
 */
#ifndef VSE_RECSYS_VECTOR_H
#define VSE_RECSYS_VECTOR_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define VSE_DOT(NAME, T)                                                        \
    static inline T NAME(const T* a, const T* b, int n) {                      \
        T sum = 0;                                                              \
        _Pragma("omp simd reduction(+:sum)")                                    \
        for (int i = 0; i < n; i++) sum += a[i] * b[i];                         \
        return sum;                                                             \
    }

/* user += lr * (scale * (pos - neg) - reg * user); pos += lr * (scale * user - reg * pos);
 * neg += lr * (-scale * user - reg * neg); all from the old values. */
#define VSE_STEP(NAME, T)                                                       \
    static inline void NAME(T* restrict user, T* restrict pos, T* restrict neg, \
                            int n, T scale, T lr, T reg) {                      \
        _Pragma("omp simd")                                                     \
        for (int i = 0; i < n; i++) {                                           \
            T u = user[i], p = pos[i], q = neg[i];                              \
            user[i] = u + lr * (scale * (p - q) - reg * u);                     \
            pos[i] = p + lr * (scale * u - reg * p);                            \
            neg[i] = q + lr * (-scale * u - reg * q);                           \
        }                                                                       \
    }

/* Index f drawn with probability |user[f]| * sigma[f] / total, given u01 uniform in [0, 1);
 * -1 when every weight is zero (or NaN).
 *
 * Up to VSE_STORED_WEIGHTS factors, one vectorised pass stores the weights and their total; the
 * search then sums blocks of 16 stored weights (vectorised) and walks only the block that holds
 * the target: about n/16 + 16 dependent additions. Wider vectors recompute the weights in the
 * search instead of storing them (no large stack buffer in OpenMP threads). */
#define VSE_STORED_WEIGHTS 512
#define VSE_WEIGHT_BLOCK 16
#define VSE_DRAW_FACTOR(NAME, T, ABS)                                           \
    static inline int NAME##_search(const T* user, const T* sigma, const T* stored, \
                                    int n, T target) {                          \
        T acc = 0, block;                                                       \
        int i = 0, chosen = -1;                                                 \
        for (; i + VSE_WEIGHT_BLOCK <= n; i += VSE_WEIGHT_BLOCK) {              \
            block = 0;                                                          \
            if (stored) {                                                       \
                _Pragma("omp simd reduction(+:block)")                          \
                for (int f = i; f < i + VSE_WEIGHT_BLOCK; f++) block += stored[f]; \
            } else {                                                            \
                _Pragma("omp simd reduction(+:block)")                          \
                for (int f = i; f < i + VSE_WEIGHT_BLOCK; f++)                  \
                    block += ABS(user[f]) * sigma[f];                           \
            }                                                                   \
            if (acc + block > target) break;                                    \
            acc += block;                                                       \
        }                                                                       \
        for (; i < n; i++) {                                                    \
            T weight = stored ? stored[i] : ABS(user[i]) * sigma[i];            \
            if (weight > 0) {                                                   \
                chosen = i;                                                     \
                acc += weight;                                                  \
                if (target < acc) return chosen;                                \
            }                                                                   \
        }                                                                       \
        if (chosen >= 0) return chosen;                                         \
        for (i = n - 1; i >= 0; i--)  /* rounding left the target past the end */ \
            if (ABS(user[i]) * sigma[i] > 0) return i;                          \
        return -1;                                                              \
    }                                                                           \
    static inline int NAME(const T* user, const T* sigma, int n, double u01) {  \
        T stored[VSE_STORED_WEIGHTS];                                           \
        T total = 0;                                                            \
        if (n <= VSE_STORED_WEIGHTS) {                                          \
            _Pragma("omp simd reduction(+:total)")                              \
            for (int f = 0; f < n; f++) {                                       \
                stored[f] = ABS(user[f]) * sigma[f];                            \
                total += stored[f];                                             \
            }                                                                   \
        } else {                                                                \
            _Pragma("omp simd reduction(+:total)")                              \
            for (int f = 0; f < n; f++) total += ABS(user[f]) * sigma[f];      \
        }                                                                       \
        if (!(total > 0)) return -1;                                            \
        return NAME##_search(user, sigma, n <= VSE_STORED_WEIGHTS ? stored : NULL, n, \
                             (T) (u01 * total));                                \
    }

/* The user half of VSE_STEP: labels stay fixed (folding a new image into a trained model). */
#define VSE_STEP_USER(NAME, T)                                                  \
    static inline void NAME(T* restrict user, const T* pos, const T* neg,      \
                            int n, T scale, T lr, T reg) {                      \
        _Pragma("omp simd")                                                     \
        for (int i = 0; i < n; i++)                                             \
            user[i] += lr * (scale * (pos[i] - neg[i]) - reg * user[i]);        \
    }

/* The refresh's one pass over the label factors (n rows of k): keys[f * n + a] is a uint32
 * whose ascending order is the descending order of (float) factors[a, f] (IEEE-754 bit trick,
 * branch-free so it vectorises), and per column f the sums of x - factors[0, f] and of its
 * square (shifted by the first row so that the variance does not cancel when the mean is large).
 * Rows are taken in blocks of 16: the key writes go to 16 consecutive slots of each of the k
 * key rows while the block's factor rows stay in L1. */
#define VSE_REFRESH_BLOCK 16
#define VSE_REFRESH_KEYS(NAME, T)                                               \
    static inline void NAME(const T* factors, int n, int k, uint32_t* keys,    \
                            double* sum, double* squares) {                     \
        for (int f = 0; f < k; f++) { sum[f] = 0; squares[f] = 0; }            \
        for (int a0 = 0; a0 < n; a0 += VSE_REFRESH_BLOCK) {                     \
            int a1 = a0 + VSE_REFRESH_BLOCK < n ? a0 + VSE_REFRESH_BLOCK : n;   \
            for (int f = 0; f < k; f++) {                                       \
                uint32_t* out = keys + (int64_t) f * n;                         \
                for (int a = a0; a < a1; a++) {                                 \
                    float x = (float) factors[(int64_t) a * k + f];             \
                    uint32_t bits;                                              \
                    memcpy(&bits, &x, 4);                                       \
                    out[a] = ~(bits ^ ((uint32_t) ((int32_t) bits >> 31) | 0x80000000u)); \
                }                                                               \
            }                                                                   \
            for (int a = a0; a < a1; a++) {                                     \
                const T* row = factors + (int64_t) a * k;                       \
                _Pragma("omp simd")                                             \
                for (int f = 0; f < k; f++) {                                   \
                    double x = (double) row[f] - (double) factors[f];           \
                    sum[f] += x;                                                \
                    squares[f] += x * x;                                        \
                }                                                               \
            }                                                                   \
        }                                                                       \
    }

/* The label-composed model's steps (_composed.pxi).
 *
 * vse_ascend: x moves along direction d: step = scale * d - reg * x, then x += lr * step (SGD),
 * or with a per-entry AdaGrad accumulator acc (LightFM's schedule, acc starts at 1):
 * x += lr * step / sqrt(acc), then acc += step^2. acc == NULL means SGD. */
#define VSE_ASCEND(NAME, T, SQRT)                                               \
    static inline void NAME(T* restrict x, T* restrict acc, const T* restrict d, \
                            int n, T scale, T lr, T reg) {                      \
        if (acc) {                                                              \
            _Pragma("omp simd")                                                 \
            for (int i = 0; i < n; i++) {                                       \
                T step = scale * d[i] - reg * x[i];                             \
                x[i] += lr * step / SQRT(acc[i]);                               \
                acc[i] += step * step;                                          \
            }                                                                   \
        } else {                                                                \
            _Pragma("omp simd")                                                 \
            for (int i = 0; i < n; i++) x[i] += lr * (scale * d[i] - reg * x[i]); \
        }                                                                       \
    }

/* out = scale * (a - b) */
#define VSE_SCALED_DIFFERENCE(NAME, T)                                          \
    static inline void NAME(T* restrict out, const T* a, const T* b, int n, T scale) { \
        _Pragma("omp simd")                                                     \
        for (int i = 0; i < n; i++) out[i] = scale * (a[i] - b[i]);             \
    }

/* out += scale * a */
#define VSE_AXPY(NAME, T)                                                       \
    static inline void NAME(T* restrict out, const T* restrict a, int n, T scale) { \
        _Pragma("omp simd")                                                     \
        for (int i = 0; i < n; i++) out[i] += scale * a[i];                     \
    }

VSE_DOT(vse_dot_f, float)
VSE_DOT(vse_dot_d, double)
VSE_STEP(vse_step_f, float)
VSE_STEP(vse_step_d, double)
VSE_STEP_USER(vse_step_user_f, float)
VSE_STEP_USER(vse_step_user_d, double)
VSE_DRAW_FACTOR(vse_draw_factor_f, float, fabsf)
VSE_DRAW_FACTOR(vse_draw_factor_d, double, fabs)
VSE_REFRESH_KEYS(vse_refresh_keys_f, float)
VSE_REFRESH_KEYS(vse_refresh_keys_d, double)
VSE_ASCEND(vse_ascend_f, float, sqrtf)
VSE_ASCEND(vse_ascend_d, double, sqrt)
VSE_SCALED_DIFFERENCE(vse_scaled_difference_f, float)
VSE_SCALED_DIFFERENCE(vse_scaled_difference_d, double)
VSE_AXPY(vse_axpy_f, float)
VSE_AXPY(vse_axpy_d, double)

#endif
