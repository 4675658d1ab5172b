"""The auditor's records of a dataset folder: manifest.parquet, stats.json and run.json.

- `manifest.parquet`: one row per generated sample, accepted or not, built from the raw
  per-shard row tables, the accepted shards and (when screening ran) `screening.parquet`.
- `stats.json`: counts planned / generated / accepted per label and decision, and the screening
  state (`screening_state`: whether the samples were compared with real images). No timings,
  so it is a stable DVC metric: the same dataset always gives the same file.
- `run.json`: how the run was made (resolved spec, hashes, model fingerprint, scheduler,
  library versions, git commit, engine, Prefect flow-run id, timings). It names no absolute
  local path: real-data locations by pseudonym, other paths relative to the dataset folder or
  by their last component (`DIR/spec.yaml` keeps this machine's paths).

All three are written atomically; each can be rewritten at any time from the folder alone
(except run.json, which records facts only the running flow knows).
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from synthdata.folder import DatasetFolder
from synthdata.fsutil import atomic_path, write_json_atomic
from synthdata.spec import Spec, resolved_dict

LIBRARIES = ("synthdata", "torch", "diffusers", "transformers", "accelerate", "safetensors", "peft",
             "prefect", "webdataset", "faiss-cpu", "faiss-gpu", "numpy", "pyarrow", "pandas",
             "Pillow", "dvc", "pydantic")

MANIFEST_SCHEMA = pa.schema([
    ("key", pa.string()), ("index", pa.int64()), ("label", pa.string()), ("label_index", pa.int32()),
    ("prompt", pa.string()), ("negative_prompt", pa.string()), ("vars", pa.string()),
    ("template_index", pa.int32()), ("seed", pa.int64()), ("steps", pa.int32()),
    ("guidance_scale", pa.float64()), ("shard", pa.int32()), ("batch", pa.int32()),
    ("batch_size", pa.int32()), ("raw_tar", pa.string()), ("png_sha256", pa.string()),
    ("png_bytes", pa.int64()), ("decision", pa.string()), ("nearest_real_id", pa.string()),
    ("score", pa.float64()), ("accepted", pa.bool_()), ("accepted_tar", pa.string()),
    ("model_fingerprint", pa.string()), ("spec_hash", pa.string()), ("plan_hash", pa.string()),
    ("attempt", pa.int32()), ("generated_seed", pa.int64()), ("qc_passed", pa.bool_()),
    ("qc_reason", pa.string()),
])


def spec_data(out_dir: str | Path) -> dict:
    """The resolved spec of a dataset folder (DIR/spec.yaml) as plain data."""
    return yaml.safe_load(DatasetFolder(out_dir).spec_file.read_text(encoding="utf-8"))


def complete_shards(out_dir: str | Path) -> list[int]:
    """Complete raw shards of a dataset folder (`DatasetFolder.shard_state`), in order."""
    return DatasetFolder(out_dir).complete_shards()


def tar_members(tar_path: str | Path) -> list[str]:
    """Member names of a tar, in archive order (headers only)."""
    with tarfile.open(tar_path, "r:") as tar:
        return tar.getnames()


def accepted_keys(out_dir: str | Path) -> dict[str, str] | None:
    """key -> accepted tar (relative to DIR) for every sample in DIR/shards; None without shards/."""
    folder = DatasetFolder(out_dir)
    if not folder.shards_dir.is_dir():
        return None
    out: dict[str, str] = {}
    for tar in folder.accepted_tars():
        for name in tar_members(tar):
            out.setdefault(name.split(".", 1)[0], folder.relative(tar))
    return out


def raw_table(out_dir: str | Path) -> pa.Table | None:
    """Rows of every complete raw shard, with raw_tar, model fingerprint and hashes; None if none."""
    folder = DatasetFolder(out_dir)
    tables = []
    for shard in folder.complete_shards():
        marker = folder.marker(shard) or {}
        table = pq.read_table(folder.raw_rows(shard))
        extra = {"raw_tar": folder.relative(folder.raw_tar(shard)),
                 "model_fingerprint": marker.get("model_fingerprint") or _tar_fingerprint(folder, shard),
                 "spec_hash": marker.get("spec_hash"), "plan_hash": marker.get("plan_hash")}
        for name, value in extra.items():
            table = table.append_column(name, pa.array([value] * table.num_rows, pa.string()))
        tables.append(table)
    return pa.concat_tables(tables, promote_options="default") if tables else None


def _tar_fingerprint(folder: DatasetFolder, shard: int) -> str | None:
    """The model fingerprint in the first KEY.json of a raw tar (format-1 markers lack it)."""
    with tarfile.open(folder.raw_tar(shard), "r:") as tar:
        for member in tar:
            if member.name.endswith(".json"):
                return (json.loads(tar.extractfile(member).read()).get("model") or {}).get("fingerprint")
    return None


def raw_rows(out_dir: str | Path) -> list[dict]:
    """raw_table as a list of dicts (for small datasets and tests)."""
    table = raw_table(out_dir)
    return [] if table is None else table.to_pylist()


SCREENED, NOT_SCREENED, NOT_RUN = "screened", "not-screened", "not-run"
SCREENING_STATES = {
    SCREENED: "screened against real images",
    NOT_SCREENED: ("NOT screened against real images: screening ran without a real reference "
                   "(no memorization.reference), so no sample was compared with real images"),
    NOT_RUN: "not screened: screening has not run",
}


def screening_state(out_dir: str | Path) -> str:
    """Whether the dataset's samples were compared with real images: `screened`,
    `not-screened` (screening ran without a real reference; its samples carry the decision
    `not-screened`, never `accept`) or `not-run` (no screening.parquet).

    Read from screening.parquet's `references` metadata (the prepared real references); a
    table written before that metadata counts as screened when it names a nearest real image.
    """
    path = DatasetFolder(out_dir).screening_file
    if not path.is_file():
        return NOT_RUN
    meta = pq.read_schema(path).metadata or {}
    if b"references" in meta:
        return SCREENED if json.loads(meta[b"references"] or b"{}") else NOT_SCREENED
    nearest = pq.read_table(path, columns=["nearest_real_id"]).column(0)
    return SCREENED if pc.count(nearest).as_py() else NOT_SCREENED


def screening_table(out_dir: str | Path) -> pa.Table | None:
    """screening.parquet reduced to key, decision, nearest_real_id, score; None when not screened.

    Reads the columns the screening package writes (`screening.pipeline.DECISIONS_SCHEMA`):
    `decision`, `similarity` (the deciding score) and `nearest_real_id`.
    """
    path = DatasetFolder(out_dir).screening_file
    if not path.is_file():
        return None
    table = pq.read_table(path, columns=["key", "decision", "nearest_real_id", "similarity"])
    return pa.table({"key": table["key"], "decision": table["decision"],
                     "nearest_real_id": table["nearest_real_id"],
                     "score": pc.cast(table["similarity"], pa.float64())})


def screening_results(out_dir: str | Path, key: str | None = None) -> dict[str, dict] | None:
    """key -> that sample's row of screening.parquet (all columns); None when not screened.

    `score` repeats `similarity` (the deciding similarity). `key` reads only that sample.
    """
    path = DatasetFolder(out_dir).screening_file
    if not path.is_file():
        return None
    table = pq.read_table(path, filters=None if key is None else [("key", "=", key)])
    return {row["key"]: {**row, "score": row.get("similarity")} for row in table.to_pylist()}


def manifest_table(out_dir: str | Path) -> pa.Table:
    """The manifest as a table (see module docstring), ordered by sample index."""
    root = Path(out_dir)
    table = raw_table(root)
    if table is None:
        return MANIFEST_SCHEMA.empty_table()
    n = table.num_rows
    screened = screening_table(root)
    if screened is None:
        table = table.append_column("decision", pa.nulls(n, pa.string())) \
            .append_column("nearest_real_id", pa.nulls(n, pa.string())) \
            .append_column("score", pa.nulls(n, pa.float64()))
    else:
        table = table.join(screened, "key", join_type="left outer")
    accepted = accepted_keys(root)
    if accepted is None:
        table = table.append_column("accepted_tar", pa.nulls(table.num_rows, pa.string())) \
            .append_column("accepted", pa.nulls(table.num_rows, pa.bool_()))
    else:
        where = pa.table({"key": pa.array(list(accepted), pa.string()),
                          "accepted_tar": pa.array(list(accepted.values()), pa.string())})
        table = table.join(where, "key", join_type="left outer")
        table = table.append_column("accepted", pc.is_valid(table["accepted_tar"]))
    table = table.sort_by("index")
    columns = [table[f.name].cast(f.type) if f.name in table.column_names
               else pa.nulls(table.num_rows, f.type) for f in MANIFEST_SCHEMA]
    return pa.Table.from_arrays(columns, schema=MANIFEST_SCHEMA)


def write_manifest(out_dir: str | Path) -> Path:
    """Write DIR/manifest.parquet atomically from the folder's raw rows and screening results."""
    path = DatasetFolder(out_dir).manifest_file
    table = manifest_table(out_dir)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def value_counts(column: pa.ChunkedArray | pa.Array) -> dict:
    """{value: count} of a column (nulls left out)."""
    return {r["values"]: r["counts"] for r in pc.value_counts(column).to_pylist()}


def planned_counts(out_dir: str | Path) -> dict[str, int]:
    """Planned samples per label, in spec order (from plan.json, else plan.parquet)."""
    folder = DatasetFolder(out_dir)
    order = list(spec_data(folder.root)["labels"])
    counts = folder.plan_info().get("label_counts") or {}
    return {k: int(counts.get(k, 0)) for k in order}


def dataset_stats(out_dir: str | Path, manifest: pa.Table | None = None) -> dict:
    """Counts per label and decision: planned, generated, accepted (deterministic, no timings)."""
    folder = DatasetFolder(out_dir)
    root = folder.root
    table = manifest if manifest is not None else (
        pq.read_table(folder.manifest_file) if folder.manifest_file.is_file() else manifest_table(root))
    planned = planned_counts(root)
    has_accepted = folder.shards_dir.is_dir()
    generated = value_counts(table["label"])
    accepted = value_counts(table.filter(pc.fill_null(table["accepted"], False))["label"])
    labels = list(planned) + sorted(set(generated) - set(planned))
    per_label = {k: {"planned": planned.get(k, 0), "generated": generated.get(k, 0),
                     "accepted": accepted.get(k, 0) if has_accepted else None} for k in labels}
    decisions = value_counts(pc.fill_null(table["decision"], "unscreened"))
    qc_failed = value_counts(table.filter(pc.equal(pc.fill_null(table["qc_passed"], True), False))["label"])
    for label, entry in per_label.items():
        entry["qc_failed"] = qc_failed.get(label, 0)
    scores = table["score"]
    max_score, mean_score = pc.max(scores).as_py(), pc.mean(scores).as_py()
    return {
        "samples": {"planned": sum(planned.values()), "generated": table.num_rows,
                    "accepted": sum(accepted.values()) if has_accepted else None},
        "labels": per_label,
        "decisions": dict(sorted(decisions.items())),
        "screening": {"ran": pc.count(table["decision"]).as_py() > 0,
                      "state": (state := screening_state(root)),
                      "against_real_images": state == SCREENED,
                      "max_score": None if max_score is None else round(max_score, 6),
                      "mean_score": None if mean_score is None else round(mean_score, 6)},
        "shards": {"complete": len(folder.complete_shards()),
                   "accepted": len(folder.accepted_tars())},
    }


def write_stats(out_dir: str | Path) -> Path:
    """Write DIR/stats.json (the DVC metrics file) atomically."""
    path = DatasetFolder(out_dir).stats_file
    write_json_atomic(path, dataset_stats(out_dir))
    return path


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape the output (absent ones left out)."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


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
    from synthdata.fingerprint import scheduler_config

    if spec.generator.model == "builtin:procedural":
        return {"name": spec.generator.scheduler, "used": False,
                "note": "builtin:procedural draws phantoms; no scheduler runs"}
    base = scheduler_config(spec.generator)
    record = {"name": spec.generator.scheduler, "model_default": base}
    from synthdata.generators.diffusers_gen import SCHEDULER_CLASSES

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
        from synthdata.training import generator_training

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
    from synthdata import privacy

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
