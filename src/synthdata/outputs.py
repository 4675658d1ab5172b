"""The output folder: one run at a time (a lock), one dataset per folder, plan written once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import filelock
import yaml

from synthdata import plan as planning
from synthdata.errors import OutputError
from synthdata.fsutil import write_json_atomic, write_text_atomic
from synthdata.spec import Spec, data_view, resolved_dict, resolved_yaml, spec_hash

LOCK_NAME = ".synthdata.lock"


@dataclass(frozen=True)
class PreparedOutput:
    """An output folder ready for generation: its plan written and its identity checked."""

    root: Path
    spec_hash: str
    plan_hash: str
    shard_count: int


def acquire_lock(root: Path, wait_seconds: float = 0) -> filelock.FileLock:
    """Take the folder's run lock, or refuse clearly if another run holds it."""
    root.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(root / LOCK_NAME))
    try:
        lock.acquire(timeout=wait_seconds)
    except filelock.Timeout:
        raise OutputError(f"{root}: another synthdata run is using this output folder "
                          f"(lock {root / LOCK_NAME}); wait for it to finish or choose another --out") from None
    return lock


def _changed_fields(old: dict, new: dict) -> list[str]:
    old, new = data_view(old), data_view(new)
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k) != new.get(k)]


def check_identity(root: Path, spec: Spec) -> None:
    """Refuse a folder that holds another dataset, or files that synthdata did not write."""
    spec_file = root / "spec.yaml"
    if spec_file.is_file():
        old = yaml.safe_load(spec_file.read_text())
        new = resolved_dict(spec)
        old_hash = json.loads((root / "plan.json").read_text())["spec_hash"] \
            if (root / "plan.json").is_file() else None
        changed = _changed_fields(old, new)
        if changed or (old_hash and old_hash != spec_hash(spec)):
            raise OutputError(
                f"{root} already holds a dataset made from a different spec (changed: "
                f"{', '.join(changed) or 'plan'}); refusing to mix datasets. "
                "Use another --out, or delete the folder to start over.")
        return
    others = [p.name for p in root.iterdir() if not p.name.startswith(".")] if root.is_dir() else []
    if others:
        raise OutputError(f"{root} is not empty and holds no synthdata dataset "
                          f"(found {', '.join(sorted(others)[:5])}); choose an empty or new folder")


def prepare(root: Path, spec: Spec) -> PreparedOutput:
    """Write spec.yaml, plan.parquet and plan.json once; on resume verify the plan is unchanged."""
    check_identity(root, spec)
    s_hash = spec_hash(spec)
    info_file = root / "plan.json"
    if info_file.is_file() and (root / "plan.parquet").is_file():
        info = json.loads(info_file.read_text())
        p_hash = planning.plan_hash(spec)
        if info["plan_hash"] != p_hash:
            raise OutputError(f"{root}: the plan this spec makes now ({p_hash[:12]}) differs from the "
                              f"one on disk ({info['plan_hash'][:12]}), e.g. after a synthdata upgrade; "
                              "use another --out")
        return PreparedOutput(root, s_hash, p_hash, info["shards"])
    write_text_atomic(root / "spec.yaml", resolved_yaml(spec))
    p_hash = planning.write_plan(spec, root / "plan.parquet")
    if spec.cohort is not None:
        from synthdata.cohort.report import write_cohort_summary

        write_cohort_summary(spec, root)
    counts = planning.label_counts(spec)
    write_json_atomic(info_file, {
        "spec_hash": s_hash, "plan_hash": p_hash, "count": sum(counts.values()),
        "label_counts": counts, "shards": planning.shard_count(spec),
        "shard_size": spec.shards.size, "batch_size": spec.generator.batch_size})
    return PreparedOutput(root, s_hash, p_hash, planning.shard_count(spec))
