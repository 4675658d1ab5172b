"""Versioning datasets with DVC: track shard tars, push them, pull them back.

Uses the Python API (`dvc.repo.Repo`), which is several times faster than the `dvc` command.
What is tracked: the folders of tars `DIR/raw` and `DIR/shards` (a few files per shard, never
loose images: DVC is slow with many small files) and the large tables (`plan.parquet`,
`manifest.parquet`, `screening.parquet`). Small text records (spec.yaml, run.json, README.md,
stats.json) belong in git. Paths that a `dvc.yaml` stage already outputs are left to it.

DVC refuses concurrent commands on one repository (its lock fails rather than waits), so every
call here runs under a file lock beside the DVC repository and retries briefly when an outside
`dvc` process holds DVC's own lock. `DVC_NO_ANALYTICS=1` is set for every call.

`python -m synthdata.versioning resolve|prepare ...` serve the root `dvc.yaml`: `resolve` splits
the spec into per-stage dependencies (so a stage reruns only when what it reads changed) and
`prepare` resets the output folder when the dataset changed (DVC removes only a stage's own
outputs, and a synthdata output folder refuses to mix two datasets).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import filelock

from synthdata.errors import SynthdataError
from synthdata.folder import DatasetFolder
from synthdata.fsutil import write_text_atomic

TRACKED_FOLDERS = ("raw", "shards")
TRACKED_FILES = ("plan.parquet", "manifest.parquet", "screening.parquet")
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


def find_dvc_root(path: str | Path) -> Path | None:
    """The DVC repository enclosing `path` (a file or folder, existing or not), or None."""
    _quiet_env()
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    p = Path(path).resolve()
    while not p.exists():
        p = p.parent
    try:
        return Path(Repo.find_root(str(p if p.is_dir() else p.parent)))
    except NotDvcRepoError:
        return None


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


def _stage_outputs(repo) -> list[Path]:
    """Paths output by dvc.yaml stages (not .dvc files)."""
    out = []
    for stage in repo.index.stages:
        if not stage.path.endswith(".dvc"):
            out += [Path(o.fs_path) for o in stage.outs]
    return out


def dataset_targets(out_dir: str | Path) -> list[Path]:
    """What of a dataset folder DVC should track: tar folders and large tables that exist."""
    root = Path(out_dir)
    return [root / n for n in TRACKED_FOLDERS if (root / n).is_dir()] + \
           [root / n for n in TRACKED_FILES if (root / n).is_file()]


def _default_remote(repo, remote: str | None) -> str | None:
    return remote or repo.config.get("core", {}).get("remote")


def track_outputs(out_dir: str | Path, *, push: bool = True, remote: str | None = None) -> TrackResult:
    """`dvc add` the dataset's tar folders and tables, and push them to the default remote if any.

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
            result.tracked = [str(t) for t in targets]
            result.dvc_files = [str(Path(root) / s.relpath) for s in stages]
        result.remote = _default_remote(repo, remote)
        if push and result.remote and targets:
            result.pushed = _retry_locked(repo.push, targets=[str(t) for t in targets], remote=remote)
    return result


def pull_outputs(out_dir: str | Path, *, remote: str | None = None) -> list[str]:
    """`dvc pull` a dataset folder's tracked tars and tables (by their .dvc files or stages)."""
    out = Path(out_dir).resolve()
    root = find_dvc_root(out)
    if root is None:
        raise VersioningError(f"{out} is not inside a DVC repository")
    with dvc_repo(root) as repo:
        targets = [str(out / n) for n in (*TRACKED_FOLDERS, *TRACKED_FILES)
                   if (out / f"{n}.dvc").is_file()]
        owned = [o for o in _stage_outputs(repo) if o == out or out in o.parents]
        targets += [str(o) for o in owned]
        if not targets:
            return []
        _retry_locked(repo.pull, targets=targets, remote=remote)
    return targets


def reset_dataset(out_dir: str | Path) -> list[str]:
    """Remove a dataset folder's generated contents (only names synthdata writes); return them.

    A `.gitignore` that DVC wrote there is removed too when it lists only such names.
    """
    root = Path(out_dir)
    removed = []
    for name in DATASET_ENTRIES:
        p = root / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        removed.append(name)
    ignore = root / ".gitignore"
    if ignore.is_file():  # DVC lists a stage's outputs there; drop it when it lists nothing else
        entries = {line.strip() for line in ignore.read_text().splitlines()} - {""}
        if entries <= {f"/{name}" for name in DATASET_ENTRIES}:
            ignore.unlink()
            removed.append(".gitignore")
    return removed


def resolve_spec(spec_path: str | Path, folder: str | Path) -> tuple[Path, Path]:
    """Split a spec into the DVC dependencies of the pipeline stages (files in `folder`).

    `dataset.json`: every resolved field that shapes the data (what the spec hash covers);
    `screening.json`: the resolved memorization section. Execution and output settings are left
    out, so changing them reruns nothing. Each file is rewritten only when its content changes.
    """
    from synthdata.spec import dataset_dict, load_spec, resolved_dict

    spec = load_spec(spec_path)
    data, screening = dataset_dict(spec), resolved_dict(spec)["memorization"]
    paths = (Path(folder) / "dataset.json", Path(folder) / "screening.json")
    for path, content in zip(paths, (data, screening)):
        text = json.dumps(content, indent=2, sort_keys=True) + "\n"
        if not path.is_file() or path.read_text() != text:
            write_text_atomic(path, text)
    return paths


def prepare_folder(spec_path: str | Path, out_dir: str | Path) -> str:
    """Make a dataset folder ready for `synthdata plan SPEC --out DIR` under DVC.

    Same dataset (spec hash in DIR/plan.json unchanged): keep everything and refresh DIR/spec.yaml
    (its memorization, execution and output sections may have changed) -> "kept". Otherwise
    remove the previous dataset's files (`reset_dataset`; DVC's cache keeps them) -> "reset".
    """
    from synthdata.spec import load_spec, resolved_yaml, spec_hash

    spec = load_spec(spec_path)
    root = Path(out_dir)
    info = root / "plan.json"
    try:
        same = json.loads(info.read_text()).get("spec_hash") == spec_hash(spec)
    except (OSError, json.JSONDecodeError):
        same = False
    if same and (root / "spec.yaml").is_file() and (root / "plan.parquet").is_file():
        text = resolved_yaml(spec)
        if (root / "spec.yaml").read_text(encoding="utf-8") != text:
            write_text_atomic(root / "spec.yaml", text)
        return "kept"
    reset_dataset(root)
    return "reset"


USAGE = """usage: python -m synthdata.versioning VERB ...
  resolve SPEC FOLDER   write FOLDER/dataset.json and FOLDER/screening.json (dvc.yaml deps)
  prepare SPEC DIR      keep DIR if it holds this spec's dataset (refresh spec.yaml), else reset it
  reset DIR             remove a dataset folder's generated files
  track DIR             dvc add its tars and tables, push to the default remote
  pull DIR              dvc pull them back"""


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m synthdata.versioning` (see USAGE); used by the root dvc.yaml."""
    args = sys.argv[1:] if argv is None else argv
    arity = {"resolve": 3, "prepare": 3, "reset": 2, "track": 2, "pull": 2}
    if not args or arity.get(args[0]) != len(args):
        print(USAGE, file=sys.stderr)
        return 2
    verb = args[0]
    try:
        if verb == "resolve":
            print("wrote " + ", ".join(str(p) for p in resolve_spec(args[1], args[2])))
        elif verb == "prepare":
            print(f"{args[2]}: {prepare_folder(args[1], args[2])}")
        elif verb == "reset":
            print(f"reset {args[1]}: removed {', '.join(reset_dataset(args[1])) or 'nothing'}")
        elif verb == "track":
            res = track_outputs(args[1])
            print(f"tracked {len(res.tracked)} path(s) in {res.repo}; pushed {res.pushed} to {res.remote}")
        else:
            print(f"pulled {', '.join(pull_outputs(args[1])) or 'nothing'}")
    except SynthdataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
