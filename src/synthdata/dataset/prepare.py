"""Writing into a dataset folder: one run at a time (a lock), one dataset per folder.

A folder holds one dataset. Its identity is what determines the bytes of its raw shards:
the spec's data sections (the spec hash; memorization too when the worker screens, qc.top_up),
the plan, and what generated them (`GenerationIdentity`, recorded in every shard marker): the
model fingerprint (weights, configs, textual-inversion and LoRA files), the device type, the
dtype, the speed knobs that are on, the QC classifiers' fingerprints, and with qc.top_up the
screening setup that decided what was regenerated (matchers and their fingerprints, the
reference content, the calibrated thresholds). A run that would change any of these on a
folder that already holds generated shards is refused with the difference named, so a resume
never mixes, say, float16 GPU shards with float32 CPU shards, or shards topped up against
another reference. Sections that do not shape the data (execution, output, and memorization
without top-up) may change; `DIR/spec.yaml` is rewritten to what ran last.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import filelock
import yaml

from synthdata.folder import generations, journal
from synthdata.plan import rows as planning
from synthdata.errors import OutputError
from synthdata.folder import FORMAT_VERSION, DatasetFolder
from synthdata.fsutil import write_json_atomic, write_text_atomic
from synthdata.spec import Spec, data_sections, resolved_dict, resolved_yaml, spec_hash
from synthdata.dataset.cohort_summary import write_cohort_summary


@dataclass(frozen=True)
class PreparedOutput:
    """A dataset folder ready for generation: its plan written and its identity checked."""

    folder: DatasetFolder
    spec_hash: str
    plan_hash: str
    shard_count: int
    replaced: tuple[str, ...] = ()

    @property
    def root(self) -> Path:
        """The folder's path."""
        return self.folder.root


@dataclass(frozen=True)
class GenerationIdentity:
    """What generated a folder's raw shards, besides the spec: recorded in every shard marker.

    `speed`: the execution.speed knobs not at their default; `qc`: {"qc.checks.I.model":
    classifier folder sha256} of the QC classifier checks; `memorization`: the digest of the
    screening setup the worker screened with (qc.top_up; `qc.memorization.setup_identity`),
    else None.
    """

    model_fingerprint: str
    device_type: str
    dtype: str
    speed: dict = field(default_factory=dict)
    qc: dict = field(default_factory=dict)
    memorization: str | None = None

    def as_dict(self) -> dict:
        """Plain data, as the markers record it."""
        return asdict(self)


# What a marker written before a field existed means by its absence.
_ABSENT = {"speed": {}, "qc": {}, "memorization": None}


def acquire_lock(root: str | Path, wait_seconds: float = 0) -> filelock.FileLock:
    """Take the folder's run lock, or refuse clearly if another run holds it; then finish or
    roll back whatever change an interrupted command left (`recover`)."""
    folder = DatasetFolder(root)
    folder.root.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(folder.lock_file))
    try:
        lock.acquire(timeout=wait_seconds)
    except filelock.Timeout:
        raise OutputError(f"{folder.root}: another synthdata run is using this output folder "
                          f"(lock {folder.lock_file}); wait for it to finish or choose another --out"
                          ) from None
    try:
        recover(folder)
    except BaseException:
        lock.release()
        raise
    return lock


def recover(folder: DatasetFolder) -> str | None:
    """Finish a committed change or roll back a staged one (`journal.recover`), then remove
    screening generations no reader pins; return the op finished, if any. Run lock held."""
    finished = journal.recover(folder)
    generations.collect(folder)
    return finished


def check_identity(root: str | Path, spec: Spec) -> None:
    """Refuse a folder that holds another dataset, an unwritable format, or foreign files."""
    folder = DatasetFolder(root)
    if folder.spec_file.is_file() or folder.plan_info_file.is_file():
        folder.require(write=True)
        old = data_sections(yaml.safe_load(folder.spec_file.read_text()) or {})
        new = data_sections(resolved_dict(spec))
        changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        if changed or folder.plan_info().get("spec_hash") != spec_hash(spec):
            raise OutputError(
                f"{folder.root} already holds a dataset made from a different spec (changed: "
                f"{', '.join(changed) or 'spec hash'}); refusing to mix datasets. "
                "Use another --out, or delete the folder to start over.")
        return
    others = [p.name for p in folder.root.iterdir() if not p.name.startswith(".")] \
        if folder.root.is_dir() else []
    if others:
        raise OutputError(f"{folder.root} is not empty and holds no synthdata dataset "
                          f"(found {', '.join(sorted(others)[:5])}); choose an empty or new folder")


def check_generation_identity(root: str | Path, identity: GenerationIdentity) -> None:
    """Refuse to add shards made with another identity (model, device type, dtype, speed
    knobs, QC classifiers, top-up screening setup) than the folder's, naming what differs."""
    folder = DatasetFolder(root)
    expected = identity.as_dict()
    for shard in folder.complete_shards():
        marker = folder.marker(shard) or {}
        differ = [f"{k}: {marker.get(k, _ABSENT.get(k))!r} on disk, {v!r} now"
                  for k, v in expected.items() if marker.get(k, _ABSENT.get(k)) != v]
        if differ:
            raise OutputError(
                f"{folder.root}: its shards were generated differently ({'; '.join(differ)}, "
                f"first seen in shard {shard}); resuming would mix outputs that are not "
                "byte-compatible. Run on the same model and hardware with the same "
                "execution.speed knobs (set generator.device and generator.dtype explicitly), QC "
                "classifiers and, with qc.top_up, the same reference and screening settings; or "
                "use another --out.")


def remove_stale_shards(root: str | Path, identity: GenerationIdentity) -> list[str]:
    """Remove DIR/raw and DIR/workers when a complete shard there was generated with another
    identity than `identity` (`check_generation_identity`); return the names removed.

    For pipelines whose stage owns those folders (DVC keeps the old ones in its cache): call it
    only after `check_identity` has shown the folder holds this spec's dataset.
    """
    folder = DatasetFolder(root)
    try:
        check_generation_identity(folder.root, identity)
    except OutputError:
        removed = [p for p in (folder.raw_dir, folder.workers_dir) if p.is_dir()]
        journal.commit(folder, "reset", remove=removed)
        return [p.name for p in removed]
    return []


def prepare(root: str | Path, spec: Spec, identity: GenerationIdentity | None = None, *,
            replace_stale: bool = False) -> PreparedOutput:
    """Check the folder, write spec.yaml (what runs now), and plan.parquet/plan.json once.

    With `identity`, also refuse a folder whose shards another model or hardware made, or with
    `replace_stale` remove those shards (`remove_stale_shards`). Nothing is written or removed
    before the folder is known to hold this spec's dataset.
    """
    folder = DatasetFolder(root)
    check_identity(folder.root, spec)
    replaced: tuple[str, ...] = ()
    if identity is not None:
        if replace_stale:
            replaced = tuple(remove_stale_shards(folder.root, identity))
        check_generation_identity(folder.root, identity)
    s_hash = spec_hash(spec)
    if folder.plan_info_file.is_file() and folder.plan_file.is_file():
        info = folder.plan_info()
        p_hash = planning.plan_hash(spec)
        if info["plan_hash"] != p_hash:
            raise OutputError(f"{folder.root}: the plan this spec makes now ({p_hash[:12]}) differs "
                              f"from the one on disk ({info['plan_hash'][:12]}), e.g. after a "
                              "synthdata upgrade; use another --out")
        record_spec(folder, spec)
        return PreparedOutput(folder, s_hash, p_hash, info["shards"], replaced)
    written = _commit_plan(folder, spec, s_hash)
    return PreparedOutput(folder, s_hash, written, planning.shard_count(spec), replaced)


def _commit_plan(folder: DatasetFolder, spec: Spec, s_hash: str) -> str:
    """Stage plan.parquet, cohort.json, spec.yaml and plan.json, then commit them as one change
    (`synthdata.folder.journal`): an interrupted plan leaves either no plan or the whole plan."""
    staged = journal.StagedFolder(folder.root, journal.stage(folder, "plan"),
                                  (folder.PLAN, folder.COHORT, folder.SPEC, folder.PLAN_INFO))
    written = planning.write_plan(spec, staged.plan_file)
    if spec.cohort is not None:
        write_cohort_summary(spec, staged)
    write_text_atomic(staged.spec_file, resolved_yaml(spec))
    counts = planning.label_counts(spec)
    write_json_atomic(staged.plan_info_file, {
        "format_version": FORMAT_VERSION, "name": spec.name, "spec_hash": s_hash,
        "plan_hash": written, "count": sum(counts.values()), "label_counts": counts,
        "shards": planning.shard_count(spec), "shard_size": spec.shards.size,
        "batch_size": spec.generator.batch_size})
    journal.commit(folder, "plan", moves=staged.moves())
    return written


def record_spec(folder: DatasetFolder, spec: Spec) -> None:
    """Make DIR/spec.yaml the resolved spec that is running now (rewritten only if it differs)."""
    text = resolved_yaml(spec)
    if not folder.spec_file.is_file() or folder.spec_file.read_text(encoding="utf-8") != text:
        write_text_atomic(folder.spec_file, text)
