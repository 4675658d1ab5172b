"""The `models` verbs: list, show, rank and add entries of the model catalogue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from synthdata.cli.app import app, console, local_path, user_errors

models_app = typer.Typer(no_args_is_help=True, help="The model catalogue: list, show, rank, add.")
app.add_typer(models_app, name="models")

CatalogOpt = Annotated[Optional[Path], typer.Option("--catalog", parser=local_path, help="user catalogue folder "
                                                    "(default: $SYNTHDATA_CATALOG or $SYNTHDATA_CACHE/catalog)")]


@models_app.command("list")
def list_models(catalog: CatalogOpt = None) -> None:
    """Every catalogue entry: id, source, modality, body part, resolution, gated, figures."""
    from synthdata.catalog import entries  # deferred: loaded when the verb runs (a fast --help)

    with user_errors():
        listed = entries(catalog)
    table = Table(title="synthdata model catalogue (details: synthdata models show ID)")
    table.add_column("id", no_wrap=True)
    for col in ("source", "modality", "body part", "px", "gated", "figures"):
        table.add_column(col)
    for entry_id, item in listed.items():
        e = item.entry
        if e.source.kind == "builtin":
            src = e.source.builtin
        elif e.source.kind == "hub":
            src = f"{e.source.hub}@{e.source.revision[:8]}" if e.source.revision \
                else f"{e.source.hub} (unpinned)"
        else:
            src = str(item.local_path())
        table.add_row(entry_id, src, e.modality, e.body_part, str(e.resolution),
                      "yes" if e.gated else "no", str(len(e.evaluations)))
    console.print(table)


@models_app.command("show")
def show(entry_id: Annotated[str, typer.Argument(help="catalogue id")],
         as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
         catalog: CatalogOpt = None) -> None:
    """One entry in full (YAML, or JSON with --json)."""
    import yaml

    from synthdata.catalog import get  # deferred: loaded when the verb runs (a fast --help)

    with user_errors():
        item = get(entry_id, catalog)
    data = item.entry.model_dump(mode="json", exclude_none=True)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(f"# {item.file} ({item.origin}); use with  generator: {{model: catalog:{entry_id}}}")
    typer.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


@models_app.command("rank")
def rank(metric: Annotated[str, typer.Argument(help="fid, kid, precision, recall, density, coverage, "
                                               "utility_synthetic_auc, ...")],
         extractor: Annotated[Optional[str], typer.Option(help="only figures from this extractor")] = None,
         real_set: Annotated[Optional[str], typer.Option(help="only figures on this real set "
                                                         "(name or fingerprint)")] = None,
         catalog: CatalogOpt = None) -> None:
    """Entries ranked by a measured figure, best first (lower first for fid/kid), with the
    figure's 95% interval where it was recorded and whether it separates a row from the next."""
    from synthdata.catalog import rank as rank_entries  # deferred: loaded when the verb runs (a fast --help)

    with user_errors():
        ranked = rank_entries(metric, extractor=extractor, real_set=real_set, user=catalog)
    table = Table(title=f"ranked by {metric} (separated: intervals do not overlap the next row's)")
    for col in ("#", "id", metric, "95% interval", "separated", "extractor", "real set", "samples",
                "measured by"):
        table.add_column(col)
    intervals = [ev.interval(metric) for _, _, ev in ranked]
    for n, (item, value, ev) in enumerate(ranked, 1):
        here, nxt = intervals[n - 1], intervals[n] if n < len(ranked) else None
        sep = "-" if here is None or nxt is None else \
            ("yes" if here[1] < nxt[0] or nxt[1] < here[0] else "no (tie)")
        table.add_row(str(n), item.entry.id, f"{value:.4g}",
                      f"{here[0]:.4g}-{here[1]:.4g}" if here else "-", sep, ev.extractor,
                      ev.real_set.name, str(ev.samples or "-"), ev.measured_by)
    console.print(table)
    if not ranked:
        console.print(f"no entry has a {metric!r} figure"
                      + (f" for extractor {extractor}" if extractor else "")
                      + (f" on real set {real_set}" if real_set else ""))


@models_app.command("add")
def add(train_dir: Annotated[Path, typer.Argument(parser=local_path, help="output folder of `synthdata train` (train.json)")],
        entry_id: Annotated[Optional[str], typer.Option("--id", help="catalogue id (default: the training name)")] = None,
        evaluation: Annotated[Optional[Path], typer.Option(parser=local_path, help="a dataset folder generated by this "
                                                           "model and scored by `synthdata evaluate`")] = None,
        real_set_name: Annotated[Optional[str], typer.Option("--real-set-name", help="name of the "
                                                             "real set of that evaluation")] = None,
        modality: Annotated[Optional[str], typer.Option()] = None,
        specialty: Annotated[Optional[str], typer.Option()] = None,
        body_part: Annotated[Optional[str], typer.Option("--body-part")] = None,
        license: Annotated[Optional[str], typer.Option("--license")] = None,
        resolution: Annotated[Optional[int], typer.Option()] = None,
        catalog: CatalogOpt = None) -> None:
    """Register a trained model (and its evaluation figures) in the user catalogue."""
    from synthdata.catalog import add as add_entry  # deferred: loaded when the verb runs (a fast --help)
    from synthdata.dataset.evaluation_section import read_evaluation  # deferred: loaded when the verb runs (a fast --help)

    with user_errors():
        item = add_entry(train_dir, entry_id=entry_id, evaluation=evaluation,
                         evaluation_data=read_evaluation(evaluation) if evaluation else None,
                         real_set_name=real_set_name, user=catalog, modality=modality,
                         specialty=specialty, body_part=body_part, license=license,
                         resolution=resolution)
    console.print(f"[green]added[/] {item.entry.id} -> {item.file}; use it with "
                  f"generator.model: catalog:{item.entry.id}")
