"""Versioning datasets with DVC: track shard tars, push them, pull them back.

Uses the Python API (`dvc.repo.Repo`), which is several times faster than the `dvc` command.
What is tracked: the folders of tars `DIR/raw` and `DIR/shards` (a few files per shard, never
loose images: DVC is slow with many small files) and the large tables (`plan.parquet`,
`manifest.parquet`, `screening.parquet`). Small text records (spec.yaml, run.json, README.md,
stats.json) belong in git. Paths that a `dvc.yaml` stage already outputs are left to it.

`DIR/raw` holds every generated sample, rejected and reviewed near-copies included, so it stays
on this machine: it is versioned in the local DVC cache with `push: false` in its .dvc file (as
`raw/` and `embeddings/` are in the root dvc.yaml), never pushed, and skipped by
`pull_outputs` (on another machine `dvc pull --allow-missing`; `dvc repro` regenerates it).

DVC refuses concurrent commands on one repository (its lock fails rather than waits), so every
call here runs under a file lock beside the DVC repository and retries briefly when an outside
`dvc` process holds DVC's own lock. `DVC_NO_ANALYTICS=1` is set for every call.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import filelock

from synthdata.errors import SynthdataError
from synthdata.folder import DatasetFolder
from synthdata.fsutil import find_dvc_root  # noqa: F401  (part of this module's API)

TRACKED_FOLDERS = (DatasetFolder.RAW, DatasetFolder.SHARDS)
TRACKED_FILES = (DatasetFolder.PLAN, DatasetFolder.MANIFEST, DatasetFolder.SCREENING)
# Tracked but never pushed: they hold samples screening did not accept (see module docstring).
LOCAL_ONLY = (DatasetFolder.RAW, DatasetFolder.EMBEDDINGS)
# What a synthdata output folder holds; `reset` removes exactly these.
DATASET_ENTRIES = DatasetFolder.ENTRIES
LOCK_NAME = "synthdata-dvc.lock"
LOCK_TIMEOUT_S = 600
DVC_LOCK_RETRIES = 20


class VersioningError(SynthdataError):
    """DVC cannot version the outputs as asked (no repository, ignored path, lock, remote)."""


@dataclass
class TrackResult:
    """What track_outputs did."""

    repo: str
    tracked: list[str] = field(default_factory=list)
    dvc_files: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    remote: str | None = None
    pushed: int | None = None


def _quiet_env() -> None:
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@contextlib.contextmanager
def dvc_repo(root: str | Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator:
    """An open dvc Repo at root, held under synthdata's file lock for the repository."""
    _quiet_env()
    from dvc.repo import Repo

    lock_dir = Path(root) / ".dvc" / "tmp"
    lock_dir.mkdir(parents=True, exist_ok=True)
    try:
        with filelock.FileLock(str(lock_dir / LOCK_NAME), timeout=timeout):
            repo = Repo(str(root))
            repo.scm_context.quiet = True
            try:
                yield repo
            finally:
                repo.close()
    except filelock.Timeout:
        raise VersioningError(f"{root}: another synthdata process held the DVC lock for {timeout:.0f} s") from None


def _retry_locked(fn, *args, **kwargs):
    """Call a DVC operation, retrying while an outside dvc process holds DVC's own lock."""
    from dvc.lock import LockError

    for attempt in range(DVC_LOCK_RETRIES):
        try:
            return fn(*args, **kwargs)
        except LockError:
            if attempt == DVC_LOCK_RETRIES - 1:
                raise VersioningError("the DVC repository is locked by another dvc command; "
                                      "try again when it has finished") from None
            time.sleep(0.5)
    return None


def _stage_outputs(repo, pushed_only: bool = False) -> list[Path]:
    """Paths output by dvc.yaml stages (not .dvc files); with `pushed_only`, those without
    `push: false`."""
    out = []
    for stage in repo.index.stages:
        if not stage.path.endswith(".dvc"):
            out += [Path(o.fs_path) for o in stage.outs if o.can_push or not pushed_only]
    return out


def _keep_local(stages) -> None:
    """Mark the local-only outputs of freshly added .dvc stages `push: false` (kept on re-add)."""
    for stage in stages:
        changed = False
        for o in stage.outs:
            if Path(o.fs_path).name in LOCAL_ONLY and o.can_push:
                o.can_push, changed = False, True
        if changed:
            stage.dump()


def dataset_targets(out_dir: str | Path) -> list[Path]:
    """What of a dataset folder DVC should track: tar folders and large tables that exist."""
    root = Path(out_dir)
    return [root / n for n in TRACKED_FOLDERS if (root / n).is_dir()] + \
           [root / n for n in TRACKED_FILES if (root / n).is_file()]


def _default_remote(repo, remote: str | None) -> str | None:
    return remote or repo.config.get("core", {}).get("remote")


def track_outputs(out_dir: str | Path, *, push: bool = True, remote: str | None = None) -> TrackResult:
    """`dvc add` the dataset's tar folders and tables, and push them to the default remote if any
    (all but `raw/`, which stays in the local cache: `push: false`).

    Raises VersioningError when `out_dir` is not inside a DVC repository, or when the .dvc
    files would be ignored by git (e.g. `datasets/` in .gitignore).
    """
    out = Path(out_dir).resolve()
    root = find_dvc_root(out)
    if root is None:
        raise VersioningError(f"{out} is not inside a DVC repository; run `git init && dvc init` "
                              "in the project first (or `dvc init --no-scm`)")
    from dvc.dvcfile import FileIsGitIgnored

    result = TrackResult(repo=str(root))
    with dvc_repo(root) as repo:
        owned = _stage_outputs(repo)
        targets = []
        for t in dataset_targets(out):
            clash = next((o for o in owned if o == t or o in t.parents or t in o.parents), None)
            if clash is not None:
                result.skipped[str(t)] = f"already an output of a dvc.yaml stage ({clash})"
            else:
                targets.append(t)
        if targets:
            try:
                stages = _retry_locked(repo.add, [str(t) for t in targets])
            except FileIsGitIgnored as exc:
                raise VersioningError(
                    f"{exc}: DVC keeps a .dvc file beside each tracked path and git must not "
                    f"ignore it; remove the ignore rule covering {out} (e.g. `datasets/` in "
                    ".gitignore) or version the folder through dvc.yaml stages") from None
            _keep_local(stages)
            result.tracked = [str(t) for t in targets]
            result.dvc_files = [str(Path(root) / s.relpath) for s in stages]
        result.remote = _default_remote(repo, remote)
        pushed = [str(t) for t in targets if t.name not in LOCAL_ONLY]
        if push and result.remote and pushed:
            result.pushed = _retry_locked(repo.push, targets=pushed, remote=remote)
    return result


def pull_outputs(out_dir: str | Path, *, remote: str | None = None) -> list[str]:
    """`dvc pull` a dataset folder's tracked tars and tables (by their .dvc files or stages),
    except the local-only ones (`raw/`, `embeddings/`: never pushed)."""
    out = Path(out_dir).resolve()
    root = find_dvc_root(out)
    if root is None:
        raise VersioningError(f"{out} is not inside a DVC repository")
    with dvc_repo(root) as repo:
        targets = [str(out / n) for n in (*TRACKED_FOLDERS, *TRACKED_FILES)
                   if (out / f"{n}.dvc").is_file() and n not in LOCAL_ONLY]
        owned = [o for o in _stage_outputs(repo, pushed_only=True) if o == out or out in o.parents]
        targets += [str(o) for o in owned]
        if not targets:
            return []
        _retry_locked(repo.pull, targets=targets, remote=remote)
    return targets
