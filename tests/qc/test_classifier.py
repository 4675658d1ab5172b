"""Classifier checks from a local model folder: TorchScript and transformers models built here.

The TorchScript model is a fixed function of brightness (mean gray level m in 0..1): it
predicts 'male' when m > 0.5 and age = 100 m, so the expected verdicts are known exactly.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from synthdata.errors import ModelError, SpecError
from synthdata.qc import build_checks, run_checks
from synthdata.qc.classifier import QCError, classify, load_classifier
from synthdata.plan.load import load_spec, load_spec_text


class Brightness(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        sex = torch.stack([0.5 - m, m - 0.5], dim=1) * 20.0
        return torch.cat([sex, m[:, None]], dim=1)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clf") / "brightness"
    folder.mkdir()
    torch.jit.script(Brightness()).save(str(folder / "model.torchscript.pt"))
    (folder / "classifier.json").write_text(json.dumps({
        "input_size": 32, "channels": 1, "normalize": "unit",
        "outputs": {"sex": {"type": "categorical", "start": 0, "classes": ["female", "male"]},
                    "age": {"type": "numeric", "index": 2, "scale": 100.0}}}))
    return folder


def gray_image(level: int) -> np.ndarray:
    return np.full((64, 64, 3), level, np.uint8)


def rows(*values):
    return [{"key": f"k{i}", "index": i, "label": "a", "vars": json.dumps(v)} for i, v in enumerate(values)]


def test_categorical_and_numeric_predictions(scripted):
    clf = load_classifier(scripted, "cpu")
    assert load_classifier(scripted, "cpu") is clf, "loaded once per process"
    images = [gray_image(51), gray_image(204)]           # m = 0.2 and 0.8
    sex = classify(clf, images, rows({"sex": "female"}, {"sex": "female"}), attribute="sex")
    assert [r.passed for r in sex] == [True, False]
    assert sex[1].reason.startswith("predicted sex 'male' (p 1.00), requested 'female'")
    age = classify(clf, images, rows({"age": "35"}, {"age": "35"}), attribute="age", tolerance=16)
    assert [r.passed for r in age] == [True, False]
    assert age[0].reason == "predicted age 20.0, requested 35 (|error| 15.0 <= 16)"
    assert age[1].reason == "predicted age 80.0, requested 35 (|error| 45.0 > 16)"
    mapped = classify(clf, images, rows({"gender": "F"}, {"gender": "M"}), attribute="sex",
                      variable="gender", values={"F": "female", "M": "male"})
    assert all(r.passed for r in mapped)


def test_configuration_errors_are_clear(scripted, tmp_path):
    clf = load_classifier(scripted, "cpu")
    img = [gray_image(10)]
    with pytest.raises(QCError, match="needs a tolerance"):
        classify(clf, img, rows({"age": "3"}), attribute="age")
    with pytest.raises(QCError, match="not a class of brightness"):
        classify(clf, img, rows({"sex": "M"}), attribute="sex")
    with pytest.raises(QCError, match="no output 'race'"):
        classify(clf, img, rows({"race": "x"}), attribute="race")
    with pytest.raises(QCError, match="no variable 'sex'"):
        classify(clf, img, rows({"age": "3"}), attribute="sex")
    with pytest.raises(ModelError, match="classifier.json: missing"):
        load_classifier(tmp_path)
    (tmp_path / "classifier.json").write_text('{"outputs": {"sex": {"type": "ordinal"}}}')
    with pytest.raises(ModelError, match="outputs.sex.type must be"):
        load_classifier(tmp_path)


def test_transformers_classifier_with_its_own_labels(tmp_path):
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 8], depths=[1, 1],
                          num_labels=2, id2label={0: "female", 1: "male"}, label2id={"female": 0, "male": 1})
    model = ResNetForImageClassification(config)
    with torch.no_grad():
        model.classifier[1].weight.zero_()
        model.classifier[1].bias.copy_(torch.tensor([0.0, 5.0]))   # always 'male'
    folder = tmp_path / "resnet"
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "classifier.json").write_text(json.dumps({
        "input_size": 32, "normalize": "imagenet",
        "outputs": {"sex": {"type": "categorical", "classes": "id2label"}}}))
    clf = load_classifier(folder, "cpu")
    assert clf.format == "transformers" and clf.outputs["sex"].classes == ("female", "male")
    out = classify(clf, [gray_image(40), gray_image(90)], rows({"sex": "male"}, {"sex": "female"}),
                   attribute="sex")
    assert [r.passed for r in out] == [True, False] and abs(out[0].value - 0.993) < 0.001


def test_classifier_checks_in_a_spec(scripted, tmp_path):
    shutil.copytree(scripted, tmp_path / "models" / "brightness")
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text("""\
name: c
count: 4
labels: {a: {prompts: ["{sex} {age}"]}}
vars: {sex: [female, male], age: {min: 30, max: 40}}
generator: {height: 64, width: 64}
qc:
  checks:
    - {check: classifier, model: models/brightness, attribute: sex}
    - {check: classifier, model: models/brightness, attribute: age, tolerance: 16}
""")
    spec = load_spec(spec_file)
    assert spec.qc.checks[0].model == str(tmp_path / "models" / "brightness"), "from the spec's folder"
    checks = build_checks(spec.qc, device="cpu")
    assert [c.name for c in checks] == ["classifier:sex", "classifier:age"]
    assert checks[0].params["fingerprint"] == load_classifier(scripted, "cpu").fingerprint, "same files"
    results = run_checks(checks, [gray_image(80), gray_image(200)],
                         rows({"sex": "female", "age": "35"}, {"sex": "female", "age": "35"}))
    assert [r.passed for r in results] == [True, False]
    assert results[1].reason.count("classifier:") == 2


@pytest.mark.parametrize("check,field,fragment", [
    ("{check: classifier, model: models/none, attribute: sex}", "qc.checks.0.model", "does not exist"),
    ("{check: classifier, model: models/brightness, attribute: race}", "qc.checks.0.attribute",
     "no output 'race' (outputs: sex, age)"),
    ("{check: classifier, model: models/brightness, attribute: age}", "qc.checks.0.tolerance", "give a tolerance"),
    ("{check: classifier, model: models/brightness, attribute: sex, variable: gender}",
     "qc.checks.0.variable", "no variable 'gender'"),
])
def test_bad_classifier_checks(scripted, tmp_path, check, field, fragment):
    shutil.copytree(scripted, tmp_path / "models" / "brightness")
    text = ("name: c\ncount: 4\nlabels: {a: {prompts: ['{sex}']}}\n"
            "vars: {sex: [female, male], age: {min: 1, max: 2}, race: [x]}\n"
            f"generator: {{height: 64, width: 64}}\nqc:\n  checks:\n    - {check}\n")
    with pytest.raises(SpecError) as info:
        load_spec_text(text, source="s.yaml", base_dir=tmp_path)
    assert info.value.problems[0].field == field and fragment in info.value.problems[0].message


class Darkness(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = 1.0 - x.mean(dim=(1, 2, 3))
        return torch.cat([torch.stack([0.5 - m, m - 0.5], dim=1) * 20.0, m[:, None]], dim=1)


def test_the_classifier_that_checked_a_shard_is_its_identity(scripted, tmp_path):
    """The marker records the classifier folder's fingerprint (the spec hash only sees its
    name); swapping the model behind the same path refuses a resume, naming the check."""
    from synthdata.errors import OutputError
    from synthdata.generation.fingerprint import model_fingerprint
    from synthdata.flow import expected_identity
    from synthdata.dataset.prepare import prepare
    from synthdata.qc.identity import classifier_fingerprints
    from synthdata.spec import spec_hash
    from tests.lineage.conftest import build_dataset

    shutil.copytree(scripted, tmp_path / "models" / "brightness")
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text("""\
name: c
count: 4
labels: {a: {prompts: ["{sex}"]}}
vars: {sex: [female, male]}
generator: {height: 64, width: 64, steps: 2, batch_size: 4}
shards: {size: 4}
qc:
  max_attempts: 1
  checks: [{check: classifier, model: models/brightness, attribute: sex}]
""")
    root = build_dataset(tmp_path / "ds", spec_file, shards=(0,))
    spec = load_spec(spec_file)
    fingerprint = load_classifier(scripted, "cpu").fingerprint
    marker = json.loads((root / "raw" / "shard-000000.done.json").read_text())
    assert marker["qc"] == classifier_fingerprints(spec) == {"qc.checks.0.model": fingerprint}
    assert marker["memorization"] is None
    fp = model_fingerprint(spec.generator).fingerprint
    prepare(root, spec, expected_identity(spec, fp, 0))

    torch.jit.script(Darkness()).save(str(tmp_path / "models" / "brightness" / "model.torchscript.pt"))
    swapped = load_spec(spec_file)
    assert spec_hash(swapped) == spec_hash(spec), "the spec names the same folder"
    with pytest.raises(OutputError, match=r"qc: \{'qc.checks.0.model': '" + fingerprint):
        prepare(root, swapped, expected_identity(swapped, fp, 0))
