"""``parkedge ledger verify|export``, ``parkedge sessions list`` and ``parkedge report``.

These read the lane's SQLite file directly (safe while the daemon runs: WAL readers never
block the writer). The file is found from ``--db``, else ``storage.path`` in ``--config``,
else the ``PARKEDGE_DB`` environment variable.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tomllib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer

from edge.cli import app
from edge.store import Store, StoreError

ledger_app = typer.Typer(help="Check and export the lane's ledger.", no_args_is_help=True)
sessions_app = typer.Typer(help="Parking sessions in the lane's ledger.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")
app.add_typer(sessions_app, name="sessions")

DbOpt = Annotated[Path | None, typer.Option(
    "--db", help="Ledger file (default: storage.path of --config, else $PARKEDGE_DB).")]
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="The controller's TOML config (reads [storage] path, [lane] timezone).")]


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(msg, err=True)
    raise typer.Exit(code)


def _config(config: Path | None) -> dict[str, Any]:
    if config is None:
        return {}
    try:
        with config.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        _fail(f"--config: cannot read {config}: {exc.strerror}")
    except tomllib.TOMLDecodeError as exc:
        _fail(f"--config {config}: not valid TOML: {exc}")
    return {}


def _db_path(db: Path | None, config: Path | None) -> Path:
    if db is not None:
        path = db
    elif config is not None:
        raw = _config(config).get("storage", {}).get("path")
        if not isinstance(raw, str) or not raw:
            _fail(f"--config {config}: no [storage] path")
        path = Path(str(raw))
        if not path.is_absolute():
            path = config.parent / path
    elif os.environ.get("PARKEDGE_DB"):
        path = Path(os.environ["PARKEDGE_DB"])
    else:
        _fail("no ledger file: give --db PATH, --config FILE or set PARKEDGE_DB")
        raise AssertionError  # unreachable; _fail exits
    if not path.is_file():
        _fail(f"ledger file {path} does not exist")
    return path


def _open(db: Path | None, config: Path | None) -> Store:
    path = _db_path(db, config)
    try:
        # Reading only: the lane id is never written by these commands.
        return Store.open(path, "cli")
    except StoreError as exc:
        _fail(f"{path}: {exc}")
        raise AssertionError from exc


def _tz(tz: str | None, config: Path | None) -> ZoneInfo:
    name = tz or _config(config).get("lane", {}).get("timezone") or "Asia/Shanghai"
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        _fail(f"--tz: unknown time zone {name!r}")
        raise AssertionError from None


def _jsonable(v: Any) -> Any:
    return str(v) if isinstance(v, Decimal) else v


@ledger_app.command("verify")
def verify(db: DbOpt = None, config: ConfigOpt = None) -> None:
    """Recompute the hash chain: prints "OK n entries", or every problem and exits 1."""
    with _open(db, config) as store:
        res = store.verify()
    if res.ok:
        typer.echo(f"OK {res.checked} entries")
        return
    typer.echo(f"BROKEN: {len(res.problems)} problem(s) in {res.checked} entries")
    for p in res.problems:
        typer.echo(f"  - {p}")
    raise typer.Exit(1)


def _lane_id(config: Path | None, lane: str | None) -> str:
    lid = lane or _config(config).get("lane", {}).get("id")
    if not isinstance(lid, str) or not lid:
        _fail("no lane id: give --lane or --config with [lane] id")
    return str(lid)


def _ledger_path(db: Path | None, config: Path | None) -> Path:
    """Like ``_db_path`` but the file may be missing (that is one of the damages)."""
    if db is not None:
        return db
    if config is None:
        _fail("give --db PATH or --config FILE")
    raw = _config(config).get("storage", {}).get("path")
    if not isinstance(raw, str) or not raw:
        _fail(f"--config {config}: no [storage] path")
    path = Path(str(raw))
    return path if path.is_absolute() else config.parent / path  # type: ignore[union-attr]


@ledger_app.command("check")
def check(
    db: DbOpt = None,
    config: ConfigOpt = None,
    lane: Annotated[str | None, typer.Option(help="Lane id (default: [lane] id).")] = None,
    mode: Annotated[str, typer.Option(help="quick, integrity or full (the whole chain).")]
    = "quick",
) -> None:
    """The daemon's start-up check: file integrity and the chain against the high-water mark.

    Exits 65 (EX_DATAERR) on damage or lost entries, like the daemon.
    """
    from edge.store.guard import check_ledger
    from edge.store.types import LedgerDamaged

    if mode not in ("quick", "integrity", "full"):
        _fail(f"--mode: {mode!r} must be quick, integrity or full")
    path, lid = _ledger_path(db, config), _lane_id(config, lane)
    try:
        res = check_ledger(path, lid, mode=mode)
    except LedgerDamaged as exc:
        typer.echo(f"DAMAGED: {path}", err=True)
        for p in exc.problems:
            typer.echo(f"  - {p}", err=True)
        raise typer.Exit(65) from None
    mark = f"high-water mark seq {res.mark.seq}" if res.mark else "no high-water mark yet"
    typer.echo(f"OK lane {lid} at seq {res.entries} ({mark}); {res.verified} entries "
               f"re-hashed; {res.quick_check_ms + res.chain_ms:.0f} ms")


@ledger_app.command("recover")
def recover_cmd(
    central_export: Annotated[list[Path], typer.Option(
        "--central-export", help="JSON lines of central's copy (parkedge-central "
        "export-lane LANE -c central.toml); repeat per lane sharing the file.")],
    db: DbOpt = None,
    config: ConfigOpt = None,
    lane: Annotated[str | None, typer.Option(help="Lane id (default: [lane] id).")] = None,
    allow_loss: Annotated[bool, typer.Option(
        "--allow-loss", help="Rebuild even though some entries exist nowhere any more "
        "(they are listed, and recorded in a ledger_recovered correction).")] = False,
) -> None:
    """Rebuild a damaged ledger from central's copy plus what is left locally.

    The damaged files are moved to <ledger>.damaged-<time>/ (never deleted); see
    docs/ledger.md, "Recovering a damaged ledger". Stop the lane first.
    """
    from edge.store.recover import read_central_export, recover

    path, lid = _ledger_path(db, config), _lane_id(config, lane)
    sock = _config(config).get("lane", {}).get("control_socket") if config else None
    if sock:
        from edge.control import request

        try:
            request(Path(str(sock)), {"cmd": "status"}, 1.0)
        except (OSError, ValueError, ConnectionError):
            pass
        else:
            _fail(f"the lane is running (it answers on {sock}): stop it first")
    rows = []
    for f in central_export:
        try:
            with f.open(encoding="utf-8") as fh:
                rows += read_central_export(fh, str(f))
        except OSError as exc:
            _fail(f"--central-export: cannot read {f}: {exc.strerror}")
        except StoreError as exc:
            _fail(str(exc))
    try:
        rep = recover(path, lid, rows, allow_loss=allow_loss)
    except StoreError as exc:
        _fail(f"not recovered (nothing changed): {exc}", 1)
        return
    typer.echo(f"recovered {path}: {rep.written} entries ({rep.from_central_only} only from "
               f"central, {rep.from_local_only} only local); damaged files kept in {rep.aside}")
    for n in rep.problems:
        typer.echo(f"  {n}")
    if rep.lost:
        typer.echo(f"  LOST (nowhere any more): {', '.join(rep.lost)}")
    if rep.dropped:
        typer.echo(f"  not chained (after a loss): {', '.join(rep.dropped[:20])}")
    typer.echo("  the member cache starts empty; central's member states refill it when sync "
               "connects. Run `parkedge ledger check` and start the lane.")


def _csv_rows(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    buf = io.StringIO()
    writer: csv.DictWriter[str] | None = None
    for row in rows:
        flat = {k: (json.dumps(v, ensure_ascii=False, sort_keys=True)
                    if isinstance(v, dict | list) else _jsonable(v)) for k, v in row.items()}
        if writer is None:
            writer = csv.DictWriter(buf, fieldnames=list(flat))
            writer.writeheader()
        writer.writerow(flat)
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()


@ledger_app.command("export")
def export(
    fmt: Annotated[str, typer.Option("--format", help="csv or jsonl")] = "jsonl",
    what: Annotated[str, typer.Option(help="entries (the ledger) or sessions (exited stays, "
                                            "the input of `rules simulate`)")] = "entries",
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Export ledger entries or exited sessions as CSV or JSON lines."""
    if fmt not in ("csv", "jsonl"):
        _fail(f"--format: {fmt!r} must be csv or jsonl")
    if what not in ("entries", "sessions"):
        _fail(f"--what: {what!r} must be entries or sessions")
    with _open(db, config) as store:
        rows = list(store.export(what))
    lines: Iterator[str]
    if fmt == "jsonl":
        lines = (json.dumps(r, ensure_ascii=False, default=_jsonable) + "\n" for r in rows)
    else:
        lines = _csv_rows(iter(rows))
    if out is None:
        for line in lines:
            sys.stdout.write(line)
        return
    try:
        with out.open("w", encoding="utf-8", newline="") as f:
            for line in lines:
                f.write(line)
    except OSError as exc:
        _fail(f"--out: cannot write {out}: {exc.strerror}")
    typer.echo(f"wrote {len(rows)} {what} to {out}", err=True)


@sessions_app.command("list")
def sessions_list(
    open_only: Annotated[bool, typer.Option("--open", help="Only vehicles still inside.")] = False,
    limit: Annotated[int, typer.Option(help="Newest first, at most this many.")] = 50,
    tz: Annotated[str | None, typer.Option(help="Show times in this zone.")] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List parking sessions, newest entry first."""
    from rich.console import Console
    from rich.table import Table

    zone = _tz(tz, config)
    with _open(db, config) as store:
        rows = store.list_sessions(open_only=open_only, limit=limit)
    table = Table(title=f"{len(rows)} session(s)" + (" open" if open_only else ""))
    # ids and plates are what a technician copies: never truncate or wrap them
    table.add_column("session", no_wrap=True, min_width=15)
    table.add_column("plate", no_wrap=True, min_width=8)
    for col in ("member", "status", "entered", "exited", "fee", "points", "payable", "paid"):
        table.add_column(col)

    def t(d: Any) -> str:
        return d.astimezone(zone).strftime("%Y-%m-%d %H:%M") if d else "-"

    for s in rows:
        table.add_row(s.session_id, s.plate, s.member_id or "-", s.status, t(s.entered_at),
                      t(s.exited_at), "-" if s.fee is None else str(s.fee),
                      str(s.points_deducted), "-" if s.payable is None else str(s.payable),
                      str(s.paid))
    Console().print(table)


@app.command("report")
def report(
    month: Annotated[str | None, typer.Option(help="YYYY-MM in the car park's zone "
                                                   "(default: everything).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    tz: Annotated[str | None, typer.Option(help="Zone for month boundaries "
                                                "(default: [lane] timezone, else Asia/Shanghai).")]
    = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Points issued and redeemed (and their ratio), points per member, fees, sessions."""
    zone = _tz(tz, config)
    with _open(db, config) as store:
        try:
            rep = store.report(month, zone)
        except StoreError as exc:
            _fail(str(exc))
            return
    if as_json:
        typer.echo(json.dumps(rep, default=_jsonable, ensure_ascii=False, sort_keys=True))
        return
    rate = rep["redeemed_per_issued"]
    avg = rep["avg_points_per_member"]
    typer.echo(f"Report {month or 'all time'} ({zone.key})")
    typer.echo(f"  sessions             {rep['sessions']}")
    typer.echo(f"  members              {rep['members']}")
    typer.echo(f"  points issued        {rep['points_issued']}")
    typer.echo(f"  points redeemed      {rep['points_redeemed']}")
    typer.echo(f"  redeemed / issued    {'-' if rate is None else f'{rate:.4f}'}")
    typer.echo(f"  avg points / member  {'-' if avg is None else avg}")
    typer.echo(f"  fees charged         {rep['fees_charged']} yuan")
    typer.echo(f"  payable (after pts)  {rep['payable_total']} yuan")
    typer.echo(f"  paid                 {rep['paid_total']} yuan")
