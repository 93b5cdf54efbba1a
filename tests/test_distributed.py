"""Tagging a Parquet dataset on Dask (``vse_recsys.distributed``): the same tags as one process,
no image lost or tagged twice when a worker dies, and the command line's ``--pairs-parquet``.

Each test starts a ``LocalCluster`` of two worker processes (one thread each): a real scheduler,
workers and nannies on this machine, the same code path as a remote cluster.
"""

import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

distributed = pytest.importorskip("dask.distributed")
pyarrow = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from vse_recsys import VSEEns  # noqa: E402
from vse_recsys.adapters import ImageLabels, generate_image_labels  # noqa: E402
from vse_recsys.annotator import TAG_COLUMNS, Annotator, tags_table  # noqa: E402
from vse_recsys.distributed import tag_parquet  # noqa: E402

N_PARTS = 12


@pytest.fixture(scope="module")
def annotator():
    data = generate_image_labels(n_images=600, n_labels=40, labels_per_image=4, random_state=0)
    model = VSEEns(factors=8, iterations=3, num_threads=1, random_state=0, early_stopping=False)
    return Annotator.from_dataset(data, model).fit(show_progress=False)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, annotator):
    """New images' pairs in N_PARTS part files, partitioned by image (IDs 10_000 + ...)."""
    folder = tmp_path_factory.mktemp("pairs")
    data = generate_image_labels(n_images=480, n_labels=40, labels_per_image=4, random_state=1)
    frame = data.to_pairs()[["image", "label"]]
    frame["image"] += 10_000
    for part, chunk in enumerate(np.array_split(np.unique(frame["image"]), N_PARTS)):
        rows = frame[frame["image"].isin(chunk)]
        rows.to_parquet(folder / f"part-{part:03d}.parquet", index=False)
    return folder, frame


@pytest.fixture
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def _expected(annotator, frame, N):
    data = ImageLabels.from_dataframe(frame, "image", "label")
    return tags_table(annotator.tag_new(data, N=N), image_dtype=np.int64,
                      label_dtype=annotator.label_ids.dtype)


def _read(output):
    table = pq.read_table(output).to_pandas()
    return table.sort_values(["image", "rank"]).reset_index(drop=True)


def test_tags_are_those_of_one_process(annotator, pairs, client, tmp_path):
    folder, frame = pairs
    summary = tag_parquet(annotator, folder, tmp_path / "out", N=5, client=client)
    assert summary["parts"] == N_PARTS and summary["images"] == frame["image"].nunique()
    result = _read(tmp_path / "out")
    assert list(result.columns) == list(TAG_COLUMNS) and summary["rows"] == len(result)
    expected = _expected(annotator, frame, 5).sort_values(["image", "rank"])
    pd.testing.assert_frame_equal(result, expected.reset_index(drop=True), check_dtype=False)


def _slow_tagging():
    """Run in each worker: every part takes a while, so that a worker dies in mid-run."""
    import vse_recsys.distributed as module

    original = module._tag_part

    def slowly(*args, **kwargs):
        time.sleep(0.4)
        return original(*args, **kwargs)

    module._tag_part = slowly


def test_a_lost_worker_loses_no_image_and_tags_none_twice(annotator, pairs, client, tmp_path):
    folder, frame = pairs
    client.run(_slow_tagging)
    pids = client.run(os.getpid)
    output = tmp_path / "out"
    outcome = {}

    def run():
        outcome["summary"] = tag_parquet(annotator, folder, output, N=3, client=client)

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + 60
    while not (output.exists() and len(list(output.glob("*.parquet"))) >= 2):
        assert time.monotonic() < deadline, "no part was written"
        time.sleep(0.05)
    victim = sorted(pids.values())[0]
    os.kill(victim, signal.SIGKILL)  # the nanny starts a new worker; Dask reruns its task
    runner.join(timeout=120)
    assert not runner.is_alive()
    assert victim not in client.run(os.getpid).values()  # the worker was really replaced
    result = _read(output)
    assert outcome["summary"]["images"] == frame["image"].nunique()
    assert not result.duplicated(["image", "rank"]).any()
    expected = _expected(annotator, frame, 3).sort_values(["image", "rank"])
    pd.testing.assert_frame_equal(result, expected.reset_index(drop=True), check_dtype=False)
    assert not list(output.glob(".*.tmp"))  # no half-written part left behind


def test_an_image_in_two_parts_is_refused(annotator, client, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    pd.DataFrame({"image": [1, 1], "label": [2, 3]}).to_parquet(folder / "a.parquet")
    pd.DataFrame({"image": [1, 2], "label": [4, 5]}).to_parquet(folder / "b.parquet")
    with pytest.raises(ValueError, match="image 1 is in more than one part"):
        tag_parquet(annotator, folder, tmp_path / "out", client=client)


def test_the_command_line_tags_a_parquet_folder(annotator, pairs, tmp_path, capsys):
    from vse_recsys.cli import main

    folder, frame = pairs
    path = annotator.save(tmp_path / "model.npz")
    assert main(["tag", str(path), "--pairs-parquet", str(folder), "--output",
                 str(tmp_path / "cli"), "-n", "2"]) == 0
    assert f"tagged {frame['image'].nunique():,} images" in capsys.readouterr().err
    result = _read(tmp_path / "cli")
    assert len(result) == 2 * frame["image"].nunique()
    assert main(["tag", str(path), "--pairs-parquet", str(folder)]) == 2  # no --output DIR
    assert "--output DIR" in capsys.readouterr().err
