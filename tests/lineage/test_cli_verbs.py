"""Every dataset verb's exit codes, in process through the real typer app."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from synthdata import __version__
from synthdata.cli import app
from tests.lineage.conftest import DEMO_SPEC, REJECTED, copy_dataset

runner = CliRunner()


def test_version_and_schema():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"synthdata {__version__}"
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0 and json.loads(result.output)["title"] == "synthdata spec"


def test_plan_writes_the_plan_and_refuses_a_bad_spec(tmp_path):
    result = runner.invoke(app, ["plan", str(DEMO_SPEC), "--out", str(tmp_path / "p")])
    assert result.exit_code == 0 and "plan f7b2c5aa39f0" in result.output
    assert (tmp_path / "p" / "plan.parquet").is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncount: 4\nlabels: {a: {prompts: ['{nope}']}}\n")
    result = runner.invoke(app, ["plan", str(bad), "--out", str(tmp_path / "q")])
    assert result.exit_code == 2 and "unknown template variable {nope}" in result.output
    assert not (tmp_path / "q").exists(), "nothing is written for a bad spec"


def test_lineage_exit_codes(screened_dataset, tmp_path):
    assert runner.invoke(app, ["lineage", str(screened_dataset), REJECTED[0]]).exit_code == 0
    result = runner.invoke(app, ["lineage", str(screened_dataset), "demo-cxr-000000999"])
    assert result.exit_code == 2 and "has only 48 samples" in result.output
    result = runner.invoke(app, ["lineage", str(tmp_path), REJECTED[0]])
    assert result.exit_code == 2 and "not a synthdata dataset folder" in result.output


def test_status_of_a_partly_generated_dataset(demo_dataset):
    result = runner.invoke(app, ["status", str(demo_dataset), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["planned"]["shards"] == 3 and info["generated"]["complete_shards"] == 2
    assert info["generated"]["incomplete"] == {"2": "no completion marker"}
    assert info["screening"]["ran"] is False
    assert info["rerun_would"][0] == "generate 1 shard(s): [2]"
    text = runner.invoke(app, ["status", str(demo_dataset)])
    assert text.exit_code == 0 and "a rerun would: generate 1 shard(s)" in text.output


def test_verify_finds_a_manifest_that_disagrees(screened_dataset, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert runner.invoke(app, ["verify", str(screened_dataset)]).exit_code == 0
    copy = copy_dataset(screened_dataset, tmp_path / "copy")
    table = pq.read_table(copy / "manifest.parquet")
    flipped = pa.array([not v for v in table["accepted"].to_pylist()])
    pq.write_table(table.set_column(table.schema.get_field_index("accepted"), "accepted", flipped),
                   copy / "manifest.parquet")
    result = runner.invoke(app, ["verify", str(copy), "--json"])
    assert result.exit_code == 1
    assert any("manifest.parquet" in p and "accepted=" in p for p in json.loads(result.output)["problems"])


def test_status_and_verify_name_a_commit_left_half_done(screened_dataset, tmp_path, monkeypatch):
    from tests.lineage.conftest import planted_reference, screen_with_reference

    copy = copy_dataset(screened_dataset, tmp_path / "copy")
    reference = planted_reference(copy, tmp_path / "real")
    monkeypatch.setenv("SYNTHDATA_FAULT", "screening.after_record:enospc")  # disk full there
    with pytest.raises(OSError):
        screen_with_reference(copy, reference, threshold=0.5)
    monkeypatch.delenv("SYNTHDATA_FAULT")
    info = json.loads(runner.invoke(app, ["status", str(copy), "--json"]).output)
    assert info["commit_pending"] == "screening"
    assert info["rerun_would"][0].startswith("finish the interrupted screening")
    assert info["screening"]["generation"] != json.loads(
        (copy / "shards" / ".screening.json").read_text())["generation"], "readers follow the commit"
    assert info["records"]["current"] is True and "record" in info["rerun_would"][-1]
    result = runner.invoke(app, ["verify", str(copy), "--json"])
    assert result.exit_code == 1
    problems = json.loads(result.output)["problems"]
    assert any(".commit.json: an interrupted screening is committed" in p for p in problems)
    assert runner.invoke(app, ["screen", str(copy), "--threshold", "0.5"]).exit_code == 0
    assert runner.invoke(app, ["verify", str(copy)]).exit_code == 0
    info = json.loads(runner.invoke(app, ["status", str(copy), "--json"]).output)
    assert info["commit_pending"] is None and info["records"]["current"] is True
    assert info["rerun_would"][0] == "generate 1 shard(s): [2]", "the fixture holds 2 of 3 shards"


@pytest.mark.parametrize("args", [[], ["demo-cxr-000000001", "--sample", "2"]])
def test_reproduce_needs_exactly_one_of_key_and_sample(demo_dataset, args):
    result = runner.invoke(app, ["reproduce", str(demo_dataset), *args])
    assert result.exit_code == 2 and "either a sample KEY or --sample N" in result.output


def test_reproduce_sample_summarises_and_fails_on_a_difference(demo_dataset, tmp_path):
    from tests.lineage.test_lineage_reproduce import _tamper

    result = runner.invoke(app, ["reproduce", str(demo_dataset), "--sample", "2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "2 of 2 samples identical" in result.output
    copy = copy_dataset(demo_dataset, tmp_path / "copy")
    _tamper(copy / "raw" / "shard-000000.tar", "demo-cxr-000000001")
    result = runner.invoke(app, ["reproduce", str(copy), "demo-cxr-000000001"])
    assert result.exit_code == 1 and "DIFFERENT" in result.output
