"""``parkedge run``: the lane daemon (what systemd starts)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge.cli import app, config_or_exit
from edge.config import ConfigError


@app.command("run")
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="The controller's TOML config.")],
) -> None:
    """Run the lane daemon: logs JSON lines to stdout, notifies systemd when ready."""
    cfg = config_or_exit(config)
    from edge.app import run_lane
    from edge.logs import setup_logging

    setup_logging(cfg.logging)
    try:
        run_lane(cfg)
    except ConfigError as exc:  # found at start, e.g. a control socket another lane owns
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None

