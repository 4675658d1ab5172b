"""What runs on a worker: a per-worker model cache and the body of the one-task-per-shard job.

The cache lives in this importable module (never `__main__`), so Dask and Ray worker processes
load a model once per process. Within a process, each concurrent worker (a thread of the local
engine) checks out a *slot*; a slot owns one pipeline (pipelines are not thread-safe) and, on a
multi-GPU machine, one GPU (slot i -> cuda:i mod n). Slots outlive threads, so a long-lived
process (tests, `prefect serve`) reuses its models across runs instead of leaking them.

Every worker writes `DIR/workers/<host>-<pid>-<slot>.json`: how often it loaded the model, on
which device, with how many torch threads, and which shards it ran, so tests and auditors can
see how many loads happened where.

A CUDA out-of-memory error on a pipeline call retries that call in halves (down to one image);
the size a sample was actually generated in is its `batch_size` (KEY.json, rows parquet), and
`plan.replay_calls` rebuilds the exact pipeline calls from those sizes for `reproduce`. The
lowered call size lasts for the rest of that shard only: a shard's batch cuts depend on its
plan and on the out-of-memory errors inside it, never on what the worker ran before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import sys
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
from synthdata.errors import SynthdataError
from synthdata.folder import DatasetFolder
from synthdata.fsutil import atomic_path, write_json_atomic
from synthdata.generators.base import ImageGenerator, SampleRequest
from synthdata.generators.diffusers_gen import DiffusersGenerator
from synthdata.plan import plan_batches, replay_calls  # noqa: F401  (re-exported for callers)
from synthdata.shards import Sample, clear_shard, encode_png, write_marker, write_tar
from synthdata.spec import Spec

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
_LOAD_LOCK = threading.Lock()
_FREE_SLOTS: list[int] = []
_SLOT_COUNT = 0
_MODELS: dict[int, LoadedModel] = {}
_LOADS: dict[tuple[int, str], int] = {}
_RUNS: dict[tuple[str, str], dict] = {}


@dataclass(frozen=True)
class JobInfo:
    """What every shard task shares: hashes, the model fingerprint, the expected hardware.

    `device_type` and `dtype` are what the flow resolved for the folder's identity ("" when
    not checked); a worker that resolves differently refuses rather than write other bytes.
    """

    spec_hash: str
    plan_hash: str
    model_fingerprint: str
    device: str = "auto"
    gpu_count: int = 0
    device_type: str = ""
    dtype: str = ""


class WorkerMismatch(SynthdataError):
    """A worker would generate on another device type or dtype than the dataset's."""


@dataclass
class CallLimit:
    """Largest pipeline call to attempt within one shard; lowered after a CUDA out-of-memory error."""

    size: int | None = None
    splits: int = 0


@dataclass
class LoadedModel:
    """A slot's pipeline and how often this process loaded it."""

    key: str
    generator: ImageGenerator
    loads: int


@contextlib.contextmanager
def worker_slot() -> Iterator[int]:
    """Check out this process's lowest free slot for the duration of one shard."""
    global _SLOT_COUNT
    with _LOCK:
        if _FREE_SLOTS:
            _FREE_SLOTS.sort()
            slot = _FREE_SLOTS.pop(0)
        else:
            slot, _SLOT_COUNT = _SLOT_COUNT, _SLOT_COUNT + 1
    try:
        yield slot
    finally:
        with _LOCK:
            _FREE_SLOTS.append(slot)


def worker_id(slot: int = 0) -> str:
    """host-pid-slot of a worker."""
    return f"{socket.gethostname()}-{os.getpid()}-{slot}"


def ray_assigned_device() -> str | None:
    """Inside a Ray task that was given a GPU: the torch device of that GPU, else None."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
        return None
    ids = [str(i) for i in ray.get_gpu_ids()]
    if not ids:
        return None
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return f"cuda:{visible.index(ids[0]) if ids[0] in visible else int(ids[0])}"


def worker_device(requested: str, slot: int) -> str:
    """The device of a slot: a Ray-assigned GPU, else GPU `slot mod n` when the spec allows GPUs."""
    if requested not in ("auto", "cuda"):
        return requested
    assigned = ray_assigned_device()
    if assigned:
        return assigned
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return "cpu" if requested == "auto" else requested
    return f"cuda:{slot % count}"


# What a loaded pipeline depends on; the rest of the generator section (size, steps, guidance,
# batch size, negative prompt) only shapes the calls, so specs that differ there share a model.
LOAD_FIELDS = {"model", "revision", "scheduler", "dtype", "textual_inversion", "lora"}


def get_generator(spec: Spec, job: JobInfo, slot: int = 0) -> LoadedModel:
    """The slot's generator for the spec, loaded once per process and slot and then reused.

    A slot keeps one model: loading another (a different model, adapters, dtype or device)
    replaces it, so memory holds at most one pipeline per concurrent worker.
    """
    device = worker_device(job.device, slot)
    key = json.dumps([spec.generator.model_dump(mode="json", include=LOAD_FIELDS), device], sort_keys=True)
    loaded = _MODELS.get(slot)
    if loaded is not None and loaded.key == key:
        loaded.generator.cfg = spec.generator  # this spec's image size for the calls
        return loaded
    if loaded is not None:
        _MODELS.pop(slot, None)
        del loaded
        _empty_cuda_cache()
    gen = DiffusersGenerator(spec.generator, device=device)
    with _LOAD_LOCK:  # loading patches torch globally (meta-device init): one load at a time
        gen.load()
    with _LOCK:
        _LOADS[(slot, key)] = _LOADS.get((slot, key), 0) + 1
        loaded = _MODELS[slot] = LoadedModel(key, gen, _LOADS[(slot, key)])
    return loaded


def _record(out_dir: str | Path, slot: int, loaded: LoadedModel, spec: Spec, threads: int,
            current: int | None = None, done: int | None = None, limit: CallLimit | None = None) -> None:
    """Write this worker's record for this output folder (DIR/workers/<worker>.json)."""
    wid = worker_id(slot)
    with _LOCK:
        run = _RUNS.setdefault((str(Path(out_dir).resolve()), wid), {"shards": []})
        if done is not None:
            run["shards"].append(done)
        record = {"worker": wid, "host": socket.gethostname(), "pid": os.getpid(), "slot": slot,
                  "model": spec.generator.model, "device": loaded.generator.describe()["device"],
                  "loads": loaded.loads, "threads": threads, "torch_threads": torch.get_num_threads(),
                  "current_shard": current, "shards": list(run["shards"])}
        if done is not None and limit is not None and limit.splits:
            run.setdefault("oom_splits", {})[str(done)] = limit.splits
        record["oom_splits"] = dict(run.get("oom_splits", {}))
    write_json_atomic(DatasetFolder(out_dir).worker_file(wid), record)


def _empty_cuda_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _requests(rows: list[dict]) -> list[SampleRequest]:
    return [SampleRequest(key=r["key"], prompt=r["prompt"], negative_prompt=r["negative_prompt"],
                          seed=r["seed"], steps=r["steps"], guidance_scale=r["guidance_scale"])
            for r in rows]


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


def generate_call(gen: ImageGenerator, call: list[dict],
                  limit: CallLimit | None = None) -> Iterator[tuple[list[dict], list]]:
    """Run one planned pipeline call, yielding (rows, images) for each call actually made.

    Calls are cut to the shard's limit. A CUDA out-of-memory error on a call of n > 1 images
    lowers the limit to ceil(n / 2) and retries from the same row, so a call is retried at half
    its size until it fits (down to single images); the lowered limit is kept for the shard's
    later calls. The parts are consecutive rows of the planned call (see `replay_calls`).
    """
    limit = limit if limit is not None else CallLimit()
    i = 0
    while i < len(call):
        part = call[i:i + (limit.size or len(call))]
        try:
            images = gen.generate(_requests(part))
        except torch.cuda.OutOfMemoryError:
            if len(part) == 1:
                raise
            images = None  # handled below, outside the handler, so the failed call's memory is freed
        if images is None:
            limit.size, limit.splits = (len(part) + 1) // 2, limit.splits + 1
            log.warning("CUDA out of memory on a call of %d images; retrying in calls of %d",
                        len(part), limit.size)
            _empty_cuda_cache()
            continue
        yield part, images
        i += len(part)


def _samples(spec: Spec, job: JobInfo, gen: ImageGenerator, rows: list[dict], pool: ThreadPoolExecutor,
             limit: CallLimit) -> Iterator[tuple[Sample, dict]]:
    """Generate call by call; PNG encoding of one call overlaps generation of the next."""
    dtype = gen.describe()["dtype"]
    pending: deque = deque()
    for calls in plan_batches(rows):
        batch = []
        for call in calls:
            for part, images in generate_call(gen, call, limit):
                batch += [(row, len(part), pool.submit(encode_png, image)) for row, image in zip(part, images)]
        pending.extend(sorted(batch, key=lambda entry: entry[0]["index"]))
        while pending and pending[0][2].done():
            yield _finish(spec, job, dtype, *pending.popleft())
    while pending:
        yield _finish(spec, job, dtype, *pending.popleft())


def _finish(spec, job, dtype, row, call_size, future) -> tuple[Sample, dict]:
    png = future.result()
    meta = sample_metadata(row, spec, job, call_size, dtype)
    sample = Sample(key=row["key"], png=png, meta=meta, label_index=row["label_index"],
                    prompt=row["prompt"])
    record = {**row, "batch_size": call_size, "png_sha256": hashlib.sha256(png).hexdigest(),
              "png_bytes": len(png)}
    return sample, record


def write_shard(spec: Spec, job: JobInfo, gen: ImageGenerator, out_dir: str | Path, shard: int,
                limit: CallLimit | None = None) -> int:
    """Generate one shard with `gen` into DIR/raw: tar, rows parquet, then completion marker.

    `limit` starts empty for every shard (pass one only to observe the out-of-memory splits).
    """
    folder = DatasetFolder(out_dir)
    clear_shard(folder, shard)
    rows = planning.shard_rows(spec, shard).to_pylist()
    limit = limit if limit is not None else CallLimit()
    records: list[dict] = []
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="png") as pool:

        def samples() -> Iterator[Sample]:
            for sample, record in _samples(spec, job, gen, rows, pool, limit):
                records.append(record)
                yield sample

        count = write_tar(folder.raw_tar(shard), samples())
    with atomic_path(folder.raw_rows(shard)) as tmp:
        pq.write_table(pa.Table.from_pylist(records), tmp)
    described = gen.describe()
    write_marker(folder, shard, {
        "count": count, "spec_hash": job.spec_hash, "plan_hash": job.plan_hash,
        "model_fingerprint": job.model_fingerprint,
        "device_type": device_type(described["device"]), "dtype": described["dtype"]})
    return count


def device_type(device: str) -> str:
    """cuda:1 -> cuda; cpu -> cpu."""
    return str(device).split(":", 1)[0]


def check_worker_hardware(job: JobInfo, gen: ImageGenerator) -> None:
    """Refuse when this worker would generate on another device type or dtype than expected."""
    described = gen.describe()
    actual = {"device_type": device_type(described["device"]), "dtype": described["dtype"]}
    expected = {"device_type": job.device_type, "dtype": job.dtype}
    differ = [f"{k} {actual[k]} (expected {v})" for k, v in expected.items() if v and actual[k] != v]
    if differ:
        raise WorkerMismatch(f"worker {socket.gethostname()} would generate with {', '.join(differ)}; "
                             "the dataset's shards must all come from one device type and dtype")


def generate_shard(spec_data: dict, out_dir: str, shard: int, job_data: dict,
                   threads: int = 1) -> dict:
    """The shard task's body: this worker's cached model, pinned threads, one shard written."""
    spec, job = Spec.model_validate(spec_data), JobInfo(**job_data)
    torch.set_num_threads(threads)
    with worker_slot() as slot:
        loaded = get_generator(spec, job, slot)
        check_worker_hardware(job, loaded.generator)
        _record(out_dir, slot, loaded, spec, threads, current=shard)
        limit = CallLimit()
        count = write_shard(spec, job, loaded.generator, out_dir, shard, limit)
        _record(out_dir, slot, loaded, spec, threads, done=shard, limit=limit)
    return {"shard": shard, "count": count, "worker": worker_id(slot), "oom_splits": limit.splits,
            "device": loaded.generator.describe()["device"]}


def job_as_dict(job: JobInfo) -> dict:
    """JobInfo as plain data for task arguments."""
    return asdict(job)
