"""`synthdata train TRAIN.yaml`: adapt a diffusers model to images with captions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from synthdata.cli.app import app, console, local_path, quiet_environment, user_errors
from synthdata.errors import SynthdataError


@app.command()
def train(spec: Annotated[Optional[Path], typer.Argument(parser=local_path, help="train spec YAML file")] = None,
          out: Annotated[Optional[Path], typer.Option(parser=local_path, help="output folder (default: the spec's)")] = None,
          schema: Annotated[bool, typer.Option("--schema", help="print the train spec's JSON Schema")] = False,
          ) -> None:
    """Train (full / LoRA / textual inversion) as a Prefect flow; rerun to resume from a checkpoint."""
    if schema:
        from synthdata.training.spec import train_json_schema  # deferred: loaded when the verb runs (a fast --help)

        typer.echo(json.dumps(train_json_schema(), indent=2))
        return
    from synthdata.training.spec import load_train_spec  # deferred: loaded when the verb runs (a fast --help)

    with user_errors(flows=True, name="train"):
        if spec is None:
            raise SynthdataError("give a train spec (synthdata train TRAIN.yaml) or --schema")
        loaded = load_train_spec(spec)
        quiet_environment()
        from synthdata.training.flow import synthdata_train  # deferred: loads diffusers, prefect, pyarrow, torch, transformers

        result = synthdata_train(str(spec), out_dir=str(out) if out else None)
    root = Path(out or loaded.output_dir())
    if result.get("already_trained"):
        console.print(f"[green]already trained[/] {root / 'train.json'} (same spec); nothing to do")
        return
    made = ", ".join(str(root / v["path"]) for v in result["outputs"].values())
    final = ", ".join(f"{k} {v:.4f}" for k, v in result["final_loss"].items())
    console.print(f"[green]trained[/] {loaded.name} ({result['method']}, {result['images']} images, "
                  f"{result['timing']['seconds']:.0f} s): {made}; final loss {final}; {root / 'train.json'}")


@app.command("train-extractor")
def train_extractor(spec: Annotated[Path, typer.Argument(parser=local_path, help="extractor spec YAML file")],
                    out: Annotated[Optional[Path], typer.Option(
                        parser=local_path, help="output folder (default: the spec's)")] = None,
                    ) -> None:
    """Train a small domain image encoder on labelled images; write DIR/extractor/ (for
    `evaluate --features` and screening retrievers) and DIR/train.json."""
    from synthdata.training.extractor_spec import load_extractor_spec  # deferred: loaded when the verb runs (a fast --help)

    with user_errors(name="train-extractor"):
        loaded = load_extractor_spec(spec)
        quiet_environment()
        from synthdata.training.extractor import EXTRACTOR_DIR, train_extractor as run  # deferred: loaded when the verb runs (a fast --help)

        root = Path(out or loaded.output_dir())
        record = run(loaded, root)
    folder = root / EXTRACTOR_DIR
    if record.get("already_trained"):
        console.print(f"[green]already trained[/] {root / 'train.json'} (same spec); nothing to do")
        return
    last = record["validation"][-1] if record["validation"] else {}
    console.print(f"[green]trained[/] {loaded.name} ({record['objective']}, {record['images']} images, "
                  f"{record['timing']['seconds']:.0f} s, kept epoch {record['kept_epoch']}; validation "
                  f"accuracy {last.get('accuracy')}): {folder} ({record['dim']}-d features); use it with "
                  f"`synthdata evaluate DIR --real REF --features {folder}`")
