"""Writing into a dataset folder: one run at a time (a lock), one dataset per folder.

A folder holds one dataset. Its identity is what determines the bytes of its raw shards:
the spec's data sections (the spec hash), the plan, and what generated them — the model
fingerprint, the device type and the dtype. A run that would change any of these on a
folder that already holds generated shards is refused with the difference named, so a
resume never mixes, say, float16 GPU shards with float32 CPU shards. Sections that do not
shape the data (execution, output, memorization) may change; `DIR/spec.yaml` is rewritten
to what ran last.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import filelock
import yaml

from synthdata import plan as planning
from synthdata.errors import OutputError
from synthdata.folder import FORMAT_VERSION, DatasetFolder
from synthdata.fsutil import write_json_atomic, write_text_atomic
from synthdata.spec import NON_DATA_SECTIONS, Spec, resolved_dict, resolved_yaml, spec_hash
from synthdata.spec.paths import location_free


@dataclass(frozen=True)
class PreparedOutput:
    """A dataset folder ready for generation: its plan written and its identity checked."""

    folder: DatasetFolder
    spec_hash: str
    plan_hash: str
    shard_count: int

    @property
    def root(self) -> Path:
        """The folder's path."""
        return self.folder.root


@dataclass(frozen=True)
class GenerationIdentity:
    """What generated a folder's raw shards, besides the spec: recorded in every shard marker."""

    model_fingerprint: str
    device_type: str
    dtype: str

    def as_dict(self) -> dict:
        """Plain data, as the markers record it."""
        return asdict(self)


def acquire_lock(root: str | Path, wait_seconds: float = 0) -> filelock.FileLock:
    """Take the folder's run lock, or refuse clearly if another run holds it."""
    folder = DatasetFolder(root)
    folder.root.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(folder.lock_file))
    try:
        lock.acquire(timeout=wait_seconds)
    except filelock.Timeout:
        raise OutputError(f"{folder.root}: another synthdata run is using this output folder "
                          f"(lock {folder.lock_file}); wait for it to finish or choose another --out"
                          ) from None
    return lock


def _data_sections(data: dict) -> dict:
    return {k: v for k, v in location_free(data).items() if k not in NON_DATA_SECTIONS}


def check_identity(root: str | Path, spec: Spec) -> None:
    """Refuse a folder that holds another dataset, an unwritable format, or foreign files."""
    folder = DatasetFolder(root)
    if folder.spec_file.is_file() or folder.plan_info_file.is_file():
        folder.require(write=True)
        old = _data_sections(yaml.safe_load(folder.spec_file.read_text()) or {})
        new = _data_sections(resolved_dict(spec))
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
    """Refuse to add shards made by another model, device type or dtype than the folder's."""
    folder = DatasetFolder(root)
    expected = identity.as_dict()
    for shard in folder.complete_shards():
        marker = folder.marker(shard) or {}
        differ = [f"{k}: {marker.get(k)!r} on disk, {v!r} now" for k, v in expected.items()
                  if marker.get(k) != v]
        if differ:
            raise OutputError(
                f"{folder.root}: its shards were generated differently ({'; '.join(differ)}, "
                f"first seen in shard {shard}); resuming would mix outputs that are not "
                "byte-compatible. Run on the same model and hardware (set generator.device and "
                "generator.dtype explicitly), or use another --out.")


def prepare(root: str | Path, spec: Spec, identity: GenerationIdentity | None = None) -> PreparedOutput:
    """Check the folder, write spec.yaml (what runs now), and plan.parquet/plan.json once.

    With `identity`, also refuse a folder whose shards another model or hardware made.
    Nothing is written before every check has passed.
    """
    folder = DatasetFolder(root)
    check_identity(folder.root, spec)
    if identity is not None:
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
        return PreparedOutput(folder, s_hash, p_hash, info["shards"])
    record_spec(folder, spec)
    written = planning.write_plan(spec, folder.plan_file)
    counts = planning.label_counts(spec)
    write_json_atomic(folder.plan_info_file, {
        "format_version": FORMAT_VERSION, "name": spec.name, "spec_hash": s_hash,
        "plan_hash": written, "count": sum(counts.values()), "label_counts": counts,
        "shards": planning.shard_count(spec), "shard_size": spec.shards.size,
        "batch_size": spec.generator.batch_size})
    return PreparedOutput(folder, s_hash, written, planning.shard_count(spec))


def record_spec(folder: DatasetFolder, spec: Spec) -> None:
    """Make DIR/spec.yaml the resolved spec that is running now (rewritten only if it differs)."""
    text = resolved_yaml(spec)
    if not folder.spec_file.is_file() or folder.spec_file.read_text(encoding="utf-8") != text:
        write_text_atomic(folder.spec_file, text)
