"""`synthdata tune`: measure batch sizes and speed knobs for a spec's model on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from synthdata.cli.app import app, console, local_path, user_errors


def _knobs(values: list[str]) -> list[dict]:
    """'attention=flash' / 'channels_last' / 'compile=default' -> [{}, {knob: value}, ...]."""
    from synthdata.spec.models import Speed  # deferred: loaded when the verb runs (a fast --help)

    sets: list[dict] = [{}]
    for text in values:
        name, _, value = text.partition("=")
        default = Speed.model_fields.get(name)
        if default is None:
            raise typer.BadParameter(f"unknown knob {name!r}; knobs: {', '.join(Speed.model_fields)}")
        parsed: object = True if value == "" else {"true": True, "false": False}.get(value.lower(), value)
        sets.append({name: parsed})
    return sets


@app.command()
def tune(spec: Annotated[Path, typer.Argument(parser=local_path, help="spec YAML file")],
         batch: Annotated[str, typer.Option(help="batch sizes to try, comma-separated")] = "1,2,4,8",
         knob: Annotated[Optional[list[str]], typer.Option(
             help="a knob setting to try, e.g. attention=flash, channels_last, compile=default "
                  "(repeatable; default: a set for this device)")] = None,
         images: Annotated[int, typer.Option(min=1, help="images per measurement")] = 16,
         device: Annotated[Optional[str], typer.Option(help="device (default: the spec's)")] = None,
         as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Measure img/s and memory per batch size and speed knob; suggest settings (writes nothing)."""
    from synthdata.plan.load import load_spec  # deferred: loaded when the verb runs (a fast --help)
    from synthdata.generation.tune import tune as run_tune  # deferred: loads diffusers, torch, transformers

    with user_errors():
        loaded = load_spec(spec)
        sizes = [int(b) for b in batch.split(",") if b.strip()]
        result = run_tune(loaded, sizes, _knobs(knob) if knob else None, images, device)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"{result['model']} on {result['device']}: {result['images']} images, "
                        f"{result['steps']} steps, {result['size'][0]}x{result['size'][1]}")
    for col in ("knobs", "batch", "img/s", "peak GiB", "pixels as default"):
        table.add_column(col)
    for row in result["rows"]:
        same = "-" if row["same_pixels_as_default"] is None else (
            "same" if row["same_pixels_as_default"] else f"differ (max {row['max_pixel_diff']})")
        table.add_row(json.dumps(row["knobs"]) if row["knobs"] else "defaults", str(row["batch_size"]),
                      row["error"] or f"{row['images_per_s']:.2f}",
                      "-" if row["peak_memory_gib"] is None else f"{row['peak_memory_gib']:.2f}", same)
    console.print(table)
    best = result["suggested"]
    if best:
        console.print(f"suggested: batch_size {best['batch_size']}, execution.speed "
                      f"{json.dumps(best['knobs']) or '{}'} ({best['images_per_s']:.2f} img/s"
                      + ("" if best["same_pixels_as_default"] in (True, None) else
                         "; changes pixels: a new dataset, not a resume") + ")")
