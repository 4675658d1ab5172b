"""Does builtin:phantom draw its labels? Generate a demo spec's images, measure separability.

Plans the spec (default `specs/demo.yaml`), generates every sample through the normal
DiffusersGenerator in the plan's batches, and reports the leave-one-out accuracy of a
nearest-centroid classifier on 16x16 gray thumbnails (majority-class rate beside it), with
one contact sheet per label written to --sheets. `--checkpoint DIR` evaluates a training
checkpoint instead (its tensors loaded onto the train spec's base model).

    python benchmarks/bench_phantom_model.py [--spec specs/demo.yaml] [--sheets out/]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from _common import emit
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def model_from_checkpoint(checkpoint: Path, train_spec: Path, folder: Path) -> Path:
    """A pipeline folder: the train spec's base with the checkpoint's trained tensors."""
    import torch

    from synthdata.training.checkpoints import list_checkpoints, load_checkpoint
    from synthdata.training.loop import load_base
    from synthdata.training.spec import load_train_spec

    spec = load_train_spec(train_spec)
    ckpt = next(c for c in list_checkpoints(checkpoint.parents[1]) if c.path == checkpoint)
    params, state = load_checkpoint(ckpt, "cpu")
    pipe = load_base(spec, "cpu")
    modules = {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder}
    with torch.no_grad():
        for name, tensor in params.items():
            module, _, pname = name.partition(".")
            dict(modules[module].named_parameters())[pname].copy_(tensor)
    pipe.vae.register_to_config(scaling_factor=state["vae_scaling_factor"])
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def generate(spec_path: Path, model: str | None, guidance: float | None = None,
             steps: int | None = None) -> tuple[list[np.ndarray], list[str], float]:
    from synthdata.generation.generators.base import SampleRequest
    from synthdata.generation.generators.diffusers_gen import DiffusersGenerator
    from synthdata.plan.rows import derive_rows, plan_batches, total_count
    from synthdata.plan.load import load_spec

    spec = load_spec(spec_path)
    gen_cfg = spec.generator if model is None else spec.generator.model_copy(update={"model": model})
    gen = DiffusersGenerator(gen_cfg, device="cpu")
    gen.load()
    rows = derive_rows(spec, 0, total_count(spec)).to_pylist()
    for r in rows:
        r["guidance_scale"] = guidance if guidance is not None else r["guidance_scale"]
        r["steps"] = steps or r["steps"]
    images, labels = [], []
    t = time.perf_counter()
    for calls in plan_batches(rows):
        for call in calls:
            reqs = [SampleRequest(key=r["key"], prompt=r["prompt"], negative_prompt=r["negative_prompt"],
                                  seed=r["seed"], steps=r["steps"], guidance_scale=r["guidance_scale"]) for r in call]
            images += gen.generate(reqs)
            labels += [r["label"] for r in call]
    return images, labels, time.perf_counter() - t


def contact_sheets(images: list[np.ndarray], labels: list[str], out: Path, per_row: int = 10) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for label in sorted(set(labels)):
        group = [im for im, lab in zip(images, labels) if lab == label]
        h, w = group[0].shape[:2]
        rows = (len(group) + per_row - 1) // per_row
        sheet = Image.new("RGB", (per_row * w, rows * h))
        for k, im in enumerate(group):
            sheet.paste(Image.fromarray(im), ((k % per_row) * w, (k // per_row) * h))
        path = out / f"contact-{label}.png"
        sheet.save(path)
        written.append(str(path))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", type=Path, default=REPO / "specs" / "demo.yaml")
    parser.add_argument("--model", default=None, help="override generator.model")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a checkpoints/<...> folder")
    parser.add_argument("--train-spec", type=Path, default=REPO / "specs" / "train-phantom.yaml")
    parser.add_argument("--sheets", type=Path, default=None)
    parser.add_argument("--guidance", type=float, default=None, help="override the guidance scale")
    parser.add_argument("--steps", type=int, default=None, help="override the sampling steps")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    from synthdata.phantoms import nearest_centroid_accuracy, thumbnails

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if args.checkpoint is not None:
            model = str(model_from_checkpoint(args.checkpoint, args.train_spec, Path(tmp) / "model"))
        images, labels, seconds = generate(args.spec, model, args.guidance, args.steps)
    accuracy = nearest_centroid_accuracy(thumbnails(images), labels)
    counts = Counter(labels)
    sheets = contact_sheets(images, labels, args.sheets) if args.sheets else []
    emit("phantom-model", {"spec": str(args.spec), "model": model or "spec", "checkpoint": str(args.checkpoint),
                           "guidance": args.guidance, "sampling_steps": args.steps,
                           "images": len(images), "generation_s": round(seconds, 1),
                           "nearest_centroid_loo_accuracy": round(accuracy, 4),
                           "majority_rate": round(max(counts.values()) / len(labels), 4),
                           "labels": dict(counts), "contact_sheets": sheets}, args.record)


if __name__ == "__main__":
    main()
