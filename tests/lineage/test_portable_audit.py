"""An auditor's machine has neither the model nor the real data: lineage, status and verify
still work on a copied dataset folder, from any working folder; a flipped byte is found;
reproduce names the missing model.

The dataset is made from a spec whose model is a local folder (the built-in tiny pipeline
copied), named relative to the spec file; its screening reference is a real DICOM folder
(pydicom's test files) that the auditor does not have either.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from synthdata.cli import app
from tests.lineage.conftest import DEMO_SPEC, build_dataset, copy_dataset

KEY = "portable-000000003"


@pytest.fixture(scope="module")
def made_elsewhere(tmp_path_factory) -> Path:
    """A screened dataset made on 'the producer's machine' from a local model folder."""
    import pydicom

    from synthdata.generation.fingerprint import model_folder
    from synthdata.dataset.report import write_report
    from synthdata.screening.pipeline import screen_dataset
    from synthdata.plan.load import load_spec
    from synthdata.spec.models import Generator

    producer = tmp_path_factory.mktemp("producer")
    shutil.copytree(model_folder(Generator(model="builtin:tiny")), producer / "models" / "tiny-local")
    (producer / "real").mkdir()
    shutil.copy(Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm", producer / "real")
    (producer / "specs").mkdir()
    spec = yaml.safe_load(DEMO_SPEC.read_text())
    spec.update(name="portable", count=8, shards={"size": 8},
                memorization={"reference": ["../real"], "threshold": 0.95})
    spec["generator"].update(model="../models/tiny-local", steps=2, batch_size=4)
    spec_file = producer / "specs" / "portable.yaml"
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = build_dataset(producer / "datasets" / "portable", spec_file, shards=(0,))
    screen_dataset(out, load_spec(out / "spec.yaml").memorization)
    write_report(out)
    return out


def test_relative_paths_are_recorded_absolute(made_elsewhere):
    recorded = yaml.safe_load((made_elsewhere / "spec.yaml").read_text())
    producer = made_elsewhere.parents[1]
    assert recorded["generator"]["model"] == str(producer / "models" / "tiny-local")
    assert recorded["memorization"]["reference"] == [str(producer / "real")]


def test_audit_a_copy_without_model_or_real_data(made_elsewhere, tmp_path, monkeypatch):
    auditor = copy_dataset(made_elsewhere, tmp_path / "received" / "portable")
    producer = made_elsewhere.parents[1]
    shutil.rmtree(producer / "models")  # gone: the auditor has neither the model ...
    shutil.rmtree(producer / "real")    # ... nor the real data
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    runner = CliRunner()

    lineage = runner.invoke(app, ["lineage", str(auditor), KEY, "--json"])
    assert lineage.exit_code == 0, lineage.output
    info = json.loads(lineage.output)
    assert info["key"] == KEY and info["plan"]["row_matches_spec"] is True
    assert info["spec"]["spec_hash"] == info["spec"]["recorded_spec_hash"]
    assert info["image"]["matches_record"] is True and info["screening"]["decision"] == "accept"

    status = runner.invoke(app, ["status", str(auditor), "--json"])
    assert status.exit_code == 0, status.output
    state = json.loads(status.output)
    assert state["generated"]["complete_shards"] == 1 and state["screening"]["covers_current_shards"]
    assert state["rerun_would"] == ["nothing: the dataset is complete"]

    verify = runner.invoke(app, ["verify", str(auditor)])
    assert verify.exit_code == 0, verify.output
    assert "everything matches" in verify.output

    reproduce = runner.invoke(app, ["reproduce", str(auditor), KEY])
    assert reproduce.exit_code == 2, reproduce.output
    assert "reproduce needs the model" in reproduce.output and "tiny-local" in reproduce.output


@pytest.mark.parametrize("target", ["raw/shard-000000.tar", "shards/shard-000000.tar"])
def test_one_flipped_byte_makes_verify_fail(made_elsewhere, tmp_path, target):
    copy = copy_dataset(made_elsewhere, tmp_path / "copy")
    tar = copy / target
    data = bytearray(tar.read_bytes())
    data[len(data) // 3] ^= 0x01
    tar.write_bytes(bytes(data))
    result = CliRunner().invoke(app, ["verify", str(copy), "--json"])
    assert result.exit_code == 1, result.output
    problems = json.loads(result.output)["problems"]
    assert any(p.startswith(target) for p in problems), problems
