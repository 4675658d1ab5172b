"""Label table and screening summary appear as Prefect artifacts on the flow run."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.e2e


def test_artifacts_are_created_on_the_flow_run(prefect_server, screened_dataset):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.context import get_run_context

    from synthdata.dataset.card import publish_prefect_artifacts

    @flow(name="artifacts-test", persist_result=False)
    def publish(out: str) -> tuple[str, list[str]]:
        return str(get_run_context().flow_run.id), publish_prefect_artifacts(out)

    run_id, ids = publish(str(screened_dataset))
    assert len(ids) == 2

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))

    artifacts = {a.key: a for a in asyncio.run(read())}
    assert set(artifacts) == {"demo-cxr-labels", "demo-cxr-screening"}
    assert artifacts["demo-cxr-labels"].type == "table"
    assert "normal" in str(artifacts["demo-cxr-labels"].data)
    assert "reject" in artifacts["demo-cxr-screening"].data
