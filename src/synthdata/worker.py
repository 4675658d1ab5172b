"""What runs on a worker: a per-worker model cache and the body of the one-task-per-shard job.

The cache lives in this importable module (never `__main__`), so Dask and Ray workers load a
model once per process; under the thread runner each worker thread gets its own pipeline
(pipelines are not thread-safe), guarded by a lock. Every load is recorded in
`DIR/workers/` so tests and auditors can see how many loads happened where.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from synthdata import plan as planning
from synthdata.fsutil import atomic_path, write_json_atomic
from synthdata.generators.base import ImageGenerator, SampleRequest
from synthdata.generators.diffusers_gen import DiffusersGenerator
from synthdata.shards import Sample, clear_shard, encode_png, shard_name, write_marker, write_tar
from synthdata.spec import Spec

_LOCK = threading.Lock()
_GENERATORS: dict[tuple, ImageGenerator] = {}
_LOADS: dict[str, int] = {}
_SLOTS: dict[int, int] = {}


@dataclass(frozen=True)
class JobInfo:
    """What every shard task shares: hashes and the model fingerprint for the metadata."""

    spec_hash: str
    plan_hash: str
    model_fingerprint: str
    device: str = "auto"
    gpu_count: int = 0


def worker_id() -> str:
    """host-pid-thread of the calling worker."""
    return f"{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}"


def _worker_device(job: JobInfo) -> str:
    """Pin each worker thread to one GPU (round robin) when the spec says auto."""
    if job.device != "auto" or job.gpu_count <= 1:
        return job.device
    tid = threading.get_ident()
    with _LOCK:
        slot = _SLOTS.setdefault(tid, len(_SLOTS))
    return f"cuda:{slot % job.gpu_count}"


def get_generator(spec: Spec, job: JobInfo, out_dir: str | Path) -> ImageGenerator:
    """This worker's generator for the spec, loaded once and reused for every shard."""
    device = _worker_device(job)
    key = (spec.generator.model_dump_json(), device, threading.get_ident())
    with _LOCK:
        gen = _GENERATORS.get(key)
        if gen is None:
            gen = DiffusersGenerator(spec.generator, device=device)
            gen.load()
            _GENERATORS[key] = gen
            wid = worker_id()
            _LOADS[wid] = _LOADS.get(wid, 0) + 1
            write_json_atomic(Path(out_dir) / "workers" / f"{wid}.json",
                              {"worker": wid, "loads": _LOADS[wid], "device": gen.describe()["device"],
                               "model": spec.generator.model})
    return gen


def _requests(rows: list[dict]) -> list[SampleRequest]:
    return [SampleRequest(key=r["key"], prompt=r["prompt"], negative_prompt=r["negative_prompt"],
                          seed=r["seed"], steps=r["steps"], guidance_scale=r["guidance_scale"])
            for r in rows]


def plan_batches(rows: list[dict]) -> Iterator[list[list[dict]]]:
    """The plan batches of a shard, each as its pipeline calls: rows split by (steps, guidance)."""
    batches: dict[int, list[dict]] = {}
    for r in rows:
        batches.setdefault(r["batch"], []).append(r)
    for b in sorted(batches):
        calls: dict[tuple, list[dict]] = {}
        for r in batches[b]:
            calls.setdefault((r["steps"], r["guidance_scale"]), []).append(r)
        yield list(calls.values())


def sample_metadata(row: dict, spec: Spec, job: JobInfo, call_size: int, dtype: str) -> dict:
    """The KEY.json of a sample: everything needed to trace and replay it."""
    gen = spec.generator
    return {
        "key": row["key"], "index": row["index"], "label": row["label"],
        "label_index": row["label_index"], "prompt": row["prompt"],
        "negative_prompt": row["negative_prompt"], "vars": json.loads(row["vars"]),
        "seed": row["seed"], "shard": row["shard"], "batch": row["batch"], "batch_size": call_size,
        "steps": row["steps"], "guidance_scale": row["guidance_scale"], "height": gen.height,
        "width": gen.width, "scheduler": gen.scheduler, "dtype": dtype,
        "model": {"id": gen.model, "revision": gen.revision, "fingerprint": job.model_fingerprint},
        "spec_hash": job.spec_hash, "plan_hash": job.plan_hash,
    }


def _samples(spec: Spec, job: JobInfo, gen: ImageGenerator, rows: list[dict],
             pool: ThreadPoolExecutor) -> Iterator[tuple[Sample, dict]]:
    """Generate call by call; PNG encoding of one call overlaps generation of the next."""
    dtype = gen.describe()["dtype"]
    pending: deque = deque()
    for calls in plan_batches(rows):
        batch = []
        for call in calls:
            images = gen.generate(_requests(call))
            batch += [(row, len(call), pool.submit(encode_png, image)) for row, image in zip(call, images)]
        pending.extend(sorted(batch, key=lambda entry: entry[0]["index"]))
        while pending and pending[0][2].done():
            yield _finish(spec, job, dtype, *pending.popleft())
    while pending:
        yield _finish(spec, job, dtype, *pending.popleft())


def _finish(spec, job, dtype, row, call_size, future) -> tuple[Sample, dict]:
    import hashlib

    png = future.result()
    meta = sample_metadata(row, spec, job, call_size, dtype)
    sample = Sample(key=row["key"], png=png, meta=meta, label_index=row["label_index"],
                    prompt=row["prompt"])
    record = {**row, "batch_size": call_size, "png_sha256": hashlib.sha256(png).hexdigest(),
              "png_bytes": len(png)}
    return sample, record


def generate_shard(spec_data: dict, out_dir: str, shard: int, job_data: dict,
                   threads: int = 1) -> dict:
    """Generate one shard into DIR/raw: tar, rows parquet, then completion marker."""
    spec, job = Spec.model_validate(spec_data), JobInfo(**job_data)
    torch.set_num_threads(threads)
    raw = Path(out_dir) / "raw"
    clear_shard(raw, shard)
    rows = planning.shard_rows(spec, shard).to_pylist()
    gen = get_generator(spec, job, out_dir)
    records: list[dict] = []
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="png") as pool:

        def samples() -> Iterator[Sample]:
            for sample, record in _samples(spec, job, gen, rows, pool):
                records.append(record)
                yield sample

        count = write_tar(raw / f"{shard_name(shard)}.tar", samples())
    with atomic_path(raw / f"{shard_name(shard)}.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(records), tmp)
    write_marker(raw, shard, {"count": count, "spec_hash": job.spec_hash, "plan_hash": job.plan_hash})
    return {"shard": shard, "count": count, "worker": worker_id()}


def job_as_dict(job: JobInfo) -> dict:
    """JobInfo as plain data for task arguments."""
    return asdict(job)
