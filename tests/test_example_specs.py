"""Every example spec in specs/ validates: generation specs with load_spec (files not checked:
some name models that a documented command builds first), train specs with load_train_spec,
extractor specs (an `encoder:` section) with load_extractor_spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from synthdata.plan.load import load_spec
from synthdata.training import load_train_spec
from synthdata.training.extractor_spec import load_extractor_spec

SPECS = Path(__file__).resolve().parents[1] / "specs"


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.stem)
def test_example_spec_validates(path):
    if "encoder" in yaml.safe_load(path.read_text()):
        spec = load_extractor_spec(path)
        assert spec.name and spec.encoder.hidden_sizes
    elif path.name.startswith("train-"):
        spec = load_train_spec(path)
        assert spec.name and spec.method in ("full", "lora", "textual_inversion")
    else:
        spec = load_spec(path, check_files=False)
        assert spec.labels and spec.generator.model


def test_the_demo_runs_builtin_phantom_screened_against_its_training_images():
    spec = load_spec(SPECS / "demo.yaml")
    assert spec.generator.model == "builtin:phantom" and spec.memorization.reference == ["from-training"]
    assert set(spec.labels) == {"normal", "effusion", "consolidation", "nodule", "cardiomegaly"}
