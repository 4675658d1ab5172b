"""A screening's per-shard staging under `DIR/.screening/<token>/` and its commit.

Each shard stages its decisions (`shard-N.decisions.parquet`, recording the raw tar's sha256
and the staged accepted tar's sha256, or "none" when nothing was accepted) and its accepted
tar (`shards/shard-N.tar`); staged work is reused only when both still match. The commit turns
the staged tars and tables into an immutable generation (`synthdata.folder.generations.build`)
and writes the commit record naming it last (`synthdata.folder.journal`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow.parquet as pq

from synthdata.folder import DatasetFolder, generations, journal, shard_name
from synthdata.fsutil import sha256_file

NO_TAR = "none"


def decisions_path(staging: Path, shard: int) -> Path:
    """Where a shard's staged decisions live."""
    return staging / f"{shard_name(shard)}.decisions.parquet"


def staged_tar(staging: Path, shard: int) -> Path:
    """Where a shard's staged accepted tar lives."""
    return staging / DatasetFolder.SHARDS / f"{shard_name(shard)}.tar"


def staged_sha(path: Path) -> str:
    """sha256 of a staged accepted tar, or NO_TAR when nothing was accepted."""
    return sha256_file(path) if path.is_file() else NO_TAR


def reusable(staging: Path, shard: int, raw_sha: str) -> bool:
    """Staged decisions count only for this raw tar and the accepted tar staged beside them."""
    out = decisions_path(staging, shard)
    if not out.is_file():
        return False
    meta = pq.read_schema(out).metadata or {}
    return meta.get(b"tar_sha256") == raw_sha.encode() and \
        meta.get(b"accepted_sha256") == staged_sha(staged_tar(staging, shard)).encode()


def commit(out_dir: str | Path, staging: Path, token: str, shards: Iterable[int]) -> str:
    """Commit the staged screening as a generation; return the generation id."""
    folder = DatasetFolder(out_dir)
    tars = [t for s in shards if (t := staged_tar(staging, s)).is_file()]
    tables = {n: staging / n for n in generations.TABLES if (staging / n).is_file()}
    generation = generations.build(folder, token, tars, tables)
    journal.commit(folder, "screening", generation=generation, token=token)
    return generation
