"""GPU path: a Stable-Diffusion-1.5-sized pipeline with random weights, fp16, 512 px.

Per batch size: raw pipeline images/s, GPU utilisation (NVML, sampled while it runs), and the
compute-bound rate (the UNet alone, classifier-free-guidance batch, same steps), whose ratio to
the pipeline rate says how close the pipeline stays to the model's ceiling. Then synthdata's
shard worker (the exact code a Prefect shard task runs: generation, PNG encoding, tar, parquet,
marker) at the best batch size, and optionally the whole `synthdata run` flow.

    python benchmarks/bench_gpu.py --batches 1,4,8,16 --steps 20
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import build_pipeline, emit, prompts


class GpuSampler:
    """Mean GPU utilisation (%) and peak memory while the block runs, from NVML."""

    def __enter__(self):
        import pynvml

        pynvml.nvmlInit()
        self._h = pynvml.nvmlDeviceGetHandleByIndex(0)
        self._nvml, self.samples, self.peak_mib, self._stop = pynvml, [], 0.0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.05):
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._h).gpu)
            self.peak_mib = max(self.peak_mib, self._nvml.nvmlDeviceGetMemoryInfo(self._h).used / 2**20)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    @property
    def mean(self) -> float:
        return sum(self.samples) / max(1, len(self.samples))


def pipeline_rate(pipe, batch: int, steps: int, height: int, rounds: int) -> dict:
    import torch

    kw = dict(num_inference_steps=steps, guidance_scale=4.0, height=height, width=height, output_type="np")
    pipe(prompt=prompts(batch), **kw)
    torch.cuda.synchronize()
    with GpuSampler() as gpu:
        t = time.perf_counter()
        for r in range(rounds):
            gens = [torch.Generator().manual_seed(r * batch + i) for i in range(batch)]
            pipe(prompt=prompts(batch), generator=gens, **kw)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t
    return {"images_per_s": batch * rounds / dt, "gpu_util_mean_pct": gpu.mean, "gpu_mem_peak_mib": gpu.peak_mib}


def unet_rate(pipe, batch: int, steps: int, height: int, rounds: int) -> float:
    """Images/s if only the UNet ran (CFG doubles the batch): the compute-bound ceiling."""
    import torch

    unet = pipe.unet
    lat = torch.randn(2 * batch, 4, height // 8, height // 8, device="cuda", dtype=unet.dtype)
    ctx = torch.randn(2 * batch, 77, unet.config.cross_attention_dim, device="cuda", dtype=unet.dtype)
    with torch.inference_mode():
        unet(lat, 500, encoder_hidden_states=ctx)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(rounds * steps):
            unet(lat, 500, encoder_hidden_states=ctx)
        torch.cuda.synchronize()
    return batch * rounds / (time.perf_counter() - t)


def worker_rate(folder: Path, batch: int, steps: int, height: int, count: int, work: Path) -> dict:
    from synthdata.generation import worker
    from synthdata.plan.load import load_spec_text

    spec = load_spec_text(f"""
name: gpu
count: {count}
labels: {{a: {{weight: 1, prompts: ["PA chest x-ray of a {{age}} year old"]}}}}
vars: {{age: {{min: 20, max: 90}}}}
generator: {{model: "{folder}", steps: {steps}, height: {height}, width: {height}, batch_size: {batch}}}
shards: {{size: {count}}}
""")
    job = worker.job_as_dict(worker.JobInfo("s", "p", "f"))
    worker.generate_shard(spec.model_dump(mode="json"), str(work / "warm"), 0, job)  # load + warm-up
    with GpuSampler() as gpu:
        t = time.perf_counter()
        worker.generate_shard(spec.model_dump(mode="json"), str(work / "timed"), 0, job)
        dt = time.perf_counter() - t
    return {"images": count, "images_per_s": count / dt, "gpu_util_mean_pct": gpu.mean}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="sd15", choices=["tiny", "mid", "sd15"])
    ap.add_argument("--batches", default="1,4,8,16")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--worker-count", type=int, default=64)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    import torch
    from diffusers import DiffusionPipeline

    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    t = time.perf_counter()
    folder = build_pipeline(args.size, Path(os.environ.get("BENCH_MODELS", work / "models")), "float16")
    build_s = time.perf_counter() - t
    pipe = DiffusionPipeline.from_pretrained(folder, dtype=torch.float16, local_files_only=True,
                                             safety_checker=None, requires_safety_checker=False).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    result: dict = {"size": args.size, "steps": args.steps, "height": args.height, "dtype": "float16",
                    "unet_params_m": sum(p.numel() for p in pipe.unet.parameters()) / 1e6,
                    "build_s": build_s, "per_batch": {}}
    best = (0.0, 1)
    for b in (int(x) for x in args.batches.split(",")):
        row = pipeline_rate(pipe, b, args.steps, args.height, args.rounds)
        row["unet_only_images_per_s"] = unet_rate(pipe, b, args.steps, args.height, args.rounds)
        row["fraction_of_compute_bound"] = row["images_per_s"] / row["unet_only_images_per_s"]
        result["per_batch"][b] = row
        best = max(best, (row["images_per_s"], b))
        print(b, row, file=sys.stderr, flush=True)
    del pipe
    torch.cuda.empty_cache()
    result["synthdata_worker"] = {"batch": best[1], **worker_rate(folder, best[1], args.steps, args.height,
                                                                   args.worker_count, work)}
    result["synthdata_worker"]["over_raw_best"] = result["synthdata_worker"]["images_per_s"] / best[0]
    emit("gpu", result, args.record)


if __name__ == "__main__":
    main()
