"""The `evaluate` verb: fidelity, diversity, alignment and utility of datasets against real images;
with several dataset folders, a ranking of them on the same real set and extractor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from synthdata.cli.app import app, console, local_location, local_path, quiet_environment, user_errors


def _fmt(v, ci=None) -> str:
    if v is None:
        return "-"
    text = f"{v:.4g}"
    return f"{text} [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else text


def _print_comparison(table: dict) -> None:
    from rich.table import Table

    ext = table["extractor"]
    out = Table(title=f"ranked by FID ({ext['name']}, real set {table['real_set'][:12]}); "
                      "separated = FID interval entirely below the next row's")
    for col in ("#", "dataset", "n synth", "FID [95% CI]", "FD∞", "KID ± SE", "CMMD ± SE",
                "precision", "recall", "floor FID", "AUC synthetic only [95% CI]", "separated"):
        out.add_column(col)
    for n, r in enumerate(table["rows"], 1):
        sep = {None: "-", True: "yes", False: "no (tie)"}[r["separated_from_next"]]
        out.add_row(str(n), r["dataset"], str(r["n_synthetic"]), _fmt(r["fid"], r["fid_ci"]),
                    _fmt(r["fd_inf"]),
                    f"{_fmt(r['kid_unbiased'])} ± {_fmt(r['kid_se'])}",
                    f"{_fmt(r['cmmd'])} ± {_fmt(r['cmmd_se'])}", _fmt(r["precision"]),
                    _fmt(r["recall"]), _fmt(r["floor_fid"]),
                    _fmt(r["utility_synthetic_auc"], r["utility_synthetic_ci"]), sep)
    console.print(out)
    for w in table["warnings"]:
        console.print(f"[yellow]warning[/] {w}")


@app.command()
def evaluate(
    out: Annotated[list[Path], typer.Argument(parser=local_path, help="dataset folder(s); several are ranked in one table")],
    real: Annotated[str, typer.Option("--real", parser=local_location, help="real labelled images: a folder per label, a "
                                      "CSV/Parquet of path,label (or a folder with metadata.csv), "
                                      "or WebDataset tars")],
    features: Annotated[Optional[list[str]], typer.Option(
        "--features", parser=local_location, help="feature extractor: builtin:phantom-encoder, efficientnet-lite0, pixel, "
        "or a local model folder; repeat for several (the first is the headline). Default: "
        "builtin:phantom-encoder + efficientnet-lite0 on a phantom set, else efficientnet-lite0")] = None,
    utility: Annotated[bool, typer.Option("--utility", help="run the classifier utility protocol "
                                          "and the data-limited curves")] = False,
    utility_classifier: Annotated[str, typer.Option(
        "--utility-classifier", help="curves' classifier: auto (a small CNN on a GPU, else a "
        "linear probe), linear, or cnn")] = "auto",
    curve_draws: Annotated[int, typer.Option("--curve-draws", min=1, help="real subsets drawn per "
                                             "fraction of the curves (below 100%)")] = 5,
    test: Annotated[Optional[str], typer.Option("--test", parser=local_location, help="held-out real test set for --utility "
                                                "(default: a seeded split of --real)")] = None,
    alignment: Annotated[Optional[str], typer.Option(
        "--alignment", parser=local_location, help="local CLIP-style image-text model folder for alignment scores")] = None,
    seed: Annotated[int, typer.Option(help="seed of splits, subsets and bootstrap")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    card: Annotated[bool, typer.Option("--card/--no-card", help="refresh the dataset card's "
                                       "evaluation section (when the folder has a card)")] = True,
    compare_out: Annotated[Optional[Path], typer.Option(
        "--compare-out", parser=local_path, help="with several datasets: also write the ranking as JSON here")] = None,
) -> None:
    """Compare datasets with real images; write DIR/evaluation/evaluation.json and plots for each,
    and rank several in one table."""
    quiet_environment()
    with user_errors(flows=True, name="evaluate"):
        if utility_classifier not in ("auto", "linear", "cnn"):
            raise typer.BadParameter("--utility-classifier must be auto, linear or cnn")
        from synthdata.evaluation.flow import check_inputs  # deferred: loads prefect, pyarrow
        from synthdata.evaluation.flow import evaluate as run_evaluation  # deferred: loads prefect, pyarrow

        for folder in out:   # every input checked before the first flow starts
            check_inputs(folder, real, test if utility else None)
        results = [run_evaluation(folder, real, features=features or None, utility=utility,
                                  test=test, alignment=alignment, seed=seed, device=device,
                                  card=card, utility_classifier=utility_classifier,
                                  curve_draws=curve_draws)
                   for folder in out]
        table = None
        if len(out) > 1:
            from synthdata.evaluation.compare import compare  # deferred: loaded when the verb runs (a fast --help)

            table = compare(out)
    for folder, result in zip(out, results):
        fid, floor = result["fid"], result["real_vs_real_fid"]
        console.print(f"[green]evaluated[/] {folder}: {result['samples']} synthetic images; FID "
                      f"{fid if fid is None else f'{fid:.4g}'} (real vs real "
                      f"{floor if floor is None else f'{floor:.4g}'}) -> {result['evaluation']}")
    if table is not None:
        _print_comparison(table)
        if compare_out is not None:
            from synthdata.fsutil import write_json_atomic  # deferred: loaded when the verb runs (a fast --help)

            write_json_atomic(compare_out, json.loads(json.dumps(table)))
            console.print(f"ranking -> {compare_out}")
