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

`python -m synthdata.versioning resolve|stamp|prepare ...` serve the root `dvc.yaml` (see
`synthdata.dvcyaml` and docs/dvc.md): `resolve` splits the spec into per-stage dependencies (so
a stage reruns only when what it reads changed), `stamp` records an input file's content, and
`prepare` resets the output folder when the dataset changed (DVC removes only a stage's own
outputs, and a synthdata output folder refuses to mix two datasets). A reset removes only
`DatasetFolder.ENTRIES`, and only from a folder whose plan.json names the dataset and that
holds nothing else: never a repository root or a folder of other files. It is a change like
any other (`synthdata.journal`): under the folder's run lock (a running `synthdata run` makes
it refuse), refused while a reader pins a screening generation, committed by one record, the
entries renamed into the trash and then deleted; the lock files themselves stay.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import filelock

from synthdata.errors import SynthdataError
from synthdata.folder import DatasetFolder

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


def _repository_root(root: Path) -> bool:
    return (root / ".git").exists() or (root / ".dvc").is_dir()


def reset_dataset(out_dir: str | Path, name: str) -> list[str]:
    """Remove a dataset folder's generated contents (only `DatasetFolder.ENTRIES`); return them.

    Only from a folder that is verifiably the synthdata dataset `name`: its plan.json names it,
    and it holds nothing synthdata did not write (a `.gitignore` aside); never a repository
    root. Otherwise VersioningError naming the folder and what was found, and nothing removed.
    A `.gitignore` that DVC wrote there is removed too when it lists only synthdata's names.
    """
    folder = DatasetFolder(Path(out_dir).resolve())
    root = folder.root
    if not root.exists():
        return []
    if not root.is_dir():
        raise VersioningError(f"{root} is not a folder; refusing to reset it")
    if _repository_root(root):
        raise VersioningError(
            f"{root} is a repository root (it holds .git or .dvc); refusing to reset it. "
            "Point the dataset's output folder (params.yaml `out`) at a folder of its own")
    if any((root / n).exists() for n in (folder.COMMIT, folder.TRASH, folder.STAGING_AREA)):
        _recover(folder)  # an interrupted change (a reset, too) is finished or rolled back first
    names = {p.name for p in root.iterdir()}
    ours = [n for n in DATASET_ENTRIES if n in names]
    foreign = sorted(names - set(DATASET_ENTRIES) - {".gitignore"})
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        raise VersioningError(
            f"{root} holds files synthdata did not write ({shown}); refusing to reset it. "
            "Point the dataset's output folder at a folder of its own, or move those files")
    ours = [n for n in ours if n not in (*DatasetFolder.LOCKS, DatasetFolder.COMMIT)]
    if not ours:
        return []
    if not folder.plan_info_file.is_file():
        raise VersioningError(
            f"{root} has no {folder.PLAN_INFO}, so it cannot be verified to hold dataset {name!r} "
            f"(found {', '.join(sorted(ours))}); refusing to reset it. Delete the folder yourself "
            "if it is yours to discard")
    try:
        found = folder.plan_info().get("name")
    except SynthdataError as exc:
        raise VersioningError(f"{exc}; refusing to reset it") from None
    if found != name:
        raise VersioningError(
            f"{root} holds dataset {found!r} (its {folder.PLAN_INFO}), not {name!r}; refusing to "
            "reset another dataset. Use another output folder, or delete this one yourself "
            "(e.g. after renaming the dataset)")
    _commit_reset(folder)
    removed = list(ours)
    ignore = root / ".gitignore"
    if ignore.is_file():  # DVC lists a stage's outputs there; drop it when it lists nothing else
        entries = {line.strip() for line in ignore.read_text().splitlines()} - {""}
        if entries <= {f"/{entry}" for entry in DATASET_ENTRIES}:
            ignore.unlink()
            removed.append(".gitignore")
    return removed


def _recover(folder: DatasetFolder) -> None:
    from synthdata.outputs import acquire_lock

    try:
        acquire_lock(folder.root).release()  # taking the lock finishes what was interrupted
    except SynthdataError as exc:
        raise VersioningError(f"{exc}; refusing to reset it now") from None


def _commit_reset(folder: DatasetFolder) -> None:
    """Remove the dataset's entries as one committed change, under the run lock and, so that no
    reader pins a generation between the check and the removal, the exclusive screening lock."""
    from synthdata import journal
    from synthdata.outputs import acquire_lock
    from synthdata.snapshot import live_pins

    try:
        lock = acquire_lock(folder.root)
    except SynthdataError as exc:
        raise VersioningError(f"{exc}; refusing to reset it now") from None
    try:
        with folder.screening_lock(exclusive=True):
            on_disk = sorted(folder.generations_dir.iterdir()) if folder.generations_dir.is_dir() else []
            readers = {p.name: n for p in on_disk if (n := len(live_pins(folder, p.name)))}
            if readers:
                raise VersioningError(
                    f"{folder.root}: {sum(readers.values())} reader(s) (e.g. a training job's "
                    f"synthdata.load) still read screening generation(s) {', '.join(readers)}; "
                    "refusing to reset it under them. Stop them, or wait, and try again")
            entries = [n for n in DATASET_ENTRIES if (folder.root / n).exists() and n not in
                       (*DatasetFolder.LOCKS, DatasetFolder.COMMIT, DatasetFolder.TRASH)]
            journal.commit(folder, "reset", remove=[folder.root / n for n in entries])
    finally:
        lock.release()


def resolve_spec(spec_path: str | Path, folder: str | Path,
                 params_file: str | Path | None = None) -> tuple[Path, Path]:
    """The DVC pipeline's per-stage views of a spec (see `synthdata.dvcyaml.resolve`)."""
    from synthdata.dvcyaml import resolve

    return resolve(spec_path, folder, params_file)


def prepare_folder(spec_path: str | Path, out_dir: str | Path) -> str:
    """Make a dataset folder ready for `synthdata plan SPEC --out DIR` under DVC.

    Same dataset (spec hash in DIR/plan.json unchanged) -> "kept" (`synthdata plan` then
    refreshes DIR/spec.yaml). Otherwise remove the previous dataset's files (`reset_dataset`,
    which refuses anything but this dataset's own folder; DVC's cache keeps them) -> "reset".
    A repository root is refused either way: DVC would replace its README.md with the card.
    """
    from synthdata.spec import load_spec, spec_hash

    spec = load_spec(spec_path, check_files=False)
    folder = DatasetFolder(Path(out_dir).resolve())
    if folder.root.is_dir() and _repository_root(folder.root):
        raise VersioningError(
            f"{folder.root} is a repository root (it holds .git or .dvc); a dataset needs a folder "
            "of its own (params.yaml `out`, e.g. datasets/NAME)")
    try:
        info = folder.plan_info() if folder.plan_info_file.is_file() else {}
    except SynthdataError:
        info = {}
    if info.get("spec_hash") == spec_hash(spec) and info.get("name") == spec.name \
            and folder.spec_file.is_file() and folder.plan_file.is_file():
        return "kept"
    reset_dataset(folder.root, spec.name)
    return "reset"


USAGE = """usage: python -m synthdata.versioning VERB ...
  resolve SPEC WORK PARAMS  write WORK/generate/dataset.json, WORK/screen/screening.json;
                            check PARAMS' generate_inputs/screen_inputs against the spec
  stamp PATH OUT        write the content digest of a file or folder to OUT
  prepare SPEC DIR      keep DIR if it holds this spec's dataset, else reset it (guarded)
  reset DIR NAME        remove dataset NAME's generated files from DIR (guarded)
  track DIR             dvc add its tars and tables, push to the default remote
  pull DIR              dvc pull them back"""


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m synthdata.versioning` (see USAGE); used by the root dvc.yaml."""
    args = sys.argv[1:] if argv is None else argv
    arity = {"resolve": 4, "stamp": 3, "prepare": 3, "reset": 3, "track": 2, "pull": 2}
    if not args or arity.get(args[0]) != len(args):
        print(USAGE, file=sys.stderr)
        return 2
    verb = args[0]
    try:
        if verb == "resolve":
            print("wrote " + ", ".join(str(p) for p in resolve_spec(args[1], args[2], args[3])))
        elif verb == "stamp":
            from synthdata.dvcyaml import stamp

            print(f"stamped {args[1]} -> {stamp(args[1], args[2])}")
        elif verb == "prepare":
            print(f"{args[2]}: {prepare_folder(args[1], args[2])}")
        elif verb == "reset":
            print(f"reset {args[1]}: removed {', '.join(reset_dataset(args[1], args[2])) or 'nothing'}")
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
