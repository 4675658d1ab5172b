"""builtin:phantom: shipped weights, pinned fingerprint, its training record, and labels it can draw.

The weights are those `synthdata train specs/train-phantom.yaml` wrote (docs/training.md says
how to rebuild them); phantoms are procedural, not clinical data.
"""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import numpy as np

from synthdata.generation.fingerprint import model_fingerprint, model_files
from synthdata.generation.generators.base import SampleRequest
from synthdata.generation.generators.builtin import PHANTOM_DIR, shipped_phantom
from synthdata.generation.generators.diffusers_gen import DiffusersGenerator
from synthdata.phantoms import nearest_centroid_accuracy, thumbnails
from synthdata.spec.models import Generator
from synthdata.training import load_train_spec
from synthdata.generation.trained import training_chain, training_reference
from synthdata.training.spec import train_spec_hash
from tests.conftest import REPO

PINNED = "fd44784433f2f280be6688cdc1f4a3da523b588a377b8ac3232a3014ba4db465"
# builtin:tiny as it was built when builtin:phantom was trained (the init drawn by torch's float
# kernels, tiny-v2). Today's builtin:tiny draws its init without float kernels (CHANGELOG.md), so
# it is another model: the shipped record keeps naming the base it was really trained from.
HISTORICAL_TINY_BASE = "fcd3858b478a20b66b36577e651085ca7857b6dd78af7556c78e1516c1a6fc05"


def test_fingerprint_is_pinned_and_weights_are_safetensors():
    fp = model_fingerprint(Generator(model="builtin:phantom"))
    assert fp.folder == str(shipped_phantom())
    assert fp.fingerprint == PINNED, "a retrained builtin:phantom changes golden values: say so in CHANGELOG.md"
    weights = [f for f in fp.files if "/" in f and not f.endswith((".json", ".txt"))]
    assert weights and all(f.endswith(".safetensors") for f in weights)
    size = sum((shipped_phantom() / f).stat().st_size for f in fp.files)
    assert size < 10_000_000


def test_every_shipped_file_is_package_data():
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "synthdata.generation.generators"]
    shipped = [f"model/{f}" for f in model_files(shipped_phantom())] + ["train.json"]
    for rel in shipped:
        assert any(fnmatch.fnmatch(f"phantom/{rel}", p) for p in patterns), rel


def test_the_shipped_train_record_is_the_recipe_run():
    """The record is the recipe's run (its spec hash) from the historical builtin:tiny init; a
    retraining from the recipe today starts from the new init (docs/training.md)."""
    from tests.lineage.test_golden import TINY_FINGERPRINT

    chain = training_chain(shipped_phantom())
    recipe = load_train_spec(REPO / "specs" / "train-phantom.yaml")
    assert chain["spec_hash"] == train_spec_hash(recipe)
    assert chain["method"] == "full" and chain["data_source"]["kind"] == "phantoms"
    assert recipe.base == "builtin:tiny" and chain["base"]["model"] == "builtin:tiny"
    assert chain["base_fingerprint"] == HISTORICAL_TINY_BASE
    assert model_fingerprint(Generator(model="builtin:tiny")).fingerprint == TINY_FINGERPRINT != HISTORICAL_TINY_BASE
    assert chain["output_fingerprint"] == PINNED
    assert Path(PHANTOM_DIR / "train.json").is_file()
    assert len(training_reference(shipped_phantom())) == chain["images"]


def test_prompts_over_findings_draw_separable_labels():
    """Four images per (label, side) at 10 steps: nearest centroid on 16x16 thumbnails.

    Chance is 0.2 (five labels); measured 0.825 here, and 0.82 leave-one-out on the demo's 96
    images (benchmarks/bench_phantom_model.py). The bar leaves room for float differences
    between CPUs."""
    prompts = {"normal": ["no acute findings, PA, male, age 50", "no acute findings, AP, female, age 60"],
               "effusion": ["large right pleural effusion, PA, male, age 50",
                            "large left pleural effusion, PA, female, age 60"],
               "consolidation": ["large right upper lobe consolidation, PA, male, age 50",
                                 "large left upper lobe consolidation, PA, female, age 60"],
               "nodule": ["large right middle lobe nodule, PA, male, age 50",
                          "large left middle lobe nodule, PA, female, age 60"],
               "cardiomegaly": ["large cardiomegaly, PA, male, age 50", "large cardiomegaly, AP, female, age 60"]}
    gen = DiffusersGenerator(Generator(model="builtin:phantom", steps=10, guidance_scale=3.0, height=64,
                                       width=64, dtype="float32"), device="cpu")
    gen.load()
    requests, labels = [], []
    for label, texts in prompts.items():
        for text in texts:
            for seed in (1, 2, 3, 4):
                requests.append(SampleRequest(key=f"{label}{seed}", prompt=text, negative_prompt="",
                                              seed=seed, steps=10, guidance_scale=3.0))
                labels.append(label)
    images = [im for k in range(0, len(requests), 10) for im in gen.generate(requests[k:k + 10])]
    assert images[0].shape == (64, 64, 3)
    assert nearest_centroid_accuracy(thumbnails(images), labels) >= 0.7
    assert not np.array_equal(images[0], images[1])


def test_from_training_and_the_training_chain_follow_the_generator():
    """`memorization.reference: [from-training]` expands to the model's training images; run.json's
    model.training (and the card's line) carry its chain; a model not trained here is refused."""
    import pytest

    from synthdata.dataset.card import _training_lines
    from synthdata.errors import ModelError
    from synthdata.spec.models import Memorization
    from synthdata.generation.trained import generator_training, resolve_from_training

    phantom = Generator(model="builtin:phantom")
    resolved = resolve_from_training(Memorization(reference=["from-training"]), phantom)
    assert len(resolved.reference) == 1000 and all(Path(p).is_file() for p in resolved.reference[:5])
    chain = generator_training(phantom)
    assert set(chain) == {"model"} and chain["model"]["output_fingerprint"] == PINNED
    line, = _training_lines({"model": {"training": chain}})
    assert "(full): 1000 training images, phantoms data" in line
    assert generator_training(Generator(model="builtin:tiny")) == {}
    with pytest.raises(ModelError, match="from-training"):
        resolve_from_training(Memorization(reference=["from-training"]), Generator(model="builtin:tiny"))
    untouched = Memorization(reference=[])
    assert resolve_from_training(untouched, phantom) is untouched
