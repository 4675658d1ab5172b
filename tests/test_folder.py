"""The dataset folder's owner: paths, the one definition of a complete shard, formats, locks."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synthdata.folder import shards
from synthdata.errors import OutputError
from synthdata.folder import FORMAT_VERSION, DatasetFolder, shard_of
from synthdata.fsutil import exchange_paths, sha256_file


def _sample(key: str) -> shards.Sample:
    png = shards.encode_png(np.full((8, 8), 7, np.uint8))
    return shards.Sample(key, png, {"key": key}, 0, "p")


def _complete_shard(folder: DatasetFolder, shard: int = 0, plan_hash: str = "p1") -> None:
    shards.write_tar(folder.raw_tar(shard), [_sample(f"d-{shard:09d}")])
    pq.write_table(pa.table({"key": [f"d-{shard:09d}"]}), folder.raw_rows(shard))
    shards.write_marker(folder, shard, {"count": 1, "plan_hash": plan_hash})


def test_paths_are_named_once():
    folder = DatasetFolder("/data/ds")
    assert str(folder.raw_tar(42)) == "/data/ds/raw/shard-000042.tar"
    assert str(folder.raw_rows(42)) == "/data/ds/raw/shard-000042.parquet"
    assert str(folder.raw_marker(42)) == "/data/ds/raw/shard-000042.done.json"
    assert str(folder.accepted_tar(3)) == "/data/ds/shards/shard-000003.tar"
    assert folder.embeddings_file(1, "ab" * 32).name == "shard-000001.emb-abababababababab.npz"
    assert shard_of("shard-000042.done.json") == 42 and shard_of("shard-1.tar") is None
    assert {"raw", "shards", "spec.yaml", "manifest.parquet"} <= set(DatasetFolder.ENTRIES)


def test_every_reason_a_shard_is_not_complete(tmp_path):
    folder = DatasetFolder(tmp_path)
    assert folder.shard_state(0).reason == "no completion marker"
    _complete_shard(folder)
    marker = folder.marker(0)
    assert marker["tar_sha256"] == sha256_file(folder.raw_tar(0)) and marker["shard"] == 0
    assert folder.is_complete(0) and folder.is_complete(0, "p1") and folder.is_complete(0, verify=True)
    assert folder.shard_state(0, "p2").reason == "marker is from another plan"
    data = bytearray(folder.raw_tar(0).read_bytes())
    data[600] ^= 0xFF  # same size, other bytes: only the sha256 notices
    folder.raw_tar(0).write_bytes(bytes(data))
    assert folder.is_complete(0), "the cheap check looks at the size"
    assert folder.shard_state(0, verify=True).reason == "tar sha256 differs from its marker"
    with open(folder.raw_tar(0), "ab") as f:
        f.write(b"\0" * 512)
    assert folder.shard_state(0).reason == "tar size differs from its marker"
    folder.raw_rows(0).unlink()
    assert folder.shard_state(0).reason == "tar or rows missing"
    assert folder.complete_shards() == [] and folder.marked_shards() == [0]
    shards.clear_shard(folder, 0)
    assert list(folder.raw_dir.iterdir()) == []


def test_format_versions_are_checked(tmp_path):
    folder = DatasetFolder(tmp_path)
    with pytest.raises(OutputError, match="not a synthdata dataset folder"):
        folder.require()
    folder.plan_info_file.write_text(json.dumps({"name": "x"}))  # made before format versions
    assert folder.format_version() == 1 and folder.require() is folder
    with pytest.raises(OutputError, match="older than this synthdata can add to"):
        folder.require(write=True)
    folder.plan_info_file.write_text(json.dumps({"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(OutputError, match="newer than this synthdata understands"):
        folder.require()


def test_exchange_swaps_two_folders_atomically(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "new").write_text("new")
    (b / "old").write_text("old")
    assert exchange_paths(a, b) is True, "renameat2(RENAME_EXCHANGE) on this file system"
    assert [p.name for p in b.iterdir()] == ["new"] and [p.name for p in a.iterdir()] == ["old"]


def test_screening_lock_excludes_readers_during_a_commit(tmp_path):
    folder = DatasetFolder(tmp_path)
    with folder.screening_lock():
        pass  # no lock file yet: a reader of a read-only copy needs none
    events = []
    with folder.screening_lock(exclusive=True):
        def reader() -> None:
            with folder.screening_lock():
                events.append("read")

        thread = threading.Thread(target=reader)
        thread.start()
        time.sleep(0.2)
        events.append("committed")
    thread.join(5)
    assert events == ["committed", "read"]
