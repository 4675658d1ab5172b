"""WebDataset shards: byte-deterministic tar files, their row tables and completion markers.

A shard `raw/shard-000042.tar` is written under a temporary name and renamed when complete;
then its rows (`.parquet`) and, last, its marker (`.done.json`). What counts as complete is
defined once, by `DatasetFolder.shard_state`; where the files live, by `DatasetFolder`.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DeterministicTarWriter", "Sample", "WrittenTar", "clear_shard", "encode_png", "shard_name",
           "write_marker", "write_tar"]

import numpy as np
from PIL import Image

from synthdata.faults import fault
from synthdata.folder import DatasetFolder, shard_name
from synthdata.fsutil import atomic_path, sha256_file, write_json_atomic

FIXED_MTIME = 0
PNG_COMPRESS_LEVEL = 6


def split_member(name: str) -> tuple[str, str]:
    """(sample key, extension) of a tar member name, as WebDataset groups them: the key is the
    member's folder and its base name up to the first dot (`a/b.seg.png` -> `a/b`, `seg.png`)."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A generated image as uint8 (float images in [0, 1], as kept for non-finite ones)."""
    if image.dtype == np.uint8:
        return image
    return np.clip(np.round(np.nan_to_num(image, nan=0.0) * 255.0), 0, 255).astype(np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image (H x W, or H x W x 1/3), with no metadata, deterministically."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


@dataclass(frozen=True)
class Sample:
    """One sample as stored: its key, PNG bytes, metadata (JSON) and label index."""

    key: str
    png: bytes
    meta: dict
    label_index: int
    prompt: str

    def members(self) -> list[tuple[str, bytes]]:
        """(name, bytes) of the sample's tar members, in sorted order."""
        meta = json.dumps(self.meta, sort_keys=True, ensure_ascii=False).encode()
        return [(f"{self.key}.cls", str(self.label_index).encode()), (f"{self.key}.json", meta),
                (f"{self.key}.png", self.png), (f"{self.key}.txt", self.prompt.encode())]


class DeterministicTarWriter:
    """A tar writer whose bytes depend only on the members: fixed mtime, no owners, 0644."""

    def __init__(self, fileobj):
        self._tar = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT)
        self._last = ""

    def add(self, name: str, data: bytes) -> None:
        """Append one member; names must arrive in sorted order."""
        if name <= self._last:
            raise ValueError(f"tar members must be added in sorted order: {name!r} after {self._last!r}")
        self._last = name
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), FIXED_MTIME, 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(data))

    def add_sample(self, sample: Sample) -> None:
        """Append all members of one sample."""
        for name, data in sample.members():
            self.add(name, data)

    def close(self) -> None:
        """Finish the archive (end-of-archive blocks)."""
        self._tar.close()


class _HashingFile:
    """A write-only file wrapper that hashes what passes through (no second read of the tar)."""

    def __init__(self, f):
        self._f, self.sha256, self.size = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._f.write(data)

    def tell(self) -> int:
        return self._f.tell()


@dataclass(frozen=True)
class WrittenTar:
    """What write_tar wrote: sample count, sha256 and size of the tar."""

    count: int
    sha256: str
    size: int


def write_tar(path: str | Path, samples: Iterable[Sample]) -> WrittenTar:
    """Write samples (in key order) to a tar atomically; count, sha256 and size of what was written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        fault("shards.write_tar", tmp)  # where a full disk or a read-only mount strikes (tests)
        hashed = _HashingFile(f)
        writer = DeterministicTarWriter(hashed)
        for sample in samples:
            writer.add_sample(sample)
            n += 1
        writer.close()
    fault("shards.after_tar", path)
    return WrittenTar(n, hashed.sha256.hexdigest(), hashed.size)


def write_marker(folder: DatasetFolder, shard: int, info: dict, written: WrittenTar | None = None) -> None:
    """Write a shard's completion marker (tar size and sha256 included): the last file a shard
    writes. `written` (from write_tar) saves reading the tar again to hash it."""
    tar = folder.raw_tar(shard)
    fault("shards.before_marker", folder.raw_marker(shard))  # tar and rows in place, no commit yet
    sha, size = (written.sha256, written.size) if written else (sha256_file(tar), tar.stat().st_size)
    if size != tar.stat().st_size:
        raise OSError(f"{tar}: {tar.stat().st_size} bytes on disk, {size} written")
    write_json_atomic(folder.raw_marker(shard), {
        **info, "shard": shard, "tar": tar.name, "tar_bytes": size, "tar_sha256": sha})
    fault("shards.after_marker", folder.raw_marker(shard))


def clear_shard(folder: DatasetFolder, shard: int) -> None:
    """Remove whatever an incomplete shard left (marker first, so it never outlives its files)."""
    folder.raw_marker(shard).unlink(missing_ok=True)
    for path in (folder.raw_tar(shard), folder.raw_rows(shard)):
        path.unlink(missing_ok=True)
    for tmp in folder.raw_dir.glob(f".{shard_name(shard)}.*.tmp-*"):
        tmp.unlink(missing_ok=True)
