# The epoch's order: every pair once, uniformly shuffled. Included by _sampler.pyx; the
# class's fields and C methods are declared in _sampler.pxd.

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
