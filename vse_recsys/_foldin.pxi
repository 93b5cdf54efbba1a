# Folding new images into a trained free-vector model: each image's vector learned from its
# labels alone, with the label vectors fixed. Included by _sampler.pyx.
#
# Each image has its own random stream, seeded from what the caller derives from the image's
# labels (and the model's seed), and is trained by one thread from start to end: so its vector
# depends on its labels, the model and the seed only — not on the other images of the batch,
# their order or the number of threads.

cdef inline void _seed_stream(uint64_t* state, uint64_t seed) noexcept nogil:
    """A xoshiro256++ state from one 64-bit seed, by SplitMix64 (what its authors advise)."""
    cdef int i
    cdef uint64_t z
    for i in range(4):
        seed += 0x9E3779B97F4A7C15ULL
        z = seed
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
        state[i] = z ^ (z >> 31)
    if state[0] == 0 and state[1] == 0 and state[2] == 0 and state[3] == 0:
        state[0] = 1


cdef void _fold_in_image(int32_t image, floating* vectors, const floating* item_factors,
                         const int64_t* indptr, const int32_t* indices, int passes,
                         uint64_t seed, const EpochSettings* settings, const AdaptiveView* view,
                         int32_t* order, floating* adagrad, int64_t* counts) noexcept nogil:
    """``passes`` passes over one image's labels, each in a fresh order, moving its vector.

    ``adagrad`` (3 n_factors scratch values, or NULL for SGD) makes the steps AdaGrad's, with
    the image's accumulators starting afresh as a training image's do.
    """
    cdef uint64_t rng[4]
    cdef Positives positives = _positives_of(indptr, indices, image)
    cdef int32_t k = settings.n_factors, label, negative, i
    cdef floating* user = vectors + <int64_t> image * k
    cdef floating positive_score, negative_score, rank_weight
    cdef int pass_number
    cdef int64_t t
    cdef StepSums sums
    cdef StepSums* step_sums = NULL
    if adagrad != NULL:
        for i in range(k):
            adagrad[i] = 1  # (LightFM's start, as in training)
        # only the image vector moves, so only its sums are read; the scratch follows them
        sums.user = adagrad
        sums.positive = NULL
        sums.negative = NULL
        sums.scratch = adagrad + k
        step_sums = &sums
    _seed_stream(rng, seed)
    for pass_number in range(passes):
        _shuffled_positions(order, positives.count, rng)
        for t in range(positives.count):
            label = positives.labels[order[t]]
            positive_score = _dot(user, item_factors + <int64_t> label * k, k)
            negative = _choose_negative(user, label, positive_score, positives, item_factors,
                                        settings, view, rng, -1, &counts[DRAWS],
                                        &negative_score, &rank_weight)
            if negative < 0:
                counts[UNVIOLATED if negative == NO_VIOLATOR else SKIPPED] += 1
                continue
            counts[UPDATES] += _loss_step(user, <floating*> item_factors + <int64_t> label * k,
                                          <floating*> item_factors + <int64_t> negative * k,
                                          positive_score, negative_score, rank_weight, settings,
                                          step_sums)


def fold_in(floating[:, ::1] vectors, const floating[:, ::1] item_factors,
            const int64_t[::1] indptr, const int32_t[::1] indices, const uint64_t[::1] seeds, *,
            int passes, int loss, int sampler, AdaptiveSampler adaptive=None,
            double learning_rate, double regularization, double margin, int max_sampled,
            bint verify_negative_samples, const double[::1] warp_weights, int num_threads,
            int candidates=1, bint bias=False, bint adagrad=False):
    """Learn the vectors of images (rows of ``indptr`` / ``indices``) against fixed labels.

    ``vectors`` (n_images, n_factors) hold the starting vectors and are trained in place;
    ``seeds`` one 64-bit seed per image, from which its random stream is made. ``passes``
    passes over each image's labels with the model's loss and sampler (the adaptive one is
    refreshed once, from ``item_factors``) and its schedule: SGD, or with ``adagrad`` AdaGrad
    from fresh accumulators (a constant SGD step would keep moving the vector at the size of a
    first AdaGrad step, where training's steps shrink: more passes would overfit the labels). With ``bias`` the vectors' last entry is 1 and stays
    1. Images are independent: the result for an image is the same in any batch, in any order,
    with any number of threads. Returns the counters of :func:`train_epoch`.
    """
    cdef int32_t n_labels = item_factors.shape[0], k = item_factors.shape[1]
    cdef int64_t n_images = vectors.shape[0], image
    cdef int32_t max_labels = 1
    cdef EpochSettings settings
    cdef RefreshSchedule schedule
    cdef int tid
    cdef int64_t* counts
    cdef int64_t[:, ::1] counters = _cache_aligned_rows(max(1, num_threads), COUNTER_STRIDE,
                                                        np.int64)
    cdef int32_t[:, ::1] order_scratch
    cdef floating[:, ::1] adagrad_scratch = None
    cdef bint adaptive_sampling = sampler == ADAPTIVE
    schedule = RefreshSchedule(pairs_done=0, next_refresh=0, interval=1, refreshes=0, seconds=0)
    if vectors.shape[1] != k or indptr.shape[0] != n_images + 1 or seeds.shape[0] != n_images:
        raise ValueError("vectors, indptr and seeds must describe the same images, with "
                         "item_factors' width")
    if adaptive_sampling and (adaptive is None or adaptive.n_labels != n_labels
                              or adaptive.n_factors != k):
        raise ValueError("the adaptive sampler needs an AdaptiveSampler of item_factors' shape")
    if num_threads < 1 or passes < 1:
        raise ValueError("num_threads and passes must be >= 1")
    if warp_weights.shape[0] < max(n_labels, 2):
        raise ValueError("warp_weights needs one weight per rank")
    if n_images == 0 or indptr[n_images] == 0:  # no image, or none with a label: nothing moves
        return _epoch_counters(counters, schedule, 0)
    max_labels = max(1, int(np.max(np.diff(indptr))))
    order_scratch = np.zeros((max(1, num_threads), max_labels), dtype=np.int32)
    if adagrad:  # per thread: the image's sums and the step's scratch, in whole cache lines
        dtype = np.float32 if floating is float else np.float64
        per_line = 64 // np.dtype(dtype).itemsize
        adagrad_scratch = _cache_aligned_rows(max(1, num_threads),
                                              -(-3 * k // per_line) * per_line, dtype)
    settings = EpochSettings(
        loss=loss, sampler=sampler, n_labels=n_labels, n_factors=k,
        learning_rate=learning_rate, regularization=regularization, margin=margin,
        max_sampled=max_sampled, candidates=candidates, verify=verify_negative_samples,
        update_labels=False, bias=bias, warp_weights=&warp_weights[0])
    if adaptive_sampling:
        with nogil:
            _timed_refresh(adaptive, &item_factors[0, 0], num_threads, &schedule)
    with nogil, parallel(num_threads=num_threads):
        tid = threadid()
        counts = &counters[tid, 0]
        counts[SEEN] = 1
        for image in prange(n_images, schedule="dynamic"):
            _fold_in_image(<int32_t> image, &vectors[0, 0], &item_factors[0, 0], &indptr[0],
                           &indices[0], passes, seeds[image], &settings,
                           adaptive.view() if adaptive_sampling else NULL,
                           &order_scratch[tid, 0],
                           &adagrad_scratch[tid, 0] if adagrad else NULL, counts)
    return _epoch_counters(counters, schedule, int(indptr[n_images]) * passes)
