"""`synthdata train` through the real `synthdata-train` Prefect flow (session server)."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from synthdata.cli import app
from tests.training.conftest import TI_SPEC, write_spec

pytestmark = pytest.mark.e2e


def test_train_cli_runs_the_flow_named_after_the_training(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, TaskRunFilter

    spec = write_spec(tmp_path, TI_SPEC.replace("name: ti-test", "name: ti-flow"))
    result = CliRunner().invoke(app, ["train", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "trained ti-flow" in result.output
    record = json.loads((tmp_path / "out" / "train.json").read_text())
    assert record["method"] == "textual_inversion" and record["outputs"]["embedding"]["bytes"] < 1_000_000

    async def read():
        async with get_client() as client:
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=["train-ti-flow"])))
            tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [runs[0].id]}),
                                                task_run_filter=TaskRunFilter())
            return runs, tasks

    runs, tasks = asyncio.run(read())
    assert len(runs) == 1 and runs[0].state.is_completed()
    assert sorted(t.name for t in tasks) == ["train-diffusion-0-2", "train-diffusion-2-4"]
    again = CliRunner().invoke(app, ["train", str(spec), "--out", str(tmp_path / "out")])
    assert again.exit_code == 0 and "already trained" in again.output
