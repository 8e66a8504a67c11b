"""``parkedge`` command line: one Typer app; each area registers its own sub-commands."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="parkedge",
    help="Lane controller for car parks with a loyalty parking-points programme.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
