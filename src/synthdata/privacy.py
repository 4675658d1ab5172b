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

The key file (`private/pseudonym.key`, 32 bytes) is made once, by the first process that needs
it, under a file lock that threads and processes (Dask, Ray workers) all honour, and appears
whole (written aside, then linked into place). It is never overwritten: a key of the wrong
length is an error naming the file and what to do, because a new key would silently change
every pseudonym.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable
from typing import Any
from pathlib import Path

import filelock
from pydantic import BaseModel, ConfigDict, model_serializer

from synthdata.errors import SynthdataError
from synthdata.fsutil import cache_root, private_dirs, private_file  # noqa: F401  (private_file: part of the privacy API)

KEY_ENV = "SYNTHDATA_PSEUDONYM_KEY"
KEY_NAME = "pseudonym.key"
KEY_BYTES = 32
PREFIX = "p-"
_LOCK = threading.Lock()


def private_dir(*parts: str) -> Path:
    """A folder under $SYNTHDATA_CACHE/private, created (with its parents there) as 0700."""
    return private_dirs(cache_root().joinpath("private", *parts), cache_root())


class PseudonymKeyError(SynthdataError):
    """The pseudonym key cannot be used (damaged file, bad environment value): never replaced
    silently, since a new key changes every pseudonym."""


def key_file() -> Path:
    """Where this machine's pseudonym key lives: $SYNTHDATA_CACHE/private/pseudonym.key."""
    return private_dir() / KEY_NAME


def _read_key(path: Path) -> bytes | None:
    """The key in `path`, None when there is none yet; a file of the wrong length is an error."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(key) != KEY_BYTES:
        raise PseudonymKeyError(
            f"the pseudonym key {path} holds {len(key)} bytes, expected {KEY_BYTES}: it is damaged. "
            "Restore it from a backup (or set SYNTHDATA_PSEUDONYM_KEY to the team's key); only if "
            "no copy exists, move it away and rerun to make a new key (pseudonyms already "
            "published then no longer match or reveal).")
    return key


def _create_key(path: Path) -> None:
    """Write a new random key to a temporary file (0600, synced), then link it into place:
    `link` fails when the key exists, so a key is never overwritten, and a reader sees either
    no key or the whole key."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    except FileExistsError:
        pass  # made by another process between our read and our lock: keep theirs
    finally:
        tmp.unlink(missing_ok=True)


def _key() -> bytes:
    given = os.environ.get(KEY_ENV)
    if given:
        try:
            key = bytes.fromhex(given)
        except ValueError:
            key = b""
        if len(key) != KEY_BYTES:
            raise PseudonymKeyError(f"{KEY_ENV} must be 64 hexadecimal characters (a 32-byte key)")
        return key
    path = key_file()
    key = _read_key(path)
    if key is None:
        # created once, under a lock every process honours (threads, Dask and Ray workers)
        with filelock.FileLock(str(path) + ".lock", mode=0o600):
            if _read_key(path) is None:
                _create_key(path)
        key = _read_key(path)
        if key is None:
            raise PseudonymKeyError(f"the pseudonym key {path} vanished while it was made; rerun")
    return key


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


# What a published file may say about local paths (dataset card, run.json, reports): nothing
# absolute. A path inside the dataset folder is written relative to it; any other local path by
# its last component only (the content is named by fingerprints and hashes elsewhere).
def public_path(value: str | Path, root: str | Path | None = None) -> str:
    """`value` as a published file may name it: relative to the dataset folder `root` when it
    lies inside ("." for the folder itself), else only its last component."""
    path = Path(value).expanduser()
    if root is not None:
        base = Path(root).expanduser().resolve()
        full = path.resolve() if path.is_absolute() else (base / path).resolve()
        if full == base:
            return "."
        if base in full.parents:
            return full.relative_to(base).as_posix()
    return path.name or str(value)


def _is_local_path(value: object) -> bool:
    """An absolute path of this machine (it exists, or its folder does and is not `/`): not a
    prompt or an id that happens to start with a slash."""
    if not isinstance(value, str) or "\n" in value or not value.startswith(("/", "~")):
        return False
    path = Path(value).expanduser()
    return path.exists() or (path.parent != Path(path.anchor) and path.parent.exists())


def public_paths(data: object, root: str | Path | None = None) -> object:
    """A copy of JSON-like data with every absolute local path made public (`public_path`)."""
    if isinstance(data, dict):
        return {k: public_paths(v, root) for k, v in data.items()}
    if isinstance(data, list):
        return [public_paths(v, root) for v in data]
    return public_path(data, root) if _is_local_path(data) else data


class Withheld(BaseModel):
    """A flow parameter whose value stays on this machine: Prefect records only `public`.

    Prefect stores every flow run's parameters on its server (JSON through FastAPI's
    `jsonable_encoder`, which serializes a pydantic model with its serializer); a spec holds
    local paths and the output folder is one. The flow receives this object and calls `unwrap`.
    """

    model_config = ConfigDict(frozen=True)
    value: Any
    public: str

    @model_serializer
    def _only_public(self) -> str:
        return self.public


def withhold(value: object, public: str) -> Withheld:
    """`value` for a flow parameter, recorded by Prefect as `public` only."""
    return Withheld(value=value, public=public)


def withhold_path(path: str | Path | None) -> Withheld | None:
    """A local path for a flow parameter: Prefect records only its last component."""
    return None if path is None else Withheld(value=str(path), public=f"local:{Path(path).name}")


def unwrap(value: object) -> object:
    """The value behind a `Withheld` parameter (anything else as it is)."""
    return value.value if isinstance(value, Withheld) else value
