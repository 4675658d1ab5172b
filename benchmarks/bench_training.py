"""Training speed and memory: steps/s and peak RSS of each method and stage, and phantom drawing.

Each configuration runs in a fresh process (so peak RSS is its own): the real Trainer on
builtin:tiny with phantom images, a few warm-up steps, then timed steps. Also the time to draw
1000 phantoms at 128 px.

    python benchmarks/bench_training.py [--steps 20] [--batch 32] [--resolution 64] [--record]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import torch
from synthdata.training.spec import load_train_spec_text
from synthdata.training.loop import Trainer
cfg = json.loads(sys.argv[1])
spec = load_train_spec_text(cfg["spec"])
t0 = time.perf_counter()
trainer = Trainer(spec, Path(cfg["out"]), "bench")
trainer.resume()
if cfg["stage"] == "diffusion" and trainer.stages[0].kind == "vae":
    trainer.begin_stage(1)
setup = time.perf_counter() - t0
for _ in range(cfg["warmup"]):
    trainer.train_step()
t = time.perf_counter()
for _ in range(cfg["steps"]):
    trainer.train_step()
dt = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"setup_s": round(setup, 2), "s_per_step": round(dt / cfg["steps"], 3),
                  "steps_per_s": round(cfg["steps"] / dt, 3),
                  "images_per_s": round(cfg["steps"] * cfg["batch"] / dt, 1),
                  "peak_rss_mb": round(rss, 1), "torch_threads": torch.get_num_threads(),
                  "device": trainer.device, "precision": trainer.precision}))
"""

BASE = """
name: bench
seed: 1
base: builtin:tiny
method: {method}
data:
  phantoms: {{count: 256, seed: 1, size: {resolution}}}
  caption_template: "{template}"
  resolution: {resolution}
training: {{steps: 100000, batch_size: {batch}, learning_rate: 0.0001, threads: {threads},
           device: {device}, gradient_checkpointing: {gc}}}
"""

CONFIGS = {
    "full-vae-stage": ("full", "{finding}", "full: {vae: {steps: 100000, batch_size: BATCH}, unet: false}", "vae"),
    "full-unet": ("full", "{finding}", "", "diffusion"),
    "full-unet+text": ("full", "{finding}", "full: {text_encoder: true}", "diffusion"),
    "lora-r4": ("lora", "{finding}", "lora: {rank: 4}", "diffusion"),
    "textual-inversion": ("textual_inversion", "<finding> {view}", "textual_inversion: {token: '<finding>'}", "diffusion"),
}


def run(name: str, args, cache: str) -> dict:
    method, template, extra, stage = CONFIGS[name]
    spec = BASE.format(method=method, template=template, resolution=args.resolution, batch=args.batch,
                       threads=args.threads, device=args.device, gc=str(args.gradient_checkpointing).lower())
    spec += extra.replace("BATCH", str(args.batch)) + "\n"
    with tempfile.TemporaryDirectory() as out:
        cfg = {"spec": spec, "out": out, "steps": args.steps, "warmup": 2, "batch": args.batch, "stage": stage}
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True,
                              env={**__import__("os").environ, "SYNTHDATA_CACHE": cache, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def phantom_speed() -> dict:
    from synthdata.phantoms import write_phantoms

    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        write_phantoms(Path(out) / "p", count=1000, seed=1, size=128)
        return {"count": 1000, "size": 128, "seconds": round(time.perf_counter() - t, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--only", nargs="*", choices=sorted(CONFIGS))
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        results = {name: run(name, args, cache) for name in (args.only or CONFIGS)}
    emit("training", {"steps": args.steps, "batch": args.batch, "resolution": args.resolution,
                      "threads": args.threads, "gradient_checkpointing": args.gradient_checkpointing,
                      "configs": results, "phantoms": phantom_speed()}, args.record)


if __name__ == "__main__":
    main()
