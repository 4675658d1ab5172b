"""The evaluation's headline and utility tables as Prefect artifacts."""

from __future__ import annotations

from synthdata.progress import artifact_key
from synthdata.dataset.evaluation_section import headline_rows, markdown_table, utility_rows


def publish_artifacts(data: dict, name: str) -> list[str]:
    """The headline and utility tables as Prefect artifacts (no-op outside a flow run)."""
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return []
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    key = artifact_key(name)
    ids = [create_table_artifact(table=headline_rows(data), key=f"{key}-fidelity",
                                 description=f"{name}: fidelity vs real ({data['extractor']['name']})")]
    text = [f"# {name}: evaluation", "", markdown_table(headline_rows(data))]
    if "utility" in data:
        text += ["", "## Utility", "", markdown_table(utility_rows(data["utility"]))]
    ids.append(create_markdown_artifact(markdown="\n".join(text), key=f"{key}-evaluation",
                                        description=f"{name}: evaluation summary"))
    return [str(i) for i in ids]
