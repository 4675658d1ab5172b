"""The demo spec end to end through real Prefect flow runs: read back, determinism, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import webdataset as wds

from synthdata.plan.rows import label_counts
from synthdata.plan.load import load_spec
from tests.conftest import DEMO_SPEC, REPO

pytestmark = pytest.mark.e2e


def tar_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "raw").glob("*.tar"))}


def test_demo_end_to_end_reads_back_with_webdataset(demo_run):
    spec = load_spec(DEMO_SPEC)
    plan = pd.read_parquet(demo_run / "plan.parquet")
    tars = sorted(str(p) for p in (demo_run / "raw").glob("shard-*.tar"))
    assert len(tars) == 3
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode("rgb"))
    keys = [s["__key__"] for s in samples]
    assert keys == list(plan["key"]), "every planned sample once, in plan order"
    labels = Counter(spec.label_names[int(s["cls"])] for s in samples)
    assert dict(labels) == label_counts(spec) == {"normal": 24, "pneumonia": 14, "effusion": 10}
    first = samples[0]
    assert first["png"].shape == (64, 64, 3)
    meta = first["json"]
    row = plan.iloc[0]
    assert meta["prompt"] == first["txt"] == row["prompt"]
    assert meta["seed"] == row["seed"] and meta["label"] == row["label"]
    assert meta["model"]["fingerprint"] and meta["plan_hash"] == json.loads(
        (demo_run / "plan.json").read_text())["plan_hash"]


def test_demo_reads_back_with_hf_datasets(demo_run):
    import datasets

    tars = sorted(str(p) for p in (demo_run / "raw").glob("shard-*.tar"))
    ds = datasets.load_dataset("webdataset", data_files={"train": tars}, split="train")
    assert len(ds) == 48
    assert {"png", "json", "cls", "txt"} <= set(ds.column_names)
    assert Counter(ds["cls"]) == Counter({0: 24, 1: 14, 2: 10})


def test_second_run_with_other_worker_count_is_byte_identical(demo_run, tmp_path):
    from synthdata.flow import synthdata_run

    out = tmp_path / "again"
    synthdata_run(str(DEMO_SPEC), out_dir=str(out), workers=1)
    assert tar_bytes(out) == tar_bytes(demo_run)
    records = [json.loads(p.read_text()) for p in (out / "workers").glob("*.json")]
    assert len(records) == 1 and records[0]["shards"] == [0, 1, 2], "one worker ran every shard"
    assert records[0]["loads"] <= 1, "the run loaded the model at most once (0: this process had it)"


def test_rerun_skips_complete_shards_and_refuses_a_changed_spec(demo_run, tmp_path):
    from synthdata.errors import OutputError
    from synthdata.flow import synthdata_run

    before = {p: p.stat().st_mtime_ns for p in (demo_run / "raw").iterdir()}
    result = synthdata_run(str(DEMO_SPEC), out_dir=str(demo_run))
    assert result["generated"] == 0 and result["skipped"] == 3
    assert {p: p.stat().st_mtime_ns for p in (demo_run / "raw").iterdir()} == before
    changed = tmp_path / "changed.yaml"
    changed.write_text(DEMO_SPEC.read_text().replace("seed: 20261123", "seed: 7"))
    with pytest.raises(OutputError, match="different spec.*seed"):
        synthdata_run(str(changed), out_dir=str(demo_run))


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_tars(demo_run, prefect_server, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    proc = subprocess.Popen(
        [sys.executable, "-m", "synthdata.cli", "run", str(DEMO_SPEC), "--out", str(out), "--workers", "2"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    try:
        while not list((out / "raw").glob("*.done.json")) if out.exists() else True:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "no shard completed in time"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    raw = out / "raw"
    finished = {p.name.removesuffix(".done.json") for p in raw.glob("*.done.json")}
    assert 0 < len(finished) < 3, "killed part-way"
    reference = tar_bytes(demo_run)
    for tar in raw.glob("*.tar"):  # a tar under its final name is always whole
        assert tar.read_bytes() == reference[tar.name]
    from synthdata.flow import synthdata_run

    result = synthdata_run(str(DEMO_SPEC), out_dir=str(out), workers=2)
    assert result["skipped"] == len(finished) and result["generated"] == 3 - len(finished)
    assert tar_bytes(out) == reference
    keys = [s["__key__"] for s in wds.WebDataset(sorted(str(p) for p in raw.glob("*.tar")),
                                                  shardshuffle=False)]
    assert len(keys) == len(set(keys)) == 48
    assert not list(raw.glob(".*tmp*")), "no temporary files left behind"


def test_prefect_shows_the_run_by_dataset_name_with_shard_logs_and_progress(demo_run, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterName,
        LogFilter,
        LogFilterFlowRunId,
    )

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=["demo-cxr", "generate-shards-demo-cxr"])))
        assert {"demo-cxr", "generate-shards-demo-cxr"} <= {r.name for r in runs}
        sub = [r.id for r in runs if r.name == "generate-shards-demo-cxr"]
        deadline, messages = time.time() + 30, []
        while time.time() < deadline:  # logs reach the server in batches
            messages = [log.message for log in client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=sub)))]
            if sum("samples in" in m for m in messages) >= 3:
                break
            time.sleep(0.5)
        for shard in range(3):
            assert any(m.startswith(f"shard {shard}: generating") for m in messages), messages
            assert any(m.startswith(f"shard {shard}: 16 samples in") for m in messages), messages
        progress = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["demo-cxr-progress"])))
        assert progress and max(a.data for a in progress) == 100.0


def test_every_failed_shard_is_reported_with_its_reason(prefect_server, tmp_path):
    from synthdata.flow import ShardFailure, generate_shards
    from synthdata.generation.worker import JobInfo, job_as_dict

    spec = load_spec(DEMO_SPEC).model_dump(mode="json")
    spec["generator"]["model"] = str(tmp_path / "no-model-here")
    with pytest.raises(ShardFailure) as info:
        generate_shards(spec, str(tmp_path / "out"), [0, 2], job_as_dict(JobInfo("s", "p", "f")), 1,
                        {0: 16, 1: 16, 2: 16}, "demo-cxr")
    assert set(info.value.failures) == {0, 2}
    text = str(info.value)
    assert "2 of 2 shards failed" in text and "shard 0: ModelError" in text and "shard 2: ModelError" in text
    assert "no-model-here" in text
