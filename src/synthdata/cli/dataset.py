"""Dataset verbs: validate, schema, plan, run, screen, report, lineage, reproduce."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from synthdata.cli.app import Engine, app, console, label_table, quiet_environment, user_errors
from synthdata.errors import SynthdataError


@app.command()
def validate(spec: Annotated[Path, typer.Argument(help="spec YAML file")]) -> None:
    """Check a spec; exit 0 when valid, 2 with every problem listed when not."""
    from synthdata.spec import load_spec

    with user_errors():
        loaded = load_spec(spec)
    from synthdata.plan import label_counts

    console.print(f"[green]ok[/] {spec}: {loaded.name}, {sum(label_counts(loaded).values())} samples")


@app.command()
def schema() -> None:
    """Print the spec's JSON Schema (for editors)."""
    from synthdata.spec import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


@app.command()
def plan(spec: Annotated[Path, typer.Argument(help="spec YAML file")],
         out: Annotated[Optional[Path], typer.Option(help="output folder (default: the spec's)")] = None) -> None:
    """Write the deterministic plan (spec.yaml, plan.parquet, plan.json) and print the label table."""
    from synthdata.outputs import acquire_lock, prepare
    from synthdata.plan import label_counts
    from synthdata.spec import load_spec

    with user_errors():
        loaded = load_spec(spec)
        root = Path(out or loaded.output_dir())
        lock = acquire_lock(root)
        try:
            prepared = prepare(root, loaded)
        finally:
            lock.release()
    console.print(label_table(f"{loaded.name}: plan {prepared.plan_hash[:12]}", label_counts(loaded)))
    console.print(f"{prepared.shard_count} shards of up to {loaded.shards.size} -> {root}/plan.parquet")


@app.command()
def run(spec: Annotated[Path, typer.Argument(help="spec YAML file")],
        out: Annotated[Optional[Path], typer.Option(help="output folder (default: the spec's)")] = None,
        engine: Annotated[Optional[Engine], typer.Option(help="task runner engine")] = None,
        workers: Annotated[Optional[int], typer.Option(min=1, help="worker count")] = None,
        dvc: Annotated[Optional[bool], typer.Option("--dvc/--no-dvc", help="track outputs with DVC")] = None,
        ) -> None:
    """Plan, generate, screen and record a dataset; resumes where a previous run stopped."""
    from synthdata.outputs import check_identity
    from synthdata.spec import load_spec

    with user_errors():
        loaded = load_spec(spec)
        root = Path(out or loaded.output_dir())
        check_identity(root, loaded) if root.exists() else None
        quiet_environment()
        from synthdata.flow import synthdata_run

        result = synthdata_run(str(spec), out_dir=str(out) if out else None,
                               engine=engine.value if engine else None, workers=workers, dvc=dvc)
    decisions = ", ".join(f"{k} {v}" for k, v in result["decisions"].items())
    console.print(f"[green]done[/] {result['out_dir']}: {result['shards']} shards "
                  f"({result['generated']} generated, {result['skipped']} already complete); "
                  f"screening: {decisions}")


def _dataset_dir(path: Path) -> Path:
    if not (path / "plan.json").is_file():
        raise SynthdataError(f"{path} is not a synthdata dataset folder (no plan.json); "
                             "expected the --out folder of `synthdata run`")
    return path


@app.command()
def screen(out: Annotated[Path, typer.Argument(help="dataset folder")],
           threshold: Annotated[Optional[float], typer.Option(min=-1, max=1, help="similarity at or "
                                                              "above which a sample is rejected")] = None,
           ) -> None:
    """(Re-)screen a dataset against its real reference without regenerating; refresh its records."""
    from synthdata.outputs import acquire_lock
    from synthdata.report import write_report
    from synthdata.screening import screen_dataset
    from synthdata.spec import load_spec

    with user_errors():
        root = _dataset_dir(out)
        spec = load_spec(root / "spec.yaml")
        lock = acquire_lock(root)
        try:
            summary = screen_dataset(root, spec.memorization, threshold=threshold)
            write_report(root)
        finally:
            lock.release()
    info = summary.to_dict()
    console.print(f"[green]screened[/] {root}: " + ", ".join(f"{k} {v}" for k, v in info["decisions"].items())
                  + f" (threshold {info['threshold']:.4f})")


@app.command()
def report(out: Annotated[Path, typer.Argument(help="dataset folder")]) -> None:
    """Write manifest, stats, dataset card and contact sheets; print the label table."""
    from synthdata.report import write_report

    with user_errors():
        stats = write_report(_dataset_dir(out))
    labels = stats["labels"]
    table = label_table(f"{out}", {k: v["planned"] for k, v in labels.items()},
                         {k: (v["accepted"] if v["accepted"] is not None else v["generated"])
                          for k, v in labels.items()})
    console.print(table)
    console.print(f"decisions: {stats['decisions']}; card {out / 'README.md'}; contact sheets {out / 'report'}")


@app.command()
def lineage(out: Annotated[Path, typer.Argument(help="dataset folder")],
            key: Annotated[str, typer.Argument(help="sample key")],
            as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Where one sample came from: spec, plan row, model fingerprint, seed, batch, shard, screening."""
    from synthdata import lineage as lin

    with user_errors():
        info = lin.lineage(out, key)
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
    else:
        lin.print_lineage(info, console=console)


@app.command()
def reproduce(out: Annotated[Path, typer.Argument(help="dataset folder")],
              key: Annotated[str, typer.Argument(help="sample key")]) -> None:
    """Regenerate a sample by replaying its batch; exit 0 only when the pixels are identical."""
    from synthdata import lineage as lin

    with user_errors():
        result = lin.reproduce(out, key)
    console.print(result.summary())
    raise typer.Exit(0 if result.identical else 1)
