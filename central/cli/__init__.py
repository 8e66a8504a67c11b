"""``parkedge-central``: the operator's command line. Exit 0 done, 1 refused, 2 bad config
or usage. Every change made here is in the audit log as ``cli:<login name>``."""

from __future__ import annotations

import getpass
import json
import os
import sys
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from central.app import Central
from central.config import CentralConfig, ConfigError, check, load_config
from central.services import audit
from central.services.errors import ServiceError

if TYPE_CHECKING:
    from central.ingest.worker import IngestWorker

app = typer.Typer(name="parkedge-central", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False,
                  help="Central service of the parking points programme.")
user_app = typer.Typer(no_args_is_help=True, help="Staff accounts.")
member_app = typer.Typer(no_args_is_help=True, help="Members.")
shop_app = typer.Typer(no_args_is_help=True, help="Shops that send purchases (POS).")
paystation_app = typer.Typer(no_args_is_help=True, help="Pay stations that post prepayments.")
app.add_typer(user_app, name="user")
app.add_typer(member_app, name="member")
app.add_typer(shop_app, name="shop")
app.add_typer(paystation_app, name="paystation")

DEFAULT_CONFIG = "/etc/parkedge-central/central.toml"
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", envvar="PARKEDGE_CENTRAL_CONFIG",
                                         help="central's TOML config")]


def _fail(msg: str, code: int) -> NoReturn:
    typer.echo(msg, err=True)
    raise typer.Exit(code)


def _config(path: Path) -> CentralConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        _fail(f"{path}: invalid config\n" + "\n".join(f"  {line}" for line in
                                                      str(exc).splitlines()), 2)


def _central(path: Path, migrate: bool = False) -> Central:
    cfg = _config(path)
    try:
        return Central.from_config(cfg, migrate=migrate)
    except ConfigError as exc:
        _fail(f"{path}: invalid config\n" + "\n".join(f"  {line}" for line in
                                                      str(exc).splitlines()), 2)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


def _password(stdin: bool, prompt: str = "Password") -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=True))


def _when(text: str | None, c: Central) -> datetime:
    if text is None:
        return c.clock()
    try:
        v = datetime.fromisoformat(text)
    except ValueError:
        _fail(f"--at: {text!r} is not an ISO date-time", 2)
    return v if v.tzinfo else v.replace(tzinfo=c.cfg.site.tz)


@app.command("check-config")
def check_config(config: ConfigOpt = Path(DEFAULT_CONFIG)) -> None:
    """Validate the config, its secrets and the rule bundle; exit 2 listing every problem."""
    cfg = _config(config)
    errs = check(cfg)
    if errs:
        _fail(f"{config}: invalid config\n" + "\n".join(f"  {p}: {r}" for p, r in errs), 2)
    typer.echo(f"{config}: OK, site {cfg.site.site_id} ({cfg.site.timezone}), "
               f"database {cfg.database.url.split('://')[0]}, listen "
               f"{cfg.web.listen}:{cfg.web.port}{' TLS' if cfg.web.tls_cert else ''}")


@app.command()
def migrate(config: ConfigOpt = Path(DEFAULT_CONFIG)) -> None:
    """Bring the database schema up to date (Alembic upgrade head)."""
    from central.db.migrate import current
    c = _central(config, migrate=True)
    typer.echo(f"database at revision {current(c.engine)}")
    c.close()


@app.command()
def keygen(out: Annotated[Path, typer.Option(help="private key file to write (0600)")]) -> None:
    """Make the site's Ed25519 signing key (messages to the lanes); prints the public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    if out.exists():
        _fail(f"{out} exists: not overwriting a key", 1)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    typer.echo(f"wrote {out}; public key (give it to the lanes): {pub.hex()}")


def _run(c: Central, fn: object) -> None:
    try:
        fn()  # type: ignore[operator]
    except ServiceError as exc:
        _fail(str(exc), 1)
    finally:
        c.close()


# ------------------------------------------------------------------ staff users
@user_app.command("add")
def user_add(username: str, role: Annotated[str, typer.Option(
        help="marketing, operations, auditor or admin")],
        password_stdin: bool = False, config: ConfigOpt = Path(DEFAULT_CONFIG)) -> None:
    """Create a staff account (asks for the password twice, or reads one line of stdin)."""
    from central.services import staff
    c = _central(config)
    pw = _password(password_stdin)

    def go() -> None:
        with c.tx() as s:
            now = c.clock()
            staff.add_user(s, username, role, pw, now)
            audit.record(s, actor=_actor(), action="user.add", target=f"user:{username}",
                         at=now, after={"username": username, "role": role})
        typer.echo(f"user {username} ({role}) added")
    _run(c, go)


@user_app.command("passwd")
def user_passwd(username: str, password_stdin: bool = False,
                config: ConfigOpt = Path(DEFAULT_CONFIG)) -> None:
    """Set a staff member's password; their open sessions end."""
    from central.services import sessions, staff
    c = _central(config)
    pw = _password(password_stdin)

    def go() -> None:
        with c.tx() as s:
            staff.set_password(s, username, pw)
            sessions.close_sessions_of(s, "staff", username)
            audit.record(s, actor=_actor(), action="user.passwd", target=f"user:{username}",
                         at=c.clock())
        typer.echo(f"password of {username} changed")
    _run(c, go)


@user_app.command("disable")
def user_disable(username: str, config: ConfigOpt = Path(DEFAULT_CONFIG)) -> None:
    """Disable a staff account and end its sessions."""
    from central.services import sessions, staff
    c = _central(config)

    def go() -> None:
        with c.tx() as s:
            staff.set_disabled(s, username, True)
            sessions.close_sessions_of(s, "staff", username)
            audit.record(s, actor=_actor(), action="user.disable", target=f"user:{username}",
                         at=c.clock(), before={"disabled": False}, after={"disabled": True})
        typer.echo(f"user {username} disabled")
    _run(c, go)


# ------------------------------------------------------------------ members
@member_app.command("add")
def member_add(member_id: Annotated[str, typer.Option("--id")],
               tier: Annotated[str, typer.Option()],
               phone: Annotated[str | None, typer.Option()] = None,
               name: Annotated[str, typer.Option()] = "",
               plate: Annotated[list[str] | None, typer.Option(help="repeatable")] = None,
               password_stdin: Annotated[bool, typer.Option(
                   help="read the member's portal password from stdin")] = False,
               config: ConfigOpt = Path(DEFAULT_CONFIG)) -> None:
    """Enrol a member, with plates and (optionally) a portal password."""
    from central.services import members
    c = _central(config)
    pw = _password(True) if password_stdin else None

    def go() -> None:
        with c.tx() as s:
            now = c.clock()
            m = members.enrol(s, c.rules, member_id=member_id, phone=phone, name=name,
                              tier=tier, now=now, plates=tuple(plate or ()), password=pw)
            after = members.member_json(m, members.plates_of(s, member_id))
            audit.record(s, actor=_actor(), action="member.add",
                         target=f"member:{member_id}", at=now, after=after)
        typer.echo(f"member {member_id} enrolled ({tier})")
    _run(c, go)


@member_app.command("import")
def member_import(csv_file: Path, config: ConfigOpt = Path(DEFAULT_CONFIG)) -> None:
    """Enrol members from CSV (member_id,phone,name,tier,plates): all rows or none."""
    from central.services import members
    c = _central(config)
    try:
        text = csv_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{csv_file}: {exc}", 2)

    def go() -> None:
        with c.tx() as s:
            now = c.clock()
            n = members.import_members(s, c.rules, text, now)
            audit.record(s, actor=_actor(), action="member.import", target=str(csv_file),
                         at=now, after={"members": n})
        typer.echo(f"{n} members enrolled from {csv_file}")
    _run(c, go)


@member_app.command("code")
def member_code(member_id: str, config: ConfigOpt = Path(DEFAULT_CONFIG)) -> None:
    """A one-time sign-in code for the member portal (valid 30 minutes, used once)."""
    from central.services import members
    c = _central(config)

    def go() -> None:
        with c.tx() as s:
            now = c.clock()
            code = members.issue_code(s, member_id, now)
            audit.record(s, actor=_actor(), action="member.code", target=f"member:{member_id}",
                         at=now)
        typer.echo(code)
    _run(c, go)


# ------------------------------------------------------------------ shops
@shop_app.command("add")
def shop_add(shop_id: str, category: Annotated[str, typer.Option()],
             name: Annotated[str, typer.Option()] = "",
             config: ConfigOpt = Path(DEFAULT_CONFIG)) -> None:
    """Register a shop; prints its POS API key once (only a digest is stored)."""
    from central.services import purchases
    c = _central(config)

    def go() -> None:
        with c.tx() as s:
            now = c.clock()
            key = purchases.add_shop(s, shop_id, name or shop_id, category)
            audit.record(s, actor=_actor(), action="shop.add", target=f"shop:{shop_id}",
                         at=now, after={"shop_id": shop_id, "category": category})
        typer.echo(key)
    _run(c, go)


# ------------------------------------------------------------------ pay stations
@paystation_app.command("add")
def paystation_add(paystation_id: str, name: Annotated[str, typer.Option()] = "",
                   config: ConfigOpt = Path(DEFAULT_CONFIG)) -> None:
    """Register a pay station; prints its API key once (only a digest is stored)."""
    from central.services import paystations
    c = _central(config)

    def go() -> None:
        with c.tx() as s:
            now = c.clock()
            key = paystations.add(s, paystation_id, name, now)
            audit.record(s, actor=_actor(), action="paystation.add",
                         target=f"paystation:{paystation_id}", at=now,
                         after={"paystation_id": paystation_id, "name": name or paystation_id})
        typer.echo(key)
    _run(c, go)


@paystation_app.command("revoke")
def paystation_revoke(paystation_id: str, config: ConfigOpt = Path(DEFAULT_CONFIG)) -> None:
    """Stop a pay station's API key at once (the pay station stays listed, inactive)."""
    from central.services import paystations
    c = _central(config)

    def go() -> None:
        with c.tx() as s:
            now = c.clock()
            if paystations.revoke(s, paystation_id, now):
                audit.record(s, actor=_actor(), action="paystation.revoke",
                             target=f"paystation:{paystation_id}", at=now,
                             before={"active": True}, after={"active": False})
                typer.echo(f"pay station {paystation_id} revoked")
            else:
                typer.echo(f"pay station {paystation_id} was already revoked")
    _run(c, go)


@paystation_app.command("list")
def paystation_list(as_json: Annotated[bool, typer.Option("--json")] = False,
                    config: ConfigOpt = Path(DEFAULT_CONFIG)) -> None:
    """The pay stations (never their keys)."""
    from central.services import paystations
    c = _central(config)
    with c.tx() as s:
        rows = paystations.listing(s)
    c.close()
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for r in rows:
        state = "active" if r["active"] else f"revoked {r['revoked_at']}"
        typer.echo(f"{r['paystation_id']}\t{r['name']}\t{state}")


# ------------------------------------------------------------------ figures and jobs
@app.command()
def figures(as_json: Annotated[bool, typer.Option("--json")] = False,
            config: ConfigOpt = Path(DEFAULT_CONFIG)) -> None:
    """The marketing figures, by the site's month."""
    from central.services.figures import figures as compute
    c = _central(config)
    with c.tx() as s:
        f = compute(s, c.cfg.site.tz, c.cfg.points.cost_per_point)
    c.close()
    if as_json:
        typer.echo(json.dumps(f, ensure_ascii=False, indent=2))
        return
    for k, v in f.items():
        typer.echo(f"{k}: {v}")


@app.command()
def expire(dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
           at: Annotated[str | None, typer.Option(help="as if now were this (ISO)")] = None,
           config: ConfigOpt = Path(DEFAULT_CONFIG)) -> None:
    """Write off expired points lots now (what the daily job does); --dry-run lists them."""
    from central.jobs import run_expiry
    c = _central(config)
    rep = run_expiry(c, _when(at, c), dry_run=dry_run)
    c.close()
    for x in rep.items:
        typer.echo(f"{x.member_id} {x.lot_id} {x.points} (expired {x.expires_at.isoformat()})")
    typer.echo(f"{'would expire' if dry_run else 'expired'} {rep.points} points in "
               f"{rep.lots} lots of {rep.members} members")


@app.command()
def perks(month: Annotated[str | None, typer.Option(help="YYYY-MM (default: now's)")] = None,
          dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
          config: ConfigOpt = Path(DEFAULT_CONFIG)) -> None:
    """Grant this month's tier coupons (what the monthly job does); safe to repeat."""
    from central.jobs import run_perks
    c = _central(config)
    m = None
    if month is not None:
        try:
            m = date.fromisoformat(month + "-01")
        except ValueError:
            _fail(f"--month: {month!r} is not YYYY-MM", 2)
    granted = run_perks(c, m, dry_run=dry_run)
    c.close()
    typer.echo(f"{'would grant' if dry_run else 'granted'} {len(granted)} coupons")


@app.command()
def serve(config: ConfigOpt = Path(DEFAULT_CONFIG)) -> None:
    """Serve the web API (uvicorn) and run the jobs; loopback unless TLS and an admin exist.
    With ``ingest.enabled`` an ingest worker runs in the same process."""
    import signal

    from central.web.serve import serve as run
    c = _central(config)
    worker = None
    # uvicorn handles SIGTERM (drains requests), then restores the handler it found and
    # raises the signal again: with the default one the process died right there, before
    # the ingest worker below was stopped. Ours ends the process through the finally.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        if c.cfg.ingest.enabled:
            worker = _worker(c, None)
            worker.start()
        run(c)
    except ServiceError as exc:
        _fail(str(exc), 2)
    finally:
        if worker is not None:
            worker.stop()
        c.close()


def _exit_on_sigterm(_sig: int, _frame: object) -> None:
    raise SystemExit(0)


def _worker(c: Central, client_id: str | None) -> IngestWorker:
    from central.config import SecretError
    try:
        return c.ingest_worker(client_id)
    except (SecretError, ValueError) as exc:
        _fail(f"ingest: {exc}", 2)


@app.command("export-lane")
def export_lane(lane: Annotated[str, typer.Argument(help="lane id")],
                config: ConfigOpt = Path(DEFAULT_CONFIG)) -> None:
    """Central's copy of a lane's ledger as JSON lines, in seq order, exactly as the lane
    hashed it: the input of `parkedge ledger recover --central-export`."""
    from central.ingest.commit import export_lane as rows
    c = _central(config)
    try:
        with c.tx() as s:
            for e in rows(s, lane):
                typer.echo(json.dumps(e, ensure_ascii=False, sort_keys=True))
    finally:
        c.close()


@app.command()
def ingest(config: ConfigOpt = Path(DEFAULT_CONFIG),
           client_id: Annotated[str | None, typer.Option(
               help="MQTT client id (default central-<host>-<pid>)")] = None) -> None:
    """Run one ingest worker: lane ledgers in (shared subscription), acks and signed states
    out. Start several (against PostgreSQL) to share the load; SIGTERM stops it."""
    import signal

    from central import logs
    c = _central(config)
    logs.setup(c.cfg.logging.level, c.cfg.logging.json_lines)
    worker = _worker(c, client_id)
    if c.cfg.metrics.listen:
        from central.metrics import start_metrics_server
        start_metrics_server(c.cfg.metrics.listen)
    signal.signal(signal.SIGTERM, lambda *_a: worker.request_stop())
    try:
        worker.run()
    except KeyboardInterrupt:
        pass
    finally:
        c.close()


def main() -> None:
    app()
