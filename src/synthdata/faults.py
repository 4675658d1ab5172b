"""Named fault points: make a write fail, or the process die, at a chosen moment (tests).

Code that writes calls `fault("point.name", path)` where a real failure could strike. Nothing
happens unless the environment variable `SYNTHDATA_FAULT` names that point:

    SYNTHDATA_FAULT=shards.write_tar:enospc        the write fails: OSError(ENOSPC) on `path`
    SYNTHDATA_FAULT=screening.after_exchange:kill  the process dies at once (exit status 137)
    SYNTHDATA_FAULT=a:kill,b:erofs                 several points, comma-separated

Kinds: `enospc` (disk full), `eacces` (permission denied), `erofs` (read-only file system),
`enoent` (a file vanished) raise the real `OSError` the system call would raise, with its errno
and the path; `kill` ends the process with `os._exit(137)` (what `kill -9` leaves: no cleanup,
no `finally`, no flushed buffers). A point name may end in `*` to match every point it prefixes.

The variable is read at each call, so a test sets it for one run (subprocess environment or
`monkeypatch.setenv`) and a rerun without it proceeds normally. This module imports nothing
from synthdata: any layer may call it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

ENV = "SYNTHDATA_FAULT"
KILL_STATUS = 137
ERRORS = {"enospc": errno.ENOSPC, "eacces": errno.EACCES, "erofs": errno.EROFS,
          "enoent": errno.ENOENT}
KINDS = (*ERRORS, "kill")


def armed() -> dict[str, str]:
    """The points the environment arms: point (or `prefix*`) -> kind. Malformed entries raise
    ValueError, so a typo in a test's fault never passes silently as "no fault"."""
    out: dict[str, str] = {}
    for entry in filter(None, (e.strip() for e in os.environ.get(ENV, "").split(","))):
        point, sep, kind = entry.rpartition(":")
        if not sep or not point or kind not in KINDS:
            raise ValueError(f"{ENV}: {entry!r} is not POINT:KIND with KIND one of {', '.join(KINDS)}")
        out[point] = kind
    return out


def _kind(point: str) -> str | None:
    table = armed()
    if point in table:
        return table[point]
    for name, kind in table.items():
        if name.endswith("*") and point.startswith(name[:-1]):
            return kind
    return None


def fault(point: str, path: str | Path | None = None) -> None:
    """Fail here as `SYNTHDATA_FAULT` says for `point` (no-op when it does not name it).

    `path` is the file the failing operation would have touched; the raised `OSError` carries
    it as `filename`, as the real system call's error would.
    """
    if ENV not in os.environ:
        return
    kind = _kind(point)
    if kind is None:
        return
    if kind == "kill":
        os._exit(KILL_STATUS)
    code = ERRORS[kind]
    raise OSError(code, os.strerror(code), None if path is None else str(path))
