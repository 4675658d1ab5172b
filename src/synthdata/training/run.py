"""One training run from start (or the last checkpoint) to train.json, as plain functions.

`run_training` is what the Prefect flow (`flow.py`) and the tests call. The output folder
holds `train-spec.yaml` (the spec as run), `checkpoints/`, the method's output, `train.json`
and `loss.png`. A folder holding another spec's training is refused; a folder whose
train.json is complete for this spec is left alone (rerunning is a no-op).
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from synthdata.errors import OutputError
from synthdata.fsutil import write_text_atomic
from synthdata.training.trainrecord import TRAIN_JSON, write_train_record
from synthdata.training.spec import TrainSpec, train_spec_hash
from synthdata.generation.fingerprint import model_fingerprint
from synthdata.libraries import library_versions
from synthdata.spec.models import Generator
from synthdata.training.data import phantom_set
from synthdata.training.data import source_record

SPEC_FILE = "train-spec.yaml"
SegmentRunner = Callable[["object", int], list[float]]


def run_segment(trainer, stop: int) -> list[float]:
    """Steps of the current stage up to `stop`, then a checkpoint; returns their losses."""
    losses = []
    while trainer.step < stop:
        losses.append(trainer.train_step())
    trainer.save_checkpoint()
    return losses


def prepare_output(root: Path, spec: TrainSpec, spec_hash: str) -> dict | None:
    """Check the folder's identity and write train-spec.yaml; return a finished record, if any."""
    spec_file = root / SPEC_FILE
    if spec_file.is_file():
        old = yaml.safe_load(spec_file.read_text()) or {}
        if old.get("spec_hash") != spec_hash:
            raise OutputError(f"{root} holds a training made from a different spec ({spec_file}); "
                              "use another --out, or delete the folder to start over")
        record_file = root / TRAIN_JSON
        if record_file.is_file():
            record = json.loads(record_file.read_text())
            if record.get("spec_hash") == spec_hash:
                return record
        return None
    others = [p.name for p in root.iterdir() if not p.name.startswith(".")] if root.is_dir() else []
    if others:
        raise OutputError(f"{root} is not empty and holds no synthdata training (found "
                          f"{', '.join(sorted(others)[:5])}); choose an empty or new folder")
    root.mkdir(parents=True, exist_ok=True)
    body = {"spec_hash": spec_hash, **spec.model_dump(mode="json")}
    write_text_atomic(spec_file, yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
    return None


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def run_training(spec: TrainSpec, root: str | Path, *, stop_after: int | None = None,
                 segment: SegmentRunner = run_segment, log: Callable[[str], None] | None = None,
                 on_step: Callable[[str, int, int, float], None] | None = None) -> dict:
    """Train (resuming from the last checkpoint), write the outputs and train.json.

    `stop_after`: stop at the first checkpoint after that many steps of this invocation
    (as a kill would, but cleanly); the result then has `"stopped": True` and no outputs.
    """
    from synthdata.training.loop import Trainer  # deferred: loads diffusers, transformers

    root = Path(root)
    spec_hash = train_spec_hash(spec)
    done = prepare_output(root, spec, spec_hash)
    if done is not None:
        return {**done, "already_trained": True}
    clock = time.perf_counter()
    trainer = Trainer(spec, root, spec_hash)
    trainer.on_step = on_step
    trainer.resume()
    ran, every = 0, spec.training.checkpoint_every
    while True:
        stage = trainer.stages[trainer.stage_index]
        if trainer.step >= stage.steps:
            if stage.kind == "vae":
                trainer.vae_scaling_factor = trainer.calibrate_vae_scale()
            if trainer.stage_index + 1 < len(trainer.stages):
                trainer.begin_stage(trainer.stage_index + 1)
                continue
            break
        if stop_after is not None and ran >= stop_after:
            return {"stopped": True, "stage": stage.name, "step": trainer.step}
        stop = min(stage.steps, (trainer.step // every + 1) * every)
        start = trainer.step
        losses = segment(trainer, stop)
        ran += stop - start
        if log:
            log(f"{stage.name}: step {trainer.step}/{stage.steps}, loss {sum(losses) / max(len(losses), 1):.4f}")
    seconds = time.perf_counter() - clock
    return finish(trainer, root, seconds, ran)


def finish(trainer, root: Path, seconds: float, ran: int) -> dict:
    """Write the outputs and train.json (+ loss.png); return the record."""
    from synthdata.training.export import save_outputs  # deferred: loads diffusers

    spec = trainer.spec
    outputs = save_outputs(trainer, root)
    base_fp, data_fp = trainer.base_fingerprint, trainer.data_fingerprint
    out_fp = model_fingerprint(Generator(model=str(root / outputs["model"]["path"]))).fingerprint \
        if "model" in outputs else None
    source = source_record(spec.data)
    if source["kind"] == "phantoms":
        folder = phantom_set(spec.data.phantoms).resolve()
        images = [str(it.path.resolve().relative_to(folder)) for it in trainer.items]
    else:
        images = [it.id if it.member else str(it.path.resolve()) for it in trainer.items]
    steps = sum(s.steps for s in trainer.stages)
    options = {"full": spec.full, "lora": spec.lora, "textual_inversion": spec.textual_inversion}[spec.method]
    record = {
        "name": spec.name, "method": spec.method, "spec_hash": trainer.spec_hash, "seed": spec.seed,
        "base": {"model": spec.base, "revision": spec.revision, "fingerprint": base_fp},
        "base_fingerprint": base_fp, "data_fingerprint": data_fp,
        "captions_fingerprint": trainer.captions_fingerprint, "images": len(trainer.items),
        "data": {"source": source, "filter": spec.data.filter, "limit": spec.data.limit,
                 "resolution": spec.data.resolution, "caption_column": spec.data.caption_column,
                 "caption_template": spec.data.caption_template,
                 "caption_dropout": spec.data.caption_dropout, "captions_truncated": trainer.truncated},
        "training_images": images,
        "hyperparameters": {"training": spec.training.model_dump(mode="json"),
                            spec.method: options.model_dump(mode="json") if options else None},
        "stages": [{"name": s.name, "steps": s.steps, "batch_size": s.batch_size,
                    "trainable_parameters": sum(p.numel() for p in s.named_params().values())}
                   for s in trainer.stages],
        "vae_scaling_factor": float(trainer.vae.config.scaling_factor),
        "loss": {k: [round(v, 6) for v in vs] for k, vs in trainer.losses.items()},
        "final_loss": {k: round(sum(vs[-20:]) / len(vs[-20:]), 6) for k, vs in trainer.losses.items() if vs},
        "outputs": outputs, "output_fingerprint": out_fp,
        "device": trainer.device, "mixed_precision": trainer.precision,
        "torch_threads": torch.get_num_threads(), "resumed_from": trainer.resumed_from,
        "library_versions": library_versions(),
        "timing": {"seconds": round(seconds, 2), "steps": steps, "steps_this_run": ran,
                   "steps_per_second": round(ran / seconds, 3) if seconds else None,
                   "peak_rss_mb": _peak_rss_mb()},
    }
    write_train_record(root, record)
    if spec.output.clean_checkpoints:
        shutil.rmtree(root / "checkpoints", ignore_errors=True)
    return record
