"""Engines: which Prefect task runner executes the shard tasks, and with how many workers.

Never a home-made scheduler: local runs use Prefect's ThreadPoolTaskRunner (one worker thread per
GPU, or per `threads_per_worker` CPU cores), clusters use prefect-dask or prefect-ray.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from synthdata.errors import SynthdataError
from synthdata.spec.models import Execution


@dataclass(frozen=True)
class EnginePlan:
    """The resolved execution: engine, worker count, threads per worker, GPUs seen."""

    engine: str
    workers: int
    threads_per_worker: int
    gpu_count: int
    address: str | None = None


def visible_gpus() -> int:
    """Number of CUDA devices this process sees."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve(execution: Execution, device: str = "auto") -> EnginePlan:
    """Turn `workers: auto` into a number: one per GPU, else one per `threads_per_worker` cores."""
    gpus = visible_gpus() if device in ("auto", "cuda") else 0
    if execution.workers != "auto":
        workers = int(execution.workers)
    elif gpus:
        workers = gpus
    else:
        workers = max(1, (os.cpu_count() or 1) // execution.threads_per_worker)
    return EnginePlan(execution.engine, workers, execution.threads_per_worker, gpus, execution.address)


def task_runner(plan: EnginePlan):
    """The Prefect task runner for the plan."""
    if plan.engine == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=plan.workers)
    if plan.engine == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise SynthdataError("engine 'dask' needs prefect-dask: pip install 'synthdata[dask]'") from None
        if plan.address:
            return DaskTaskRunner(address=plan.address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": plan.workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    if plan.engine == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise SynthdataError("engine 'ray' needs prefect-ray: pip install 'synthdata[ray]'") from None
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        init = {"num_cpus": plan.workers * plan.threads_per_worker, "include_dashboard": False}
        return RayTaskRunner(address=plan.address, init_kwargs=None if plan.address else init)
    raise SynthdataError(f"unknown engine {plan.engine!r}; expected local, dask or ray")
