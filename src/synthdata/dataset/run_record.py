"""`run.json`: how the run was made (resolved spec, hashes, model fingerprint, scheduler,
library versions, git commit, engine, Prefect flow-run id, timings). It names no absolute
local path: real-data locations by pseudonym, other paths relative to the dataset folder or
by their last component (`DIR/spec.yaml` keeps this machine's paths). It records facts only
the running flow knows, so it is written by the flow, never rebuilt from the folder."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from synthdata import privacy
from synthdata.folder import DatasetFolder
from synthdata.fsutil import write_json_atomic
from synthdata.generation.fingerprint import scheduler_config
from synthdata.generation.trained import generator_training
from synthdata.libraries import library_versions
from synthdata.spec import Spec, resolved_dict

def git_info(path: str | Path) -> dict | None:
    """Commit of the git repository holding `path` and whether that file has local changes."""
    p = Path(path).resolve()
    folder = p if p.is_dir() else p.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                                  timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    top = git("rev-parse", "--show-toplevel")
    status = git("status", "--porcelain", "--", str(p))
    return {"commit": commit, "repository": top,
            "path": str(p.relative_to(top)) if top and p.is_relative_to(top) else str(p),
            "dirty": bool(status)}


def _scheduler_record(spec: Spec) -> dict:
    if spec.generator.model == "builtin:procedural":
        return {"name": spec.generator.scheduler, "used": False,
                "note": "builtin:procedural draws phantoms; no scheduler runs"}
    base = scheduler_config(spec.generator)
    record = {"name": spec.generator.scheduler, "model_default": base}
    from synthdata.generation.generators.diffusers_gen import SCHEDULER_CLASSES  # deferred: loads diffusers, torch, transformers

    cls = SCHEDULER_CLASSES[spec.generator.scheduler]
    record["class"] = cls.__name__
    record["config"] = json.loads(json.dumps(dict(cls.from_config(base).config), default=str))
    return record


def model_card_license(folder: str | Path) -> str | None:
    """`license:` from the front matter of a model folder's README.md (its model card), if any."""
    readme = Path(folder) / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    try:
        front = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError as exc:
        return f"unreadable model card front matter ({type(exc).__name__})"
    lic = front.get("license") if isinstance(front, dict) else None
    return str(lic) if lic else None


def write_run_record(out_dir: str | Path, spec: Spec, *, spec_hash: str, plan_hash: str,
                     model_fingerprint: Any, engine: str, workers: int | str, threads: int,
                     flow_run_id: str | None = None, timings: dict | None = None,
                     spec_path: str | Path | None = None, extra: dict | None = None) -> Path:
    """Write DIR/run.json atomically.

    `spec` is the Spec as run; `model_fingerprint` a fingerprint.ModelFingerprint (its file
    hashes are recorded too) or the hex string; `spec_path` is the user's spec file, whose git
    commit is recorded when it lies in a git repository. `timings` (seconds) is the only
    wall-clock-dependent field; a `recorded_at` UTC time is added to it.
    """
    fp = model_fingerprint
    model = {"id": spec.generator.model, "revision": spec.generator.revision}
    if hasattr(fp, "as_dict"):
        details = fp.as_dict()
        model.update(fingerprint=details["fingerprint"], folder=details["folder"], files=details["files"],
                     textual_inversion=details["textual_inversion"], lora=details["lora"],
                     commit=details.get("commit"), license=model_card_license(details["folder"]))

        # what `synthdata train` made this model (and adapters) from: the lineage chain
        model["training"] = generator_training(spec.generator)
    else:
        model["fingerprint"] = str(fp)
    record = {
        "synthdata_version": library_versions().get("synthdata"),
        "spec": resolved_dict(spec),
        "spec_path": None if spec_path is None else str(spec_path),
        "spec_hash": spec_hash,
        "plan_hash": plan_hash,
        "model": model,
        "scheduler": _scheduler_record(spec),
        "libraries": library_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git": git_info(spec_path) if spec_path is not None else None,
        "execution": {"engine": engine, "workers": workers, "threads_per_worker": threads},
        "prefect": {"flow_run_id": None if flow_run_id is None else str(flow_run_id)},
        "timings": {**(timings or {}),
                    "recorded_at": datetime.now(UTC).isoformat(timespec="seconds")},
        **(extra or {}),
    }
    path = DatasetFolder(out_dir).run_file
    write_json_atomic(path, _public_record(json.loads(json.dumps(record, default=str)), out_dir))
    return path


REFERENCE_PATH_KIND = "reference-path"


def _public_record(record: dict, out_dir: str | Path) -> dict:
    """run.json as published: real-data locations (memorization.reference) by pseudonym, every
    other absolute local path relative to the dataset folder or by its last component
    (`privacy.public_paths`). DIR/spec.yaml keeps the machine's paths for `screen`/`reproduce`."""

    mem = (record.get("spec") or {}).get("memorization") or {}
    refs = [r for r in mem.get("reference") or [] if isinstance(r, str) and Path(r).is_absolute()]
    names = privacy.remember(refs, REFERENCE_PATH_KIND) if refs else {}
    if names:
        mem["reference"] = [names.get(r, r) for r in mem["reference"]]
    return privacy.public_paths(record, out_dir)


def add_run_phases(out_dir: str | Path, phases: dict) -> None:
    """Add phase timings ({phase: progress.phase_timing}) measured after run.json was written
    (the records' own) to its `timings.phases`; nothing else changes."""
    run = read_run_record(out_dir)
    if run is None:
        return
    run.setdefault("timings", {}).setdefault("phases", {}).update(phases)
    write_json_atomic(DatasetFolder(out_dir).run_file, run)


def read_run_record(out_dir: str | Path) -> dict | None:
    """DIR/run.json as data, or None when the folder has none."""
    path = DatasetFolder(out_dir).run_file
    return json.loads(path.read_text()) if path.is_file() else None
