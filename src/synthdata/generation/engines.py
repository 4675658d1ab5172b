"""Engines: which Prefect task runner executes the shard tasks, and with how many workers.

Never a home-made scheduler. `local` uses Prefect's ThreadPoolTaskRunner in this process (one
worker thread per visible GPU, or one per `threads_per_worker` CPU cores); `dask` and `ray` use
prefect-dask's DaskTaskRunner and prefect-ray's RayTaskRunner, on an existing cluster when
`execution.address` is set and on a temporary local cluster otherwise.

One worker per GPU everywhere: local threads each take a GPU slot (see `worker.WorkerSlot`),
local Dask workers are started with their own `CUDA_VISIBLE_DEVICES`, Ray tasks ask for
`num_gpus=1`. Torch's intra-op threads are pinned to `threads_per_worker` in every worker, so
the bytes of a dataset do not depend on the engine.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from synthdata.errors import SynthdataError
from synthdata.spec.models import Execution

log = logging.getLogger(__name__)

# Ray otherwise writes an auth token under the home folder, reports usage, and repeats logs.
RAY_ENVIRONMENT = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
# Ray hides all but the assigned GPU from a task by default, which breaks a worker process that
# keeps its model between tasks when it is later given another GPU; with this set, every worker
# sees all GPUs and `worker.ray_assigned_device` places the task on the one Ray assigned.
RAY_KEEP_GPUS_VISIBLE = {"RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}


@dataclass(frozen=True)
class ResolvedExecution:
    """The resolved execution: engine, worker count, threads per worker, GPUs seen."""

    engine: str
    workers: int
    threads_per_worker: int
    gpu_count: int
    address: str | None = None
    gpu_ids: tuple[str, ...] = ()

    def as_record(self) -> dict:
        """For run.json: what ran where (performance-only, never part of a cache key)."""
        record = asdict(self)
        record["gpu_ids"] = list(self.gpu_ids)
        return record


def visible_gpus() -> int:
    """Number of CUDA devices this process sees."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def visible_gpu_ids(count: int) -> tuple[str, ...]:
    """The ids that name this process's GPUs in CUDA_VISIBLE_DEVICES (to pin a child process)."""
    listed = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return tuple(listed[:count]) if len(listed) >= count else tuple(str(i) for i in range(count))


def uses_gpus(device: str) -> bool:
    """Whether a generator device setting may put work on CUDA devices."""
    return device in ("auto", "cuda")


def resolve(execution: Execution, device: str = "auto") -> ResolvedExecution:
    """Turn `workers: auto` into a number: one per GPU, else one per `threads_per_worker` cores."""
    gpus = visible_gpus() if uses_gpus(device) else 0
    if execution.workers != "auto":
        workers = int(execution.workers)
    elif gpus:
        workers = gpus
    else:
        workers = max(1, (os.cpu_count() or 1) // execution.threads_per_worker)
    return ResolvedExecution(execution.engine, workers, execution.threads_per_worker, gpus,
                             execution.address, visible_gpu_ids(gpus) if gpus else ())


def task_runner(execution: ResolvedExecution):
    """The Prefect task runner for the resolved execution."""
    if execution.engine == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=execution.workers)
    if execution.engine == "dask":
        return _dask_runner(execution)
    if execution.engine == "ray":
        return _ray_runner(execution)
    raise SynthdataError(f"unknown engine {execution.engine!r}; expected local, dask or ray")


def _dask_runner(execution: ResolvedExecution):
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise SynthdataError("engine 'dask' needs prefect-dask: pip install 'synthdata[dask]'") from None
    if execution.address:
        return DaskTaskRunner(address=execution.address)
    # A cluster we start and stop ourselves: its scheduler and nannies log to this process, and
    # `silence_logs` covers only their start, not their shutdown chatter.
    logging.getLogger("distributed").setLevel(logging.ERROR)
    if execution.gpu_ids:
        return DaskTaskRunner(cluster_class=pinned_dask_cluster,
                              cluster_kwargs={"workers": execution.workers, "gpu_ids": list(execution.gpu_ids)})
    return DaskTaskRunner(cluster_kwargs={"n_workers": execution.workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None,
                                          "silence_logs": logging.ERROR})


def pinned_dask_cluster(workers: int, gpu_ids: list[str], asynchronous: bool = False):
    """A local Dask cluster of single-threaded worker processes, worker i pinned to GPU i mod n.

    Each worker process is started with `CUDA_VISIBLE_DEVICES` naming its one GPU, so it sees a
    single device; `workers` larger than the GPU count puts several workers on a GPU.
    """
    from distributed import Nanny, Scheduler, SpecCluster

    specs = {f"gpu{gpu_ids[i % len(gpu_ids)]}-{i}": {
        "cls": Nanny,
        "options": {"nthreads": 1, "host": "127.0.0.1", "dashboard_address": None,
                    "silence_logs": logging.ERROR,
                    "env": {"CUDA_VISIBLE_DEVICES": gpu_ids[i % len(gpu_ids)]}},
    } for i in range(workers)}
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": None}}
    return SpecCluster(workers=specs, scheduler=scheduler, asynchronous=asynchronous,
                       silence_logs=logging.ERROR, name="synthdata-gpu")


def _ray_runner(execution: ResolvedExecution):
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise SynthdataError("engine 'ray' needs prefect-ray: pip install 'synthdata[ray]'") from None
    for key, value in RAY_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    init = {"logging_level": logging.WARNING, "log_to_driver": False}
    if execution.address:  # "auto": the cluster `ray start` made on this machine, or $RAY_ADDRESS
        return RayTaskRunner(address=execution.address, init_kwargs=init)
    init.update(include_dashboard=False, num_cpus=execution.workers * execution.threads_per_worker)
    if not execution.gpu_ids:
        init["num_gpus"] = 0
    return RayTaskRunner(init_kwargs=init)


@contextlib.contextmanager
def task_options(device: str, threads: int) -> Iterator[None]:
    """Per-task resources for tasks submitted inside the block, for the flow's task runner.

    Ray: each shard task asks for `threads` CPUs and, when the cluster has GPUs and the spec may
    use them, one GPU; its worker process is kept (Ray would otherwise end a GPU worker after
    one task, and with it the cached model). Thread and Dask runners need nothing here: their
    workers are sized and pinned when the runner starts.
    """
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    runner = ctx.task_runner if ctx else None
    if type(runner).__name__ != "RayTaskRunner":
        yield
        return
    import ray
    from prefect_ray.context import remote_options

    options: dict = {"num_cpus": threads}
    if uses_gpus(device) and ray.cluster_resources().get("GPU", 0) >= 1:
        options.update(num_gpus=1, max_calls=0, runtime_env={"env_vars": RAY_KEEP_GPUS_VISIBLE})
    with remote_options(**options):
        yield
