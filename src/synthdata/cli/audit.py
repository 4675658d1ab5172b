"""`synthdata audit`: screen any images (folders, tars, dataset folders) against real data."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from synthdata.cli.app import app, console, local_path, user_errors


class FailOn(str, Enum):
    """Decisions that make `synthdata audit --fail-on` exit 1."""

    review = "review"
    reject = "reject"


def _threshold(value: str) -> str | float:
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise typer.BadParameter(f"expected auto or a number in [-1, 1], got {value!r}") from None


@app.command()
def audit(synthetic: Annotated[list[Path], typer.Argument(
              parser=local_path, help="images to screen: folders of PNG/JPEG/TIFF/DICOM, WebDataset tars, "
                   "synthdata dataset folders")],
          reference: Annotated[list[Path], typer.Option(
              "--reference", "-r", parser=local_path, help="real images: folders or files (DICOM, NIfTI, PNG, "
                                        "tars, Parquet); repeat for several")],
          out: Annotated[Path, typer.Option(parser=local_path, help="output folder: audit.parquet and the report")],
          embedder: Annotated[Optional[list[str]], typer.Option(
              help="deciding matcher (repeat for several): aligned, pixel, "
                   "efficientnet-lite0 or a model folder [default: aligned]")] = None,
          retriever: Annotated[Optional[list[str]], typer.Option(
              help="embedder proposing candidates for aligned (repeat) "
                   "[default: efficientnet-lite0]")] = None,
          threshold: Annotated[str, typer.Option(help="auto (calibrated) or a number")] = "auto",
          fail_on: Annotated[Optional[FailOn], typer.Option(
              help="exit 1 when any image reaches this decision (reject counts for review)")] = None,
          group_column: Annotated[Optional[str], typer.Option(
              help="patient column of Parquet references / field of tar samples' .json")] = None,
          group_pattern: Annotated[Optional[str], typer.Option(
              help="regular expression giving the patient from a reference image id")] = None,
          k: Annotated[int, typer.Option(min=1, max=100, help="nearest real images kept")] = 5,
          chunk_size: Annotated[int, typer.Option(
              min=1, help="images per Prefect task (a rerun with the same value resumes)")] = 256,
          ) -> None:
    """Screen any images against real references (a Prefect flow, one task per chunk).

    Writes OUT/audit.parquet (one row per image: source, decision, similarity, one similarity
    column per matcher, pseudonymous nearest_real_id and nearest_group) and
    OUT/audit_report.json (+ .png). Inputs that cannot be judged (undecodable, empty,
    non-finite) are review rows with their reason. Exit 0, or 1 with --fail-on when an image
    reaches it.
    """
    from pydantic import ValidationError

    from synthdata.screening.audit import fails, run_audit
    from synthdata.spec.models import Memorization

    fields: dict = {"reference": [str(p) for p in reference], "threshold": _threshold(threshold),
                    "group_column": group_column, "group_pattern": group_pattern, "k": k}
    if embedder:
        fields["embedder"] = embedder
    if retriever:
        fields["retrievers"] = retriever
    with user_errors(flows=True, name="audit"):
        try:
            cfg = Memorization(**fields)
        except ValidationError as exc:
            from synthdata.errors import SynthdataError

            raise SynthdataError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                           for e in exc.errors())) from None
        summary = run_audit([str(p) for p in synthetic], cfg, out, chunk_size)
    decisions = ", ".join(f"{d} {n}" for d, n in summary["decisions"].items())
    thresholds = ", ".join(f"{m} {t:.4f}" for m, t in summary["thresholds"].items())
    console.print(f"[green]audited[/] {summary['images']} images -> {summary['out_dir']}: "
                  f"{decisions} (thresholds: {thresholds})"
                  + (f"; {summary['unreadable']} unreadable (review)" if summary["unreadable"] else ""),
                  soft_wrap=True)
    if summary["reused_chunks"]:
        console.print(f"resumed: {summary['reused_chunks']} of {summary['chunks']} chunks were "
                      "already screened")
    for source, reason in summary["unreadable_inputs"]:
        console.print(f"  review {source}: {reason}", markup=False, highlight=False,
                      soft_wrap=True)
    if summary["unreadable"] > len(summary["unreadable_inputs"]):
        console.print(f"  ... and {summary['unreadable'] - len(summary['unreadable_inputs'])} more "
                      "(audit.parquet: note)", markup=False, highlight=False)
    if fails(summary["decisions"], fail_on.value if fail_on else None):
        console.print(f"[red]failing[/]: images reached {fail_on.value}")  # type: ignore[union-attr]
        raise typer.Exit(1)
