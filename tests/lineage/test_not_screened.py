"""A spec without a real reference is never passed off as screened: the run's output, `status`,
stats.json, the dataset card and the Prefect artifacts say it was not screened against real
images, and its samples carry the decision `not-screened`, never `accept`.

Uses the session's demo run (specs/demo-tiny.yaml: builtin:tiny, no memorization.reference),
copied and resumed through the real CLI and Prefect flow.
"""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from synthdata.cli import app
from tests.conftest import DEMO_SPEC

pytestmark = pytest.mark.e2e
SAYS = "NOT screened against real images"


@pytest.fixture(scope="module")
def resumed(demo_run, prefect_server, tmp_path_factory):
    """A copy of the demo run, resumed by `synthdata run` (shards complete: screen and record)."""
    out = tmp_path_factory.mktemp("not-screened") / "demo-cxr"
    shutil.copytree(demo_run, out, ignore=shutil.ignore_patterns(".synthdata.lock"))
    result = CliRunner().invoke(app, ["run", str(DEMO_SPEC), "--out", str(out)])
    return out, result


def test_the_run_says_it_was_not_screened(resumed):
    out, result = resumed
    assert result.exit_code == 0, result.output
    assert "3 already complete" in result.output and SAYS in result.output
    assert "not-screened 48" in result.output and "accept" not in result.output


def test_no_sample_is_accepted_yet_consumers_read_them_marked(resumed):
    out, _ = resumed
    decisions = pq.read_table(out / "screening.parquet", columns=["decision", "note"]).to_pylist()
    assert {r["decision"] for r in decisions} == {"not-screened"} and len(decisions) == 48
    assert all("not screened against real images" in r["note"] for r in decisions)
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert all(r["decision"] == "not-screened" and r["accepted"] for r in manifest)
    assert len(list((out / "shards").glob("shard-*.tar"))) == 3
    assert CliRunner().invoke(app, ["verify", str(out)]).exit_code == 0


def test_stats_status_and_card_say_it(resumed):
    out, _ = resumed
    stats = json.loads((out / "stats.json").read_text())
    assert stats["decisions"] == {"not-screened": 48}
    assert stats["screening"]["state"] == "not-screened"
    assert stats["screening"]["against_real_images"] is False and stats["screening"]["ran"] is True

    runner = CliRunner()
    status = json.loads(runner.invoke(app, ["status", str(out), "--json"]).output)
    assert status["screening"]["state"] == "not-screened"
    assert status["screening"]["against_real_images"] is False
    assert SAYS in runner.invoke(app, ["status", str(out)]).output
    report = runner.invoke(app, ["report", str(out)])
    assert report.exit_code == 0 and SAYS in report.output

    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---", 2)[1])
    assert "not-screened-against-real-images" in front["tags"]
    section = card.split("## Memorization screening", 1)[1].split("\n## ", 1)[0]
    assert "**Not screened against real images.**" in section and "not-screened 48" in section
    assert "bounds near-copies" not in card and "48 not screened against real images" in card
    assert json.loads((out / "screening_report.json").read_text())["notes"][0].startswith(
        "NOT SCREENED AGAINST REAL IMAGES")


def test_the_prefect_artifact_says_it(resumed, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["demo-cxr-screening"])))
    assert any(a.data.startswith("# demo-cxr: NOT screened against real images") for a in found)


def test_validate_warns_naming_the_field(tmp_path):
    result = CliRunner().invoke(app, ["validate", str(DEMO_SPEC)])
    assert result.exit_code == 0
    assert "memorization.reference: empty: the dataset will NOT be screened" in result.output


def test_top_up_without_a_reference_is_a_spec_error(tmp_path):
    data = yaml.safe_load(DEMO_SPEC.read_text())
    data["qc"] = {"checks": [{"check": "blank"}], "top_up": True}
    spec = tmp_path / "top-up.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    line = spec.read_text().splitlines().index("  top_up: true") + 1
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2
    assert f"{spec}:{line}: qc.top_up: top_up replaces samples that memorization screening " \
           "rejects, but memorization.reference is empty" in " ".join(result.output.split())
