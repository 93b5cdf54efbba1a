"""Faults in model files: interrupted saves, and loading damaged, truncated, inconsistent or
hostile ``.npz`` files (``VSEEns.load`` and ``Annotator.load``).

Every bad file must fail in ``load`` with a ``ModelFileError`` (a ValueError) naming the file and
the problem, never later in ``recommend``, and nothing in a file is ever unpickled.
"""

import io
import os
import pickle
import warnings
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from strategies import random_labels
from vse_recsys import VSEEns, _npz
from vse_recsys.annotator import Annotator
from vse_recsys._npz import FORMAT_VERSION, ModelFileError

USER_ITEMS = random_labels(n_images=30, n_labels=12, per_image=3)


@pytest.fixture(scope="module")
def fitted():
    """A free-vector model without bias: the file layout of versions 1 and 2, whose checks the
    damaged files below exercise (the composed model's own arrays: further below)."""
    return VSEEns(factors=4, iterations=2, num_threads=1, random_state=0, image_vectors="free",
                  label_bias=False, learning_schedule="sgd", early_stopping=False).fit(
        USER_ITEMS, show_progress=False
    )


def _saved_bytes(model):
    buffer = io.BytesIO()
    model.save(buffer)
    return buffer.getvalue()


def _arrays(model):
    with np.load(io.BytesIO(_saved_bytes(model)), allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


def _npz_bytes(arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _assert_same(model, loaded):
    np.testing.assert_array_equal(loaded.user_factors, model.user_factors)
    np.testing.assert_array_equal(loaded.item_factors, model.item_factors)
    assert loaded.get_params() == model.get_params()
    for name in ("factors", "learning_rate", "loss", "sampler", "random_state", "dtype"):
        assert getattr(loaded, name) == getattr(model, name)


def _assert_usable(model):
    """A loaded model answers recommend for every image with valid labels and finite scores."""
    n_images, n_labels = model.user_factors.shape[0], model.item_factors.shape[0]
    if n_images == 0:
        return
    rows = sp.csr_matrix((n_images, n_labels), dtype=np.float32)
    ids, scores = model.recommend(np.arange(n_images), rows, N=n_labels)
    assert ids.shape == (n_images, n_labels)
    assert ((ids >= 0) & (ids < n_labels)).all() and np.isfinite(scores).all()


# -- saving ------------------------------------------------------------------------------------


def test_saved_file_has_a_format_version_and_round_trips(fitted, tmp_path):
    fitted.save(tmp_path / "model")  # suffix appended, as numpy does
    with np.load(tmp_path / "model.npz", allow_pickle=False) as stored:
        assert int(stored["format_version"]) == FORMAT_VERSION
    for source in (tmp_path / "model", str(tmp_path / "model.npz"), tmp_path / "model.npz"):
        _assert_same(fitted, VSEEns.load(source))
    with open(tmp_path / "model.npz", "rb") as handle:
        _assert_same(fitted, VSEEns.load(handle))


class _DiskFull(OSError):
    pass


@pytest.mark.parametrize("failure", [_DiskFull(28, "No space left on device"), KeyboardInterrupt()])
@pytest.mark.parametrize("kind", ["VSEEns", "Annotator"])
def test_an_interrupted_save_keeps_the_old_file_and_leaves_no_temporary(fitted, tmp_path,
                                                                         monkeypatch, failure,
                                                                         kind):
    saver = fitted if kind == "VSEEns" else Annotator(fitted, np.arange(12), user_items=USER_ITEMS)
    target = tmp_path / "model.npz"
    saver.save(target)
    good = target.read_bytes()

    real_savez = np.savez

    def savez_then_fail(handle, **arrays):
        real_savez(handle, **arrays)
        handle.truncate(len(good) // 2)  # half written when the disk fills up / Ctrl-C comes
        raise failure

    other = VSEEns(factors=4, iterations=1, num_threads=1, random_state=1).fit(
        USER_ITEMS, show_progress=False
    )
    monkeypatch.setattr(_npz.np, "savez", savez_then_fail)
    replacement = other if kind == "VSEEns" else Annotator(other, np.arange(12))
    with pytest.raises(type(failure)):
        replacement.save(target)
    assert target.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # the temporary file is gone


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_get_the_usual_permissions_not_private_ones(fitted, tmp_path, umask):
    previous = os.umask(umask)
    try:
        fitted.save(tmp_path / "model.npz")
        Annotator(fitted, np.arange(12)).save(tmp_path / "annotator.npz")
    finally:
        os.umask(previous)
    for name in ("model.npz", "annotator.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


# -- loading: whole-file damage ------------------------------------------------------------------


def test_every_truncation_of_a_model_file_is_a_clear_error(fitted, tmp_path):
    data = _saved_bytes(fitted)
    path = tmp_path / "cut.npz"
    for size in sorted({*range(0, len(data), max(1, len(data) // 97)), len(data) - 1}):
        path.write_bytes(data[:size])
        with pytest.raises(ModelFileError, match="cut.npz"):
            VSEEns.load(path)


@given(position=st.integers(0, 10**9), flip=st.integers(1, 255))
def test_a_flipped_byte_is_caught_or_harmless(fitted, position, flip):
    """The zip's checksums cover every array; a flip elsewhere (dates, padding) is harmless."""
    data = bytearray(_saved_bytes(fitted))
    data[position % len(data)] ^= flip
    try:
        loaded = VSEEns.load(io.BytesIO(bytes(data)))
    except ModelFileError as error:
        assert str(error)
        return
    _assert_same(fitted, loaded)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not an .npz model file"),
        (b"PK\x03\x04 not really a zip", "not an .npz model file"),
        (b"\x93NUMPY\x01\x00", "not an .npz model file"),  # a bare .npy
    ],
)
def test_files_that_are_no_npz_are_named_and_explained(tmp_path, content, message):
    path = tmp_path / "model.npz"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=f"{path}.*{message}"):
        VSEEns.load(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VSEEns.load(tmp_path / "absent.npz")
    with pytest.raises(ModelFileError, match="is a folder"):
        VSEEns.load(tmp_path)


def test_a_zip_member_that_is_no_array_is_refused(fitted, tmp_path):
    path = tmp_path / "model.npz"
    fitted.save(path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(ModelFileError, match="'notes.txt', which is not a numpy array"):
        VSEEns.load(path)


def test_a_header_that_disagrees_with_the_stored_size_is_caught_before_allocating(tmp_path):
    """A damaged header claiming a huge shape must not make load allocate terabytes."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.zeros((3, 4), dtype=np.float32))
    data = buffer.getvalue().replace(b"(3, 4)", b"(3000000000000, 4)".ljust(6))
    # the header is padded to a fixed size, so the longer text still fits
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("item_factors.npy", data)
    with pytest.raises(ModelFileError, match="'item_factors' is truncated or damaged"):
        VSEEns.load(path)


class _Exploit:
    """Unpickling this would create a file: proof that code ran."""

    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_object_arrays_are_refused_without_unpickling(fitted, tmp_path):
    _Exploit.marker = tmp_path / "pwned"
    payload = np.empty(1, dtype=object)
    payload[0] = _Exploit()
    arrays = _arrays(fitted)
    for key in ("user_factors", "loss", "extra"):
        path = tmp_path / f"{key}.npz"
        np.savez(path, **{**arrays, key: payload})  # numpy pickles object arrays
        with pytest.raises(ModelFileError, match=f"'{key}' holds Python objects"):
            VSEEns.load(path)
    assert not _Exploit.marker.exists()
    assert pickle.dumps(payload)  # the payload itself is a working pickle


# -- loading: arrays that are well-formed but wrong ---------------------------------------------

F32 = np.float32


def _bad(arrays, **changes):
    arrays = dict(arrays)
    for key, value in changes.items():
        if value is None:
            arrays.pop(key, None)
        else:
            arrays[key] = value
    return arrays


BAD_MODELS = {
    "factor counts differ": (
        dict(user_factors=np.zeros((30, 5), F32)),
        "user_factors has 5 columns but the model has factors=4",
    ),
    "factors param disagrees": (dict(factors=np.int64(8)), "has 4 columns but the model has factors=8"),
    "integer factors": (dict(item_factors=np.zeros((12, 4), np.int32)), "float32 or float64"),
    "float16 factors": (dict(item_factors=np.zeros((12, 4), np.float16)), "float32 or float64"),
    "dtype disagrees": (dict(item_factors=np.zeros((12, 4), np.float64)), "model's dtype"),
    "complex factors": (dict(item_factors=np.zeros((12, 4), np.complex64)), "float32 or float64"),
    "NaN": (dict(item_factors=np.full((12, 4), np.nan, F32)), "48 NaN or infinite"),
    "inf": (dict(user_factors=np.full((30, 4), np.inf, F32)), "120 NaN or infinite"),
    "1-D factors": (dict(item_factors=np.zeros(48, F32)), "item_factors must be a 2-D array"),
    "3-D factors": (dict(user_factors=np.zeros((30, 4, 1), F32)), "2-D array"),
    "no labels": (dict(item_factors=np.zeros((0, 4), F32)), "item_factors has no rows"),
    "only user factors": (dict(item_factors=None), "has user_factors but no item_factors"),
    "missing factors param": (dict(factors=None), "parameter 'factors' is missing"),
    "unknown entry": (dict(secret=np.int64(1)), "unknown entry 'secret'"),
    "unknown loss": (dict(loss=np.array("softmax")), "bad parameter: loss must be one of"),
    "text factors param": (dict(factors=np.array("four")), "factors must be an integer"),
    "array param": (dict(learning_rate=np.ones(2)), "'learning_rate' must be a single"),
    "bad dtype name": (dict(dtype=np.array("float99")), "bad parameter"),
    "negative seed": (dict(random_state=np.int64(-3)), "random_state must be"),
    "text seed": (dict(random_state=np.array("zero")), "random_state must be"),
    "newer version": (dict(format_version=np.int64(FORMAT_VERSION + 1)), "newer than this"),
    "version zero": (dict(format_version=np.int64(0)), "unknown format_version 0"),
    "text version": (dict(format_version=np.array("1")), "format_version must be an integer"),
}


@pytest.mark.parametrize("changes, message", BAD_MODELS.values(), ids=BAD_MODELS.keys())
def test_inconsistent_model_files_are_explained(fitted, tmp_path, changes, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **_bad(_arrays(fitted), **changes))
    with pytest.raises(ModelFileError, match=message) as caught:
        VSEEns.load(path)
    assert str(path) in str(caught.value)


def test_a_file_from_before_format_versions_still_loads(fitted, tmp_path):
    # version 1 files had neither entry
    np.savez(tmp_path / "old.npz", **_bad(_arrays(fitted), format_version=None, format=None))
    _assert_same(fitted, VSEEns.load(tmp_path / "old.npz"))


def test_an_unfitted_model_round_trips_and_big_endian_factors_load(fitted, tmp_path):
    VSEEns(factors=3).save(tmp_path / "unfitted.npz")
    assert VSEEns.load(tmp_path / "unfitted.npz").item_factors is None
    arrays = _arrays(fitted)
    swapped = {key: arrays[key].astype(">f4") for key in ("user_factors", "item_factors")}
    np.savez(tmp_path / "big.npz", **{**arrays, **swapped})
    loaded = VSEEns.load(tmp_path / "big.npz")
    _assert_same(fitted, loaded)
    assert loaded.item_factors.dtype == np.float32 and loaded.item_factors.flags.c_contiguous


_dtypes = st.one_of(
    hnp.floating_dtypes(), hnp.integer_dtypes(), hnp.boolean_dtypes(),
    hnp.unicode_string_dtypes(max_len=4), hnp.complex_number_dtypes(),
)
_any_array = _dtypes.flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, max_side=40))
)


@given(
    replacements=st.dictionaries(
        st.sampled_from(["user_factors", "item_factors", "factors", "loss", "sampler",
                         "learning_rate", "iterations", "dtype", "random_state", "num_threads",
                         "format_version", "refresh_interval", "rank_decay"]),
        st.one_of(_any_array, st.just(None)),
        min_size=1,
        max_size=3,
    )
)
def test_random_replacement_arrays_fail_in_load_or_give_a_usable_model(fitted, replacements):
    data = _npz_bytes(_bad(_arrays(fitted), **replacements))
    try:
        loaded = VSEEns.load(io.BytesIO(data))
    except ModelFileError as error:
        assert "not a valid VSEEns model file" in str(error) or "newer" in str(error)
        return
    if loaded.item_factors is not None:
        _assert_usable(loaded)


# -- Annotator files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def annotator_arrays(fitted, tmp_path_factory):
    annotator = Annotator(fitted, [f"label{i}" for i in range(12)], user_items=USER_ITEMS)
    path = annotator.save(tmp_path_factory.mktemp("annotator") / "annotator.npz")
    with np.load(path, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


BAD_ANNOTATORS = {
    "labels disagree": (dict(label_ids=np.arange(11), label_names=np.array(["x"] * 11)),
                        "12 label vectors for 11 label IDs"),
    "images disagree": (dict(image_ids=np.arange(31)), "30 image vectors for 31 image IDs"),
    "names misaligned": (dict(label_names=np.array(["a"])), "label_names has 1 entries"),
    "label out of range": (dict(train_indices=np.full(90, 12, np.int32)), "outside 0..11"),
    "indptr backwards": (dict(train_indptr=np.arange(31)[::-1].copy()), "damaged or incomplete"),
    "float indices": (dict(train_indices=np.zeros(90)), "must be a 1-D array of integers"),
    "missing ids": (dict(image_ids=None), "no image_ids"),
    "2-D ids": (dict(label_ids=np.zeros((12, 1), np.int64)), "must be a 1-D array"),
    "repeated ids": (dict(label_ids=np.zeros(12, np.int64)), "must be unique"),
    "model factors broken": ({"model.item_factors": np.full((12, 4), np.nan, F32)},
                             "NaN or infinite"),
    "no model": ({"model.user_factors": None}, "no model user_factors"),
    "newer": (dict(format_version=np.int64(99)), "model format version 99, newer"),
}


@pytest.mark.parametrize("changes, message", BAD_ANNOTATORS.values(), ids=BAD_ANNOTATORS.keys())
def test_inconsistent_annotator_files_are_explained(annotator_arrays, tmp_path, changes, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **_bad(annotator_arrays, **changes))
    with pytest.raises(ModelFileError, match=message) as caught:
        Annotator.load(path)
    assert str(path) in str(caught.value)


def test_every_truncation_of_an_annotator_file_is_a_clear_error(annotator_arrays, tmp_path):
    data = _npz_bytes(annotator_arrays)
    path = tmp_path / "cut.npz"
    for size in range(0, len(data), max(1, len(data) // 61)):
        path.write_bytes(data[:size])
        with pytest.raises(ModelFileError, match="cut.npz"):
            Annotator.load(path)


# -- files of other kinds and tools (issue 13, items 1-2) ------------------------------------------


def _implicit_file(model_class, path, **params):
    model = model_class(factors=8, iterations=1, random_state=0, **params)
    model.fit(USER_ITEMS, show_progress=False)
    model.save(path)
    return path


@pytest.mark.parametrize("tool, looks_like", [
    ("bpr", "implicit BayesianPersonalizedRanking"),
    ("als", "implicit AlternatingLeastSquares"),
    ("lmf", "implicit LogisticMatrixFactorization"),
])
def test_other_tools_model_files_are_named_for_what_they_are(tmp_path, tool, looks_like):
    from threadpoolctl import threadpool_limits

    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from implicit.cpu.lmf import LogisticMatrixFactorization

    classes = {"bpr": BayesianPersonalizedRanking, "als": AlternatingLeastSquares,
               "lmf": LogisticMatrixFactorization}
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # implicit's own advice about BLAS threads
        path = _implicit_file(classes[tool], tmp_path / f"{tool}.npz")
    for loader in (VSEEns.load, Annotator.load):
        with pytest.raises(ModelFileError, match=f"not a vse-recsys .*looks like an {looks_like}"):
            loader(path)


def test_an_annotator_file_given_to_vseens_load_says_how_to_load_it(fitted, tmp_path):
    path = Annotator(fitted, [f"label{i}" for i in range(12)]).save(tmp_path / "a.npz")
    with pytest.raises(ModelFileError, match="an Annotator file .*Annotator.load"):
        VSEEns.load(path)


# -- seeds a file cannot store (issue 13, items 3-4) ------------------------------------------------


@pytest.mark.parametrize("seed, error, message", [
    (10**23, ValueError, r"random_state must be a seed from 0 to 2\*\*63 - 1, got 1000"),
    (-1, ValueError, "random_state must be a seed from 0 to 2"),
    (True, TypeError, "random_state must be None, an int"),
    (1.5, TypeError, "random_state must be None, an int"),
])
def test_unusable_seeds_are_refused_before_any_training(seed, error, message):
    model = VSEEns(factors=2, iterations=1, random_state=seed)
    with pytest.raises(error, match=message):
        model.fit(USER_ITEMS, show_progress=False)
    assert model.user_factors is None and model.fit_history == []


def test_the_largest_seed_trains_saves_and_loads(tmp_path):
    model = VSEEns(factors=2, iterations=1, random_state=2**63 - 1).fit(USER_ITEMS,
                                                                       show_progress=False)
    model.save(tmp_path / "seed.npz")
    assert VSEEns.load(tmp_path / "seed.npz").random_state == 2**63 - 1


def test_saving_into_a_missing_folder_names_the_path_given(fitted, tmp_path):
    target = tmp_path / "missing_dir" / "x.npz"
    with pytest.raises(FileNotFoundError) as caught:
        fitted.save(target)
    assert str(target) in str(caught.value) and ".tmp" not in str(caught.value)


# -- the composed model's arrays ---------------------------------------------------------------


@pytest.mark.parametrize("vectors", ["labels", "labels+free"])
def test_composed_models_round_trip_with_their_label_inputs(tmp_path, vectors):
    model = VSEEns(factors=4, iterations=2, num_threads=1, random_state=0,
                   image_vectors=vectors).fit(USER_ITEMS, show_progress=False)
    model.save(tmp_path / "composed.npz")
    loaded = VSEEns.load(tmp_path / "composed.npz")
    for name in ("user_factors", "item_factors", "label_inputs", "free_factors"):
        if getattr(model, name) is None:
            assert getattr(loaded, name) is None
        else:
            np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    assert loaded.get_params() == model.get_params()
    new = sp.csr_matrix(([1.0, 1.0], ([0, 0], [2, 5])), shape=(1, 12))
    np.testing.assert_array_equal(loaded.recommend(0, new, N=4)[0], model.recommend(0, new, N=4)[0])


@pytest.mark.parametrize("changes, message", [
    (dict(label_inputs=None), "but no label_inputs"),
    (dict(label_inputs=np.zeros((11, 4), F32)), "label_inputs and item_factors must have a row"),
    (dict(label_inputs=np.zeros((12, 5), F32)), "label_inputs has 5 columns but the model has "
                                                "factors=4"),
    (dict(user_factors=np.zeros((30, 5), F32)), "last column of user_factors must be 1"),
    (dict(item_factors=np.zeros((12, 4), F32)), "item_factors has 4 columns but the model has "
                                                "factors=4 and a bias column"),
])
def test_damaged_composed_model_files_are_explained(tmp_path, changes, message):
    model = VSEEns(factors=4, iterations=1, num_threads=1, random_state=0).fit(
        USER_ITEMS, show_progress=False)
    path = tmp_path / "bad.npz"
    np.savez(path, **_bad(_arrays(model), **changes))
    with pytest.raises(ModelFileError, match=message):
        VSEEns.load(path)


def test_files_of_versions_1_and_2_load_as_the_free_vector_models_they_were(fitted, tmp_path):
    arrays = _bad(_arrays(fitted), format=None, format_version=None)
    for name in ("image_vectors", "label_bias", "learning_schedule", "early_stopping",
                 "composition_exponent", "label_dropout", "validation_fraction",
                 "n_iter_no_change"):
        arrays.pop(name, None)
    np.savez(tmp_path / "v1.npz", **{k: v for k, v in arrays.items() if k != "candidates"})
    np.savez(tmp_path / "v2.npz", **arrays, format_version=np.int64(2))
    for version in ("v1", "v2"):
        loaded = VSEEns.load(tmp_path / f"{version}.npz")
        assert (loaded.image_vectors, loaded.label_bias, loaded.learning_schedule) == (
            "free", False, "sgd")
        _assert_same(fitted, loaded)
