"""Adapting a diffusers text-to-image model to images with captions (`synthdata train`).

    from synthdata.training import load_train_spec, run_training
    record = run_training(load_train_spec("specs/train-demo.yaml"), "models/demo")

What a trained model was made from is read back by `synthdata.generation.trained`
(`training_chain`, `training_reference`, `resolve_from_training`).

Modules: `spec` (the train spec), `data` (sources, captions, fingerprints), `methods` (full,
LoRA, textual inversion), `loop` (seeded steps, checkpoints, resume), `checkpoints`, `export`
(what a run writes), `trainrecord` (writes train.json and the loss plot; reading them back is
`synthdata.generation.trained`),
`run` (one run as plain functions), `flow` (the `synthdata-train` Prefect flow).
Import-light: heavy modules load on first use.
"""

from __future__ import annotations

from synthdata.training.spec import TrainSpec, load_train_spec, train_json_schema

__all__ = ["TrainSpec", "load_train_spec", "run_training", "train_json_schema"]


def __getattr__(name: str):
    if name == "run_training":
        from synthdata.training.run import run_training  # deferred: loads torch

        return run_training
    raise AttributeError(f"module 'synthdata.training' has no attribute {name!r}")
