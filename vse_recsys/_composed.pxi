# The label-composed model's epoch (FISM, Kabbur et al. KDD 2013; Koren's asymmetric SVD).
# Included by _sampler.pyx, after the negative samplers and the loss scale it reuses.
#
# An image's vector is built from its labels: u_i = c(m) * sum of y_a over its labels (a second
# label table y, `label_inputs`), c(m) = m^-exponent for a sum of m vectors, optionally plus a
# free vector of the image, and with a per-label bias the last entry of u is 1 and the last
# column of the label vectors is the bias. Training on the pair (i, p) leaves p out of the sum
# (what EASE's zero diagonal does: otherwise the model learns to copy its input).
#
# An epoch visits each image once, in a shuffled image order, and its pairs together in a
# shuffled order: the sum over the image's labels is made once per visit and each pair's
# vector is that sum minus one row, O(k). Each pair moves its two label vectors at once; the
# image side's gradient of every pair is kept, and at the end of the visit each summed label
# input y_a takes the sum of those gradients but its own pair's, O(n k) per image rather than
# O(n^2 k). With `label_dropout`, each label is left out of one visit's sum with that chance
# (and gets no input gradient in that visit), which keeps the model from leaning on a few
# labels and its validation curve from falling later in training.

cdef enum:
    IMAGE_CHUNK = 32               # images a thread takes at a time
    SCRATCH_ALIGN = 16             # floats: scratch rows start on 64-byte boundaries


cdef inline int32_t _sum_kept_inputs(const floating* label_inputs, Positives positives,
                                     int32_t k, double dropout, int32_t* kept,
                                     floating* total, uint64_t* rng) noexcept nogil:
    """Draw which of the image's labels this visit sums (each left out with chance
    ``dropout``) into ``kept``, and their input vectors' sum into ``total``; returns how many."""
    cdef int64_t j
    cdef int32_t count = 0
    memset(total, 0, k * sizeof(floating))
    for j in range(positives.count):
        kept[j] = dropout <= 0 or rng_uniform(rng) >= dropout
        if kept[j]:
            count += 1
            _add_scaled(total, label_inputs + <int64_t> positives.labels[j] * k, k, 1)
    return count


cdef inline void _shuffled_positions(int32_t* order, int64_t n, uint64_t* rng) noexcept nogil:
    """0..n-1 in a uniformly random order (Fisher-Yates)."""
    cdef int64_t i, j
    cdef int32_t swap
    for i in range(n):
        order[i] = <int32_t> i
    for i in range(n - 1, 0, -1):
        j = rng_below(rng, <uint32_t> (i + 1))
        swap = order[i]
        order[i] = order[j]
        order[j] = swap


cdef inline floating _compose(floating* user, const floating* total, const floating* own,
                              bint own_in_total, int32_t others, const floating* free_vector,
                              int32_t k, const ComposedSettings* composed) noexcept nogil:
    """The pair's image vector into ``user``: c * (total - own), ``own`` taken out of the sum
    when it is in it, plus the free vector; its last entry 1 with a bias. Returns c."""
    cdef floating c = 0
    cdef int32_t f
    if others > 0:
        c = <floating> pow(<double> others, -composed.exponent)
    if own_in_total:
        _scaled_difference(user, total, own, k, c)
    else:
        for f in range(k):
            user[f] = c * total[f]
    if free_vector != NULL:
        _add_scaled(user, free_vector, k, 1)
    if composed.bias:
        user[k] = 1
    return c


cdef int64_t _visit_image(int32_t image, floating* label_inputs, floating* item_factors,
                          floating* free_vectors, floating* input_sums, floating* item_sums,
                          floating* free_sums, const int64_t* indptr, const int32_t* indices,
                          const EpochSettings* settings, const ComposedSettings* composed,
                          const AdaptiveView* view, uint64_t* rng, floating* scratch,
                          int64_t stride, int32_t* order, int32_t* kept,
                          int64_t* counts) noexcept nogil:
    """Train every pair of one image, in a random order; returns the number of pairs.

    ``scratch`` holds this thread's rows of ``stride`` floats: the pair's image vector, the
    visit's input sum, the sum of the pairs' input gradients, a direction, then one gradient
    row per label of the image. ``input_sums`` ... are AdaGrad accumulators (NULL: SGD).
    """
    cdef Positives positives = _positives_of(indptr, indices, image)
    cdef int64_t n = positives.count, t, j, steps = 0
    cdef int32_t k = composed.n_inputs, width = settings.n_factors, label, negative, kept_count
    cdef floating lr = <floating> settings.learning_rate
    cdef floating reg = <floating> settings.regularization
    cdef floating c, scale, positive_score, negative_score, rank_weight
    cdef floating* user = scratch
    cdef floating* total = scratch + stride
    cdef floating* gradient_sum = scratch + 2 * stride
    cdef floating* direction = scratch + 3 * stride
    cdef floating* gradients = scratch + 4 * stride
    cdef floating* positive
    cdef floating* free_vector = _row_or_null(free_vectors, image, k)
    if n == 0:
        return 0
    kept_count = _sum_kept_inputs(label_inputs, positives, k, composed.dropout, kept, total, rng)
    memset(gradient_sum, 0, k * sizeof(floating))
    _shuffled_positions(order, n, rng)
    for t in range(n):
        j = order[t]
        label = positives.labels[j]
        memset(gradients + j * stride, 0, k * sizeof(floating))
        positive = item_factors + <int64_t> label * width
        c = _compose(user, total, label_inputs + <int64_t> label * k, kept[j],
                     kept_count - kept[j], free_vector, k, composed)
        positive_score = _dot(user, positive, width)
        negative = _choose_negative(user, label, positive_score, positives, item_factors,
                                    settings, view, rng, -1, &counts[DRAWS], &negative_score,
                                    &rank_weight)
        if negative < 0:
            counts[UNVIOLATED if negative == NO_VIOLATOR else SKIPPED] += 1
            continue
        counts[VIOLATIONS] += _violation(<floating> settings.margin, positive_score,
                                         negative_score) > 0
        scale = _loss_scale(settings.loss, positive_score, negative_score,
                            <floating> settings.margin, rank_weight)
        if not _takes_step(settings.loss, scale):
            continue
        counts[UPDATES] += 1
        steps += 1
        # the image side's gradient, from the label vectors before this pair's step: the free
        # vector takes it now, the summed label inputs (scaled by c) at the end of the visit
        _scaled_difference(gradients + j * stride, positive,
                           item_factors + <int64_t> negative * width, k, scale * c)
        _add_scaled(gradient_sum, gradients + j * stride, k, 1)
        if free_vector != NULL:
            _scaled_difference(direction, positive, item_factors + <int64_t> negative * width,
                               k, scale)
            _ascend(free_vector, _row_or_null(free_sums, image, k), direction, k, 1, lr, reg)
        if settings.update_labels:
            _ascend(positive, _row_or_null(item_sums, label, width), user, width, scale, lr,
                    reg)
            _ascend(item_factors + <int64_t> negative * width,
                    _row_or_null(item_sums, negative, width), user, width, -scale, lr, reg)
    if settings.update_labels and steps:
        # each summed input takes every pair's gradient but its own pair's (it was left out)
        for j in range(n):
            if kept[j]:
                _scaled_difference(direction, gradient_sum, gradients + j * stride, k, 1)
                label = positives.labels[j]
                _ascend(label_inputs + <int64_t> label * k, _row_or_null(input_sums, label, k),
                        direction, k, 1, lr, reg)
    return n


def train_composed_epoch(floating[:, ::1] label_inputs, floating[:, ::1] item_factors,
                         floating[:, ::1] free_vectors, const int64_t[::1] indptr,
                         const int32_t[::1] indices, const int32_t[::1] image_order, *,
                         int loss, int sampler, AdaptiveSampler adaptive=None,
                         double learning_rate, double regularization, double margin,
                         int max_sampled, bint verify_negative_samples,
                         const double[::1] warp_weights, uint64_t[:, ::1] rng_states,
                         int64_t refresh_interval, int num_threads, int candidates=1,
                         double exponent=0.5, double dropout=0.0, bint bias=True,
                         bint free=False, bint update_labels=True,
                         floating[:, ::1] input_sums=None, floating[:, ::1] item_sums=None,
                         floating[:, ::1] free_sums=None):
    """One epoch of the label-composed model: visit the images in ``image_order``, each once.

    ``label_inputs`` (n_labels, k) are the vectors summed into an image's vector;
    ``item_factors`` (n_labels, k + bias) the label vectors it is scored against (the last
    column the per-label bias when ``bias``); ``free_vectors`` (n_images, k) the images' own
    vectors added to the sum when ``free`` (else it may have no rows). ``input_sums``,
    ``item_sums``, ``free_sums`` are the AdaGrad accumulators of those three (None: SGD).
    The loss, sampler and refresh settings are those of :func:`train_epoch`;
    ``update_labels=False`` moves only the free vectors (folding images in).

    Returns the counters of :func:`train_epoch` (``pairs``: the pairs of the visited images).
    """
    cdef int32_t n_labels = item_factors.shape[0], width = item_factors.shape[1]
    cdef int32_t k = label_inputs.shape[1]
    cdef int64_t n_images = indptr.shape[0] - 1, n_visits = image_order.shape[0]
    cdef int64_t n_chunks = (n_visits + IMAGE_CHUNK - 1) // IMAGE_CHUNK
    cdef int64_t chunk, start, stop, v, pairs, stride
    cdef int32_t max_labels = 1
    cdef EpochSettings settings
    cdef ComposedSettings composed
    cdef RefreshSchedule schedule
    cdef int interrupted = 0
    cdef int tid
    cdef uint64_t* rng
    cdef int64_t* counts
    cdef int64_t[:, ::1] counters = _cache_aligned_rows(max(1, num_threads), COUNTER_STRIDE,
                                                        np.int64)
    cdef uint64_t[:, ::1] thread_rng
    cdef floating[:, ::1] scratch
    cdef int32_t[:, ::1] int_scratch
    cdef bint adaptive_sampling = sampler == ADAPTIVE

    if width != k + bias:
        raise ValueError(f"item_factors has {width} columns; with {k} input factors and "
                         f"bias={bias} it needs {k + bias}")
    if label_inputs.shape[0] != n_labels:
        raise ValueError("label_inputs and item_factors must have a row per label")
    if free and free_vectors.shape[0] != n_images:
        raise ValueError(f"free_vectors has {free_vectors.shape[0]} rows for {n_images} images")
    if free and free_vectors.shape[1] != k:
        raise ValueError("free_vectors must have as many columns as label_inputs")
    if warp_weights.shape[0] < max(n_labels, 2):
        raise ValueError("warp_weights needs one weight per rank")
    if adaptive_sampling and (adaptive is None or adaptive.n_labels != n_labels
                              or adaptive.n_factors != width):
        raise ValueError("the adaptive sampler needs an AdaptiveSampler of item_factors' shape")
    if num_threads < 1 or (adaptive_sampling and num_threads > adaptive.num_threads):
        raise ValueError(f"num_threads must be >= 1 (and at most the sampler's), got {num_threads}")
    if refresh_interval < 1:
        raise ValueError("refresh_interval must be >= 1")
    if candidates < 1 or (candidates > 1 and loss == WARP):
        raise ValueError(f"candidates must be >= 1, and 1 for WARP (got {candidates})")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    for sums, rows, columns, name in ((input_sums, n_labels, k, "input_sums"),
                                      (item_sums, n_labels, width, "item_sums"),
                                      (free_sums, n_images if free else 0, k, "free_sums")):
        if sums is not None and (sums.shape[0] != rows or sums.shape[1] != columns):
            raise ValueError(f"{name} must have the shape of the vectors it accumulates")
    if n_visits:
        if np.min(image_order) < 0 or np.max(image_order) >= n_images:
            raise ValueError("image_order holds images outside 0..n_images - 1")
        max_labels = max(1, int(np.max(np.diff(indptr))))

    stride = (width + SCRATCH_ALIGN - 1) // SCRATCH_ALIGN * SCRATCH_ALIGN
    if floating is float:
        scratch = _cache_aligned_rows(max(1, num_threads), (4 + max_labels) * stride, np.float32)
    else:
        scratch = _cache_aligned_rows(max(1, num_threads), (4 + max_labels) * stride, np.float64)
    int_scratch = np.zeros((max(1, num_threads), 2 * max_labels), dtype=np.int32)
    thread_rng = _thread_rng_copies(rng_states, num_threads)
    settings = EpochSettings(
        loss=loss, sampler=sampler, n_labels=n_labels, n_factors=width,
        learning_rate=learning_rate, regularization=regularization, margin=margin,
        max_sampled=max_sampled, candidates=candidates, verify=verify_negative_samples,
        update_labels=update_labels, bias=bias, warp_weights=&warp_weights[0])
    composed = ComposedSettings(exponent=exponent, dropout=dropout, n_inputs=k, bias=bias)
    schedule = RefreshSchedule(pairs_done=0, next_refresh=refresh_interval,
                               interval=refresh_interval, refreshes=0, seconds=0)
    cdef floating* free_base = &free_vectors[0, 0] if free and free_vectors.shape[0] else NULL
    cdef floating* input_base = &input_sums[0, 0] if input_sums is not None else NULL
    cdef floating* item_base = &item_sums[0, 0] if item_sums is not None else NULL
    cdef floating* free_sum_base = (&free_sums[0, 0] if free_sums is not None and free
                                    and free_sums.shape[0] else NULL)

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
            start = chunk * IMAGE_CHUNK
            stop = min(start + IMAGE_CHUNK, n_visits)
            pairs = 0
            for v in range(start, stop):
                pairs = pairs + _visit_image(
                    image_order[v], &label_inputs[0, 0], &item_factors[0, 0], free_base,
                    input_base, item_base, free_sum_base, &indptr[0], &indices[0], &settings,
                    &composed, adaptive.view() if adaptive_sampling else NULL, rng,
                    &scratch[tid, 0], stride, &int_scratch[tid, 0],
                    &int_scratch[tid, max_labels], counts)
            counts[PAIRS] += pairs
            if adaptive_sampling and update_labels:
                _refresh_when_due(adaptive, &item_factors[0, 0], pairs, &schedule)
            counts[CHUNKS] += 1
            if tid == 0 and counts[CHUNKS] % SIGNAL_CHECK_CHUNKS == 0 and _signals_pending():
                vse_atomic_store(&interrupted, 1)
    rng_states[:num_threads, :4] = thread_rng[:, :4]
    if interrupted:
        _raise_pending()
    return _epoch_counters(counters, schedule, int(np.asarray(counters)[:, PAIRS].sum()))
