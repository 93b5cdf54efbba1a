# Test-only wrappers, with the GIL: tests call the samplers and the update through them;
# training never does. Included by _sampler.pyx.

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
    if _takes_step(loss, scale) and &pos[0] != &neg[0]:
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


def choose_warp_negatives(floating[::1] user, int32_t positive, double positive_score,
                          floating[:, ::1] item_factors, double margin, int max_sampled,
                          Py_ssize_t size, uint64_t[:, ::1] rng_state):
    """``size`` WARP choices of a negative for one image vector with no other positive, as
    training makes them (``_choose_negative``): the labels (NO_VIOLATOR: none found), the
    draws each took and the rank weight each step would be scaled by."""
    cdef int32_t n_labels = item_factors.shape[0], k = item_factors.shape[1]
    if user.shape[0] != k:
        raise ValueError("user vector length must equal item_factors' width")
    weights_table = warp_rank_weights(n_labels)
    cdef const double[::1] table = weights_table
    cdef EpochSettings settings = EpochSettings(
        loss=WARP, sampler=UNIFORM, n_labels=n_labels, n_factors=k, learning_rate=0,
        regularization=0, margin=margin, max_sampled=max_sampled, candidates=1, verify=True,
        update_labels=False, bias=False, warp_weights=&table[0])
    cdef Positives positives
    positives.labels = NULL
    positives.count = 0
    negatives = np.empty(size, dtype=np.int32)
    draws = np.zeros(size, dtype=np.int64)
    weights = np.empty(size, dtype=np.float64)
    cdef int32_t[::1] chosen = negatives
    cdef int64_t[::1] drawn = draws
    cdef double[::1] weighted = weights
    cdef floating negative_score, rank_weight
    cdef Py_ssize_t t
    for t in range(size):
        chosen[t] = _choose_negative(&user[0], positive, <floating> positive_score, positives,
                                     &item_factors[0, 0], &settings, NULL, &rng_state[0, 0],
                                     -1, &drawn[t], &negative_score, &rank_weight)
        weighted[t] = rank_weight
    return negatives, draws, weights
