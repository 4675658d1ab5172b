"""`synthdata phantoms OUT`: a procedural, labelled chest-radiograph-like image set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from synthdata.cli.app import app, console, label_table, local_path, user_errors


@app.command()
def phantoms(out: Annotated[Path, typer.Argument(parser=local_path, help="output folder (new or empty)")],
             count: Annotated[int, typer.Option(min=1, help="number of images")] = 100,
             seed: Annotated[int, typer.Option(min=0, help="seed: same seed, same bytes")] = 0,
             size: Annotated[int, typer.Option(min=32, max=2048, help="image size in pixels")] = 128,
             dicom: Annotated[bool, typer.Option("--dicom", help="also write DICOM files "
                                                 "(MONOCHROME1, VOI window)")] = False,
             labels: Annotated[Optional[str], typer.Option(help="comma-separated subset of "
                                                           "normal,effusion,consolidation,nodule,cardiomegaly")] = None,
             ) -> None:
    """Write procedural chest-radiograph phantoms (PNG, metadata.csv, README.md); not clinical data."""
    import csv

    from rich.progress import Progress

    from synthdata.phantoms import LABELS, write_phantoms  # deferred: loaded when the verb runs (a fast --help)

    chosen = tuple(x.strip() for x in labels.split(",")) if labels else LABELS
    with user_errors(), Progress(console=console, transient=True) as bar:
        task = bar.add_task("phantoms", total=count)
        meta = write_phantoms(out, count=count, seed=seed, size=size, dicom=dicom, labels=chosen,
                              progress=lambda: bar.advance(task))
    with open(meta, newline="") as f:
        rows = list(csv.DictReader(f))
    counts = {x: sum(r["label"] == x for r in rows) for x in chosen}
    console.print(label_table(f"{len(rows)} phantoms, {len({r['patient_id'] for r in rows})} patients", counts))
    console.print(f"[green]done[/] {meta} (procedural phantoms, not clinical data)")
