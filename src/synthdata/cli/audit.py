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


class Duplicates(str, Enum):
    """What near-duplicates across patients inside the reference do."""

    merge = "merge"
    error = "error"


def _print_glance(report_path: str) -> bool:
    """Print the report's calibration, patient groups and duplicates; True when a matcher's
    calibration failed (every image then goes to review)."""
    import json

    report = json.loads(Path(report_path).read_text())
    for key, label in (("patient_groups", "patient groups"),
                       ("reference_duplicates", "reference duplicates"),
                       ("calibration_status", "calibration")):
        if report.get(key):
            console.print(f"{label}: {report[key]}", soft_wrap=True)
    failed = [i["failed"] for i in report.get("calibration", {}).values()
              if isinstance(i, dict) and i.get("failed")]
    for message in failed:
        console.print(f"[red]calibration failed[/]: {message}", soft_wrap=True)
    return bool(failed)


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
          matcher: Annotated[Optional[list[str]], typer.Option(
              "--matcher", "--embedder",
              help="deciding matcher (repeat for several; --embedder is its old name): aligned, pixel, "
                   "efficientnet-lite0 or a model folder [default: aligned]")] = None,
          retriever: Annotated[Optional[list[str]], typer.Option(
              help="embedder proposing candidates for aligned (repeat) "
                   "[default: efficientnet-lite0]")] = None,
          threshold: Annotated[str, typer.Option(help="auto (calibrated) or a number")] = "auto",
          fail_on: Annotated[Optional[FailOn], typer.Option(
              help="exit 1 when any image reaches this decision (reject counts for review)")] = None,
          group_column: Annotated[Optional[str], typer.Option(
              help="patient column: of metadata tables beside the reference images (CSV/TSV/"
                   "Parquet), of Parquet references, or a field of tar samples' .json "
                   "[default: a column called like patient_id, PatientID, subject_id]")] = None,
          group_pattern: Annotated[Optional[str], typer.Option(
              help="regular expression giving the patient from a reference image id")] = None,
          k: Annotated[int, typer.Option(min=1, max=100, help="nearest real images kept")] = 5,
          chunk_size: Annotated[int, typer.Option(
              min=1, help="images per Prefect task (a rerun with the same value resumes)")] = 256,
          reference_duplicates: Annotated[Duplicates, typer.Option(
              help="near-duplicates across patients inside the reference: merge (count each "
                   "cluster as one patient, and say so) or error")] = Duplicates.merge,
          ) -> None:
    """Screen any images against real references (a Prefect flow, one task per chunk).

    Writes OUT/audit.parquet (one row per image: source, decision, similarity, one similarity
    column per matcher, pseudonymous nearest_real_id and nearest_group) and
    OUT/audit_report.json (+ .png). Inputs that cannot be judged (undecodable, empty,
    non-finite) are review rows with their reason. When a matcher's calibration fails (its
    threshold cannot catch the target share of copies within the false-positive budget),
    every image goes to review and the message says what to fix. Exit 0, or 1 with --fail-on
    when an image reaches it.
    """
    from pydantic import ValidationError

    from synthdata.screening.audit import fails, run_audit  # deferred: loads faiss, prefect, pyarrow, scipy
    from synthdata.spec.models import Memorization  # deferred: loaded when the verb runs (a fast --help)

    fields: dict = {"reference": [str(p) for p in reference], "threshold": _threshold(threshold),
                    "group_column": group_column, "group_pattern": group_pattern, "k": k,
                    "reference_duplicates": reference_duplicates.value}
    if matcher:
        fields["matchers"] = matcher
    if retriever:
        fields["retrievers"] = retriever
    with user_errors(flows=True, name="audit"):
        try:
            cfg = Memorization(**fields)
        except ValidationError as exc:
            from synthdata.errors import SynthdataError  # deferred: loaded when the verb runs (a fast --help)

            raise SynthdataError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                           for e in exc.errors())) from None
        summary = run_audit([str(p) for p in synthetic], cfg, out, chunk_size)
    decisions = ", ".join(f"{d} {n}" for d, n in summary["decisions"].items())
    thresholds = ", ".join(f"{m} {t:.4f}" for m, t in summary["thresholds"].items())
    console.print(f"[green]audited[/] {summary['images']} images -> {summary['out_dir']}: "
                  f"{decisions} (thresholds: {thresholds})"
                  + (f"; {summary['unreadable']} unreadable (review)" if summary["unreadable"] else ""),
                  soft_wrap=True)
    _print_glance(summary["report"])
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
