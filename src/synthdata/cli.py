"""The `synthdata` command line (typer + rich). Heavy imports happen inside the commands."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from synthdata.errors import SpecError, SynthdataError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Synthetic medical-image datasets from a YAML spec.")
console = Console()
err_console = Console(stderr=True)

QUIET_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    "TRANSFORMERS_VERBOSITY": "error",
    "DVC_NO_ANALYTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class Engine(str, Enum):
    local = "local"
    dask = "dask"
    ray = "ray"


def quiet_environment() -> None:
    """Offline, quiet defaults for Prefect and friends; values already set by the user win."""
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)


@app.callback()
def _quiet() -> None:
    """Synthetic medical-image datasets from a YAML spec."""
    quiet_environment()


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print synthdata errors plainly (no traceback) and exit with their status."""
    try:
        yield
    except SpecError as exc:
        err_console.print(f"[bold red]invalid spec[/] ({len(exc.problems)} problem"
                          f"{'s' if len(exc.problems) != 1 else ''}):")
        for problem in exc.problems:
            err_console.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except SynthdataError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


def _label_table(title: str, counts: dict[str, int], actual: dict[str, int] | None = None) -> Table:
    table = Table(title=title)
    table.add_column("label")
    table.add_column("index", justify="right")
    table.add_column("planned", justify="right")
    if actual is not None:
        table.add_column("actual", justify="right")
    total = sum(counts.values()) or 1
    table.add_column("share", justify="right")
    for i, (label, n) in enumerate(counts.items()):
        row = [label, str(i), str(n)] + ([str(actual.get(label, 0))] if actual is not None else [])
        table.add_row(*row, f"{n / total:.1%}")
    return table


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
    console.print(_label_table(f"{loaded.name}: plan {prepared.plan_hash[:12]}", label_counts(loaded)))
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
    table = _label_table(f"{out}", {k: v["planned"] for k, v in labels.items()},
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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
