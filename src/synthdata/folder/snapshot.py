"""One snapshot reader: pin one committed screening generation for as long as you read it.

    with open_snapshot(DIR) as snap:        # a DatasetFolder whose screening outputs are pinned
        snap.accepted_tars()                # DIR/generations/<id>/shards/*.tar
        snap.screening_file                 # DIR/generations/<id>/screening.parquet

Every synthdata reader of a dataset folder (loader, status, verify, lineage, report, audit and
evaluate of a dataset folder) goes through here. `open_snapshot` resolves which generation is
current once (a pending commit record's, else the one `DIR/shards/.screening.json` names),
under the brief shared screening lock, and leaves a pin: `DIR/.pins/<id>/<pid>-<nonce>.pin`,
locked (flock) by this process for as long as the snapshot is open. A writer removes an old
generation only when no live pin names it (`live_pins`, under the exclusive screening lock), so
a reader never needs a lock across an epoch and never finds its files gone. A pin whose owner
died is unlocked by the kernel and removed by the next writer. On object storage a pin would be
a lease object with an expiry, checked the same way.

Folders without generations (format 2 folders, a `dvc checkout` of a revision whose generation
is no longer on disk): the snapshot reads DIR/shards and the tables themselves under the shared
screening lock, held until it is closed, as synthdata did before generations. A folder never
screened gives a snapshot that stays unscreened. A read-only folder (no pin can be written)
is read unpinned: nothing can commit there without write access.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
import uuid
import weakref
from pathlib import Path

from synthdata.folder import journal
from synthdata.folder import DatasetFolder

UNSCREENED = "unscreened"  # never a generation id (ids are 16 hex digits): paths that never exist
_SCREENING_OUTPUTS = (DatasetFolder.SHARDS, DatasetFolder.SCREENING,
                      DatasetFolder.SCREENING_REPORT, DatasetFolder.SCREENING_PLOT)


class Pin:
    """This process's claim on a generation: a locked file under DIR/.pins/<id>/."""

    def __init__(self, path: Path, fd: int | None):
        self.path, self.fd, self.owner = path, fd, os.getpid()

    @classmethod
    def create(cls, folder: DatasetFolder, generation: str) -> Pin | None:
        """Pin `generation`; None where the folder cannot be written (nothing commits there)."""
        path = folder.pins_dir / generation / f"{os.getpid()}-{uuid.uuid4().hex[:12]}.pin"
        tmp = path.with_suffix(".tmp")
        for attempt in range(5):  # another reader's release may remove the empty folder meanwhile
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(tmp, os.O_CREAT | os.O_RDWR, 0o644)
                break
            except FileNotFoundError:
                if attempt == 4:
                    raise
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                    return None
                raise
        fcntl.flock(fd, fcntl.LOCK_EX)  # locked before it is visible as a pin
        os.write(fd, json.dumps({"generation": generation, "pid": os.getpid(),
                                 "host": socket.gethostname()}).encode())
        os.rename(tmp, path)
        return cls(path, fd)

    def __getstate__(self) -> dict:  # a copy in a DataLoader worker never releases the pin
        return {"path": self.path, "fd": None, "owner": None}

    def release(self) -> None:
        """Remove the pin (only in the process that made it)."""
        if self.fd is None or self.owner != os.getpid():
            return
        self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None
        for empty in (self.path.parent, self.path.parent.parent):  # DIR/.pins/<id>, DIR/.pins
            try:
                empty.rmdir()
            except OSError:
                break  # other pins remain


TMP_PIN_GRACE_S = 60.0


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False


def live_pins(folder: DatasetFolder, generation: str, *, clean: bool = False) -> list[Path]:
    """The pins on `generation` whose process is alive (its lock is held). With `clean` (a
    writer, under the exclusive screening lock) stale pins are removed on the way."""
    pins = folder.pins_dir / generation
    live = []
    for path in sorted(pins.glob("*.*")) if pins.is_dir() else []:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # released meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if path.suffix == ".pin":
                live.append(path)
        else:
            # its owner died (the kernel dropped the lock); a pin still being made (`.tmp`,
            # created but not yet locked) is left alone until it is clearly abandoned
            if clean and (path.suffix == ".pin" or _older_than(path, TMP_PIN_GRACE_S)):
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return live


def generation_complete(folder: DatasetFolder, generation: str) -> bool:
    """True when DIR/generations/<id> holds its record (written last, then renamed in whole)."""
    return (folder.generation_dir(generation) / folder.SHARDS / folder.GENERATION).is_file()


def view_generation(folder: DatasetFolder) -> str | None:
    """The generation DIR/shards/ publishes (its .screening.json), or None."""
    try:
        return json.loads(folder.generation_file.read_text()).get("generation")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def current_generation(folder: DatasetFolder) -> str | None:
    """The committed generation: a pending screening commit's, else the published one; None
    when neither names a generation that is on disk."""
    record = journal.pending(folder)
    if record is not None and record["op"] == "screening":
        return record["generation"]
    found = view_generation(folder)
    return found if found and generation_complete(folder, found) else None


class Snapshot(DatasetFolder):
    """A dataset folder whose screening outputs (shards/, screening.parquet, the report) are
    read from one pinned generation; everything else is the folder's own. Close it when done
    (it is also closed when garbage-collected and at exit)."""

    def __init__(self, root: str | Path, generation: str | None, source: Path,
                 closer: contextlib.ExitStack):
        super().__init__(root)
        self.generation, self.source, self._closer = generation, source, closer
        self._finalizer = weakref.finalize(self, closer.close)

    def _path(self, name: str) -> Path:
        return self.source / name if name in _SCREENING_OUTPUTS else self.root / name

    @property
    def screened(self) -> bool:
        """True when the snapshot holds a screening (a generation, or a format-2 view)."""
        return self.screening_file.is_file()

    @property
    def pinned(self) -> bool:
        """True when the snapshot reads an immutable generation (no lock held)."""
        return self.generation is not None

    def close(self) -> None:
        """Release the pin (or the legacy shared lock)."""
        self._finalizer()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"root": self.root, "generation": self.generation, "source": self.source}

    def __setstate__(self, state: dict) -> None:  # a worker's copy reads the same files, pins nothing
        self.root, self.generation, self.source = state["root"], state["generation"], state["source"]
        self._closer = contextlib.ExitStack()
        self._finalizer = weakref.finalize(self, self._closer.close)


def open_snapshot(out_dir: str | Path | DatasetFolder) -> Snapshot:
    """Pin the folder's committed screening generation (see the module docstring)."""
    folder = DatasetFolder(Path(os.fspath(out_dir)))
    closer = contextlib.ExitStack()
    with contextlib.ExitStack() as resolving:
        resolving.enter_context(folder.screening_lock())
        generation = current_generation(folder)
        if generation is not None:
            pin = Pin.create(folder, generation)
            if pin is not None:
                closer.callback(pin.release)
            return Snapshot(folder.root, generation, folder.generation_dir(generation), closer)
        if folder.shards_dir.is_dir() or folder.screening_file.is_file():
            closer.push(resolving.pop_all())  # no generations: keep the shared lock while reading
            return Snapshot(folder.root, None, folder.root, closer)
    return Snapshot(folder.root, None, folder.generations_dir / UNSCREENED, closer)


_HELD: dict[Path, Snapshot] = {}


def hold(out_dir: str | Path | DatasetFolder) -> Snapshot:
    """A snapshot pinned until this process exits (for commands that list a folder's tars and
    read them later, e.g. `synthdata audit` and `evaluate --real` of a dataset folder); one
    per folder and process."""
    root = Path(os.fspath(out_dir)).resolve()
    if root not in _HELD:
        _HELD[root] = open_snapshot(root)
    return _HELD[root]
