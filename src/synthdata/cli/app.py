"""The typer app shared by every verb, and what the verbs share: consoles, quiet defaults,
plain error printing. Each verb module registers its commands on `app`; heavy imports happen
inside the commands so `synthdata validate` stays fast."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from synthdata.errors import SpecError, SynthdataError
from synthdata.version import VERSION as __version__
from synthdata.fsutil import is_url, url_message

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
    # Flow and task run logs (shard started/finished) reach the Prefect UI at INFO, while the
    # terminal shows warnings and errors only (the progress bars say the rest).
    "PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL": "INFO",
    "PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL": "INFO",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    "TRANSFORMERS_VERBOSITY": "error",
    "DVC_NO_ANALYTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class Engine(str, Enum):
    """Task-runner engines of `synthdata run --engine`."""

    local = "local"
    dask = "dask"
    ray = "ray"


def quiet_environment() -> None:
    """Offline, quiet defaults for Prefect and friends; values already set by the user win."""
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"synthdata {__version__}")
        raise typer.Exit(0)


@app.callback()
def _quiet(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                        help="print the version and exit")) -> None:
    """Synthetic medical-image datasets from a YAML spec."""
    quiet_environment()


@contextlib.contextmanager
def user_errors(flows: bool = False, name: str = "synthdata") -> Iterator[None]:
    """Print synthdata errors plainly (no traceback) and exit with their status.

    An OS error (disk full, permission denied, read-only file system, a vanished file), raised
    here or behind a synthdata error such as failed shards, exits 1 with at most three lines
    naming the path and what to do; its traceback goes to the run log (`cli.runlog`, file
    named after `name`). Pass `flows=True` around Prefect flows: their logs then reach the run
    log too, and the console shows their warnings but not their errors and tracebacks.
    """
    from synthdata.cli import runlog  # deferred: loaded when the verb runs (a fast --help)

    log = runlog.start(name, flows)
    try:
        yield
    except SpecError as exc:
        err_console.print(f"[bold red]invalid spec[/] ({len(exc.problems)} problem"
                          f"{'s' if len(exc.problems) != 1 else ''}):")
        for problem in exc.problems:
            err_console.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except (SynthdataError, OSError) as exc:
        cause = runlog.os_error_of(exc)
        if cause is None and isinstance(exc, SynthdataError):
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        if cause is None:
            raise
        first, *rest = runlog.os_error_lines(cause, log.traceback(exc))
        err_console.print(f"[bold red]error:[/] {first}", highlight=False, soft_wrap=True)
        for line in rest:
            err_console.print(line, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        log.stop()


def local_path(value: str | Path) -> Path:
    """Parser of the CLI's path arguments and options: the local path; a URL (`s3://...`, any
    `scheme://`) is refused as a usage error (exit 2, nothing written), not taken for a folder
    named `s3:`. Object storage is not supported yet."""
    return Path(local_location(value))


def local_location(value: str | Path) -> str:
    """`local_path` for options kept as text (a folder, a table or a tar pattern)."""

    if is_url(str(value)):
        raise typer.BadParameter(url_message(str(value)))
    return str(value)


def label_table(title: str, counts: dict[str, int], actual: dict[str, int] | None = None) -> Table:
    """Planned (and actual) samples per label, as a rich table."""
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
