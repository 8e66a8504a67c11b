"""``parkedge`` command line: one Typer app; each area registers its own sub-commands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from edge.config import Config

app = typer.Typer(
    name="parkedge",
    help="Lane controller for car parks with a loyalty parking-points programme.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def config_or_exit(path: Path) -> Config:
    """The controller's config, or every error as ``key.path: reason`` on stderr and exit
    status 2 (the status the unit does not restart)."""
    from edge.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        for key, reason in exc.errors:
            typer.echo(f"{key}: {reason}" if key else reason, err=True)
        raise typer.Exit(2) from None


def _register() -> None:
    # Each module adds its commands to ``app``; imported lazily so that a broken
    # optional area (e.g. OpenCV missing) does not take the whole CLI down.
    import importlib

    for name in ("pricing", "config", "ledger", "lane", "lpr", "run", "systemd"):
        try:
            importlib.import_module(f"edge.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"edge.cli.{name}":
                raise


def main() -> None:
    _register()
    app()
