"""Deterministic tars: same samples, same bytes; atomic writes (markers: tests/test_folder.py)."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import webdataset as wds

from synthdata.folder import shards
from synthdata.fsutil import sha256_file


def make_samples(n=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        out.append(shards.Sample(key=f"ds-{i:09d}", png=shards.encode_png(img),
                                 meta={"key": f"ds-{i:09d}", "label": "a", "z": 1, "a": 2},
                                 label_index=i % 2, prompt=f"prompt {i}"))
    return out


def test_same_samples_give_identical_bytes(tmp_path):
    shards.write_tar(tmp_path / "a.tar", make_samples())
    shards.write_tar(tmp_path / "b.tar", make_samples())
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_members_sorted_with_fixed_metadata(tmp_path):
    shards.write_tar(tmp_path / "a.tar", make_samples())
    with tarfile.open(tmp_path / "a.tar") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and len(names) == 12
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}


def test_reads_back_with_webdataset(tmp_path):
    shards.write_tar(tmp_path / "a.tar", make_samples())
    got = list(wds.WebDataset(str(tmp_path / "a.tar"), shardshuffle=False).decode("rgb"))
    assert [g["__key__"] for g in got] == [f"ds-{i:09d}" for i in range(3)]
    assert got[1]["cls"] == 1 and got[1]["txt"] == "prompt 1" and got[1]["json"]["label"] == "a"
    assert got[0]["png"].shape == (16, 16, 3)


def test_png_is_lossless_and_grayscale_is_supported():
    img = np.arange(256, dtype=np.uint8).reshape(16, 16)
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(io.BytesIO(shards.encode_png(img)))), img)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(shards.encode_png(img[:, :, None])))), img)


def test_a_failed_write_leaves_no_file_under_the_final_name(tmp_path):
    def broken():
        yield from make_samples(2)
        raise RuntimeError("generator died")

    with pytest.raises(RuntimeError):
        shards.write_tar(tmp_path / "x.tar", broken())
    assert list(tmp_path.iterdir()) == []


def test_out_of_order_members_are_refused(tmp_path):
    samples = make_samples(2)
    with pytest.raises(ValueError, match="sorted order"):
        shards.write_tar(tmp_path / "x.tar", reversed(samples))


def test_tar_members_split_into_sample_key_and_extension_as_webdataset_does():
    from synthdata.folder.shards import split_member

    assert split_member("demo-000000001.png") == ("demo-000000001", "png")
    assert split_member("a/b.seg.png") == ("a/b", "seg.png")
    assert split_member("x.v1/y.json") == ("x.v1/y", "json")  # a dot in a folder stays in the key
    assert split_member("README") == ("README", "")
