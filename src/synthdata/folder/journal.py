"""One commit protocol for every state change of a dataset folder.

A change (a plan, a report, a screening, a reset) goes through four steps:

1. **stage**: write the new files under `DIR/.staging/<op>/` (`stage`, `StagedFolder`); a
   screening builds an immutable generation folder instead (`synthdata.folder.generations`);
2. **commit**: write one small record, `DIR/.commit.json`, atomically and last (`commit`):
   from that instant the change has happened;
3. **apply**: move the staged files into place, one rename each, in order (a folder replaces a
   folder by first renaming the old one into the trash), then the change's own finishing step
   (publish a screening generation, rewrite the dataset card). Every step is idempotent;
4. **clean up**: delete the record, rename the staging area into `DIR/.trash/` and delete the
   trash.

`recover`, which every command that writes calls under the run lock (`outputs.acquire_lock`),
finishes a change whose record exists (steps 3-4 again) and rolls back one that never reached
its record (its staging goes to the trash). Readers never write: they follow a pending record
(`pending`, `synthdata.folder.snapshot`). A raw shard is the one change without a record of its own:
its completion marker, written last, is its commit (`synthdata.folder.shards`).

Each step passes a named fault point (`synthdata.faults`): `<op>.staged` (before the record),
`<op>.after_record`, `<op>.applied` (finished, record still there) and `<op>.finished` (record
deleted, trash not yet emptied).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from synthdata.errors import OutputError
from synthdata.faults import fault
from synthdata.folder import DatasetFolder
from synthdata.fsutil import confined, write_json_atomic

# Changes whose finishing step goes beyond moving and trashing files: op -> "module:function"
# taking (folder, record). Loaded only when such a record is finished.
FINISHERS = {"report": "synthdata.dataset.report:finish_report",
             "screening": "synthdata.folder.generations:finish_screening"}
OPS = ("plan", "report", "screening", "reset")


class StagedFolder(DatasetFolder):
    """A dataset folder whose entries `names` are written into a staging area instead of DIR;
    every other path is the folder's own. `moves()` lists what the commit then moves in."""

    def __init__(self, root: str | Path, area: str | Path, names: Iterable[str]):
        super().__init__(root)
        self.area, self.names = Path(area), tuple(names)

    def _path(self, name: str) -> Path:
        return self.area / name if name in self.names else self.root / name

    def moves(self) -> list[tuple[Path, Path]]:
        """(staged, final) for every staged entry that was written, in `names` order."""
        return [(self.area / n, self.root / n) for n in self.names if (self.area / n).exists()]


def stage(folder: DatasetFolder, op: str) -> Path:
    """A fresh, empty DIR/.staging/<op>/ (what an interrupted attempt left there is trashed)."""
    area = folder.staging_area / op
    if area.exists():
        trash(folder, area)
    area.mkdir(parents=True)
    return area


def trash(folder: DatasetFolder, path: Path) -> None:
    """Rename `path` (file or folder) into DIR/.trash/ at once; `empty_trash` deletes it later."""
    folder.trash_dir.mkdir(parents=True, exist_ok=True)
    os.replace(path, folder.trash_dir / f"{path.name}-{uuid.uuid4().hex[:12]}")


def empty_trash(folder: DatasetFolder) -> None:
    """Delete DIR/.trash and everything in it."""
    shutil.rmtree(folder.trash_dir, ignore_errors=True)


def pending(folder: DatasetFolder) -> dict | None:
    """The record of a committed change not yet finished, or None. A record synthdata cannot
    read is an error: guessing would risk publishing or deleting the wrong files."""
    try:
        record = json.loads(folder.commit_file.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise OutputError(f"{folder.commit_file}: unreadable commit record ({exc}); it names a "
                          "change that was interrupted. Restore the folder from a copy") from None
    if not isinstance(record, dict) or record.get("op") not in OPS:
        raise OutputError(f"{folder.commit_file}: a commit record of unknown kind "
                          f"{record.get('op') if isinstance(record, dict) else record!r}; "
                          "a newer synthdata wrote it: upgrade synthdata")
    return record


def _relative(folder: DatasetFolder, path: str | Path) -> str:
    """`path` (absolute, or relative to the current folder like the folder's own) relative to DIR."""
    return Path(os.path.abspath(path)).relative_to(os.path.abspath(folder.root)).as_posix()


def commit(folder: DatasetFolder, op: str, *, moves: Iterable[tuple[Path, Path]] = (),
           remove: Iterable[str | Path] = (), **data) -> dict:
    """Write the commit record of a staged change (atomically, last), then finish it.

    `moves`: (staged, final) paths inside the folder, applied in order; `remove`: paths inside
    the folder to move into the trash first; `data`: what the op's finishing step needs (JSON).
    Paths are recorded relative to the folder. Returns the record.
    """
    if op not in OPS:
        raise ValueError(f"unknown change {op!r}; one of {OPS}")
    record = {"op": op, "remove": [_relative(folder, p) for p in remove],
              "moves": [[_relative(folder, a), _relative(folder, b)] for a, b in moves], **data}
    fault(f"{op}.staged")
    write_json_atomic(folder.commit_file, record)
    fault(f"{op}.after_record")
    finish(folder, record)
    return record


def _apply(folder: DatasetFolder, record: dict) -> None:
    for entry in record.get("remove", []):
        path = confined(folder.root, entry)
        if path.exists() or path.is_symlink():
            trash(folder, path)
    for src_rel, dst_rel in record.get("moves", []):
        src, dst = confined(folder.root, src_rel), confined(folder.root, dst_rel)
        if not src.exists():
            continue  # moved by an earlier attempt
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir() and dst.exists():
            trash(folder, dst)
        os.replace(src, dst)


def finish(folder: DatasetFolder, record: dict) -> None:
    """Apply a committed change (moves, removals, the op's finishing step), then clean up."""
    _apply(folder, record)
    target = FINISHERS.get(record["op"])
    if target is not None:
        module, name = target.split(":")
        getattr(importlib.import_module(module), name)(folder, record)
    fault(f"{record['op']}.applied")
    folder.commit_file.unlink(missing_ok=True)
    fault(f"{record['op']}.finished")
    cleanup(folder)


def cleanup(folder: DatasetFolder) -> None:
    """Trash the staging area and empty the trash (only with no change pending)."""
    if folder.staging_area.exists():
        trash(folder, folder.staging_area)
    empty_trash(folder)


def _sweep_temporaries(folder: DatasetFolder) -> None:
    """Remove what a killed writer left half-written under a temporary name (`fsutil`: files
    `.NAME.tmp-PID` and `.NAME.link-PID`) in DIR and the folders workers write into."""
    for place in (folder.root, folder.raw_dir, folder.embeddings_dir, folder.workers_dir):
        for pattern in (".*.tmp-*", ".*.link-*"):
            for path in place.glob(pattern) if place.is_dir() else []:
                if path.is_file():
                    path.unlink(missing_ok=True)


def recover(folder: DatasetFolder) -> str | None:
    """Finish a committed change, or roll back a staged one; return the op finished, if any.

    Call with the folder's run lock held, before any work starts (one writer at a time; what
    lies under a temporary name then is what a killed writer left).
    """
    if not folder.root.is_dir():
        return None
    _sweep_temporaries(folder)
    record = pending(folder)
    if record is not None:
        finish(folder, record)
        return record["op"]
    cleanup(folder)
    return None
