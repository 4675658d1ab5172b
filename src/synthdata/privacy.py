"""Pseudonymous ids, and the private folder that maps them back.

Ids that may carry patient identifiers (reference file paths with MRNs in them, DICOM
PatientIDs, rows of a real metadata table) never reach a dataset folder or Prefect as they are:
they are replaced by `pseudonymize(value, kind)`, a keyed hash (HMAC-SHA256) whose key lives
only in the private folder `$SYNTHDATA_CACHE/private` (0700; files 0600). The same value gives
the same pseudonym on this machine, so results stay comparable across runs; `reveal` maps a
pseudonym back, on the machine that holds the key and the map. A copy of the dataset folder
alone reveals nothing.

`SYNTHDATA_PSEUDONYM_KEY` (64 hex characters) sets the key explicitly, e.g. to share
pseudonyms between the machines of one team.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from synthdata.errors import SynthdataError
from synthdata.fsutil import cache_root

KEY_ENV = "SYNTHDATA_PSEUDONYM_KEY"
PREFIX = "p-"
_LOCK = threading.Lock()


def private_dir(*parts: str) -> Path:
    """A folder under $SYNTHDATA_CACHE/private, created (with its parents there) as 0700."""
    root = cache_root() / "private"
    path = root.joinpath(*parts)
    for folder in [root, *[root.joinpath(*parts[:i + 1]) for i in range(len(parts))]]:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
    return path


def private_file(path: str | Path) -> Path:
    """Create `path` empty if absent, readable and writable by its owner only (0600)."""
    p = Path(path)
    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    os.chmod(p, 0o600)
    return p


def _key() -> bytes:
    given = os.environ.get(KEY_ENV)
    if given:
        try:
            key = bytes.fromhex(given)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise SynthdataError(f"{KEY_ENV} must be 64 hexadecimal characters (a 32-byte key)")
        return key
    path = private_dir() / "pseudonym.key"
    with _LOCK:
        if not path.is_file() or path.stat().st_size != 32:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600) if not path.exists() \
                else os.open(path, os.O_WRONLY | os.O_TRUNC)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
            os.chmod(path, 0o600)
        return path.read_bytes()


def pseudonymize(value: str, kind: str = "id") -> str:
    """The pseudonym of `value` (e.g. a real image id) in namespace `kind`: 'p-' + 16 hex."""
    return pseudonymize_many([value], kind)[0]


def pseudonymize_many(values: Iterable[str], kind: str = "id") -> list[str]:
    """`pseudonymize` of each value, reading the key once (for plan-sized batches)."""
    key = _key()
    return [PREFIX + hmac.new(key, f"{kind}\0{v}".encode(), hashlib.sha256).hexdigest()[:16]
            for v in values]


def _db() -> sqlite3.Connection:
    path = private_dir() / "pseudonyms.sqlite"
    private_file(path)
    db = sqlite3.connect(path, timeout=60)
    db.execute("CREATE TABLE IF NOT EXISTS pseudonyms (pseudonym TEXT PRIMARY KEY, kind TEXT, "
               "value TEXT)")
    return db


def remember(values: Iterable[str], kind: str = "id") -> dict[str, str]:
    """Pseudonymize values and store the map back in the private folder; value -> pseudonym."""
    out = {v: pseudonymize(v, kind) for v in values}
    if out:
        with _LOCK, _db() as db:
            db.executemany("INSERT OR REPLACE INTO pseudonyms VALUES (?, ?, ?)",
                           [(p, kind, v) for v, p in out.items()])
    return out


def reveal(pseudonym: str) -> tuple[str, str] | None:
    """(kind, original value) of a pseudonym remembered on this machine, else None."""
    with _LOCK, _db() as db:
        row = db.execute("SELECT kind, value FROM pseudonyms WHERE pseudonym = ?",
                         (pseudonym,)).fetchone()
    return (row[0], row[1]) if row else None
