"""Speed knobs (execution.speed): recorded per shard, part of the folder's identity, replayed by
reproduce; `synthdata tune` measures them and writes nothing."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from synthdata.cli import app
from synthdata.errors import OutputError
from synthdata.folder import DatasetFolder
from synthdata.dataset.prepare import GenerationIdentity, check_generation_identity
from synthdata.dataset.reproduce import reproduce
from tests.conftest import DEMO_SPEC
from tests.lineage.conftest import build_dataset


def _spec(tmp_path, **speed):
    data = yaml.safe_load(DEMO_SPEC.read_text())
    data.update(count=4, shards={"size": 4})
    data["generator"].update(steps=2, batch_size=4)
    data["execution"] = {"speed": speed}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_knobs_are_recorded_and_replayed(tmp_path):
    out = build_dataset(tmp_path / "ds", _spec(tmp_path, channels_last=True, vae_slicing=True), shards=(0,))
    marker = DatasetFolder(out).marker(0)
    assert marker["speed"] == {"channels_last": True, "vae_slicing": True}
    result = reproduce(out, "demo-cxr-000000002")
    assert result.identical, result.summary()
    with pytest.raises(OutputError, match="speed"):
        check_generation_identity(out, GenerationIdentity(marker["model_fingerprint"], "cpu", "float32", {}))


def test_tune_measures_batches_and_knobs_and_writes_nothing(tmp_path):
    spec = _spec(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(app, ["tune", str(spec), "--batch", "1,2", "--images", "2",
                                      "--knob", "fuse_qkv", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    rows = {(json.dumps(r["knobs"]), r["batch_size"]): r for r in info["rows"]}
    assert set(rows) == {("{}", 1), ("{}", 2), ('{"fuse_qkv": true}', 1), ('{"fuse_qkv": true}', 2)}
    assert all(r["images_per_s"] > 0 and r["error"] is None for r in rows.values())
    assert rows[("{}", 2)]["same_pixels_as_default"] is True
    assert rows[('{"fuse_qkv": true}', 2)]["same_pixels_as_default"] is not None
    assert info["suggested"]["images_per_s"] == max(r["images_per_s"] for r in rows.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == before
