"""The Prefect flows: `synthdata-run` (plan, generate, screen, record) and its shard subflow.

One Prefect task per shard, never per image. The shard subflow gets its task runner from the
spec's execution section (local threads, Dask or Ray), so the same flow scales out unchanged.
Rerunning on the same output folder resumes: complete shards are skipped, others redone.
Flow runs are named after the dataset; each shard logs its start and finish to the run, and
a progress artifact advances shard by shard.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from synthdata.generation import (
    engines,
    worker,  # imported here, in the main thread, so diffusers never loads in a worker thread
)
from synthdata.errors import SynthdataError
from synthdata.generation.fingerprint import model_fingerprint
from synthdata.folder import DatasetFolder
from synthdata.generation.generators import dtype_name
from synthdata.dataset.prepare import (
    GenerationIdentity,
    acquire_lock,
    check_generation_identity,
    prepare,
)
from synthdata.qc.identity import classifier_fingerprints
from synthdata.privacy import unwrap, withhold
from synthdata.progress import ShardProgress, artifact_key, phase_timing, screened_line
from synthdata.spec import Spec, with_overrides
from synthdata.plan.load import load_spec
from synthdata.dataset import card
from synthdata.dataset.run_record import add_run_phases, write_run_record
from synthdata.dataset.report import write_report
from synthdata.generation.trained import resolve_from_training
from synthdata.plan.rows import total_count
from synthdata.qc.memorization import setup_identity
from synthdata.versioning import track_outputs
from synthdata.generation.generators.procedural import is_procedural
from synthdata.screening.shardio import sample_count

STEPS = ("generate", "screen", "record")


class ShardFailure(SynthdataError):
    """Some shards failed after their retries; the completed ones stay on disk for a resume."""

    exit_code = 1

    def __init__(self, failures: dict[int, str], total: int,
                 errors: dict[int, BaseException] | None = None):
        self.failures = dict(sorted(failures.items()))
        self.errors = dict(sorted((errors or {}).items()))  # the exceptions (the CLI finds OS errors)
        lines = [f"  shard {s}: {reason}" for s, reason in self.failures.items()]
        super().__init__(f"{len(failures)} of {total} shards failed after retries; the others are "
                         "complete and a rerun of the same command resumes:\n" + "\n".join(lines))


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@task(name="generate-shard", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE,
      persist_result=False, task_run_name="generate-shard-{shard}")
def generate_shard_task(spec_data: dict, out_dir: str, shard: int, job_data: dict, threads: int) -> dict:
    """Generate one shard (see worker.generate_shard), logging its start and finish."""
    logger = get_run_logger()
    logger.info("shard %d: generating", shard)
    started = time.perf_counter()
    result = worker.generate_shard(spec_data, out_dir, shard, job_data, threads)
    logger.info("shard %d: %d samples in %.1f s on %s (%s)%s", shard, result["count"],
                time.perf_counter() - started, result["device"], result["worker"],
                f", {result['oom_splits']} out-of-memory splits" if result["oom_splits"] else "")
    return result


def _progress_artifact(name: str):
    """A Prefect progress artifact for this flow run, at 0 %."""
    from prefect.artifacts import create_progress_artifact

    return create_progress_artifact(progress=0.0, key=f"{artifact_key(name)}-progress",
                                    description=f"{name}: shards generated in this run")


@flow(name="generate-shards", persist_result=False, validate_parameters=False,
      flow_run_name="generate-shards-{dataset}")
def generate_shards(spec_data: dict, out_dir: str, pending: list[int], job_data: dict,
                    threads: int, shard_sizes: dict[int, int], dataset: str = "") -> list[dict]:
    """Submit one task per pending shard to the flow's task runner and wait for all of them.
    `spec_data` and `out_dir` may be `privacy.Withheld` (Prefect then records no local path)."""
    from prefect.artifacts import update_progress_artifact

    spec_data, out_dir = unwrap(spec_data), unwrap(out_dir)

    logger = get_run_logger()
    logger.info("%s: %d shards to generate (%d samples)", dataset, len(pending),
                sum(shard_sizes[s] for s in pending))
    artifact = _progress_artifact(dataset)
    with engines.task_options(job_data.get("device", "auto"), threads):
        futures = {generate_shard_task.submit(spec_data, out_dir, s, job_data, threads): s for s in pending}
    done, failed, errors = [], {}, {}
    with ShardProgress(len(pending), sum(shard_sizes[s] for s in pending)) as progress:
        for future in as_completed(list(futures)):
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - every failure is reported below; shards stay resumable
                failed[futures[future]], errors[futures[future]] = _reason(exc), exc
                logger.error("shard %d failed: %s", futures[future], failed[futures[future]])
                continue
            done.append(result)
            progress.shard_done(result["count"])
            update_progress_artifact(artifact, 100.0 * len(done) / max(1, len(pending)))
    if failed:
        raise ShardFailure(failed, len(pending), errors)
    return sorted(done, key=lambda r: r["shard"])


def pending_shards(folder: DatasetFolder, count: int, plan_hash: str) -> list[int]:
    """Shards without a valid completion marker for this plan (tar sha256 checked)."""
    complete = set(folder.complete_shards(plan_hash, verify=True))
    return [s for s in range(count) if s not in complete]


def expected_identity(spec: Spec, fingerprint: str, gpu_count: int,
                      screening_setup: str | None = None) -> GenerationIdentity:
    """What this run will generate with: model fingerprint, device type, dtype, speed knobs, QC
    classifier fingerprints and (qc.top_up) the digest of the screening setup."""

    device = spec.generator.device
    if is_procedural(spec.generator.model):
        device_kind = "cpu"  # builtin:procedural draws on the CPU whatever the machine has
    elif engines.uses_gpus(device) and gpu_count:
        device_kind = "cuda"
    elif device == "auto":
        device_kind = "cpu"
    else:
        device_kind = worker.device_type(device)
    return GenerationIdentity(fingerprint, device_kind, dtype_name(spec.generator.dtype, device_kind),
                              spec.execution.speed.changed(), classifier_fingerprints(spec),
                              screening_setup)


class MissingShards(SynthdataError):
    """Planned shards are not complete in the output folder after every shard task succeeded."""

    exit_code = 1

    def __init__(self, root: Path, missing: list[int], total: int):
        self.missing = missing
        shown = ", ".join(map(str, missing[:20])) + (f" and {len(missing) - 20} more"
                                                      if len(missing) > 20 else "")
        super().__init__(
            f"{root}: {len(missing)} of {total} planned shards are missing from raw/ after "
            f"generation (shards {shown}), although their tasks reported success: the workers "
            "wrote them where this machine cannot see them. Workers must see the output folder "
            "at the same path (a shared file system for a Dask or Ray cluster). Nothing was "
            "screened or recorded; rerun when they do, and the complete shards are kept.")


def check_generated(folder: DatasetFolder, shard_count: int, plan_hash: str,
                    identity: GenerationIdentity) -> None:
    """After generation: every planned shard is complete here, and made with `identity`."""
    complete = set(folder.complete_shards(plan_hash))
    missing = [s for s in range(shard_count) if s not in complete]
    if missing:
        raise MissingShards(folder.root, missing, shard_count)
    check_generation_identity(folder.root, identity)


@task(name="screen-shard", retries=1, cache_policy=NO_CACHE, persist_result=False,
      task_run_name="screen-shard-{shard}")
def screen_shard_task(job, shard: int) -> dict:
    """Embed (or reuse embeddings of) one raw shard, search the reference, decide."""
    from synthdata.screening.pipeline import screen_shard  # deferred: loads faiss, scipy

    result = screen_shard(job, shard)
    get_run_logger().info("%s", screened_line(result))
    return result


@flow(name="screen-shards", persist_result=False, validate_parameters=False,
      flow_run_name="screen-shards-{dataset}")
def screen_shards(job, dataset: str = "") -> int:
    """One screening task per shard on the subflow's task runner, a progress bar over shards on
    a terminal; returns the samples screened. `job` is `privacy.Withheld` (its reference paths
    never reach Prefect)."""

    job = unwrap(job)
    samples = 0
    futures = [screen_shard_task.submit(job, s) for s in job.shards]
    with ShardProgress(len(job.shards), sample_count(job.out_dir, job.shards), "screen") as progress:
        for future in as_completed(futures):
            result = future.result()
            samples += result["samples"]
            progress.shard_done(result["samples"])
    return samples


def screen(root: Path, spec: Spec, workers: int = 1) -> dict:
    """Screening as one Prefect task per shard, at most `workers` at a time (so shards finish
    one after another: steady progress, staged work kept, a few shards in memory; all at once
    they finished together at the end), then the dataset-wide step (near-duplicates, shards/).
    Its `phases` are run.json's timings of reference ingestion, calibration, screening and the
    screening's records."""
    from prefect.task_runners import ThreadPoolTaskRunner

    from synthdata.screening.pipeline import finalize_screening, prepare_screening  # deferred: loads faiss, scipy

    job = prepare_screening(root, resolve_from_training(spec.memorization, spec.generator))
    started = time.perf_counter()
    samples = screen_shards.with_options(task_runner=ThreadPoolTaskRunner(max_workers=max(1, workers)))(
        withhold(job, f"screening job {job.token} (local paths withheld)"), spec.name)
    screened = phase_timing(time.perf_counter() - started, samples)
    summary = finalize_screening(job).to_dict()
    summary["phases"] = {**summary["phases"], "screening": screened}
    return summary


def record(folder: DatasetFolder, spec: Spec, spec_path: str, prepared, fp, execution,
           timings: dict, *, report: bool = True) -> None:
    """run.json; with `report`, manifest, stats, dataset card, contact sheets, Prefect
    artifacts, and DVC tracking when asked."""
    from prefect.runtime import flow_run

    write_run_record(
        folder.root, spec, spec_hash=prepared.spec_hash, plan_hash=prepared.plan_hash,
        model_fingerprint=fp, engine=execution.engine, workers=execution.workers,
        threads=execution.threads_per_worker,
        flow_run_id=str(flow_run.id) if flow_run.id else None, timings=timings, spec_path=spec_path,
        extra={"execution": execution.as_record()})
    if not report:
        return
    started = time.perf_counter()
    write_report(folder.root)
    card.publish_prefect_artifacts(folder.root)
    add_run_phases(folder.root, {"records": phase_timing(time.perf_counter() - started,
                                                         total_count(spec))})
    if spec.output.dvc:
        track_outputs(folder.root, push=True)


def _run_name() -> str:
    """Flow runs are named after the dataset (the spec's name), not at random."""
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    try:
        name = load_spec(unwrap(params["spec_path"]), check_files=False).name
    except (SynthdataError, OSError, KeyError):  # the flow itself reports a bad spec
        name = Path(str(unwrap(params.get("spec_path", "spec")))).stem
    return f"{name}-{params.get('stop_after', 'record')}" if params.get("stop_after", "record") != "record" \
        else name


@flow(name="synthdata-run", persist_result=False, validate_parameters=False, flow_run_name=_run_name)
def synthdata_run(spec_path: str, out_dir: str | None = None, engine: str | None = None,
                  workers: int | None = None, dvc: bool | None = None,
                  stop_after: str = "record", replace_stale: bool = False) -> dict:
    """The whole job for one spec: plan, generate shards, screen, record (and version).

    `stop_after="generate"` plans and generates raw shards and writes run.json only (the DVC
    generate stage); "screen" also screens; "record" (default) does everything.
    `replace_stale` removes raw shards made with another generation identity (model, device,
    dtype, speed knobs, QC classifiers, top-up screening setup) instead of refusing the folder
    (the DVC generate stage, whose old outputs DVC's cache keeps). After generation every
    planned shard must be complete in the folder (`check_generated`), else MissingShards.
    """
    if stop_after not in STEPS:
        raise SynthdataError(f"stop_after must be one of {', '.join(STEPS)}, got {stop_after!r}")
    spec_path, out_dir = unwrap(spec_path), unwrap(out_dir)  # the CLI withholds them from Prefect
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    spec = load_spec(spec_path)
    spec = with_overrides(spec, out_dir or spec.output_dir(), engine, workers, dvc)
    folder = DatasetFolder(spec.output_dir())
    lock = acquire_lock(folder.root)
    try:
        fp = model_fingerprint(spec.generator)
        execution = engines.resolve(spec.execution, spec.generator.device)
        top_up = spec.screens_while_generating()
        # top-up: the reference index and calibration are built (or found in the cache) before
        # generation; the workers read them, and their digest is part of the shards' identity
        started = time.perf_counter()
        setup = _prepare_screening_reference(spec) if top_up else None
        timings["top_up_prepare_s"] = time.perf_counter() - started
        identity = expected_identity(spec, fp.fingerprint, execution.gpu_count, setup)
        prepared = prepare(folder.root, spec, identity, replace_stale=replace_stale)
        if prepared.replaced:
            get_run_logger().warning("%s: removed %s: generated with another model, device, dtype, "
                                     "speed knobs, QC classifiers or top-up screening setup "
                                     "(replace_stale)", folder.root, ", ".join(prepared.replaced))
        run_spec = spec if fp.commit is None else spec.model_copy(update={
            "generator": spec.generator.model_copy(update={"revision": fp.commit})})
        job = worker.JobInfo(prepared.spec_hash, prepared.plan_hash, fp.fingerprint,
                             spec.generator.device, execution.gpu_count, identity.device_type,
                             identity.dtype, identity.speed)
        pending = pending_shards(folder, prepared.shard_count, prepared.plan_hash)
        timings["plan_s"], clock = time.perf_counter() - clock, time.perf_counter()
        results = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="reference") as overlap:
            # on GPUs the reference index and calibration are built while the shards generate; on
            # a CPU they would compete with generation for the same cores (measured slower)
            early = overlap.submit(_prepare_screening_reference, spec) \
                if pending and not top_up and stop_after != "generate" and spec.memorization.reference \
                and execution.gpu_count > 0 else None
            if pending:
                results = generate_shards.with_options(task_runner=engines.task_runner(execution))(
                    withhold(run_spec.model_dump(mode="json"), f"spec {spec.name} (local paths withheld)"),
                    withhold(str(folder.root), f"local:{folder.root.name}"), pending, worker.job_as_dict(job),
                    execution.threads_per_worker, shard_sizes(spec, prepared.shard_count), spec.name)
            timings["generate_s"], clock = time.perf_counter() - clock, time.perf_counter()
            check_generated(folder, prepared.shard_count, prepared.plan_hash, identity)
            if early is not None:
                early.result()  # its error, if any, is screening's: raised here, shards kept
                timings["reference_wait_s"], clock = time.perf_counter() - clock, time.perf_counter()
        decisions: dict = {}
        if stop_after != "generate":
            screened = screen(folder.root, spec, min(execution.workers, os.cpu_count() or 1))
            decisions, timings["phases"] = screened["decisions"], screened["phases"]
            timings["screen_s"], clock = time.perf_counter() - clock, time.perf_counter()
            if not spec.memorization.reference:
                get_run_logger().warning(
                    "%s: NOT screened against real images: memorization.reference is empty, so "
                    "no sample was compared with real images; samples that passed QC are in "
                    "shards/ with decision 'not-screened'", spec.name)
        record(folder, spec, spec_path, prepared, fp, execution, timings,
               report=stop_after == "record")
        timings["record_s"] = time.perf_counter() - clock
        return {"out_dir": str(folder.root), "shards": prepared.shard_count, "generated": len(results),
                "skipped": prepared.shard_count - len(pending), "decisions": decisions,
                "timings": timings}
    finally:
        lock.release()


def _prepare_screening_reference(spec: Spec) -> str:
    """Build (or find in the cache) the reference index and calibration: before generation for
    `qc.top_up` (the workers then read it instead of racing to build it), else beside it.
    Returns the setup's digest (`qc.memorization.setup_identity`)."""
    from synthdata.screening.matchers import prepare_matchers  # deferred: loads faiss, scipy

    setup, _ = prepare_matchers(resolve_from_training(spec.memorization, spec.generator))
    return setup_identity(setup)


def shard_sizes(spec: Spec, shard_count: int) -> dict[int, int]:
    """Number of samples in each shard (the last one may be short)."""

    n, size = total_count(spec), spec.shards.size
    return {s: min(size, n - s * size) for s in range(shard_count)}
