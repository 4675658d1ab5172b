"""Writing into a dataset folder: the lock, foreign folders, identity, spec.yaml, spec paths."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from synthdata.cli import app
from synthdata.errors import OutputError
from synthdata.folder import DatasetFolder
from synthdata.outputs import GenerationIdentity, acquire_lock, check_generation_identity, prepare
from synthdata.spec import load_spec, spec_hash
from tests.conftest import DEMO_SPEC


def _spec_file(folder, **changes):
    data = yaml.safe_load(DEMO_SPEC.read_text())
    for section, values in changes.items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_second_run_on_a_locked_folder_is_refused(tmp_path):
    lock = acquire_lock(tmp_path / "ds")
    try:
        with pytest.raises(OutputError, match="another synthdata run is using this output folder"):
            acquire_lock(tmp_path / "ds")
    finally:
        lock.release()
    acquire_lock(tmp_path / "ds").release()


def test_a_foreign_folder_is_refused_and_left_untouched(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    result = CliRunner().invoke(app, ["run", str(DEMO_SPEC), "--out", str(foreign)])
    assert result.exit_code == 2 and "holds no synthdata dataset" in result.output
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]
    result = CliRunner().invoke(app, ["plan", str(DEMO_SPEC), "--out", str(foreign)])
    assert result.exit_code == 2
    assert sorted(p.name for p in foreign.iterdir() if not p.name.startswith(".")) == ["thesis.tex"]


def test_another_dataset_is_refused_naming_what_changed(tmp_path):
    out = tmp_path / "ds"
    prepare(out, load_spec(DEMO_SPEC))
    changed = load_spec(_spec_file(tmp_path / "b", seed=7, generator={"steps": 3}))
    with pytest.raises(OutputError, match=r"different spec \(changed: generator, seed\)"):
        prepare(out, changed)


def test_spec_yaml_is_what_ran_last(tmp_path):
    out = tmp_path / "ds"
    prepare(out, load_spec(DEMO_SPEC))
    assert yaml.safe_load((out / "spec.yaml").read_text())["memorization"]["threshold"] == "auto"
    rescreened = load_spec(_spec_file(tmp_path / "b", memorization={"threshold": 0.8}))
    prepare(out, rescreened)  # memorization does not shape the data: allowed, and recorded
    assert yaml.safe_load((out / "spec.yaml").read_text())["memorization"]["threshold"] == 0.8
    info = json.loads((out / "plan.json").read_text())
    assert info["format_version"] == 2 and info["name"] == "demo-cxr"


def test_shards_of_another_model_or_hardware_are_not_mixed(tmp_path):
    from tests.test_folder import _complete_shard

    folder = DatasetFolder(tmp_path / "ds")
    _complete_shard(folder)
    marker = folder.marker(0)
    marker.update(model_fingerprint="f1", device_type="cuda", dtype="float16")
    folder.raw_marker(0).write_text(json.dumps(marker))
    check_generation_identity(folder.root, GenerationIdentity("f1", "cuda", "float16"))
    with pytest.raises(OutputError, match=r"device_type: 'cuda' on disk, 'cpu' now; dtype: "
                                          r"'float16' on disk, 'float32' now"):
        check_generation_identity(folder.root, GenerationIdentity("f1", "cpu", "float32"))
    with pytest.raises(OutputError, match="model_fingerprint"):
        check_generation_identity(folder.root, GenerationIdentity("f2", "cuda", "float16"))


def test_spec_paths_resolve_against_the_spec_folder_and_do_not_change_the_hash(tmp_path, monkeypatch):
    for name in ("a", "b"):
        root = tmp_path / name
        (root / "models" / "m").mkdir(parents=True)
        (root / "real").mkdir()
        _spec_file(root / "specs", generator={"model": "../models/m"},
                   memorization={"reference": ["../real"]}, output={"dir": "../out"})
    monkeypatch.chdir(tmp_path)  # the current folder does not matter
    a, b = (load_spec(tmp_path / n / "specs" / "spec.yaml") for n in ("a", "b"))
    assert a.generator.model == str(tmp_path / "a" / "models" / "m")
    assert a.memorization.reference == [str(tmp_path / "a" / "real")]
    assert a.output_dir() == str(tmp_path / "a" / "out")
    assert spec_hash(a) == spec_hash(b), "the same spec in two checkouts is the same dataset"
    bad = _spec_file(tmp_path / "c" / "specs", generator={"model": "../models/missing"})
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2 and str(tmp_path / "c" / "models" / "missing") in result.output
    assert load_spec(bad, check_files=False).generator.model.endswith("models/missing")
