"""``parkedge lane ...``: operator commands to the running lane daemon."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from edge.cli import app
from edge.config import ConfigError, load_config
from edge.control import request

lane = typer.Typer(help="Operator commands to the running lane (manual open, payment, status).",
                   no_args_is_help=True)
app.add_typer(lane, name="lane")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The controller's TOML config.")]


def _send(config: Path, payload: dict[str, Any]) -> dict[str, Any]:
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    try:
        reply = request(Path(cfg.lane.control_socket), payload)
    except (ConnectionError, OSError) as exc:
        typer.echo(f"lane {cfg.lane.id}: {exc}; nothing was done", err=True)
        raise typer.Exit(1) from None
    if not reply.get("ok"):
        typer.echo(f"lane {cfg.lane.id} refused: {reply.get('error')}", err=True)
        raise typer.Exit(1)
    return reply


@lane.command("open")
def open_(
    config: ConfigOpt,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the ledger).")],
    operator: Annotated[str, typer.Option(help="Who opens (default: your login).")] = "",
) -> None:
    """Open the barrier by hand. The reason is written to the ledger before the arm moves."""
    if not reason.strip():
        typer.echo("--reason must say why the barrier is opened by hand", err=True)
        raise typer.Exit(2)
    _send(config, {"cmd": "open", "reason": reason, "operator": operator or getpass.getuser()})
    typer.echo("opened (recorded in the ledger)")


@lane.command("plate")
def plate(
    config: ConfigOpt,
    plate: Annotated[str, typer.Option("--plate", "-p", help="The plate, e.g. 沪A12345")],
    operator: Annotated[str, typer.Option(help="Who typed it (default: your login).")] = "",
) -> None:
    """Enter the plate of the vehicle at the lane by hand (camera could not read it)."""
    reply = _send(config, {"cmd": "plate", "plate": plate,
                           "operator": operator or getpass.getuser()})
    typer.echo(f"plate {reply.get('plate')} entered")


@lane.command("pay")
def pay(
    config: ConfigOpt,
    amount: Annotated[str, typer.Option(help="Amount received, e.g. 12.50")],
    method: Annotated[str, typer.Option(help="cash, card, qr ...")] = "cash",
    session: Annotated[str, typer.Option(help="Session id (default: the one at the lane).")] = "",
) -> None:
    """Record a payment taken for the vehicle at the lane; the barrier opens if settled."""
    reply = _send(config, {"cmd": "pay", "amount": amount, "method": method,
                           "session_id": session})
    typer.echo(f"payment recorded for {reply.get('session_id')}")


@lane.command("clock")
def clock(
    config: ConfigOpt,
    at: Annotated[str, typer.Option(help="ISO time with offset, e.g. 2026-11-17T10:05+08:00")],
) -> None:
    """Bench only: set the lane's clock (lane.clock = "event"), to play a day's tariff by hand.
    A lane on the system clock refuses."""
    reply = _send(config, {"cmd": "clock", "at": at})
    typer.echo(f"lane clock now {reply.get('now')}")


@lane.command("status")
def status(config: ConfigOpt) -> None:
    """Show the lane's state, detectors, device health and counters."""
    reply = _send(config, {"cmd": "status"})
    reply.pop("ok", None)
    typer.echo(json.dumps(reply, ensure_ascii=False, indent=2))
