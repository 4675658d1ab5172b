"""Screening reads what the real generation worker writes (tiny built-in model, one shard)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq

from synthdata.screening.pipeline import screen_dataset
from synthdata.screening.shardio import embeddings_path, read_members
from synthdata.plan.load import load_spec
from synthdata.spec.models import Memorization

SPEC = Path(__file__).resolve().parents[2] / "specs" / "demo-tiny.yaml"


def test_screens_a_worker_shard(tmp_path, reference_dir):
    from synthdata.generation.worker import JobInfo, generate_shard, job_as_dict

    spec = load_spec(SPEC)
    data = spec.model_dump(mode="json")
    data.update(count=6, shards={"size": 6})
    data["generator"].update(steps=2, batch_size=6)
    out = tmp_path / "ds"
    job = JobInfo(spec_hash="test", plan_hash="test", model_fingerprint="test")
    generate_shard(data, str(out), 0, job_as_dict(job))
    rows = pq.read_table(out / "raw" / "shard-000000.parquet").to_pylist()

    cfg = Memorization(reference=[str(reference_dir / "dicom")], matchers="pixel", threshold=0.9)
    summary = screen_dataset(out, cfg)
    table = pq.read_table(out / "screening.parquet").to_pylist()
    assert [r["key"] for r in table] == [r["key"] for r in rows]
    assert [r["label"] for r in table] == [r["label"] for r in rows]
    assert summary.decisions["accept"] == 6  # noise from a random-weight model copies nothing
    accepted = dict(read_members(out / "shards" / "shard-000000.tar"))
    for r in rows:
        assert hashlib.sha256(accepted[f"{r['key']}.png"]).hexdigest() == r["png_sha256"]
    report = json.loads((out / "screening_report.json").read_text())
    fingerprint = report["embedder"]["matchers"]["pixel"]["fingerprint"]
    assert embeddings_path(out, 0, fingerprint).is_file()  # kept beside the raw shard
