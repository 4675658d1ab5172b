"""Malformed specs: each exits 2 from `validate` and `run`, names the field, writes nothing."""

from __future__ import annotations

import textwrap

import pytest
from typer.testing import CliRunner

from synthdata.cli import app

BASE = textwrap.dedent("""\
    name: t
    seed: 1
    count: 10
    labels:
      normal:
        weight: 0.5
        prompts: ["{view} chest x-ray, {age} year old"]
      pneumonia:
        weight: 0.5
        prompts: ["{view} chest x-ray with {side} pneumonia"]
        vars:
          side: [left, right]
    vars:
      view: {PA: 0.7, AP: 0.3}
      age: {min: 20, max: 90}
    generator:
      model: builtin:tiny
      steps: 5
      height: 64
      width: 64
    shards:
      size: 5
    output:
      dir: out
    """)


def sub(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi")) + BASE

CASES = {
    "bad yaml": ("labels: [unclosed\n  - x", "invalid YAML"),
    "not a mapping": ("- just\n- a list\n", "mapping"),
    "empty file": ("", "mapping"),
    "tab indentation": (BASE.replace("  normal:", "\tnormal:"), "invalid YAML"),
    "name wrong type": (sub("name: t", "name: [t]"), "name"),
    "name with dot": (sub("name: t", "name: t.v1"), "name"),
    "seed negative": (sub("seed: 1", "seed: -1"), "seed"),
    "seed a string": (sub("seed: 1", "seed: lucky"), "seed"),
    "count negative": (sub("count: 10", "count: -5"), "count"),
    "count zero": (sub("count: 10", "count: 0"), "count"),
    "count float": (sub("count: 10", "count: 10.5"), "count"),
    "unknown top field": (BASE + "colour: red\n", "colour"),
    "unknown label field": (sub("weight: 0.5\n    prompts", "wieght: 0.5\n    prompts"), "labels.normal.wieght"),
    "unknown generator field": (sub("steps: 5", "stepz: 5"), "generator.stepz"),
    "empty labels": (sub("labels:\n", "labels: {}\nx_labels:\n"), "labels"),
    "labels a list": (BASE.split("labels:")[0] + "labels: [normal, pneumonia]\n", "labels"),
    "negative weight": (sub("weight: 0.5", "weight: -0.5"), "labels.normal.weight"),
    "all-zero weights": (BASE.replace("weight: 0.5", "weight: 0"), "labels"),
    "weight and count": (sub("weight: 0.5", "weight: 0.5\n    count: 3"), "labels.normal"),
    "negative label count": (sub("weight: 0.5", "count: -3"), "labels.normal.count"),
    "no prompts": (sub('prompts: ["{view} chest x-ray, {age} year old"]', "prompts: []"), "labels.normal.prompts"),
    "unknown template variable": (sub("{age} year old", "{agee} year old"), "labels.normal.prompts.0"),
    "unbalanced brace": (sub("{age} year old", "{age year old"), "labels.normal.prompts.0"),
    "format spec in slot": (sub("{age} year old", "{age:>5} year old"), "labels.normal.prompts.0"),
    "positional slot": (sub("{age} year old", "{} year old"), "labels.normal.prompts.0"),
    "var weight negative": (sub("{PA: 0.7, AP: 0.3}", "{PA: -0.7, AP: 0.3}"), "vars.view"),
    "var range reversed": (sub("{min: 20, max: 90}", "{min: 90, max: 20}"), "vars.age"),
    "var empty list": (sub("side: [left, right]", "side: []"), "labels.pneumonia.vars.side"),
    "height out of range": (sub("height: 64", "height: 100000"), "generator.height"),
    "width not multiple of 8": (sub("width: 64", "width: 65"), "generator.width"),
    "steps zero": (sub("steps: 5", "steps: 0"), "generator.steps"),
    "steps too many": (sub("steps: 5", "steps: 5000"), "generator.steps"),
    "guidance negative": (sub("steps: 5", "steps: 5\n  guidance_scale: -1"), "generator.guidance_scale"),
    "unknown scheduler": (sub("steps: 5", "steps: 5\n  scheduler: warp-drive"), "generator.scheduler"),
    "unknown dtype": (sub("steps: 5", "steps: 5\n  dtype: float8"), "generator.dtype"),
    "batch size zero": (sub("steps: 5", "steps: 5\n  batch_size: 0"), "generator.batch_size"),
    "shard size zero": (sub("size: 5", "size: 0"), "shards.size"),
    "python tag": (sub("seed: 1", "seed: !!python/object/apply:os.system ['echo pwned']"), "invalid YAML"),
    "yaml alias bomb": (BOMB, "aliases"),
    "duplicate key": (sub("seed: 1", "seed: 1\nseed: 2"), "duplicate key 'seed'"),
    "duplicate label": (sub("  pneumonia:\n", "  normal:\n"), "duplicate key 'normal'"),
    "missing model folder": (sub("model: builtin:tiny", "model: ./models/does-not-exist"), "generator.model"),
    "unknown builtin": (sub("model: builtin:tiny", "model: builtin:huge"), "generator.model"),
    "missing lora file": (sub("steps: 5", "steps: 5\n  lora: [{path: nope.safetensors}]"), "generator.lora.0.path"),
    "lora not safetensors": (sub("steps: 5", "steps: 5\n  lora: [{path: lora.pt}]"), "generator.lora.0.path"),
    "missing embedding": (sub("steps: 5", "steps: 5\n  textual_inversion: [{path: e.pt, token: '<x>'}]"),
                          "generator.textual_inversion.0.path"),
    "unknown engine": (BASE + "execution: {engine: slurm}\n", "execution.engine"),
    "label counts disagree with count": (BASE.replace("weight: 0.5", "count: 3"), "count"),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_malformed_spec_exits_2_names_field_writes_nothing(name, command, tmp_path, monkeypatch):
    text, expected = CASES[name]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(text)
    result = CliRunner().invoke(app, [command, "spec.yaml"])
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 2, output
    assert "Traceback" not in output
    assert expected in output, output
    assert "spec.yaml" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"], "nothing may be written"


def test_error_names_line_number(tmp_path):
    (tmp_path / "s.yaml").write_text(sub("steps: 5", "steps: 0"))
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "s.yaml")])
    line = next(i for i, t in enumerate(BASE.splitlines(), 1) if "steps: 5" in t)
    assert f"s.yaml:{line}: generator.steps:" in result.output


def test_every_problem_is_reported_at_once(tmp_path):
    text = sub("steps: 5", "steps: 0").replace("seed: 1", "seed: -1")
    (tmp_path / "s.yaml").write_text(text)
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "s.yaml")])
    assert result.exit_code == 2
    assert "generator.steps" in result.output and "seed" in result.output


def test_valid_base_spec_passes(tmp_path):
    (tmp_path / "s.yaml").write_text(BASE)
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "s.yaml")])
    assert result.exit_code == 0, result.output
