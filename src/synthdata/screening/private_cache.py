"""The screening cache folder, `cache_root()/screening`: owner-only (folders 0700, files 0600),
since everything in it is derived from real images; its writes (`save_array`, `save_json`,
atomic), locks, and the content-hash database (`hashes.sqlite`: path, size, mtime -> sha256,
so files are not re-read). `cache` builds references in it."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import filelock
import numpy as np

from synthdata.fsutil import cache_root, private_dirs, private_file, sha256_file, write_private
from synthdata.screening.reference import ReferenceFile


def _private_dirs(path: Path) -> Path:
    """Create `path` and its parents below the cache root as owner-only (0700) folders."""
    return private_dirs(path, cache_root())


def screening_cache() -> Path:
    """cache_root()/screening (0700): $SYNTHDATA_CACHE/screening or ~/.cache/synthdata/...."""
    return _private_dirs(cache_root() / "screening")


def _write_private(path: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) then rename to path; the file is 0600, its folders 0700."""
    _private_dirs(path.parent)
    write_private(path, write)


def save_array(path: Path, array: np.ndarray) -> None:
    """np.save, privately and atomically."""
    _write_private(path, lambda tmp: np.save(open(tmp, "wb"), array))


def save_json(path: Path, data: object) -> None:
    """JSON (sorted, indented), privately and atomically."""
    _write_private(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True)))


def private_lock(path: Path) -> filelock.FileLock:
    """A lock file beside `path`, owner-only."""
    _private_dirs(path.parent)
    return filelock.FileLock(str(path) + ".lock", mode=0o600)


def content_hashes(files: list[ReferenceFile]) -> dict[Path, str]:
    """sha256 of each file, reusing earlier hashes when path, size and mtime are unchanged."""
    db_path = private_file(screening_cache() / "hashes.sqlite")
    out: dict[Path, str] = {}
    with sqlite3.connect(db_path, timeout=60) as db:
        db.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, "
                   "mtime_ns INTEGER, sha256 TEXT)")
        for f in files:
            row = db.execute("SELECT size, mtime_ns, sha256 FROM hashes WHERE path = ?",
                             (str(f.path),)).fetchone()
            if row and row[0] == f.size and row[1] == f.mtime_ns:
                out[f.path] = row[2]
                continue
            out[f.path] = sha256_file(f.path)
            db.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)",
                       (str(f.path), f.size, f.mtime_ns, out[f.path]))
    return out
