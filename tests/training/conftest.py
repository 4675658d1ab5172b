"""Training fixtures: tiny train specs on phantom images (never clinical data)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest


def write_spec(folder: Path, body: str, name: str = "train.yaml") -> Path:
    """Write a train spec (dedented) into folder and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


TI_SPEC = """\
    name: ti-test
    seed: 5
    base: builtin:tiny
    method: textual_inversion
    data:
      phantoms: {count: 6, seed: 3, size: 32, labels: [effusion, normal]}
      caption_template: "{view} chest x-ray with <finding>, {side}"
      resolution: 32
    training:
      steps: 4
      batch_size: 2
      learning_rate: 0.05
      checkpoint_every: 2
      threads: 1
    textual_inversion: {token: "<finding>", initializer: "effusion"}
    """

LORA_SPEC = """\
    name: lora-test
    seed: 5
    base: builtin:tiny
    method: lora
    data:
      phantoms: {count: 6, seed: 3, size: 32}
      caption_column: finding
      resolution: 32
    training:
      steps: 4
      batch_size: 2
      learning_rate: 0.01
      checkpoint_every: 2
      threads: 1
    lora: {rank: 2}
    """

FULL_SPEC = """\
    name: full-test
    seed: 7
    base: builtin:tiny
    method: full
    data:
      phantoms: {count: 6, seed: 4, size: 32}
      caption_template: "{finding}, {view}"
      caption_dropout: 0.3
      resolution: 32
    training:
      steps: 4
      batch_size: 2
      learning_rate: 0.001
      lr_scheduler: cosine
      warmup_steps: 1
      snr_gamma: 5.0
      noise_offset: 0.05
      checkpoint_every: 2
      threads: 1
    full:
      text_encoder: true
      vae: {steps: 2, batch_size: 2}
    """


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """TI and LoRA runs of 4 steps each on 6 phantoms at 32 px: {method: (spec path, out dir, record)}."""
    from synthdata.training import load_train_spec, run_training

    root = tmp_path_factory.mktemp("trained")
    out = {}
    for method, body in (("textual_inversion", TI_SPEC), ("lora", LORA_SPEC)):
        spec_path = write_spec(root / method, body)
        record = run_training(load_train_spec(spec_path), root / method / "out")
        out[method] = (spec_path, root / method / "out", record)
    return out
