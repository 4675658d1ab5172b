"""The `synthdata` command line (typer + rich): one module per group of verbs, all on one app.

`app.py` holds the app and what verbs share; each verb module below registers its commands
when imported. To add verbs, add a module and import it here.
"""

from synthdata.cli import audit, dataset, evaluate, models, phantoms, train, tune  # noqa: F401  (register their verbs)
from synthdata.cli.app import app, console, err_console, quiet_environment, user_errors

__all__ = ["app", "console", "err_console", "main", "quiet_environment", "user_errors"]


def main() -> None:
    """Console-script entry point."""
    app()
