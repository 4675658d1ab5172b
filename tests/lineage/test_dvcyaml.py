"""The dvc.yaml helpers: per-stage spec views, params.yaml checked against the spec, stamps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from synthdata.versioning.stages import (
    PipelineError,
    check_inputs,
    check_optional_outputs,
    content_digest,
    resolve,
    stamp,
)
from synthdata.plan.load import load_spec
from tests.lineage.conftest import DEMO_SPEC, REPO


def _write_spec(path: Path, **changes) -> dict:
    spec = yaml.safe_load(DEMO_SPEC.read_text())
    for section, values in changes.items():
        spec[section] = {**spec.get(section, {}), **values} if isinstance(values, dict) else values
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return spec


def test_resolve_splits_the_spec_so_only_affected_stages_rerun(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    _write_spec(spec_file)
    data, screening = resolve(spec_file, tmp_path / "work")
    assert data == tmp_path / "work" / "generate" / "dataset.json"
    assert screening == tmp_path / "work" / "screen" / "screening.json"
    first = (data.read_bytes(), screening.read_bytes())
    assert "memorization" not in data.read_text() and "workers" not in data.read_text()
    assert '"threshold": "auto"' in screening.read_text()

    _write_spec(spec_file, execution={"workers": 3, "engine": "dask", "threads_per_worker": 2})
    resolve(spec_file, tmp_path / "work")
    assert (data.read_bytes(), screening.read_bytes()) == first
    _write_spec(spec_file, execution={"workers": 3, "speed": {"channels_last": True}})
    resolve(spec_file, tmp_path / "work")
    assert json.loads(data.read_text())["execution"] == {"speed": {"channels_last": True}}, \
        "speed knobs may change the bytes: generate reruns"
    assert screening.read_bytes() == first[1]
    _write_spec(spec_file, memorization={"threshold": 0.9})
    resolve(spec_file, tmp_path / "work")
    assert data.read_bytes() == first[0] and screening.read_bytes() != first[1]


def _project(tmp_path: Path) -> Path:
    """A project whose spec (in specs/) reads a model folder, a LoRA file and a reference."""
    root = tmp_path / "project"
    (root / "models" / "m").mkdir(parents=True)
    (root / "models" / "m" / "model_index.json").write_text("{}")
    (root / "loras").mkdir()
    (root / "loras" / "cxr.safetensors").write_bytes(b"lora")
    (root / "real").mkdir()
    (root / "real" / "a.png").write_bytes(b"png")
    _write_spec(root / "specs" / "demo.yaml",
                generator={"model": "../models/m", "lora": [{"path": "../loras/cxr.safetensors"}]},
                memorization={"reference": ["../real"]})
    return root


def _params(root: Path, generate: dict, screen: dict) -> Path:
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump({"spec": "specs/demo.yaml", "generate_inputs": generate,
                                    "screen_inputs": screen}))
    return path


def test_params_must_name_exactly_the_files_the_spec_reads(tmp_path):
    root = _project(tmp_path)
    spec = load_spec(root / "specs" / "demo.yaml")
    check_inputs(spec, _params(root, {"model": "models/m", "lora": "./loras/cxr.safetensors"},
                               {"real": "real"}))
    with pytest.raises(PipelineError) as err:
        check_inputs(spec, _params(root, {"model": "models/m", "old": "loras"}, {}))
    message = str(err.value)
    assert message.startswith(f"{root / 'params.yaml'}: generate_inputs lacks files the spec reads; "
                              "add {cxr: loras/cxr.safetensors}")
    assert "generate_inputs names files the spec does not read; remove {old: loras}" in message
    assert "screen_inputs lacks files the spec reads; add {real: real}" in message
    with pytest.raises(PipelineError, match="names may hold letters, digits, - and _ only"):
        check_inputs(spec, _params(root, {"my model": "models/m"}, {}))
    with pytest.raises(PipelineError, match="generate_inputs must be a mapping of name: path"):
        check_inputs(spec, _params(root, ["models/m"], {}))


def test_resolve_needs_neither_the_model_nor_the_reference(tmp_path):
    root = _project(tmp_path)
    params = _params(root, {"model": "models/m", "lora": "loras/cxr.safetensors"}, {"real": "real"})
    shutil.rmtree(root / "models")
    shutil.rmtree(root / "real")
    data, _ = resolve(root / "specs" / "demo.yaml", root / "work", params)
    assert json.loads(data.read_text())["generator"]["model"] == "m", "location-free"
    builtin = tmp_path / "builtin.yaml"
    _write_spec(builtin)  # builtin:tiny, no reference: nothing to name, nothing built
    resolve(builtin, tmp_path / "work-builtin", _params(tmp_path, {}, {}))


def test_stamps_hold_content_not_location_and_stale_ones_go(tmp_path):
    root = _project(tmp_path)
    first = stamp(root / "real", root / "work" / "screen" / "input-real.json").read_text()
    shutil.copytree(root / "real", tmp_path / "moved")
    (tmp_path / "moved" / ".DS_Store").write_bytes(b"hidden files are skipped")
    assert content_digest(tmp_path / "moved") == json.loads(first), "moving changes nothing"
    (root / "real" / "b.png").write_bytes(b"another")
    second = json.loads(stamp(root / "real", root / "work" / "screen" / "input-real.json").read_text())
    assert second["files"] == 2 and second["sha256"] != json.loads(first)["sha256"]
    lora = content_digest(root / "loras" / "cxr.safetensors")
    assert lora["kind"] == "file" and lora["bytes"] == 4
    with pytest.raises(PipelineError, match="no such file or folder"):
        content_digest(root / "missing")

    params = _params(root, {"model": "models/m", "lora": "loras/cxr.safetensors"}, {"real": "real"})
    stamp(root / "models" / "m", root / "work" / "generate" / "input-old.json")
    resolve(root / "specs" / "demo.yaml", root / "work", params)
    assert sorted(p.name for p in (root / "work" / "generate").iterdir()) == ["dataset.json"]
    assert sorted(p.name for p in (root / "work" / "screen").iterdir()) == ["input-real.json",
                                                                          "screening.json"]


def test_a_cohort_spec_needs_its_extra_outputs_declared(tmp_path):
    cohort = load_spec(REPO / "specs" / "cohort-demo.yaml", check_files=False)
    check_optional_outputs(load_spec(DEMO_SPEC), REPO / "dvc.yaml")
    with pytest.raises(PipelineError, match=r"add plan: outs: \$\{out\}/cohort.json; "
                                            r"report: outs: \$\{out\}/cohort_report.json"):
        check_optional_outputs(cohort, REPO / "dvc.yaml")
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    pipeline["stages"]["plan"]["outs"].append({"${out}/cohort.json": {"persist": True}})
    pipeline["stages"]["report"]["outs"].append("${out}/cohort_report.json")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    check_optional_outputs(cohort, tmp_path / "dvc.yaml")


def test_with_top_up_generation_depends_on_the_screening_setup_and_reference(tmp_path):
    """qc.top_up screens in the generation worker: the generate view holds the memorization
    section (a new threshold reruns generate) and the reference is a generate input too."""
    root = _project(tmp_path)
    spec_file = root / "specs" / "demo.yaml"
    _write_spec(spec_file, generator={"model": "../models/m", "lora": [{"path": "../loras/cxr.safetensors"}]},
                memorization={"reference": ["../real"]}, qc={"top_up": True})
    generate = {"model": "models/m", "lora": "loras/cxr.safetensors"}
    with pytest.raises(PipelineError, match=r"generate_inputs lacks files the spec reads; add \{real: real\}"):
        check_inputs(load_spec(spec_file), _params(root, generate, {"real": "real"}))
    params = _params(root, {**generate, "real": "real"}, {"real": "real"})
    data, _ = resolve(spec_file, root / "work", params)
    view = json.loads(data.read_text())
    assert view["memorization"]["reference"] == ["real"] and "device" not in view["memorization"]
    first = data.read_bytes()
    _write_spec(spec_file, generator={"model": "../models/m", "lora": [{"path": "../loras/cxr.safetensors"}]},
                memorization={"reference": ["../real"], "threshold": 0.9}, qc={"top_up": True})
    resolve(spec_file, root / "work", params)
    assert data.read_bytes() != first, "generate reruns: the threshold decides what is regenerated"
