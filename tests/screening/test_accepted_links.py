"""A fully accepted shard is its raw tar (one inode, no copy); a partly accepted one is a new file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from screening_helpers import near_exact_copies, phantom, real_images, write_raw_dataset

from synthdata.fsutil import link_or_copy
from synthdata.screening.pipeline import screen_dataset
from synthdata.screening.shardio import read_members
from synthdata.spec.models import Memorization


def test_fully_accepted_shard_is_a_hard_link_and_a_partly_accepted_one_is_not(reference_dir, tmp_path):
    reference = real_images([str(reference_dir / "dicom")])
    images = [(f"distinct:phantom:{s}", phantom(s)) for s in range(8)]          # shard 0: all accepted
    images += [(f"copy:exact:{rid}", near_exact_copies(img, i)["exact"])         # shard 1: copies ...
               for i, (rid, img) in enumerate(reference[:3])]
    images += [(f"distinct:phantom:{s}", phantom(s)) for s in range(100, 105)]  # ... and distinct ones
    out = tmp_path / "ds"
    write_raw_dataset(out, images, shard_size=8)
    summary = screen_dataset(out, Memorization(reference=[str(reference_dir / "dicom")],
                                               matchers="pixel", k=3, threshold=0.9))
    assert summary.decisions["reject"] == 3 and summary.accepted_shards == [0, 1]

    raw0, raw1 = out / "raw" / "shard-000000.tar", out / "raw" / "shard-000001.tar"
    acc0, acc1 = out / "shards" / "shard-000000.tar", out / "shards" / "shard-000001.tar"
    assert os.stat(acc0).st_ino == os.stat(raw0).st_ino and os.path.samefile(acc0, raw0)
    assert os.stat(raw0).st_nlink >= 3  # raw, the generation's tar and the published view
    assert read_members(acc0) == read_members(raw0)
    assert os.stat(acc1).st_ino != os.stat(raw1).st_ino
    kept = {name.split(".")[0] for name, _ in read_members(acc1)}
    assert len(kept) == 5 and os.stat(raw1).st_nlink == 1

    # Re-screening (the same decisions) reuses the link; the raw tar is never rewritten.
    before = os.stat(raw0)
    screen_dataset(out, Memorization(reference=[str(reference_dir / "dicom")], matchers="pixel",
                                     k=3, threshold=0.9))
    after = os.stat(raw0)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert os.path.samefile(out / "shards" / "shard-000000.tar", raw0)


def test_link_falls_back_to_a_copy_across_devices(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second file system (/dev/shm) to link across")
    src = tmp_path / "a.tar"
    src.write_bytes(b"tar bytes")
    with tempfile.TemporaryDirectory(dir=shm) as other:
        dst = Path(other) / "a.tar"
        link_or_copy(src, dst)
        assert dst.read_bytes() == b"tar bytes" and not os.path.samefile(src, dst)
