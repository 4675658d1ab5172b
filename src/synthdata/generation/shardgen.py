"""Generating one shard: pipeline calls as the plan cuts them, out-of-memory halving, quality
checks with regeneration, then the tar, its rows and its completion marker.

Without `qc:` checks a shard streams: each call's images are PNG-encoded in a small thread pool
while the next call runs, and written to the tar in key order.

With checks (`synthdata.qc`), a shard is generated in attempts. Attempt 0 is the plan: its
calls and seeds. The checks then run over the shard's images; samples that fail are generated
again at attempt 1 with seeds `plan.attempt_seed(spec seed, index, 1)`, in calls of the
shard's batch size over the failed samples in index order, and only they are checked again
(against the shard's current images); and so on up to `qc.max_attempts`. Everything is a
function of the plan and the pixels, so it is byte-identical across workers and engines. Each
sample records its final attempt, the seed and pipeline call that made its image, its QC
result, and every earlier attempt with its seed, call and reason (KEY.json and the rows
parquet), which is what `reproduce` replays. A sample that still fails stays in the raw shard
with `qc_passed = false` and is left out of the accepted shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from synthdata.plan import rows as planning
from synthdata.folder import DatasetFolder
from synthdata.fsutil import atomic_path
from synthdata.generation.generators.base import ImageGenerator, SampleRequest
from synthdata.qc.identity import checks_identity
from synthdata.plan.rows import plan_batches
from synthdata.folder.shards import Sample, clear_shard, encode_png, to_uint8, write_marker, write_tar
from synthdata.spec import Spec
from synthdata.qc import SampleQC, run_checks
from synthdata.spec.blend import parse_blend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobInfo:
    """What every shard task shares: hashes, the model fingerprint, the expected hardware.

    `device_type`, `dtype` and `speed` are what the flow resolved for the folder's identity
    ("" / None when not checked); a worker that resolves differently refuses.
    """

    spec_hash: str
    plan_hash: str
    model_fingerprint: str
    device: str = "auto"
    gpu_count: int = 0
    device_type: str = ""
    dtype: str = ""
    speed: dict | None = None


@dataclass
class CallLimit:
    """Largest pipeline call to attempt within one shard; lowered after a CUDA out-of-memory error."""

    size: int | None = None
    splits: int = 0


@dataclass
class Made:
    """How a sample's current image was made, and its QC result."""

    row: dict
    attempt: int
    seed: int
    call: list[str]
    qc: object = None
    history: list[dict] = field(default_factory=list)


def requests(rows: Sequence[dict]) -> list[SampleRequest]:
    """Generator requests of plan rows (their `seed` is the seed used)."""
    return [SampleRequest(key=r["key"], prompt=r["prompt"], negative_prompt=r["negative_prompt"],
                          seed=r["seed"], steps=r["steps"], guidance_scale=r["guidance_scale"],
                          label=r.get("label", ""))
            for r in rows]


def empty_cuda_cache() -> None:
    """Give cached GPU memory back (after an out-of-memory split, before loading a model)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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
            images = gen.generate(requests(part))
        except torch.cuda.OutOfMemoryError:
            if len(part) == 1:
                raise
            images = None  # handled below, outside the handler, so the failed call's memory is freed
        if images is None:
            limit.size, limit.splits = (len(part) + 1) // 2, limit.splits + 1
            log.warning("CUDA out of memory on a call of %d images; retrying in calls of %d",
                        len(part), limit.size)
            empty_cuda_cache()
            continue
        non_finite = getattr(gen, "last_non_finite", {})
        yield part, [non_finite.get(j, image) for j, image in enumerate(images)]
        i += len(part)


def _blend_record(prompt: str) -> dict:
    """{"blend": [{prompt, weight}, ...]} for a blend prompt, else nothing (KEY.json unchanged)."""

    parts = parse_blend(prompt)
    return {"blend": [{"prompt": p.prompt, "weight": p.weight} for p in parts]} if parts else {}


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
        **_blend_record(row["prompt"]),
    }


def _sample(spec: Spec, job: JobInfo, dtype: str, row: dict, call_size: int, png: bytes,
            made: Made | None = None) -> tuple[Sample, dict]:
    meta = sample_metadata(row, spec, job, call_size, dtype)
    record = {**row, "batch_size": call_size, "png_sha256": hashlib.sha256(png).hexdigest(),
              "png_bytes": len(png)}
    if made is not None:
        meta.update(seed=made.seed, batch_size=len(made.call),
                    qc={"passed": made.qc.passed, "reason": made.qc.reason})
        if made.attempt:
            meta.update(attempt=made.attempt, attempts=made.history)
        record.update(attempt=made.attempt, generated_seed=made.seed, qc_passed=made.qc.passed,
                      qc_reason=made.qc.reason, qc=json.dumps(made.qc.as_dict(), sort_keys=True),
                      call_keys=json.dumps(made.call), attempts=json.dumps(made.history))
    sample = Sample(key=row["key"], png=png, meta=meta, label_index=row["label_index"],
                    prompt=row["prompt"])
    return sample, record


def _streamed(spec: Spec, job: JobInfo, gen: ImageGenerator, rows: list[dict], pool: ThreadPoolExecutor,
              limit: CallLimit) -> Iterator[tuple[Sample, dict]]:
    """No checks: generate call by call; PNG encoding of one call overlaps generation of the next."""
    dtype = gen.describe()["dtype"]
    pending: deque = deque()
    for calls in plan_batches(rows):
        batch = []
        for call in calls:
            for part, images in generate_call(gen, call, limit):
                batch += [(row, len(part), pool.submit(encode_png, to_uint8(image)))
                          for row, image in zip(part, images)]
        pending.extend(sorted(batch, key=lambda entry: entry[0]["index"]))
        while pending and pending[0][2].done():
            row, size, future = pending.popleft()
            yield _sample(spec, job, dtype, row, size, future.result())
    while pending:
        row, size, future = pending.popleft()
        yield _sample(spec, job, dtype, row, size, future.result())


def _retry_rows(failed: list[dict], spec: Spec, attempt: int) -> list[dict]:
    """The failed rows with attempt seeds, cut into calls of the batch size (as `batch`)."""
    seeds = planning.attempt_seed(spec.seed, np.array([r["index"] for r in failed]), attempt)
    size = spec.generator.batch_size
    return [{**r, "seed": int(s), "batch": pos // size} for pos, (r, s) in enumerate(zip(failed, seeds))]


def _run_attempt(gen: ImageGenerator, rows: list[dict], attempt: int, limit: CallLimit,
                 images: dict[str, np.ndarray], made: dict[str, Made]) -> None:
    for calls in plan_batches(rows):
        for call in calls:
            for part, out in generate_call(gen, call, limit):
                keys = [r["key"] for r in part]
                for r, image in zip(part, out):
                    images[r["key"]] = image
                    old = made.get(r["key"])
                    made[r["key"]] = Made(old.row if old else r, attempt, r["seed"], keys,
                                          history=old.history if old else [])


GROUP_CHECKS = ("near_duplicate",)  # checks that compare a sample with the others of its shard


def _check_round(checks: list, rows: list[dict], todo: list[dict],
                 images: dict[str, np.ndarray]) -> dict:
    """QC results of the `todo` samples: per-image checks on them alone, group checks over the
    whole shard's current images (a regenerated sample may duplicate one that passed)."""

    keys = [r["key"] for r in todo]
    per_image = [c for c in checks if c.name not in GROUP_CHECKS]
    group = [c for c in checks if c.name in GROUP_CHECKS]
    own = dict(zip(keys, run_checks(per_image, [images[k] for k in keys], todo)))
    shard = dict(zip([r["key"] for r in rows], run_checks(group, [images[r["key"]] for r in rows], rows)))
    order = {c.name: i for i, c in enumerate(checks)}
    return {k: SampleQC(k, tuple(sorted(own[k].results + shard[k].results,
                                        key=lambda res: order.get(res.check, len(order)))))
            for k in keys}


def _checked(spec: Spec, gen: ImageGenerator, rows: list[dict], limit: CallLimit,
             checks: list) -> tuple[dict[str, np.ndarray], dict[str, Made]]:
    """Attempts until every sample passes the checks or qc.max_attempts is reached."""
    images: dict[str, np.ndarray] = {}
    made: dict[str, Made] = {}
    _run_attempt(gen, rows, 0, limit, images, made)
    todo = rows
    for attempt in range(1, spec.qc.max_attempts + 1):
        for key, result in _check_round(checks, rows, todo, images).items():
            made[key].qc = result
        failed = [r for r in rows if not made[r["key"]].qc.passed]
        if not failed or attempt == spec.qc.max_attempts:
            break
        for r in failed:
            m = made[r["key"]]
            m.history.append({"attempt": m.attempt, "seed": m.seed, "call": m.call, "reason": m.qc.reason})
        todo = failed
        _run_attempt(gen, _retry_rows(failed, spec, attempt), attempt, limit, images, made)
    return images, made


def _checked_samples(spec: Spec, job: JobInfo, gen: ImageGenerator, rows: list[dict],
                     pool: ThreadPoolExecutor, limit: CallLimit, checks: list) -> Iterator[tuple[Sample, dict]]:
    images, made = _checked(spec, gen, rows, limit, checks)
    dtype = gen.describe()["dtype"]
    pngs = pool.map(lambda r: encode_png(to_uint8(images[r["key"]])), rows)
    for row, png in zip(rows, pngs):
        m = made[row["key"]]
        first_call = m.history[0]["call"] if m.history else m.call
        yield _sample(spec, job, dtype, row, len(first_call), png, m)


def write_shard(spec: Spec, job: JobInfo, gen: ImageGenerator, out_dir: str | Path, shard: int,
                limit: CallLimit | None = None, checks: list | None = None) -> int:
    """Generate one shard with `gen` into DIR/raw: tar, rows parquet, then completion marker.

    `limit` starts empty for every shard (pass one only to observe the out-of-memory splits);
    `checks` are the spec's built QC checks (`synthdata.qc.build_checks`), if any. The rows
    parquet's `batch_size` is the size of the sample's attempt-0 call (what replays the plan).
    The marker records the generation identity (`outputs.GenerationIdentity`): model, device
    type, dtype, speed knobs, and the checks' classifier fingerprints and top-up screening setup.
    """
    folder = DatasetFolder(out_dir)
    clear_shard(folder, shard)
    rows = planning.shard_rows(spec, shard).to_pylist()
    limit = limit if limit is not None else CallLimit()
    records: list[dict] = []
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="png") as pool:
        produced = _checked_samples(spec, job, gen, rows, pool, limit, checks) if checks \
            else _streamed(spec, job, gen, rows, pool, limit)

        def samples() -> Iterator[Sample]:
            for sample, record in produced:
                records.append(record)
                yield sample

        written = write_tar(folder.raw_tar(shard), samples())
    with atomic_path(folder.raw_rows(shard)) as tmp:
        pq.write_table(pa.Table.from_pylist(records), tmp)
    described = gen.describe()
    write_marker(folder, shard, {
        "count": written.count, "spec_hash": job.spec_hash, "plan_hash": job.plan_hash,
        "model_fingerprint": job.model_fingerprint,
        "device_type": device_type(described["device"]), "dtype": described["dtype"],
        "speed": described.get("speed", {}), **checks_identity(spec, checks or [])}, written)
    return written.count


def device_type(device: str) -> str:
    """cuda:1 -> cuda; cpu -> cpu."""
    return str(device).split(":", 1)[0]
