"""What runs on a worker: a per-worker model cache and the body of the one-task-per-shard job.

The cache lives in this importable module (never `__main__`), so Dask and Ray worker processes
load a model once per process. Within a process, each concurrent worker (a thread of the local
engine) checks out a *slot*; a slot owns one pipeline (pipelines are not thread-safe) and, on a
multi-GPU machine, one GPU (slot i -> cuda:i mod n). Slots outlive threads, so a long-lived
process (tests, `prefect serve`) reuses its models across runs instead of leaking them.

Every worker writes `DIR/workers/<host>-<pid>-<slot>.json`: how often it loaded the model, on
which device, with how many torch threads, and which shards it ran, so tests and auditors can
see how many loads happened where.

Generating one shard (pipeline calls as the plan cuts them, out-of-memory halving, quality
checks and regeneration, the tar, rows and marker) is `synthdata.generation.shardgen`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from synthdata.errors import SynthdataError
from synthdata.folder import DatasetFolder
from synthdata.fsutil import write_json_atomic
from synthdata.generation.generators.base import ImageGenerator
from synthdata.generation.generators.diffusers_gen import DiffusersGenerator
from synthdata.generation.generators.procedural import ProceduralGenerator, is_procedural
from synthdata.plan.rows import plan_batches, replay_calls  # noqa: F401  (re-exported for callers)
from synthdata.generation.shardgen import (  # noqa: F401  (re-exported for callers)
    CallLimit,
    JobInfo,
    empty_cuda_cache,
    device_type,
    generate_call,
    sample_metadata,
    write_shard,
)
from synthdata.privacy import public_path
from synthdata.spec import Spec
from synthdata.generation.trained import resolve_from_training
from synthdata.qc import build_checks
from synthdata.qc.memorization import memorization_check

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
_LOAD_LOCK = threading.Lock()
_SLOT_LOCKS: dict[int, threading.Lock] = {}
_CHECKS: dict[tuple[int, str], list] = {}
_FREE_SLOTS: list[int] = []
_SLOT_COUNT = 0
_MODELS: dict[int, LoadedModel] = {}
_LOADS: dict[tuple[int, str], int] = {}
_RUNS: dict[tuple[str, str], dict] = {}


class WorkerMismatch(SynthdataError):
    """A worker would generate on another device type or dtype than the dataset's."""


@dataclass
class LoadedModel:
    """A slot's pipeline, how often this process loaded it, and whether the last request loaded it."""

    key: str
    generator: ImageGenerator
    loads: int
    fresh: bool = True
    preloaded: bool = False


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


def _slot_lock(slot: int) -> threading.Lock:
    with _LOCK:
        return _SLOT_LOCKS.setdefault(slot, threading.Lock())


def get_generator(spec: Spec, job: JobInfo, slot: int = 0) -> LoadedModel:
    """The slot's generator for the spec, loaded once per process and slot and then reused.

    A slot keeps one model: loading another (a different model, adapters, dtype or device)
    replaces it, so memory holds at most one pipeline per concurrent worker. A caller that finds
    the slot being loaded (by `preload`) waits for that load instead of loading again.
    """
    with _slot_lock(slot):
        return _get_generator(spec, job, slot)


def preload(spec: Spec, slots: int) -> threading.Thread:
    """Load the spec's model into this process's first `slots` slots in the background, so it
    is ready when the flow's first shard task starts (Prefect's server starts meanwhile).

    A load that fails here is left to the shard tasks, which load again and report the error.
    """
    def load_all() -> None:
        job = JobInfo("", "", "", device=spec.generator.device)
        for slot in range(slots):
            try:
                get_generator(spec, job, slot).preloaded = True
            except SynthdataError as exc:  # the shard task's own load reports it
                log.debug("preload of slot %d failed: %s", slot, exc)
                return

    thread = threading.Thread(target=load_all, name="synthdata-preload", daemon=True)
    thread.start()
    return thread


def _get_generator(spec: Spec, job: JobInfo, slot: int) -> LoadedModel:
    device = worker_device(job.device, slot)
    key = json.dumps([spec.generator.model_dump(mode="json", include=LOAD_FIELDS), device,
                      spec.execution.speed.changed()], sort_keys=True)
    loaded = _MODELS.get(slot)
    if loaded is not None and loaded.key == key:
        loaded.generator.cfg = spec.generator  # this spec's image size for the calls
        loaded.fresh = False
        return loaded
    if loaded is not None:
        _MODELS.pop(slot, None)
        del loaded
        empty_cuda_cache()
    make = ProceduralGenerator if is_procedural(spec.generator.model) else DiffusersGenerator
    gen = make(spec.generator, device=device, speed=spec.execution.speed)
    with _LOAD_LOCK:  # loading patches torch globally (meta-device init): one load at a time
        gen.load()
    with _LOCK:
        _LOADS[(slot, key)] = _LOADS.get((slot, key), 0) + 1
        loaded = _MODELS[slot] = LoadedModel(key, gen, _LOADS[(slot, key)])
    return loaded


def _record(out_dir: str | Path, slot: int, loaded: LoadedModel, spec: Spec, threads: int,
            current: int | None = None, done: int | None = None, limit: CallLimit | None = None,
            loaded_now: bool = False) -> None:
    """Write this worker's record for this output folder (DIR/workers/<worker>.json).

    `loads`: model loads this run's shard tasks made in this slot (a reuse counts none);
    `preloaded`: the model was loaded before the run's first task (`preload`);
    `process_loads`: loads of this model into this slot over the process's life.
    """
    wid = worker_id(slot)
    with _LOCK:
        run = _RUNS.setdefault((str(Path(out_dir).resolve()), wid), {"shards": [], "loads": 0})
        run["loads"] += int(loaded_now)
        if done is not None:
            run["shards"].append(done)
        record = {"worker": wid, "host": socket.gethostname(), "pid": os.getpid(), "slot": slot,
                  "model": public_path(spec.generator.model) if spec.generator.model.startswith(("/", "~"))
                  else spec.generator.model, "device": loaded.generator.describe()["device"],
                  "loads": run["loads"], "preloaded": loaded.preloaded,
                  "process_loads": loaded.loads, "threads": threads,
                  "torch_threads": torch.get_num_threads(),
                  "current_shard": current, "shards": list(run["shards"])}
        if done is not None and limit is not None and limit.splits:
            run.setdefault("oom_splits", {})[str(done)] = limit.splits
        record["oom_splits"] = dict(run.get("oom_splits", {}))
    write_json_atomic(DatasetFolder(out_dir).worker_file(wid), record)


def check_worker_hardware(job: JobInfo, gen: ImageGenerator) -> None:
    """Refuse when this worker would generate on another device type or dtype than expected."""
    described = gen.describe()
    actual = {"device_type": device_type(described["device"]), "dtype": described["dtype"],
              "speed": described.get("speed", {})}
    expected = {"device_type": job.device_type, "dtype": job.dtype, "speed": job.speed}
    differ = [f"{k} {actual[k]} (expected {v})" for k, v in expected.items()
              if v is not None and v != "" and actual[k] != v]
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
        _record(out_dir, slot, loaded, spec, threads, current=shard, loaded_now=loaded.fresh)
        limit = CallLimit()
        count = write_shard(spec, job, loaded.generator, out_dir, shard, limit,
                            qc_checks(spec, slot, loaded.generator))
        _record(out_dir, slot, loaded, spec, threads, done=shard, limit=limit)
    return {"shard": shard, "count": count, "worker": worker_id(slot), "oom_splits": limit.splits,
            "device": loaded.generator.describe()["device"]}


def qc_checks(spec: Spec, slot: int, gen: ImageGenerator) -> list:
    """The spec's QC checks, built once per process and slot (classifiers load once); with
    `qc.top_up` and a real reference, memorization screening is one of them."""
    top_up = spec.screens_while_generating()
    if spec.qc is None or not (spec.qc.checks or top_up):
        return []

    key = (slot, spec.qc.model_dump_json(), spec.memorization.model_dump_json() if top_up else "")
    with _LOCK:
        if key not in _CHECKS:
            checks = build_checks(spec.qc, gen.describe()["device"])
            if top_up:
                checks.append(memorization_check(resolve_from_training(spec.memorization,
                                                                       spec.generator)))
            _CHECKS[key] = checks
        return _CHECKS[key]


def job_as_dict(job: JobInfo) -> dict:
    """JobInfo as plain data for task arguments."""
    return asdict(job)
