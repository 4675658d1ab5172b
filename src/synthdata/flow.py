"""The Prefect flows: `synthdata-run` (plan, generate, screen, record) and its shard subflow.

One Prefect task per shard, never per image. The shard subflow gets its task runner from the
spec's execution section (local threads, Dask or Ray), so the same flow scales out unchanged.
Rerunning on the same output folder resumes: complete shards are skipped, others redone.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from synthdata import (
    engines,
    shards,
    worker,  # imported here, in the main thread, so diffusers never loads in a worker thread
)
from synthdata.errors import SynthdataError
from synthdata.fingerprint import model_fingerprint
from synthdata.outputs import acquire_lock, prepare
from synthdata.progress import ShardProgress
from synthdata.spec import Spec, load_spec


class ShardFailure(SynthdataError):
    """Some shards failed after their retries; the completed ones stay on disk for a resume."""

    exit_code = 1


@task(name="generate-shard", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE,
      persist_result=False, task_run_name="generate-shard-{shard}")
def generate_shard_task(spec_data: dict, out_dir: str, shard: int, job_data: dict, threads: int) -> dict:
    """Generate one shard (see worker.generate_shard)."""
    return worker.generate_shard(spec_data, out_dir, shard, job_data, threads)


@flow(name="generate-shards", persist_result=False, validate_parameters=False)
def generate_shards(spec_data: dict, out_dir: str, pending: list[int], job_data: dict,
                    threads: int, shard_sizes: dict[int, int]) -> list[dict]:
    """Submit one task per pending shard to the flow's task runner and wait for all of them."""
    with engines.task_options(job_data.get("device", "auto"), threads):
        futures = [generate_shard_task.submit(spec_data, out_dir, s, job_data, threads) for s in pending]
    done, failed = [], []
    with ShardProgress(len(pending), sum(shard_sizes[s] for s in pending)) as progress:
        for future in as_completed(futures):
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - reported below, shards stay resumable
                failed.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                continue
            done.append(result)
            progress.shard_done(result["count"])
    if failed:
        raise ShardFailure(f"{len(failed)} of {len(pending)} shards failed after retries "
                           f"(first: {failed[0]}); rerun the same command to resume")
    return sorted(done, key=lambda r: r["shard"])


def _with_overrides(spec: Spec, out_dir: str | None, engine: str | None,
                    workers: int | None, dvc: bool | None) -> Spec:
    execution = spec.execution.model_copy(update={k: v for k, v in
                                                  (("engine", engine), ("workers", workers)) if v})
    output = spec.output.model_copy(update={k: v for k, v in
                                            (("dir", out_dir), ("dvc", dvc)) if v is not None})
    return spec.model_copy(update={"execution": execution, "output": output})


def pending_shards(raw: Path, count: int, plan_hash: str) -> list[int]:
    """Shards without a valid completion marker for this plan."""
    return [s for s in range(count) if not shards.is_complete(raw, s, plan_hash)]


@task(name="screen-shard", retries=1, cache_policy=NO_CACHE, persist_result=False,
      task_run_name="screen-shard-{shard}")
def screen_shard_task(plan, shard: int) -> dict:
    """Embed (or reuse embeddings of) one raw shard, search the reference, decide."""
    from synthdata.screening import screen_shard

    return screen_shard(plan, shard)


def screen(root: Path, spec: Spec) -> dict:
    """Screening as one Prefect task per shard, then the dataset-wide step (near-duplicates, shards/)."""
    from synthdata.screening import finalize_screening, prepare_screening

    plan = prepare_screening(root, spec.memorization)
    futures = [screen_shard_task.submit(plan, s) for s in plan.shards]
    for future in futures:
        future.result()
    return finalize_screening(plan).to_dict()


def record(root: Path, spec: Spec, spec_path: str, prepared, fp, plan, timings: dict) -> None:
    """run.json, manifest, stats, dataset card, contact sheets, Prefect artifacts; DVC if asked."""
    from prefect.runtime import flow_run

    from synthdata import card, records
    from synthdata.report import write_report

    records.write_run_record(
        root, spec, spec_hash=prepared.spec_hash, plan_hash=prepared.plan_hash, model_fingerprint=fp,
        engine=plan.engine, workers=plan.workers, threads=plan.threads_per_worker,
        flow_run_id=str(flow_run.id) if flow_run.id else None, timings=timings, spec_path=spec_path,
        extra={"execution": plan.as_record()})
    write_report(root)
    card.publish_prefect_artifacts(root)
    if spec.output.dvc:
        from synthdata.versioning import track_outputs

        track_outputs(root, push=True)


@flow(name="synthdata-run", persist_result=False, validate_parameters=False)
def synthdata_run(spec_path: str, out_dir: str | None = None, engine: str | None = None,
                  workers: int | None = None, dvc: bool | None = None) -> dict:
    """The whole job for one spec: plan, generate shards, screen, record (and version)."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    spec = _with_overrides(load_spec(spec_path), out_dir, engine, workers, dvc)
    root = Path(spec.output_dir())
    lock = acquire_lock(root)
    try:
        prepared = prepare(root, spec)
        fp = model_fingerprint(spec.generator)
        plan = engines.resolve(spec.execution, spec.generator.device)
        job = worker.JobInfo(prepared.spec_hash, prepared.plan_hash, fp.fingerprint,
                             spec.generator.device, plan.gpu_count)
        pending = pending_shards(root / "raw", prepared.shard_count, prepared.plan_hash)
        timings["plan_s"], clock = time.perf_counter() - clock, time.perf_counter()
        results = []
        if pending:
            results = generate_shards.with_options(task_runner=engines.task_runner(plan))(
                spec.model_dump(mode="json"), str(root), pending, worker.job_as_dict(job),
                plan.threads_per_worker, shard_sizes(spec, prepared.shard_count))
        timings["generate_s"], clock = time.perf_counter() - clock, time.perf_counter()
        screening = screen(root, spec)
        timings["screen_s"], clock = time.perf_counter() - clock, time.perf_counter()
        record(root, spec, spec_path, prepared, fp, plan, timings)
        timings["record_s"] = time.perf_counter() - clock
        return {"out_dir": str(root), "shards": prepared.shard_count, "generated": len(results),
                "skipped": prepared.shard_count - len(pending), "decisions": screening["decisions"],
                "timings": timings}
    finally:
        lock.release()


def shard_sizes(spec: Spec, shard_count: int) -> dict[int, int]:
    """Number of samples in each shard (the last one may be short)."""
    from synthdata.plan import total_count

    n, size = total_count(spec), spec.shards.size
    return {s: min(size, n - s * size) for s in range(shard_count)}
