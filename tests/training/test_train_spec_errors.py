"""Malformed train specs: `synthdata train` exits 2 naming file:line and field, and writes nothing."""

from __future__ import annotations

import json
import textwrap

import pytest
from typer.testing import CliRunner

from synthdata.cli import app

BASE = textwrap.dedent("""\
    name: t
    seed: 1
    base: builtin:tiny
    method: lora
    data:
      phantoms: {count: 4, seed: 1, size: 32}
      caption_template: "{finding}, {view}"
      resolution: 32
    training:
      steps: 2
      batch_size: 2
      learning_rate: 0.001
    output:
      dir: out
    """)


def sub(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


CASES = {
    "bad yaml": ("data: [unclosed\n  - x", None, "invalid YAML"),
    "not a mapping": ("- a\n- b\n", None, "mapping"),
    "unknown method": (sub("method: lora", "method: dreambooth"), "method", "method"),
    "missing method": (sub("method: lora\n", ""), None, "method: required field is missing"),
    "unknown top field": (BASE + "epochs: 3\n", "epochs", "unknown field"),
    "unknown training field": (sub("steps: 2", "stepz: 2"), "training.stepz", "unknown field"),
    "steps zero": (sub("steps: 2", "steps: 0"), "training.steps", "greater than or equal to 1"),
    "learning rate negative": (sub("learning_rate: 0.001", "learning_rate: -1"), "training.learning_rate", "greater than 0"),
    "resolution not multiple of 8": (sub("resolution: 32", "resolution: 30"), "data.resolution", "multiple of 8"),
    "unknown scheduler": (sub("learning_rate: 0.001", "learning_rate: 0.001\n  lr_scheduler: warp"), "training.lr_scheduler", "lr_scheduler"),
    "two sources": (sub("phantoms:", "csv: meta.csv\n  phantoms:"), "data", "exactly one image source"),
    "no source": (sub("  phantoms: {count: 4, seed: 1, size: 32}\n", ""), "data", "exactly one image source"),
    "missing csv": (sub("phantoms: {count: 4, seed: 1, size: 32}", "csv: nope.csv"), "data.csv", "does not exist"),
    "missing folder": (sub("phantoms: {count: 4, seed: 1, size: 32}", "folder: nope/"), "data.folder", "does not exist"),
    "no tar matches": (sub("phantoms: {count: 4, seed: 1, size: 32}", "webdataset: [nope-*.tar]"), "data.webdataset.0", "no tar file"),
    "bad phantom label": (sub("size: 32}", "size: 32, labels: [fracture]}"), "data.phantoms.labels", "expected labels"),
    "column and template": (sub('caption_template: "{finding}, {view}"', 'caption_template: "{finding}"\n  caption_column: caption'),
                            "data.caption_template", "not both"),
    "bad template slot": (sub("{finding}, {view}", "{finding:>3}"), "data.caption_template", "bad caption template"),
    "ti without section": (sub("method: lora", "method: textual_inversion"), "textual_inversion", "needs a textual_inversion section"),
    "ti token not in template": (sub("method: lora", "method: textual_inversion") + "textual_inversion: {token: '<x>'}\n",
                                 "data.caption_template", "must contain the token"),
    "ti section with lora": (BASE + "textual_inversion: {token: '<x>'}\n", "textual_inversion", "only used with method"),
    "full section with lora": (BASE + "full: {text_encoder: true}\n", "full", "only used with method"),
    "nothing to train": (sub("method: lora", "method: full") + "full: {unet: false}\n", "full", "nothing to train"),
    "lora rank zero": (BASE + "lora: {rank: 0}\n", "lora.rank", "greater than or equal to 1"),
    "unknown builtin": (sub("base: builtin:tiny", "base: builtin:huge"), "base", "unknown built-in model"),
    "missing base folder": (sub("base: builtin:tiny", "base: ./models/nothing-here"), "base", "does not exist"),
    "warmup beyond steps": (sub("learning_rate: 0.001", "learning_rate: 0.001\n  warmup_steps: 9"), "training.warmup_steps", "more than steps"),
    "precision unknown": (sub("learning_rate: 0.001", "learning_rate: 0.001\n  mixed_precision: fp8"), "training.mixed_precision", "mixed_precision"),
    "duplicate key": (sub("seed: 1", "seed: 1\nseed: 2"), None, "duplicate key 'seed'"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_train_spec_exits_2_with_file_line_field(name, tmp_path, monkeypatch):
    text, field, expected = CASES[name]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.yaml").write_text(text)
    result = CliRunner().invoke(app, ["train", "train.yaml"])
    output = result.output
    assert result.exit_code == 2, output
    assert "Traceback" not in output and expected in output, output
    if field is not None:
        line = next((p for p in output.splitlines() if f" {field}:" in p), None)
        assert line is not None, output
        assert line.strip().split(":")[0] == "train.yaml" and line.strip().split(":")[1].isdigit(), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.yaml"], "nothing may be written"


def test_line_number_is_the_field_line(tmp_path):
    (tmp_path / "t.yaml").write_text(sub("steps: 2", "steps: 0"))
    result = CliRunner().invoke(app, ["train", str(tmp_path / "t.yaml")])
    line = next(i for i, t in enumerate(BASE.splitlines(), 1) if "steps: 2" in t)
    assert f"t.yaml:{line}: training.steps:" in result.output


def test_schema_lists_the_sections():
    result = CliRunner().invoke(app, ["train", "--schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["title"] == "synthdata train spec"
    assert {"name", "method", "data", "training", "lora", "textual_inversion", "full"} <= set(schema["properties"])
