"""Engines: the demo spec on local Ray and Dask clusters gives the local engine's bytes; a worker
killed part-way through a shard is survived; each worker loads the model once; a CUDA
out-of-memory error halves the pipeline call and the replay helper rebuilds the calls made."""

from __future__ import annotations

import io
import json
import os
import signal
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from tests.conftest import DEMO_SPEC

pytestmark = pytest.mark.e2e


def tar_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "raw").glob("*.tar"))}


def worker_records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "workers").glob("*.json"))]


def assert_loaded_once_per_worker(root: Path) -> list[dict]:
    records = worker_records(root)
    assert records, "workers wrote no records"
    assert {r["pid"] for r in records}.isdisjoint({os.getpid()}), "shards ran in worker processes"
    assert [r["loads"] for r in records] == [1] * len(records), records
    assert [r["process_loads"] for r in records] == [1] * len(records), "one load per worker process"
    assert [r["torch_threads"] for r in records] == [1] * len(records), "threads pinned per worker"
    done = sorted(s for r in records for s in r["shards"])
    assert done == [0, 1, 2], "every shard done exactly once"
    return records


def test_ray_local_cluster_gives_the_local_engines_tars(demo_run, tmp_path):
    from synthdata.flow import synthdata_run

    out = tmp_path / "ray"
    result = synthdata_run(str(DEMO_SPEC), out_dir=str(out), engine="ray", workers=2)
    assert result["generated"] == 3
    assert tar_bytes(out) == tar_bytes(demo_run)
    records = assert_loaded_once_per_worker(out)
    assert len(records) <= 2, "two Ray workers, each keeping its model between shards"
    assert os.environ.get("RAY_AUTH_MODE") == "disabled"


def _kill_a_worker_mid_shard(out: Path, killed: dict, stop: threading.Event) -> None:
    """Kill (SIGKILL, from outside) the first worker process seen writing a shard's tar."""
    deadline = time.time() + 300
    while not stop.is_set() and time.time() < deadline:
        for record in worker_records(out) if (out / "workers").is_dir() else []:
            shard, pid = record["current_shard"], record["pid"]
            if shard is None or shard in record["shards"] or pid == os.getpid():
                continue
            partial = list((out / "raw").glob(f".shard-{shard:06d}.tar.tmp-{pid}"))
            if partial and partial[0].exists() and partial[0].stat().st_size > 0:
                os.kill(pid, signal.SIGKILL)
                killed.update(pid=pid, shard=shard, worker=record["worker"])
                return
        time.sleep(0.05)


def test_dask_worker_killed_mid_shard_gives_a_complete_identical_dataset(demo_run, tmp_path):
    from synthdata.flow import synthdata_run

    out = tmp_path / "dask"
    killed: dict = {}
    stop = threading.Event()
    killer = threading.Thread(target=_kill_a_worker_mid_shard, args=(out, killed, stop), daemon=True)
    killer.start()
    try:
        result = synthdata_run(str(DEMO_SPEC), out_dir=str(out), engine="dask", workers=2)
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was caught part-way through a shard"
    assert result["generated"] == 3 and result["skipped"] == 0
    assert tar_bytes(out) == tar_bytes(demo_run), "complete and byte-identical to the local engine"
    assert not list((out / "raw").glob(".*tmp*")), "the killed worker's partial tar was cleared"
    records = assert_loaded_once_per_worker(out)
    by_worker = {r["worker"]: r for r in records}
    assert killed["shard"] not in by_worker[killed["worker"]]["shards"]
    redone = [r for r in records if killed["shard"] in r["shards"]]
    assert len(redone) == 1 and redone[0]["pid"] != killed["pid"], "another process redid the shard"


def test_dask_gpu_cluster_pins_one_device_per_worker():
    from distributed import Client

    from synthdata.generation.engines import pinned_dask_cluster

    with pinned_dask_cluster(workers=3, gpu_ids=["5", "7"]) as cluster, Client(cluster) as client:
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
    assert sorted(seen.values()) == ["5", "5", "7"], "worker i on GPU i mod n, one GPU each"


@pytest.fixture
def oom_generator():
    from synthdata.generation.generators.diffusers_gen import DiffusersGenerator

    class TinyGPU(DiffusersGenerator):
        """The real tiny pipeline, with a device that holds at most `fits` images per call."""

        fits = 3

        def __init__(self, cfg):
            super().__init__(cfg, device="cpu")
            self.attempts: list[int] = []
            self.calls: list[list[str]] = []

        def generate(self, batch):
            self.attempts.append(len(batch))
            if len(batch) > self.fits:
                raise torch.cuda.OutOfMemoryError(f"CUDA out of memory: {len(batch)} images")
            self.calls.append([r.key for r in batch])
            return super().generate(batch)

    return TinyGPU


def test_cuda_oom_halves_the_call_and_records_the_size_replay_rebuilds(oom_generator, tmp_path):
    from synthdata.generation.fingerprint import model_fingerprint
    from synthdata.generation.generators.diffusers_gen import DiffusersGenerator
    from synthdata.dataset.prepare import prepare
    from synthdata.plan.rows import shard_rows
    from synthdata.plan.load import load_spec
    from synthdata.plan.rows import plan_batches, replay_calls
    from synthdata.generation.shardgen import CallLimit, JobInfo, requests, write_shard

    demo = load_spec(DEMO_SPEC)  # 2 denoising steps: the calls matter here, not the images
    spec = demo.model_copy(update={"generator": demo.generator.model_copy(update={"steps": 2})})
    out = tmp_path / "oom"
    prepared = prepare(out, spec)
    job = JobInfo(prepared.spec_hash, prepared.plan_hash, model_fingerprint(spec.generator).fingerprint)
    gen = oom_generator(spec.generator)
    gen.load()
    limit = CallLimit()
    assert write_shard(spec, job, gen, out, 0, limit) == 16

    rows = shard_rows(spec, 0).to_pylist()
    planned = [len(c) for calls in plan_batches(rows) for c in calls]
    assert planned == [2, 6, 4, 4], "the demo plan's calls for shard 0"
    assert gen.attempts == [2, 6, 3, 3, 3, 1, 3, 1], (
        "2 fits; 6 runs out of memory and is retried as 3 + 3; later calls start at 3")
    assert (limit.size, limit.splits) == (3, 1)

    recorded = pq.read_table(out / "raw" / "shard-000000.parquet").to_pylist()
    sizes = {r["key"]: r["batch_size"] for r in recorded}
    assert sizes == {k: len(call) for call in gen.calls for k in call}, "each row: its call's size"
    assert set(sizes.values()) == {1, 2, 3}
    with tarfile.open(out / "raw" / "shard-000000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    assert {k: json.loads(members[f"{k}.json"])["batch_size"] for k in sizes} == sizes

    replayed = list(replay_calls(rows, sizes))
    assert [[r["key"] for r in call] for call in replayed] == gen.calls, "the exact calls made"
    assert [len(c) for c in replay_calls(rows)] == planned, "without sizes: the planned calls"

    plain = DiffusersGenerator(spec.generator, device="cpu")
    plain.load()
    call = replayed[2]  # the second part of the call that ran out of memory
    for row, image in zip(call, plain.generate(requests(call))):
        stored = np.asarray(Image.open(io.BytesIO(members[f"{row['key']}.png"])))
        assert np.array_equal(stored, image), "replaying the recorded call gives the stored pixels"


def test_replay_refuses_sizes_that_do_not_cut_a_call():
    from synthdata.plan.rows import shard_rows
    from synthdata.plan.load import load_spec
    from synthdata.generation.worker import plan_batches, replay_calls

    rows = shard_rows(load_spec(DEMO_SPEC), 0).to_pylist()
    first = next(plan_batches(rows))[0]
    sizes = {r["key"]: 8 for r in rows}
    sizes[first[0]["key"]] = 3
    with pytest.raises(ValueError, match="consecutive parts"):
        list(replay_calls(rows, sizes))


def test_prefect_yaml_deploys_the_flow_with_spec_path_as_a_parameter():
    import inspect

    import yaml
    from prefect.flows import load_flow_from_entrypoint

    from tests.conftest import REPO

    config = yaml.safe_load((REPO / "flows" / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in config["deployments"]}
    assert deployments["synthdata-local"]["work_pool"]["name"] == "synthdata-process"
    assert deployments["synthdata-kubernetes"]["work_pool"]["job_variables"]["image"]
    for deployment in deployments.values():
        path, name = deployment["entrypoint"].split(":")
        flow = load_flow_from_entrypoint(f"{REPO / path}:{name}")
        assert flow.name == "synthdata-run"
        params = inspect.signature(flow.fn).parameters
        assert params["spec_path"].default is inspect.Parameter.empty, "asked for on each run"
        assert set(deployment["parameters"]) <= set(params)
