"""`manifest.parquet`: one row per generated sample, accepted or not, built from the raw
per-shard row tables, the accepted shards and (when screening ran) `screening.parquet`.
Written atomically; it can be rewritten at any time from the folder alone."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synthdata.dataset import records
from synthdata.folder import DatasetFolder
from synthdata.fsutil import atomic_path

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


def manifest_table(out_dir: str | Path) -> pa.Table:
    """The manifest as a table (see module docstring), ordered by sample index."""
    root = Path(out_dir)
    table = records.raw_table(root)
    if table is None:
        return MANIFEST_SCHEMA.empty_table()
    n = table.num_rows
    screened = records.screening_table(root)
    if screened is None:
        table = table.append_column("decision", pa.nulls(n, pa.string())) \
            .append_column("nearest_real_id", pa.nulls(n, pa.string())) \
            .append_column("score", pa.nulls(n, pa.float64()))
    else:
        table = table.join(screened, "key", join_type="left outer")
    accepted = records.accepted_keys(root)
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
