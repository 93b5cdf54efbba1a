"""The shared real datasets: every reader reproduces the counts in ``shared/data/README.md``.

These use the ``data_dir`` fixture (conftest.py), so they skip with the reason when the data
folder is absent. Also tests ``resolve_data_dir`` and ``load_dataset``.
"""


import numpy as np
import pytest
from vse_recsys.adapters import (
    leave_one_out_split,
    load_dataset,
    read_movielens,
    read_mulan,
    read_nuswide_pairs,
    resolve_data_dir,
)


def counts(data):
    per_image = data.labels_per_image
    return (
        data.n_images,
        int((per_image >= 1).sum()),
        int((per_image >= 2).sum()),
        data.n_labels,
        data.n_pairs,
    )


def test_corel5k(data_dir):
    folder = data_dir / "corel5k"
    data = read_mulan(folder / "Corel5k-sparse.arff", folder / "Corel5k.xml")
    assert counts(data) == (5000, 5000, 4968, 374, 17610)
    assert list(data.label_ids[:3]) == ["city", "mountain", "sky"]
    assert not any(name.startswith("Cluster") for name in data.label_ids)  # features, not labels
    # the standard split files partition the union's images
    train = read_mulan(folder / "Corel5k-train-sparse.arff", folder / "Corel5k.xml")
    test = read_mulan(folder / "Corel5k-test-sparse.arff", folder / "Corel5k.xml")
    assert (train.n_images, test.n_images) == (4500, 500)
    assert train.n_pairs + test.n_pairs == 17610


def test_delicious(data_dir):
    folder = data_dir / "delicious"
    data = read_mulan(folder / "delicious.arff", folder / "delicious.xml")
    assert counts(data)[:2] == (16105, 16091)  # the 14 rows without a tag are kept
    assert (data.n_labels, data.n_pairs) == (983, 306317)
    assert "TAG_m'usica" in set(data.label_ids)  # escaped quote in both ARFF and XML
    assert data.dropped == {"missing_label_values": 0}


def test_nuswide81(data_dir):
    path = data_dir / "nuswide81" / "nuswide81_pairs.tsv.gz"
    data = read_nuswide_pairs(path)
    assert counts(data) == (209346, 209346, 130130, 81, 503844)
    assert data.image_ids.min() == 0 and data.image_ids.max() == 269647
    assert data.dropped == {"duplicates": 0}
    train = read_nuswide_pairs(path, split="train")
    test = read_nuswide_pairs(path, split="test")
    assert train.n_pairs + test.n_pairs == 503844
    assert not set(train.image_ids) & set(test.image_ids)


def test_movielens_100k(data_dir):
    data = read_movielens(data_dir / "movielens-100k" / "u.data", min_rating=4)
    assert (data.n_images, data.n_labels, data.n_pairs) == (943, 1682, 55375)
    assert data.dropped == {"below_min_rating": 100000 - 55375, "duplicates": 0}
    assert read_movielens(data_dir / "movielens-100k", min_rating=None).n_pairs == 100000


def test_load_dataset_by_name(data_dir):
    expected = {"corel5k": 17610, "delicious": 306317, "nuswide81": 503844, "movielens-100k": 55375}
    for name, n_pairs in expected.items():
        assert load_dataset(name, data_dir).n_pairs == n_pairs
    assert load_dataset("movielens-100k", data_dir, min_rating=5).n_pairs < 55375
    with pytest.raises(ValueError, match="unknown dataset 'corel'; choose one of corel5k"):
        load_dataset("corel", data_dir)


def test_leave_one_out_on_corel5k(data_dir):
    data = load_dataset("corel5k", data_dir)
    train, test = leave_one_out_split(data, random_state=0)
    assert test.nnz == 4968 and train.nnz == 17610 - 4968
    assert np.diff(test.indptr).max() == 1


# -- resolve_data_dir ---------------------------------------------------------------------------


def test_resolve_prefers_the_argument_then_the_environment(tmp_path, monkeypatch):
    given, configured = tmp_path / "given", tmp_path / "configured"
    given.mkdir()
    configured.mkdir()
    monkeypatch.setenv("VSE_RECSYS_DATA", str(configured))
    assert resolve_data_dir(given) == given
    assert resolve_data_dir() == configured
    monkeypatch.setenv("VSE_RECSYS_DATA", str(tmp_path / "missing"))
    with pytest.raises(
        FileNotFoundError, match=r"\$VSE_RECSYS_DATA is .*missing, which is not a folder"
    ):
        resolve_data_dir()
    with pytest.raises(FileNotFoundError, match="the given data_dir is"):
        resolve_data_dir(tmp_path / "nope")


def test_resolve_looks_beside_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("VSE_RECSYS_DATA", raising=False)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    assert resolve_data_dir().resolve() == (tmp_path / "shared" / "data").resolve()


def test_resolve_falls_back_to_beside_the_repository(tmp_path, monkeypatch):
    monkeypatch.delenv("VSE_RECSYS_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    import vse_recsys.adapters.datasets as datasets

    beside_repo = datasets.Path(datasets.__file__).resolve().parents[2] / "shared" / "data"
    if beside_repo.is_dir():
        assert resolve_data_dir() == beside_repo
    else:
        with pytest.raises(FileNotFoundError, match="set VSE_RECSYS_DATA"):
            resolve_data_dir()
