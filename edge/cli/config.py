"""``parkedge check-config FILE``: validate a controller config before a restart.

Prints ``OK`` (exit 0) or every problem as ``key.path: reason`` (exit 2), so a technician
can fix the whole file in one pass instead of one restart per typo.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edge.cli import app
from edge.config import ConfigError, load_config
from edge.config.environment import environment_warnings

EXIT_INVALID = 2


@app.command("check-config")
def check_config(
    file: Annotated[
        Path, typer.Argument(help="The controller's TOML config, e.g. /etc/parkedge/lane.toml")
    ],
    show: Annotated[
        bool,
        typer.Option("--show", help="After OK, print the effective config (secrets redacted)."),
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Also fail (exit 2) when a file or device the config names is missing here.",
        ),
    ] = False,
) -> None:
    """Check a config file: prints OK, or every error as key.path: reason (exit code 2).

    Missing files/devices on this machine (rules bundle, serial adapters, state dir) are
    printed as warnings on stderr; with --strict they are errors.
    """
    try:
        cfg = load_config(file)
    except ConfigError as exc:
        for path, reason in exc.errors:
            typer.echo(f"{path}: {reason}" if path else reason)
        raise typer.Exit(EXIT_INVALID) from None
    warnings = environment_warnings(cfg)
    if strict and warnings:
        for path, reason in warnings:
            typer.echo(f"{path}: {reason}")
        raise typer.Exit(EXIT_INVALID)
    for path, reason in warnings:
        typer.echo(f"warning: {path}: {reason}", err=True)
    typer.echo("OK")
    if show:
        typer.echo(json.dumps(cfg.model_dump_redacted(), ensure_ascii=False, indent=2))
