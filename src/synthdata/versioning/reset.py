"""Guarded reset of a dataset folder under DVC, and the folder preparation the root
`dvc.yaml` runs (`python -m synthdata.versioning prepare`).

`prepare` resets the output folder when the dataset changed (DVC removes only a stage's own
outputs, and a synthdata output folder refuses to mix two datasets). A reset removes only
`DatasetFolder.ENTRIES`, and only from a folder whose plan.json names the dataset and that
holds nothing else: never a repository root or a folder of other files. It is a change like
any other (`synthdata.folder.journal`): under the folder's run lock (a running `synthdata run` makes
it refuse), refused while a reader pins a screening generation, committed by one record, the
entries renamed into the trash and then deleted; the lock files themselves stay.
"""

from __future__ import annotations

from pathlib import Path

from synthdata.errors import SynthdataError
from synthdata.folder import DatasetFolder
from synthdata.versioning.dvc import DATASET_ENTRIES, VersioningError
from synthdata.folder import journal
from synthdata.folder.snapshot import live_pins
from synthdata.spec import spec_hash
from synthdata.plan.load import load_spec
from synthdata.versioning.stages import resolve


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
    from synthdata.dataset.prepare import acquire_lock  # deferred: loads pyarrow

    try:
        acquire_lock(folder.root).release()  # taking the lock finishes what was interrupted
    except SynthdataError as exc:
        raise VersioningError(f"{exc}; refusing to reset it now") from None


def _commit_reset(folder: DatasetFolder) -> None:
    """Remove the dataset's entries as one committed change, under the run lock and, so that no
    reader pins a generation between the check and the removal, the exclusive screening lock."""
    from synthdata.dataset.prepare import acquire_lock  # deferred: loads pyarrow

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
    """The DVC pipeline's per-stage views of a spec (see `synthdata.versioning.stages.resolve`)."""

    return resolve(spec_path, folder, params_file)


def prepare_folder(spec_path: str | Path, out_dir: str | Path) -> str:
    """Make a dataset folder ready for `synthdata plan SPEC --out DIR` under DVC.

    Same dataset (spec hash in DIR/plan.json unchanged) -> "kept" (`synthdata plan` then
    refreshes DIR/spec.yaml). Otherwise remove the previous dataset's files (`reset_dataset`,
    which refuses anything but this dataset's own folder; DVC's cache keeps them) -> "reset".
    A repository root is refused either way: DVC would replace its README.md with the card.
    """

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
