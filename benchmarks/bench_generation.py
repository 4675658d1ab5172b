"""Generation efficiency, side by side in one run: (a) raw pipeline, (b) naive script, (c) synthdata.

(a) the ceiling: raw diffusers pipeline calls at the chosen batch size, no I/O;
(b) what a team writes by hand: one pipeline call per prompt, each PNG saved as it comes;
(c) `synthdata run` through the real Prefect flow (server start-up reported separately).

    python benchmarks/bench_generation.py --size tiny --count 96 --steps 10 --height 64
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml
from _common import build_pipeline, emit, prompts


def _load(folder: Path, device: str, dtype):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(folder, dtype=dtype, local_files_only=True,
                                             safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def raw_pipeline(folder, args, device, dtype) -> dict:
    import torch

    pipe = _load(folder, device, dtype)
    texts = prompts(args.count)
    kw = dict(num_inference_steps=args.steps, guidance_scale=4.0, height=args.height, width=args.height,
              output_type="np")
    pipe(prompt=texts[: args.batch], **kw)  # warm-up
    _sync(device)
    t = time.perf_counter()
    for i in range(0, args.count, args.batch):
        chunk = texts[i: i + args.batch]
        gens = [torch.Generator().manual_seed(j) for j in range(i, i + len(chunk))]
        pipe(prompt=chunk, generator=gens, **kw)
    _sync(device)
    dt = time.perf_counter() - t
    return {"images": args.count, "seconds": dt, "images_per_s": args.count / dt}


def naive_script(folder, args, device, dtype, out: Path) -> dict:
    import torch

    pipe = _load(folder, device, dtype)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for i, text in enumerate(prompts(args.count)):
        image = pipe(prompt=text, num_inference_steps=args.steps, guidance_scale=4.0, height=args.height,
                     width=args.height, generator=torch.Generator().manual_seed(i)).images[0]
        image.save(out / f"{i:06d}.png")
    dt = time.perf_counter() - t
    return {"images": args.count, "seconds": dt, "images_per_s": args.count / dt}


def synthdata_run(folder, args, out: Path, workers: int, threads: int) -> dict:
    from synthdata.flow import synthdata_run as run

    spec = {
        "name": "bench", "seed": 1, "count": args.count,
        "labels": {"a": {"weight": 1, "prompts": ["PA chest x-ray of a {age} year old {sex}"]}},
        "vars": {"age": {"min": 20, "max": 90}, "sex": ["female", "male"]},
        "generator": {"model": str(folder), "steps": args.steps, "guidance_scale": 4.0,
                      "height": args.height, "width": args.height, "batch_size": args.batch,
                      "dtype": args.dtype},
        "shards": {"size": args.shard_size},
        "execution": {"workers": workers, "threads_per_worker": threads},
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    t = time.perf_counter()
    result = run(str(path), out_dir=str(out))
    total = time.perf_counter() - t
    gen = result["timings"]["generate_s"]
    return {"images": args.count, "workers": workers, "threads_per_worker": threads,
            "total_seconds": total, "generate_seconds": gen, "images_per_s": args.count / gen,
            "images_per_s_end_to_end": args.count / total, "overhead_outside_generation_s": total - gen}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", choices=["tiny", "mid", "sd15"], default="tiny")
    ap.add_argument("--count", type=int, default=96)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--shard-size", type=int, default=32)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--workers", default="1,auto", help="synthdata worker counts to run (comma list)")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = ap.parse_args()

    from synthdata.cli import quiet_environment

    quiet_environment()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if (args.dtype == "auto" and device == "cuda") or args.dtype == "float16" \
        else torch.float32
    work = Path(tempfile.mkdtemp(prefix="bench-gen-"))
    folder = build_pipeline(args.size, Path(os.environ.get("BENCH_MODELS", work / "models")),
                            "float16" if device == "cuda" else "float32")
    result: dict = {"size": args.size, "count": args.count, "steps": args.steps, "height": args.height,
                    "batch": args.batch, "device": device, "dtype": str(dtype)}
    result["a_raw_pipeline"] = raw_pipeline(folder, args, device, dtype)
    if not args.skip_naive:
        result["b_naive_script"] = naive_script(folder, args, device, dtype, work / "naive")
    cpus = os.cpu_count() or 1
    for w in args.workers.split(","):
        workers = (torch.cuda.device_count() or cpus) if w == "auto" else int(w)
        threads = 1 if device == "cuda" else max(1, cpus // workers)
        result[f"c_synthdata_{workers}w"] = synthdata_run(folder, args, work / f"run{workers}", workers, threads)
    a = result["a_raw_pipeline"]["images_per_s"]
    for key in [k for k in result if k.startswith("c_")]:
        c = result[key]["images_per_s"]
        result[key]["c_over_a"] = c / a
        if "b_naive_script" in result:
            result[key]["c_over_b"] = c / result["b_naive_script"]["images_per_s"]
    emit("generation", result, args.record)


if __name__ == "__main__":
    main()
