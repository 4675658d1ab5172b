"""`synthdata train-extractor` and the shipped builtin:phantom-encoder it made.

Training data are `synthdata phantoms` images (procedural, not clinical data). The training
test runs a handful of steps on a tiny encoder; only the shipped weights file's sha256 is
pinned (bytes, not features computed on this CPU).
"""

from __future__ import annotations

import fnmatch
import json
import tomllib

import numpy as np
import pytest
from typer.testing import CliRunner

from synthdata.cli import app
from synthdata.evaluation.extractors import builtin_path, default_extractors, is_phantom_set
from synthdata.evaluation.features import describe, get_extractor
from synthdata.fsutil import sha256_file
from synthdata.screening.embedder_factory import get_embedder
from synthdata.generation.trained import training_chain
from synthdata.training.extractor_spec import extractor_spec_hash, load_extractor_spec
from tests.conftest import REPO

WEIGHTS_SHA256 = "2fbf97afaecbb13c60c45632c20b4ea0bd891b60243a5825e75869f62be29981"

SPEC = """\
name: enc-test
seed: 3
data:
  phantoms: {count: 40, seed: 5, size: 32}
  validation_fraction: 0.25
encoder: {hidden_sizes: [8, 16], depths: [1, 1], input_size: 32}
training: {objective: both, epochs: 2, batch_size: 16}
"""


def test_shipped_weights_are_pinned_safetensors_and_package_data():
    folder = builtin_path("builtin:phantom-encoder")
    assert sha256_file(folder / "model.safetensors") == WEIGHTS_SHA256, \
        "a retrained builtin:phantom-encoder moves evaluation figures: say so in CHANGELOG.md"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "embedder.json", "model.safetensors"]
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["synthdata.evaluation"]
    shipped = [f"phantom_encoder/extractor/{p.name}" for p in folder.iterdir()] + \
        [f"phantom_encoder/{n}" for n in ("train.json", "train-spec.yaml", "loss.png")]
    for rel in shipped:
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), rel


def test_shipped_train_record_is_the_recipe_run():
    chain = training_chain(builtin_path("phantom-encoder"))
    recipe = load_extractor_spec(REPO / "specs" / "train-phantom-encoder.yaml")
    assert chain["method"] == "extractor" and chain["spec_hash"] == extractor_spec_hash(recipe)
    assert chain["data_source"]["kind"] == "phantoms" and chain["data_source"]["seed"] == 7
    record = json.loads((builtin_path("phantom-encoder").parent / "train.json").read_text())
    assert record["outputs"]["extractor"]["files"]["model.safetensors"] == WEIGHTS_SHA256
    assert record["validation"][record["kept_epoch"]]["accuracy"] > 0.95   # held-out patients


def test_phantom_sets_default_to_the_encoder_with_imagenet_second(tmp_path):
    from synthdata.phantoms import write_phantoms

    write_phantoms(tmp_path / "ph", count=5, seed=1, size=32)
    assert is_phantom_set(tmp_path / "ph") and is_phantom_set(tmp_path / "ph" / "metadata.csv")
    assert default_extractors(tmp_path / "ph") == ["builtin:phantom-encoder", "efficientnet-lite0"]
    (tmp_path / "other").mkdir()
    assert default_extractors(tmp_path / "other") == ["efficientnet-lite0"]
    ext = get_extractor("builtin:phantom-encoder", device="cpu")
    assert describe(ext, "builtin:phantom-encoder")["name"] == "builtin:phantom-encoder"
    assert ext.dim == 256 and ext.input_size == 64
    # the same folder is a screening embedder (what `memorization.retrievers: [FOLDER]` loads)
    assert get_embedder(str(builtin_path("phantom-encoder")), device="cpu").fingerprint == ext.fingerprint


def test_train_extractor_writes_a_folder_evaluation_and_screening_load(tmp_path):
    spec = tmp_path / "enc.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "enc"
    result = CliRunner().invoke(app, ["train-extractor", str(spec), "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "train.json").read_text())
    assert record["method"] == "extractor" and record["data"]["validation_images"] > 0
    assert len(record["validation"]) == 2 and record["dim"] == 16
    assert len(record["loss"]["extractor"]) == 2 * record["data"]["train_images"] // 16
    chain = training_chain(out / "extractor")
    assert chain is not None and chain["data_fingerprint"] == record["data_fingerprint"]
    ext = get_extractor(str(out / "extractor"), device="cpu")
    assert record["output_fingerprint"] == ext.fingerprint
    feats = ext.embed([np.full((40, 40), v, np.uint8) + np.eye(40, dtype=np.uint8) * 9 for v in (10, 90)],
                      normalise=False)
    assert feats.shape == (2, 16) and np.isfinite(feats).all()
    again = CliRunner().invoke(app, ["train-extractor", str(spec), "--out", str(out)])
    assert again.exit_code == 0 and "already trained" in again.output
    spec.write_text(SPEC.replace("seed: 3", "seed: 4"))
    refused = CliRunner().invoke(app, ["train-extractor", str(spec), "--out", str(out)])
    assert refused.exit_code == 2 and "different spec" in refused.output


@pytest.mark.parametrize("body,field", [
    ("name: x\ndata: {}\n", "data"),
    ("name: x\ndata: {phantoms: {count: 4}}\nencoder: {hidden_sizes: [8, 16], depths: [1]}\n",
     "encoder.depths"),
    ("name: x\ndata: {real: missing/}\n", "data.real"),
    ("name: x\ndata: {phantoms: {count: 4}}\ntraining: {objective: magic}\n", "training.objective")])
def test_bad_extractor_specs_name_the_field(tmp_path, body, field):
    spec = tmp_path / "bad.yaml"
    spec.write_text(body)
    result = CliRunner().invoke(app, ["train-extractor", str(spec), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and field in result.output, result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.e2e
def test_the_shipped_encoder_is_a_screening_retriever(prefect_server, tmp_path, monkeypatch):
    """`synthdata audit --retriever FOLDER` with builtin:phantom-encoder's folder: a copy of a
    reference phantom is found and rejected, other phantoms are not (phantoms, not clinical)."""
    import pyarrow.parquet as pq

    from synthdata.phantoms import write_phantoms

    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    write_phantoms(tmp_path / "ref", count=12, seed=21, size=64)
    write_phantoms(tmp_path / "new", count=3, seed=22, size=64)
    synthetic = tmp_path / "synthetic"
    synthetic.mkdir()
    (synthetic / "copy.png").write_bytes((tmp_path / "ref" / "images" / "phantom-000004.png").read_bytes())
    for p in sorted((tmp_path / "new" / "images").iterdir()):
        (synthetic / p.name).write_bytes(p.read_bytes())
    folder = str(builtin_path("phantom-encoder"))
    result = CliRunner().invoke(app, ["audit", str(synthetic), "--reference", str(tmp_path / "ref" / "images"),
                                      "--retriever", folder, "--threshold", "0.995",
                                      "--out", str(tmp_path / "audit")])
    assert result.exit_code == 0, result.output
    rows = {r["source"].rsplit("/", 1)[-1]: r for r in pq.read_table(tmp_path / "audit" / "audit.parquet").to_pylist()}
    assert rows["copy.png"]["decision"] == "reject"
    assert all(r["decision"] == "accept" for name, r in rows.items() if name != "copy.png")
    report = json.loads((tmp_path / "audit" / "audit_report.json").read_text())
    assert "local:extractor" in json.dumps(report["embedder"]["matchers"]), report["embedder"]
