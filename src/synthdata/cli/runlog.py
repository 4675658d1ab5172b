"""The run log, and one clear line for OS errors.

A command that fails because of the machine (disk full, permission denied, read-only file
system, a file that vanished) prints at most three lines: what happened with the path, what to
do, and where the details are. The details (every traceback, and the Prefect flow and task
logs of the run) go to the run log, `$SYNTHDATA_CACHE/logs/<verb>-<UTC time>-<pid>.log`: the
private cache rather than the dataset folder, because tracebacks hold absolute local paths and
the dataset folder is published (and may be on the disk that is full). The file is created only
when something is logged; the newest `KEEP` logs are kept.

While a command that runs Prefect flows is under way, Prefect's console handler shows
warnings but no errors or tracebacks: those reach the run log (and the Prefect server, as
before), and the command's own error line says what failed.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from synthdata.fsutil import cache_root

KEEP = 50
_ADVICE = {
    errno.ENOSPC: ("no space left on device", "free space on that file system (or write elsewhere), "
                   "then rerun the same command: it resumes where it stopped"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota (or write elsewhere), then "
                   "rerun the same command: it resumes where it stopped"),
    errno.EACCES: ("permission denied", "give this user access to that path (or use another "
                   "location), then rerun the same command"),
    errno.EPERM: ("operation not permitted", "give this user access to that path (or use another "
                  "location), then rerun the same command"),
    errno.EROFS: ("read-only file system", "write to a writable location instead (--out, "
                  "$SYNTHDATA_CACHE), then rerun the same command"),
    errno.ENOENT: ("file not found", "a file vanished or is missing: check that no other process or "
                   "clean-up job moves it, then rerun the same command"),
}
_ERRNO_TEXT = re.compile(r"\[Errno (\d+)\]")


def log_dir() -> Path:
    """Where run logs are kept: $SYNTHDATA_CACHE/logs."""

    return cache_root() / "logs"


class RunLogHandler(logging.FileHandler):
    """A file handler opened at the first record (its folder made then, owner-only) that never
    prints logging's own error report: a full disk must not add tracebacks to the console."""

    def __init__(self, path: Path):
        self.path, self.failure = path, None
        super().__init__(path, encoding="utf-8", delay=True)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def _open(self):
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return super()._open()

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record; once the file cannot be made or written, drop records quietly."""
        if self.failure is not None:
            return
        try:
            super().emit(record)
        except OSError as exc:  # opening the file (delayed to the first record) failed
            self.failure = exc

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        """Remember why the log could not be written; say nothing now."""
        self.failure = sys.exc_info()[1]


class QuietConsole(logging.Filter):
    """On the console: warnings yes, errors and tracebacks no (they are in the run log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR and not record.exc_info


@dataclass
class RunLog:
    """The run log of one command: a handler on the root logger, and the console quieted."""

    handler: RunLogHandler
    quieted: list[logging.Handler]

    def stop(self) -> None:
        """Detach (the file stays); old logs beyond the newest KEEP are removed."""
        logging.getLogger().removeHandler(self.handler)
        for h in self.quieted:
            h.removeFilter(_QUIET)
        self.handler.close()
        if Path(self.handler.path).is_file():
            _prune(self.handler.path.parent)

    def traceback(self, exc: BaseException) -> str:
        """Write exc's traceback to the log (only there: not through the root logger, whose
        console handler would print it); the log's path, or why it could not be written."""
        self.handler.handle(logging.LogRecord("synthdata.cli", logging.ERROR, __file__, 0, "command failed",
                                              None, (type(exc), exc, exc.__traceback__)))
        if self.handler.failure is not None or not self.handler.path.is_file():
            return f"(the run log {self.handler.path} could not be written: {self.handler.failure})"
        return str(self.handler.path)


_QUIET = QuietConsole()


def start(verb: str, flows: bool = False) -> RunLog:
    """Start a command's run log. With `flows`, Prefect's logging is set up first (importing
    prefect configures it, replacing root handlers), so its records reach the file and its
    console handler is quieted."""
    if flows:
        import prefect  # noqa: F401 - configures Prefect's logging before we attach

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", verb) or "synthdata"
    handler = RunLogHandler(log_dir() / f"{name}-{stamp}-{os.getpid()}.log")
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    quieted = []
    if flows:
        from prefect.logging.handlers import PrefectConsoleHandler

        quieted = [h for h in root.handlers if isinstance(h, PrefectConsoleHandler)]
        for h in quieted:
            h.addFilter(_QUIET)
    root.addHandler(handler)
    return RunLog(handler, quieted)


def _prune(folder: Path) -> None:
    logs = sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in logs[KEEP:]:
        old.unlink(missing_ok=True)


def os_error_of(exc: BaseException) -> OSError | None:
    """The OS error (with an errno) that `exc` is, or that a ShardFailure collected (`errors`);
    None otherwise. A synthdata error raised while handling an OS error explains itself (its
    own message, e.g. "not a dataset folder"), so causes are not searched."""
    if isinstance(exc, OSError):
        return exc if _errno(exc) is not None else None
    for inner in getattr(exc, "errors", {}).values():
        found = os_error_of(inner)
        if found is not None:
            return found
    return None


def _errno(exc: OSError) -> int | None:
    if exc.errno is not None:
        return exc.errno
    found = _ERRNO_TEXT.search(str(exc))  # e.g. pyarrow's OSError text "[Errno 28] ..."
    return int(found.group(1)) if found else None


def os_error_lines(exc: OSError, log: str) -> list[str]:
    """The three console lines for an OS error: what and where, what to do, the run log."""
    code = _errno(exc)
    what, todo = _ADVICE.get(code, (exc.strerror or os.strerror(code) if code else str(exc),
                                    "check that path, then rerun the same command"))
    name = errno.errorcode.get(code, str(code))
    path = exc.filename if exc.filename is not None else exc.filename2
    where = f"{os.fsdecode(path)}" if path is not None else "(the system gave no path; see the run log)"
    return [f"{what} ({name}): {where}", f"  What to do: {todo}.", f"  Details: {log}"]
