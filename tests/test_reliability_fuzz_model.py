"""Fuzzing ``VSEEns.fit`` and ``recommend`` with Hypothesis.

Training matrices come in every shape and representation a caller might hand over: any sparse
format, int32 or int64 indices, unsorted and duplicate entries, explicit zeros, bool / integer /
float values (also negative, NaN, infinite or huge), read-only and non-contiguous arrays, empty
rows and columns, one label, images with every label. Each input must either be refused with a
ValueError that says what is wrong, or train a model that is *the same* as the one trained on
the canonical binary CSR matrix of the same positives (so no representation changes the
result silently). ``recommend`` is then called with random arguments and checked against a
brute-force ranking.

This file also runs against the bounds-checked build (``./run.sh test-boundscheck``).
"""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from vse_recsys import VSEEns
from vse_recsys._validation import InputWarning

# three times the profile's example count (ci: 120 per test), since these are the fuzz suites
fuzz = settings(max_examples=3 * settings.default.max_examples)

VALUES = {  # value -> how often it is drawn
    1: 8, 2: 2, 0.5: 1, 0: 2, 128: 1, -1: 1, float("nan"): 1, float("inf"): 1, 3e38: 1,
}
VALUE_DTYPES = [np.float32, np.float64, np.int64, np.int8, np.uint8, np.bool_]
FORMATS = ["csr", "csr_array", "csc", "coo", "lil", "dok"]


@st.composite
def training_inputs(draw):
    """``(matrix, positives, problem)``: a sparse matrix, the (image, label) pairs it means
    (a bool array), and the ValueError message expected, or None."""
    n_images = draw(st.integers(0, 12))
    n_labels = draw(st.integers(0, 9))
    dtype = draw(st.sampled_from(VALUE_DTYPES))
    n_entries = draw(st.integers(0, 40)) if n_images and n_labels else 0
    pool = [value for value, weight in VALUES.items() for _ in range(weight)]
    rows = draw(st.lists(st.integers(0, n_images - 1), min_size=n_entries,
                         max_size=n_entries)) if n_entries else []
    cols = draw(st.lists(st.integers(0, n_labels - 1), min_size=n_entries,
                         max_size=n_entries)) if n_entries else []
    full_rows = draw(st.lists(st.integers(0, n_images - 1), max_size=2)) if n_entries else []
    for row in full_rows:  # images with every label
        rows += [row] * n_labels
        cols += list(range(n_labels))
    values = draw(st.lists(st.sampled_from(pool), min_size=len(rows), max_size=len(rows)))
    with np.errstate(invalid="ignore", over="ignore"):
        data = np.array(values, dtype=np.float64)
        if dtype == np.bool_:
            data = data != 0
        elif np.dtype(dtype).kind in "iu":
            finite = np.isfinite(data) & (np.abs(data) < 127)
            data = np.where(finite, data, 1).astype(dtype)  # ints cannot be NaN or huge
            if dtype == np.uint8:
                data = np.abs(data.astype(np.int64)).astype(np.uint8)
        else:
            data = data.astype(dtype)

    index_dtype = draw(st.sampled_from([np.int32, np.int64]))
    form = draw(st.sampled_from(FORMATS))
    matrix = _build(draw, form, rows, cols, data, index_dtype, (n_images, n_labels))
    if form in ("lil", "dok"):  # built from a COO matrix, which merged duplicates
        merged = sp.coo_matrix(matrix)
        rows, cols, data = merged.row, merged.col, merged.data

    problem = None
    stored = data.astype(np.float64)
    positives = np.zeros((n_images, n_labels), dtype=bool)
    if not n_images or not n_labels:
        problem = "need at least one image and one label"
    elif not np.isfinite(stored).all():
        problem = "NaN or infinite values"
    elif (stored < 0).any():
        problem = "negative values"
    else:
        np.logical_or.at(positives, (np.array(rows, int), np.array(cols, int)), stored != 0)
        if not positives.any():
            problem = "no positive entries"
    return matrix, positives, problem


def _build(draw, form, rows, cols, data, index_dtype, shape):
    """The entries as a matrix of `form`, in drawn entry order, maybe read-only or strided."""
    rows, cols = np.array(rows, dtype=index_dtype), np.array(cols, dtype=index_dtype)
    if form in ("csr", "csr_array", "csc"):
        major, minor = (rows, cols) if form != "csc" else (cols, rows)
        order = np.argsort(major, kind="stable")  # rows grouped, entries within a row unsorted
        indptr = np.zeros(shape[form == "csc"] + 1, dtype=index_dtype)
        np.add.at(indptr, major[order] + 1, 1)
        arrays = [data[order], minor[order], np.cumsum(indptr, dtype=index_dtype)]
        if draw(st.booleans()):  # non-contiguous views of bigger arrays
            arrays = [np.repeat(array, 2)[::2] for array in arrays]
        if draw(st.booleans()):
            for array in arrays:
                array.flags.writeable = False
        kind = {"csr": sp.csr_matrix, "csr_array": sp.csr_array, "csc": sp.csc_matrix}[form]
        return kind(tuple(arrays), shape=shape)
    coo = sp.coo_matrix((data, (rows, cols)), shape=shape)
    if form == "coo":
        return coo
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dok/lil of bool or int8 warn about their dtype
        return coo.tolil() if form == "lil" else coo.todok()


def _snapshot(matrix):
    if hasattr(matrix, "indptr"):
        return [np.array(matrix.data), np.array(matrix.indices), np.array(matrix.indptr)]
    return [np.asarray(matrix.toarray())]


def _fit(user_items, **params):
    settings = dict(factors=3, iterations=2, num_threads=1, random_state=0)
    model = VSEEns(**{**settings, **params})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # conversion / duplicate / zero warnings are expected
        return model.fit(user_items, show_progress=False)


CONFIGS = st.sampled_from([
    dict(), dict(sampler="uniform"), dict(loss="warp", sampler="uniform"), dict(loss="bpr"),
    dict(dtype=np.float64), dict(verify_negative_samples=False), dict(num_threads=2),
])


@fuzz
@given(case=training_inputs(), params=CONFIGS)
def test_fit_refuses_bad_matrices_or_trains_as_on_the_canonical_matrix(case, params):
    matrix, positives, problem = case
    before = _snapshot(matrix)
    if problem:
        with pytest.raises(ValueError, match=problem):
            _fit(matrix, **params)
    else:
        model = _fit(matrix, **params)
        n_images, n_labels = positives.shape
        width = 3 + model.label_bias  # (the bias column)
        assert model.user_factors.shape == (n_images, width)
        assert model.item_factors.shape == (n_labels, width)
        assert np.isfinite(model.user_factors).all() and np.isfinite(model.item_factors).all()
        if model.num_threads == 1:  # deterministic: the same model as from the canonical input
            canonical = _fit(sp.csr_matrix(positives.astype(np.float32)), **params)
            np.testing.assert_array_equal(model.user_factors, canonical.user_factors)
            np.testing.assert_array_equal(model.item_factors, canonical.item_factors)
        _check_recommend(model, matrix, positives)
    for original, now in zip(before, _snapshot(matrix)):  # the input is never modified
        np.testing.assert_array_equal(original, now)


def _check_recommend(model, matrix, positives, N=None):
    """Every image's ranking equals a brute-force one, with its positives left out."""
    n_images, n_labels = positives.shape
    N = n_labels if N is None else N
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)  # fit's tests check the same warnings
        ids, scores = model.recommend(np.arange(n_images), matrix, N=N)  # any format
    _check_rankings(model, np.arange(n_images), ids, scores, positives, N, None)


def _check_rankings(model, userids, ids, scores, excluded, N, candidates):
    """``ids``/``scores`` rows against a brute-force top-N over ``candidates`` minus
    ``excluded`` (a bool matrix images x labels); filtered entries end each row."""
    n_labels = model.item_factors.shape[0]
    candidates = np.arange(n_labels) if candidates is None else np.sort(candidates)
    expected_width = min(N, len(candidates))
    sentinel = -np.finfo(model.dtype).max
    assert ids.shape == scores.shape == (len(userids), expected_width)
    exact = model.user_factors[userids].astype(np.float64) @ model.item_factors.T.astype(np.float64)
    for row in range(len(userids)):
        allowed = candidates[~excluded[row, candidates]]
        valid = scores[row] > sentinel
        n_valid = min(expected_width, len(allowed))
        assert valid.sum() == n_valid, (row, ids[row], scores[row], allowed)
        assert valid[:n_valid].all()  # the filtered ones come last
        got = ids[row, :n_valid]
        assert len(set(got.tolist())) == n_valid and set(got.tolist()) <= set(allowed.tolist())
        assert set(ids[row].tolist()) <= set(candidates.tolist())
        assert (np.diff(scores[row, :n_valid]) <= 0).all()  # best first
        best = np.sort(exact[row, allowed])[::-1][:n_valid]
        np.testing.assert_allclose(np.sort(exact[row, got])[::-1], best, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(scores[row, :n_valid], exact[row, got], rtol=1e-4, atol=1e-5)


@st.composite
def recommend_calls(draw, n_images, n_labels):
    """Random recommend arguments, valid or not."""
    ids = st.integers(-2, n_images + 2)
    userid = draw(st.one_of(ids, st.lists(ids, max_size=6).map(np.array),
                            st.just(0.5), st.just(np.int64(2**40))))
    N = draw(st.one_of(st.integers(-1, n_labels + 3), st.just(2.5), st.just(True)))
    labels = st.integers(-1, n_labels)
    filter_items = draw(st.one_of(st.none(), st.lists(labels, max_size=4)))
    items = draw(st.one_of(st.none(), st.lists(labels, max_size=5)))
    return dict(userid=userid, N=N, filter_items=filter_items, items=items,
                filter_already_liked_items=draw(st.booleans()))


@pytest.fixture(scope="module")
def small_model():
    positives = np.random.default_rng(3).random((8, 6)) < 0.4
    positives[2] = True  # an image with every label
    positives[5] = False  # and one with none
    # free image vectors: the stored ones are looked up by userid, so its range is checked too
    model = _fit(sp.csr_matrix(positives.astype(np.float32)), factors=4, iterations=5,
                 image_vectors="free")
    return model, positives


@fuzz
@given(data=st.data())
def test_recommend_answers_correctly_or_explains_the_bad_argument(small_model, data):
    model, positives = small_model
    n_images, n_labels = positives.shape
    call = data.draw(recommend_calls(n_images, n_labels))
    userid = call["userid"]
    rows = np.atleast_1d(userid)
    try:
        liked = sp.csr_matrix(positives[np.clip(rows, 0, n_images - 1).astype(int)]
                              .astype(np.float32))
        ids, scores = model.recommend(userid, liked, N=call["N"], items=call["items"],
                                      filter_items=call["filter_items"],
                                      filter_already_liked_items=call["filter_already_liked_items"])
    except (ValueError, IndexError) as error:
        message = str(error)
        assert message and "Out of bounds on buffer" not in message
        assert _is_bad(call, n_images, n_labels), f"valid call refused: {call}: {message}"
        return
    assert not _is_bad(call, n_images, n_labels), f"bad call accepted: {call}"
    ids, scores = np.atleast_2d(ids), np.atleast_2d(scores)
    excluded = np.zeros((len(rows), n_labels), dtype=bool)
    if call["filter_already_liked_items"]:
        excluded |= positives[rows]
    if call["filter_items"]:
        excluded[:, call["filter_items"]] = True
    _check_rankings(model, rows, ids, scores, excluded, call["N"], call["items"])


def _is_bad(call, n_images, n_labels):
    userid, N, items, filter_items = call["userid"], call["N"], call["items"], call["filter_items"]
    rows = np.atleast_1d(userid)
    if rows.dtype.kind not in "iu" or (rows.size and (rows.min() < 0 or rows.max() >= n_images)):
        return True
    if isinstance(N, bool) or not isinstance(N, int) or N < 1:
        return True
    if filter_items and (min(filter_items) < 0 or max(filter_items) >= n_labels):
        return True
    if items is not None:
        if filter_items is not None or not items or len(set(items)) != len(items):
            return True
        if min(items) < 0 or max(items) >= n_labels:
            return True
    return False


@pytest.mark.filterwarnings("ignore:user_items:UserWarning")
@fuzz
@given(case=training_inputs())
def test_folding_in_accepts_the_same_inputs_as_fit(small_model, case):
    """recalculate_user / partial_fit_users validate their rows like fit does."""
    model, _ = small_model
    matrix, positives, problem = case
    if positives.shape[1] != model.item_factors.shape[0] or not positives.shape[0]:
        with pytest.raises(ValueError):
            model.recalculate_user(0, matrix)
        return
    if problem and "no positive" not in problem:
        with pytest.raises(ValueError, match=problem):
            model.recalculate_user(np.arange(positives.shape[0]), matrix)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vectors = model.recalculate_user(np.arange(positives.shape[0]), matrix)
        canonical = model.recalculate_user(np.arange(positives.shape[0]),
                                           sp.csr_matrix(positives.astype(np.float32)))
    np.testing.assert_array_equal(vectors, canonical)
    assert np.isfinite(vectors).all()
    # no known label: a zero vector (and 1 for the bias entry)
    assert not vectors[~positives.any(axis=1), : model.factors].any()
