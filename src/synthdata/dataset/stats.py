"""`stats.json`: counts planned / generated / accepted per label and decision, and the screening
state. No timings, so it is a stable DVC metric: the same dataset always gives the same file."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synthdata.dataset import records
from synthdata.dataset.manifest import manifest_table
from synthdata.folder import DatasetFolder
from synthdata.fsutil import write_json_atomic

def value_counts(column: pa.ChunkedArray | pa.Array) -> dict:
    """{value: count} of a column (nulls left out)."""
    return {r["values"]: r["counts"] for r in pc.value_counts(column).to_pylist()}


def planned_counts(out_dir: str | Path) -> dict[str, int]:
    """Planned samples per label, in spec order (from plan.json, else plan.parquet)."""
    folder = DatasetFolder(out_dir)
    order = list(records.spec_data(folder.root)["labels"])
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
                      "state": (state := records.screening_state(root)),
                      "against_real_images": state == records.SCREENED,
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
