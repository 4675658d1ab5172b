"""`synthdata tune SPEC`: measure batch sizes and speed knobs for a spec's model on this machine.

For each knob setting (the defaults, then each knob on its own, or the settings given) and each
batch size, the spec's model generates the same seeded images: a warm-up call, then timed calls.
Reported per row: images per second, peak accelerator memory (CUDA), and whether the pixels
equal those of the default setting at the same batch size (a knob that changes pixels changes
the dataset's bytes: it is recorded per shard and replayed by `reproduce`). The suggestion is the
fastest row that ran; nothing is written to any dataset folder — applying it is the user's
choice (`execution.speed`, `generator.batch_size` in the spec).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from synthdata.generation.generators.base import SampleRequest
from synthdata.generation.generators.diffusers_gen import DiffusersGenerator
from synthdata.spec import Spec
from synthdata.spec.models import Speed
from synthdata.generation import engines

CPU_KNOBS = ({"attention": "math"}, {"channels_last": True}, {"fuse_qkv": True})
GPU_KNOBS = ({"attention": "flash"}, {"attention": "efficient"}, {"attention": "cudnn"},
             {"channels_last": True}, {"fuse_qkv": True}, {"tf32": True},
             {"compile": "max-autotune"})


@dataclass
class TuneRow:
    """One measured setting."""

    knobs: dict
    batch_size: int
    images_per_s: float | None
    peak_memory_gib: float | None
    same_pixels_as_default: bool | None
    max_pixel_diff: int | None
    error: str | None = None


def _requests(spec: Spec, n: int) -> list[SampleRequest]:
    from synthdata.plan.rows import derive_rows  # deferred: loads pyarrow

    rows = derive_rows(spec, 0, n).to_pylist()
    steps = spec.generator.steps
    return [SampleRequest(r["key"], r["prompt"], r["negative_prompt"], r["seed"], steps,
                          spec.generator.guidance_scale) for r in rows]


def _measure(gen: DiffusersGenerator, requests: list[SampleRequest], batch: int) -> tuple[float, list]:
    gen.generate(requests[:batch])  # warm-up (and compile)
    if gen.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start, images = time.perf_counter(), []
    for i in range(0, len(requests), batch):
        images += gen.generate(requests[i:i + batch])
    if gen.device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(requests) / (time.perf_counter() - start), images


def tune(spec: Spec, batches: list[int], knob_sets: list[dict] | None = None, images: int = 16,
         device: str | None = None) -> dict:
    """Measure every (knob setting, batch size); return rows and the suggested setting.

    On a CPU, torch's threads are pinned to the spec's per-worker thread count for the
    measurement, as a run's workers pin them, so the rates compare with `synthdata run`."""

    device = device or spec.generator.device
    probe = DiffusersGenerator(spec.generator, device=device)
    threads = engines.resolve(spec.execution, device).threads_per_worker
    previous = torch.get_num_threads()
    if not probe.device.startswith("cuda"):
        torch.set_num_threads(threads)
    try:
        result = _tune_rows(spec, probe, batches, knob_sets, images, device)
    finally:
        torch.set_num_threads(previous)
    return {**result, "threads": threads if not probe.device.startswith("cuda") else None}


def _tune_rows(spec: Spec, probe: DiffusersGenerator, batches: list[int], knob_sets: list[dict] | None,
               images: int, device: str) -> dict:
    if knob_sets is None:
        knob_sets = [{}, *(GPU_KNOBS if probe.device.startswith("cuda") else CPU_KNOBS)]
    requests = _requests(spec, images)
    reference: dict[int, np.ndarray] = {}
    rows: list[TuneRow] = []
    for knobs in knob_sets:
        speed = Speed(**knobs)
        gen = DiffusersGenerator(spec.generator, device=device, speed=speed)
        try:
            gen.load()
        except (RuntimeError, ValueError, NotImplementedError) as exc:
            rows += [TuneRow(speed.changed(), b, None, None, None, None, f"{type(exc).__name__}: {exc}")
                     for b in batches]
            continue
        for batch in batches:
            try:
                rate, out = _measure(gen, requests, batch)
            except (torch.cuda.OutOfMemoryError, RuntimeError, NotImplementedError) as exc:
                rows.append(TuneRow(speed.changed(), batch, None, None, None, None,
                                    f"{type(exc).__name__}: {str(exc).splitlines()[0]}"))
                continue
            pixels = np.stack(out).astype(np.int16)
            base = reference.setdefault(batch, pixels) if not knobs else reference.get(batch)
            diff = None if base is None else int(np.abs(pixels - base).max())
            memory = torch.cuda.max_memory_allocated() / 2**30 if gen.device.startswith("cuda") else None
            rows.append(TuneRow(speed.changed(), batch, round(rate, 3),
                                None if memory is None else round(memory, 2),
                                None if diff is None else diff == 0, diff))
        del gen
    ran = [r for r in rows if r.images_per_s is not None]
    best = max(ran, key=lambda r: r.images_per_s) if ran else None
    return {"model": spec.generator.model, "device": probe.device, "images": images,
            "steps": spec.generator.steps, "size": [spec.generator.height, spec.generator.width],
            "rows": [asdict(r) for r in rows], "suggested": None if best is None else asdict(best)}
