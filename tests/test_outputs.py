"""Writing into a dataset folder: the lock, foreign folders, identity, spec.yaml, spec paths."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from synthdata.cli import app
from synthdata.errors import OutputError
from synthdata.folder import DatasetFolder
from synthdata.dataset.prepare import GenerationIdentity, acquire_lock, check_generation_identity, prepare
from synthdata.spec import spec_hash
from synthdata.plan.load import load_spec
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


def test_replace_stale_removes_raw_shards_only_when_another_model_made_them(tmp_path):
    from tests.test_folder import _complete_shard

    out = tmp_path / "ds"
    spec = load_spec(DEMO_SPEC)
    prepared = prepare(out, spec)
    folder = prepared.folder
    _complete_shard(folder, plan_hash=prepared.plan_hash)
    marker = folder.marker(0)
    marker.update(model_fingerprint="old", device_type="cpu", dtype="float32")
    folder.raw_marker(0).write_text(json.dumps(marker))
    folder.worker_file("w0").parent.mkdir()
    folder.worker_file("w0").write_text("{}")
    same = prepare(out, spec, GenerationIdentity("old", "cpu", "float32"), replace_stale=True)
    assert same.replaced == () and folder.is_complete(0), "a resume keeps matching shards"
    with pytest.raises(OutputError, match="model_fingerprint: 'old' on disk, 'new' now"):
        prepare(out, spec, GenerationIdentity("new", "cpu", "float32"))
    assert folder.is_complete(0), "without replace_stale nothing is removed"
    replaced = prepare(out, spec, GenerationIdentity("new", "cpu", "float32"), replace_stale=True)
    assert replaced.replaced == ("raw", "workers")
    assert not folder.raw_dir.exists() and not folder.workers_dir.exists()
    assert folder.plan_file.is_file() and folder.spec_file.is_file()


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


def test_qc_classifiers_and_top_up_setup_are_part_of_the_identity(tmp_path):
    """Markers record the QC classifiers' fingerprints and the top-up screening setup; a resume
    with others is refused naming them. A marker from before these fields means none."""
    from tests.test_folder import _complete_shard

    folder = DatasetFolder(tmp_path / "ds")
    _complete_shard(folder)
    marker = folder.marker(0)
    marker.update(model_fingerprint="f", device_type="cpu", dtype="float32")
    folder.raw_marker(0).write_text(json.dumps(marker))
    check_generation_identity(folder.root, GenerationIdentity("f", "cpu", "float32"))
    with pytest.raises(OutputError, match="memorization: None on disk, 'm1' now"):
        check_generation_identity(folder.root, GenerationIdentity("f", "cpu", "float32", memorization="m1"))
    marker.update(qc={"qc.checks.0.model": "c1"}, memorization="m1")
    folder.raw_marker(0).write_text(json.dumps(marker))
    same = GenerationIdentity("f", "cpu", "float32", qc={"qc.checks.0.model": "c1"}, memorization="m1")
    check_generation_identity(folder.root, same)
    with pytest.raises(OutputError, match=r"qc: \{'qc.checks.0.model': 'c1'\} on disk, "
                                          r"\{'qc.checks.0.model': 'c2'\} now"):
        check_generation_identity(folder.root, GenerationIdentity(
            "f", "cpu", "float32", qc={"qc.checks.0.model": "c2"}, memorization="m1"))
    with pytest.raises(OutputError, match="memorization: 'm1' on disk, 'm2' now"):
        check_generation_identity(folder.root, GenerationIdentity(
            "f", "cpu", "float32", qc={"qc.checks.0.model": "c1"}, memorization="m2"))


def test_with_top_up_the_memorization_section_is_part_of_the_spec_hash(tmp_path):
    """qc.top_up screens in the worker, so the memorization section decides what is
    regenerated: it enters the spec hash (less device and batch size) and a changed one is
    refused; without top-up it does not (the demo's pinned hashes stay)."""
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "r.png").write_bytes(b"")
    plain = load_spec(_spec_file(tmp_path / "a", memorization={"reference": ["../real"]}))
    other = load_spec(_spec_file(tmp_path / "b", memorization={"reference": ["../real"], "threshold": 0.8}))
    assert spec_hash(plain) == spec_hash(other) == spec_hash(load_spec(DEMO_SPEC))
    top_up = {"qc": {"top_up": True}}
    topped = load_spec(_spec_file(tmp_path / "c", memorization={"reference": ["../real"]}, **top_up))
    changed = load_spec(_spec_file(tmp_path / "d", memorization={"reference": ["../real"],
                                                                 "threshold": 0.8}, **top_up))
    faster = load_spec(_spec_file(tmp_path / "e", memorization={"reference": ["../real"],
                                                                "batch_size": 64, "device": "cpu"}, **top_up))
    assert spec_hash(topped) != spec_hash(changed)
    assert spec_hash(topped) == spec_hash(faster), "performance-only fields stay out"
    out = tmp_path / "ds"
    prepare(out, topped)
    with pytest.raises(OutputError, match=r"different spec \(changed: memorization\)"):
        prepare(out, changed)
    prepare(out, faster)


def test_renaming_embedder_to_matchers_moves_no_spec_hash(tmp_path):
    """A top-up spec hashes its memorization section; the same spec written with the old name
    `embedder` or the new `matchers` has one hash (folders made before the rename resume)."""
    import warnings

    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "r.png").write_bytes(b"")
    top_up = {"qc": {"top_up": True}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        old = load_spec(_spec_file(tmp_path / "a", memorization={"reference": ["../real"],
                                                                 "embedder": ["pixel"]}, **top_up))
    new = load_spec(_spec_file(tmp_path / "b", memorization={"reference": ["../real"],
                                                             "matchers": ["pixel"]}, **top_up))
    other = load_spec(_spec_file(tmp_path / "c", memorization={"reference": ["../real"],
                                                               "matchers": ["aligned"]}, **top_up))
    assert spec_hash(old) == spec_hash(new) != spec_hash(other)


def test_missing_planned_shards_after_generation_fail_the_run_listing_them(tmp_path):
    """Shard tasks that succeeded but whose shards this machine cannot see (workers writing
    elsewhere) fail the flow, listing the shards, instead of an empty `shards/` and 'done'."""
    from synthdata.flow import MissingShards, check_generated
    from tests.test_folder import _complete_shard

    folder = DatasetFolder(tmp_path / "ds")
    _complete_shard(folder, 1)
    marker = folder.marker(1)
    marker.update(model_fingerprint="f", device_type="cpu", dtype="float32")
    folder.raw_marker(1).write_text(json.dumps(marker))
    identity = GenerationIdentity("f", "cpu", "float32")
    with pytest.raises(MissingShards) as info:
        check_generated(folder, 3, "p1", identity)
    assert info.value.missing == [0, 2] and info.value.exit_code == 1
    assert "2 of 3 planned shards are missing from raw/ after generation (shards 0, 2)" in str(info.value)
    for shard in (0, 2):
        _complete_shard(folder, shard)
        folder.raw_marker(shard).write_text(json.dumps({**folder.marker(shard), **identity.as_dict()}))
    check_generated(folder, 3, "p1", identity)
    with pytest.raises(OutputError, match="dtype: 'float32' on disk, 'float16' now"):
        check_generated(folder, 3, "p1", GenerationIdentity("f", "cpu", "float16"))
