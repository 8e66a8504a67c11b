"""``parkedge run``: the lane daemon (what systemd starts)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge.cli import app
from edge.config import ConfigError, load_config


@app.command("run")
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="The controller's TOML config.")],
) -> None:
    """Run the lane daemon: logs JSON lines to stdout, notifies systemd when ready."""
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        for path, reason in exc.errors:
            typer.echo(f"{path}: {reason}" if path else reason, err=True)
        raise typer.Exit(2) from None
    from edge.app import run_lane
    from edge.logs import setup_logging

    setup_logging(cfg.logging)
    try:
        run_lane(cfg)
    except ConfigError as exc:  # found at start, e.g. a control socket another lane owns
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None

