"""URLs are refused wherever a location is expected (object storage is not supported yet): spec
fields, train-spec fields, the CLI's path options and the Python API's output override. Each
is an error naming the field or option, exit 2, and nothing is written (issue 21)."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from synthdata.cli import app
from synthdata.errors import SpecError, SynthdataError
from synthdata.spec import with_overrides
from synthdata.plan.load import load_spec, load_spec_text
from synthdata.spec.paths import is_url
from tests.conftest import DEMO_SPEC

runner = CliRunner()
MESSAGE = "expected a local path (object storage and other URLs are not supported yet"


def _spec_with(tmp_path, **changes) -> str:
    data = yaml.safe_load(DEMO_SPEC.read_text())
    for dotted, value in changes.items():
        target = data
        *parents, last = dotted.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_is_url():
    assert all(map(is_url, ["s3://b/k", "gs://b", "az://c/p", "file:///tmp/x", "hf://org/model",
                            " S3://b/k"]))
    assert not any(map(is_url, ["/data/x", "data/s3:/x", "org/name", "builtin:tiny", "catalog:sd",
                                "C://x", "from-training", None, 3]))


@pytest.mark.parametrize(("field", "value", "where"), [
    ("output.dir", "s3://bucket/demo", "output.dir"),
    ("memorization.reference", ["s3://bucket/real"], "memorization.reference.0"),
    ("memorization.matchers", "gs://models/embedder", "memorization.matchers"),
    ("memorization.embedder", "gs://models/embedder", "memorization.embedder"),  # the old name
    ("generator.model", "s3://models/tiny", "generator.model"),
    ("generator.lora", [{"path": "az://c/lora.safetensors", "scale": 0.5}], "generator.lora.0.path"),
    ("cohort.table", "s3://tables/nih.csv", "cohort.table"),
    ("qc.checks", [{"check": "classifier", "model": "s3://m/brightness", "attribute": "sex"}],
     "qc.checks.0.model"),
])
def test_a_url_in_any_location_field_is_a_spec_error(tmp_path, field, value, where):
    path = _spec_with(tmp_path, **{field: value})
    with pytest.raises(SpecError) as info:
        load_spec(path)
    problem, = info.value.problems
    assert problem.field == where and problem.line is not None and MESSAGE in problem.message


def test_hub_ids_builtins_and_local_paths_are_not_urls(tmp_path):
    assert load_spec_text(DEMO_SPEC.read_text() + "output: {dir: out/demo}\n", base_dir=tmp_path)
    data = yaml.safe_load(DEMO_SPEC.read_text())
    data["generator"]["model"] = "org/model-name"
    assert load_spec_text(yaml.safe_dump(data), base_dir=tmp_path).generator.model == "org/model-name"


def test_a_url_in_a_train_spec_is_a_spec_error(tmp_path):
    from synthdata.training.spec import load_train_spec_text

    text = ("name: t\nmethod: lora\nbase: s3://models/base\n"
            "data: {folder: gs://bucket/images, caption_template: '{name}'}\n")
    with pytest.raises(SpecError) as info:
        load_train_spec_text(text, base_dir=tmp_path)
    assert {p.field for p in info.value.problems} == {"base", "data.folder"}
    assert all(MESSAGE in p.message for p in info.value.problems)


def test_the_python_api_refuses_an_output_url():
    with pytest.raises(SynthdataError, match=r"--out.*s3://"):
        with_overrides(load_spec(DEMO_SPEC), "s3://bucket/demo")


@pytest.mark.parametrize("args", [
    ["run", str(DEMO_SPEC), "--out", "s3://bucket/demo"],
    ["generate", str(DEMO_SPEC), "--out", "s3://bucket/demo"],
    ["plan", str(DEMO_SPEC), "--out", "file:///tmp/demo"],
    ["status", "s3://bucket/demo"],
    ["evaluate", "datasets/demo", "--real", "gs://bucket/real"],
    ["audit", "s3://bucket/images", "--reference", "real", "--out", "audit"],
    ["audit", "images", "--reference", "real", "--out", "s3://bucket/audit"],
    ["phantoms", "s3://bucket/phantoms"],
    ["train", "s3://bucket/train.yaml"],
])
def test_cli_path_options_refuse_urls_and_write_nothing(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "is a URL" in result.output and "not supported yet" in " ".join(result.output.split())
    assert list(tmp_path.iterdir()) == [], "nothing written (no folder named 's3:')"


def test_a_spec_whose_output_is_a_url_is_refused_by_run_and_writes_nothing(tmp_path, monkeypatch):
    spec = _spec_with(tmp_path, **{"output.dir": "s3://bucket/demo"})
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", spec])
    assert result.exit_code == 2 and "output.dir" in result.output and "is a URL" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]
