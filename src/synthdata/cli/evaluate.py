"""The `evaluate` verb: fidelity, diversity, alignment and utility of a dataset against real images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from synthdata.cli.app import app, console, local_location, local_path, quiet_environment, user_errors


@app.command()
def evaluate(
    out: Annotated[Path, typer.Argument(parser=local_path, help="dataset folder")],
    real: Annotated[str, typer.Option("--real", parser=local_location, help="real labelled images: a folder per label, a "
                                      "CSV/Parquet of path,label (or a folder with metadata.csv), "
                                      "or WebDataset tars")],
    features: Annotated[Optional[list[str]], typer.Option(
        "--features", parser=local_location, help="feature extractor: efficientnet-lite0 (default), pixel, or a local "
        "model folder; repeat for several (the first is the headline)")] = None,
    utility: Annotated[bool, typer.Option("--utility", help="run the classifier utility protocol")] = False,
    test: Annotated[Optional[str], typer.Option("--test", parser=local_location, help="held-out real test set for --utility "
                                                "(default: a seeded split of --real)")] = None,
    alignment: Annotated[Optional[str], typer.Option(
        "--alignment", parser=local_location, help="local CLIP-style image-text model folder for alignment scores")] = None,
    seed: Annotated[int, typer.Option(help="seed of splits, subsets and bootstrap")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    card: Annotated[bool, typer.Option("--card/--no-card", help="refresh the dataset card's "
                                       "evaluation section (when the folder has a card)")] = True,
) -> None:
    """Compare a dataset with real images; write DIR/evaluation/evaluation.json and plots."""
    quiet_environment()
    with user_errors(flows=True, name="evaluate"):
        from synthdata.evaluation.flow import evaluate as run_evaluation

        result = run_evaluation(out, real, features=features or None, utility=utility,
                                    test=test, alignment=alignment, seed=seed, device=device,
                                    card=card)
    fid, floor = result["fid"], result["real_vs_real_fid"]
    console.print(f"[green]evaluated[/] {out}: {result['samples']} synthetic images; FID "
                  f"{fid if fid is None else f'{fid:.4g}'} (real vs real "
                  f"{floor if floor is None else f'{floor:.4g}'}) -> {result['evaluation']}")
