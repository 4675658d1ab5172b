"""Dataset verbs: validate, schema, plan, run, generate, screen, report, status, verify."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from synthdata.cli.app import (
    Engine,
    app,
    console,
    err_console,
    label_table,
    local_path,
    quiet_environment,
    user_errors,
)

SpecArg = Annotated[Path, typer.Argument(parser=local_path, help="spec YAML file")]
DirArg = Annotated[Path, typer.Argument(parser=local_path, help="dataset folder")]
OutOpt = Annotated[Optional[Path], typer.Option(parser=local_path, help="output folder (default: the spec's)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


@app.command()
def validate(spec: SpecArg) -> None:
    """Check a spec; exit 0 when valid, 2 with every problem listed when not. Warnings (a spec
    without a real reference will not be screened against real images) go to stderr."""
    from synthdata.spec import spec_warnings  # deferred: loaded when the verb runs (a fast --help)
    from synthdata.plan.load import load_spec  # deferred: loaded when the verb runs (a fast --help)

    with user_errors():
        loaded = load_spec(spec)
    from synthdata.plan.rows import label_counts  # deferred: loads pyarrow

    console.print(f"[green]ok[/] {spec}: {loaded.name}, {sum(label_counts(loaded).values())} samples")
    for warning in spec_warnings(spec, loaded):
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


@app.command()
def schema() -> None:
    """Print the spec's JSON Schema (for editors)."""
    from synthdata.spec import json_schema  # deferred: loaded when the verb runs (a fast --help)

    typer.echo(json.dumps(json_schema(), indent=2))


@app.command()
def plan(spec: SpecArg, out: OutOpt = None) -> None:
    """Write the deterministic plan (spec.yaml, plan.parquet, plan.json) and print the label table."""
    from synthdata.dataset.prepare import acquire_lock, prepare  # deferred: loads pyarrow
    from synthdata.plan.rows import label_counts  # deferred: loads pyarrow
    from synthdata.spec import with_overrides  # deferred: loaded when the verb runs (a fast --help)
    from synthdata.plan.load import load_spec  # deferred: loaded when the verb runs (a fast --help)

    with user_errors(name="plan"):
        loaded = load_spec(spec)
        loaded = with_overrides(loaded, out or loaded.output_dir())
        root = Path(loaded.output_dir())
        lock = acquire_lock(root)
        try:
            prepared = prepare(root, loaded)
        finally:
            lock.release()
    console.print(label_table(f"{loaded.name}: plan {prepared.plan_hash[:12]}", label_counts(loaded)))
    console.print(f"{prepared.shard_count} shards of up to {loaded.shards.size} -> {prepared.folder.plan_file}")


def _run(spec: Path, out: Path | None, engine: Engine | None, workers: int | None, dvc: bool | None,
         stop_after: str, replace_stale: bool = False) -> dict:
    from synthdata.dataset.prepare import check_identity  # deferred: loads pyarrow
    from synthdata.plan.load import load_spec  # deferred: loaded when the verb runs (a fast --help)

    with user_errors(flows=True, name="run" if stop_after == "record" else stop_after):
        loaded = load_spec(spec)
        root = Path(out or loaded.output_dir())
        if root.exists():
            check_identity(root, loaded)
        quiet_environment()
        from synthdata.flow import synthdata_run  # deferred: loads diffusers, prefect, pyarrow, torch, transformers
        from synthdata.spec import with_overrides  # deferred: loaded when the verb runs (a fast --help)

        _preload(with_overrides(loaded, None, engine.value if engine else None, workers))

        from synthdata.privacy import withhold_path  # deferred: loaded when the verb runs (a fast --help)

        # Prefect records flow parameters on its server: it sees the file names, not the paths
        return synthdata_run(withhold_path(spec), out_dir=withhold_path(out),
                             engine=engine.value if engine else None, workers=workers, dvc=dvc,
                             stop_after=stop_after, replace_stale=replace_stale)


def _preload(spec) -> None:
    """Local engine: start loading the model into this process's worker slots while Prefect's
    server starts and the plan is written (the shard tasks then find it loaded)."""
    from synthdata.generation import engines, worker  # deferred: loads diffusers, pyarrow, torch, transformers
    from synthdata.folder import DatasetFolder  # deferred: loaded when the verb runs (a fast --help)

    folder = DatasetFolder(spec.output_dir())
    if folder.is_dataset() and len(folder.complete_shards()) >= int(folder.plan_info()["shards"]):
        return  # nothing to generate
    if spec.execution.engine == "local":
        worker.preload(spec, engines.resolve(spec.execution, spec.generator.device).workers)


@app.command()
def run(spec: SpecArg, out: OutOpt = None,
        engine: Annotated[Optional[Engine], typer.Option(help="task runner engine")] = None,
        workers: Annotated[Optional[int], typer.Option(min=1, help="worker count")] = None,
        dvc: Annotated[Optional[bool], typer.Option("--dvc/--no-dvc", help="track outputs with DVC")] = None,
        ) -> None:
    """Plan, generate, screen and record a dataset; resumes where a previous run stopped."""
    result = _run(spec, out, engine, workers, dvc, "record")
    console.print(f"[green]done[/] {result['out_dir']}: {result['shards']} shards "
                  f"({result['generated']} generated, {result['skipped']} already complete); "
                  f"screening: {_screening_line(result['out_dir'], result['decisions'])}",
                  soft_wrap=True)


def _screening_line(out_dir, decisions: dict) -> str:
    """Decision counts, led by a loud warning when nothing was compared with real images."""
    from synthdata.dataset import records  # deferred: loads pyarrow

    state = records.screening_state(out_dir)
    if state == records.SCREENED:
        return ", ".join(f"{k} {v}" for k, v in decisions.items())
    counts = ", ".join(f"{k} {v}" for k, v in decisions.items() if v)
    return f"[bold yellow]{records.SCREENING_STATES[state]}[/] ({counts})"


@app.command()
def generate(spec: SpecArg, out: OutOpt = None,
             engine: Annotated[Optional[Engine], typer.Option(help="task runner engine")] = None,
             workers: Annotated[Optional[int], typer.Option(min=1, help="worker count")] = None,
             replace_stale: Annotated[bool, typer.Option(
                 "--replace-stale", help="remove raw shards that another model, device, dtype or "
                 "speed knobs generated instead of refusing (the DVC generate stage: its cache keeps them)")] = False,
             ) -> None:
    """Plan and generate the raw shards only (no screening or records but run.json); resumes."""
    result = _run(spec, out, engine, workers, None, "generate", replace_stale)
    console.print(f"[green]generated[/] {result['out_dir']}: {result['shards']} shards "
                  f"({result['generated']} generated, {result['skipped']} already complete)")


@app.command()
def screen(out: DirArg,
           threshold: Annotated[Optional[float], typer.Option(min=-1, max=1, help="similarity at or "
                                                              "above which a sample is rejected")] = None,
           report: Annotated[bool, typer.Option("--report/--no-report", help="refresh manifest, "
                                                "stats, card and contact sheets after screening")] = True,
           reveal: Annotated[Optional[str], typer.Option(
               help="do not screen: map this sample's (or audited source's, or a pseudonym's) "
                    "pseudonymous nearest real ids back, from this machine's private cache")] = None,
           json_out: JsonOpt = False,
           ) -> None:
    """(Re-)screen a dataset against its real reference without regenerating; refresh its records.

    DIR/spec.yaml records what ran: a --threshold given here becomes its memorization.threshold.
    `--no-report` writes screening's outputs only (the DVC screen stage; `report` follows).
    With --reveal KEY, print what KEY's pseudonyms stand for instead (on the machine that
    screened; DIR may also be a `synthdata audit` output folder).
    """
    if reveal is not None:
        from synthdata.screening.reveal import reveal_sample  # deferred: loads pyarrow

        with user_errors():
            found = reveal_sample(out, reveal)
        if json_out:
            typer.echo(json.dumps(found, indent=2))
        else:
            console.print_json(json.dumps(found))
        return
    from synthdata.dataset.lineage import folder_spec  # deferred: loads pyarrow
    from synthdata.dataset.prepare import acquire_lock, record_spec  # deferred: loads pyarrow
    from synthdata.dataset.report import write_report  # deferred: loads pyarrow
    from synthdata.screening.pipeline import screen_dataset  # deferred: loads faiss, pyarrow, scipy
    from synthdata.generation.trained import resolve_from_training  # deferred: loaded when the verb runs (a fast --help)

    with user_errors(name="screen"):
        root = out
        spec = folder_spec(root, write=True)
        if threshold is not None:
            spec = spec.model_copy(update={"memorization": spec.memorization.model_copy(
                update={"threshold": threshold})})
        lock = acquire_lock(root)
        try:
            summary = screen_dataset(root, resolve_from_training(spec.memorization, spec.generator))
            from synthdata.folder import DatasetFolder  # deferred: loaded when the verb runs (a fast --help)

            record_spec(DatasetFolder(root), spec)
            if report:
                write_report(root)
        finally:
            lock.release()
    info = summary.to_dict()
    from synthdata.dataset import records  # deferred: loads pyarrow

    shown = _screening_line(root, info["decisions"])
    if records.screening_state(root) == records.SCREENED:
        shown += f" (threshold {info['threshold']:.4f})"
    console.print(f"[green]screened[/] {root}: {shown}", soft_wrap=True)


@app.command()
def report(out: DirArg) -> None:
    """Write manifest, stats, dataset card and contact sheets; print the label table."""
    from synthdata.folder import DatasetFolder  # deferred: loaded when the verb runs (a fast --help)
    from synthdata.dataset.prepare import acquire_lock  # deferred: loads pyarrow
    from synthdata.dataset.report import write_report  # deferred: loads pyarrow

    with user_errors(name="report"):
        DatasetFolder(out).require()
        lock = acquire_lock(out)  # a writer of the records: one at a time, never mid-commit
        try:
            stats = write_report(out)
        finally:
            lock.release()
    labels = stats["labels"]
    table = label_table(f"{out}", {k: v["planned"] for k, v in labels.items()},
                        {k: (v["accepted"] if v["accepted"] is not None else v["generated"])
                         for k, v in labels.items()})
    console.print(table)
    console.print(f"screening: {_screening_line(out, stats['decisions'])}; card {out / 'README.md'}; "
                  f"contact sheets {out / 'report'}", soft_wrap=True)


@app.command()
def status(out: DirArg, as_json: JsonOpt = False) -> None:
    """What is planned, generated, screened and recorded, and what a rerun would do."""
    from synthdata.dataset import health  # deferred: loads pyarrow

    with user_errors():
        info = health.status(out)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    gen, scr = info["generated"], info["screening"]
    console.print(f"[bold]{info['dataset']}[/] ({info['dir']}, format {info['format_version']})")
    console.print(f"planned: {info['planned']['samples']} samples in {info['planned']['shards']} shards")
    console.print(f"generated: {gen['complete_shards']} complete shards, {gen['samples']} samples"
                  + (f"; incomplete: {gen['incomplete']}" if gen["incomplete"] else ""))
    said = scr["says"] if scr["against_real_images"] else f"[bold yellow]{scr['says']}[/]"
    console.print(f"screening: {said}"
                  + (f"; covers current shards: {scr['covers_current_shards']}, "
                     f"{scr['accepted_shards']} accepted shards" if scr["ran"] else ""), soft_wrap=True)
    console.print("a rerun would: " + "; ".join(info["rerun_would"]))


@app.command()
def verify(out: DirArg, as_json: JsonOpt = False) -> None:
    """Re-hash every raw and accepted tar against the records; exit 1 on any mismatch."""
    from synthdata.dataset import health  # deferred: loads pyarrow

    with user_errors():
        result = health.verify(out)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
    else:
        checked = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in result.checked.items())
        if result.ok:
            console.print(f"[green]ok[/] {out}: {checked}; everything matches the records")
        else:
            err_console.print(f"[bold red]{len(result.problems)} problem(s)[/] in {out} ({checked}):")
            for problem in result.problems:
                err_console.print(f"  {problem}", markup=False, highlight=False)
    raise typer.Exit(0 if result.ok else 1)


@app.command()
def lineage(out: DirArg, key: Annotated[str, typer.Argument(help="sample key")],
            as_json: JsonOpt = False) -> None:
    """Where one sample came from: spec, plan row, model fingerprint, seed, batch, shard, screening."""
    from synthdata.dataset import lineage as lin  # deferred: loads pyarrow

    with user_errors():
        info = lin.lineage(out, key)
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
    else:
        lin.print_lineage(info, console=console)


@app.command()
def reproduce(out: DirArg,
              key: Annotated[Optional[str], typer.Argument(help="sample key")] = None,
              sample: Annotated[Optional[int], typer.Option(min=1, help="reproduce N random samples")] = None,
              seed: Annotated[int, typer.Option(help="seed of --sample's draw")] = 0) -> None:
    """Regenerate samples by replaying their pipeline calls; exit 0 only when all are identical."""
    from synthdata.dataset import reproduce as rep  # deferred: loads pyarrow

    if (key is None) == (sample is None):
        err_console.print("[bold red]error:[/] give either a sample KEY or --sample N")
        raise typer.Exit(2)
    with user_errors():
        keys = [key] if key is not None else rep.sample_keys(out, sample, seed)
        results = rep.reproduce_many(out, keys)
    for result in results:
        console.print(result.summary(), markup=False, highlight=False)
    same = sum(r.identical for r in results)
    if len(results) > 1:
        console.print(f"{same} of {len(results)} samples identical")
    raise typer.Exit(0 if same == len(results) else 1)
