"""Reading a dataset folder's records back: the resolved spec, complete and accepted shards,
raw rows, the screening table and its state (`screening_state`: whether the samples were
compared with real images). What the auditor's files are made from: `manifest`
(manifest.parquet), `stats` (stats.json) and `run_record` (run.json) write them."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from synthdata.folder import DatasetFolder
from synthdata.folder.shards import split_member


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
            out.setdefault(split_member(name)[0], folder.relative(tar))
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
