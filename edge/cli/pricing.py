"""``parkedge quote | earn | rules check | rules simulate | rules gen-sessions``.

Thin: parse arguments into engine values, call the pure engine, print. Every user error
(bad bundle, bad time, bad member file) exits with code 2 and says what is wrong.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from edge.cli import app
from edge.pricing import (
    BundleError,
    Coupon,
    MemberSnapshot,
    PointsLot,
    RuleBundle,
    SessionInput,
    earn_for_purchase,
    load_bundle,
    quote_exit,
)
from edge.pricing.checks import MAX_INSTANT, MAX_MONEY, MIN_INSTANT, check_instant, check_money

rules = typer.Typer(help="Rule bundles: validate, forecast campaigns.", no_args_is_help=True)
app.add_typer(rules, name="rules")


def _fail(lines: list[str] | str) -> NoReturn:
    for line in [lines] if isinstance(lines, str) else lines:
        typer.echo(line, err=True)
    raise typer.Exit(2)


def _bundle(path: Path) -> RuleBundle:
    try:
        return load_bundle(path)
    except BundleError as exc:
        _fail([f"{path}: rule bundle rejected"] + [f"  {p}: {r}" if p else f"  {r}"
                                                   for p, r in exc.errors])


def _when(name: str, value: str | None, rb: RuleBundle | None = None) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{name}: not an ISO 8601 date-time: {value!r}")
    if dt.tzinfo is None:
        if rb is None:
            _fail(f"{name}: needs a UTC offset, e.g. {value}+08:00")
        dt = dt.replace(tzinfo=rb.tz)  # a bare local time means the site's time zone
    try:
        check_instant(name, dt)
    except ValueError:  # 0001-01-01 and 9999-12-31 overflowed deep in the engine
        _fail(f"{name}: {value!r} is outside the supported range "
              f"{MIN_INSTANT:%Y-%m-%d} .. {MAX_INSTANT:%Y-%m-%d} (UTC)")
    return dt


def _money(name: str, value: str) -> Decimal:
    try:
        d = Decimal(value)
    except InvalidOperation:
        _fail(f"{name}: not a decimal amount: {value!r}")
    if not d.is_finite() or d < 0:
        _fail(f"{name}: must be a non-negative amount, got {value!r}")
    if d > MAX_MONEY:
        _fail(f"{name}: must be at most {MAX_MONEY}, got {value!r}")
    return d


def _count(name: str, value: int | None) -> int | None:
    if value is not None and value < 0:
        _fail(f"{name}: must be >= 0, got {value}")
    return value


def _tier(rb: RuleBundle, tier: str | None) -> None:
    if tier is not None and tier not in rb.tiers:
        _fail(f"--tier: unknown tier {tier!r}; this bundle has {', '.join(rb.tiers)}")


def _coupon(spec: str, i: int) -> Coupon:
    """``hours:3``, ``amount:20``, ``free``; optional ``@id`` suffix."""
    body, _, cid = spec.partition("@")
    kind, _, value = body.partition(":")
    if kind not in ("hours", "amount", "free"):
        _fail(f"--coupon {spec!r}: kind must be hours, amount or free")
    if kind != "free" and not value:
        _fail(f"--coupon {spec!r}: {kind} needs a value, e.g. {kind}:3")
    return Coupon(cid or f"coupon{i + 1}", kind,  # type: ignore[arg-type]
                  _money(f"--coupon {spec!r}", value or "0"), None)


def member_from_json(data: Any, rb: RuleBundle) -> MemberSnapshot:
    """A member snapshot from JSON (the ``--member`` file); ValueError names the bad key."""
    if not isinstance(data, dict):
        raise ValueError("member: must be a JSON object")

    def dt(key: str, v: Any) -> datetime | None:
        if v is None:
            return None
        try:
            d = datetime.fromisoformat(str(v))
        except ValueError:
            raise ValueError(f"{key}: not an ISO 8601 date-time: {v!r}") from None
        return d if d.tzinfo else d.replace(tzinfo=rb.tz)

    def count(key: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{key}: must be a whole number >= 0, got {v!r}")
        return v

    def money(key: str, v: Any) -> Decimal:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ValueError(f"{key}: must be an amount such as \"12.50\", got {v!r}")
        try:
            return check_money(key, str(v))
        except ValueError as exc:
            raise ValueError(str(exc).replace(f"{key} ", f"{key}: ", 1)) from None

    def flag(key: str, v: Any) -> bool:
        if not isinstance(v, bool):
            raise ValueError(f"{key}: must be true or false, got {v!r}")
        return v

    def items(key: str) -> list[Any]:
        v = data.get(key, [])
        if not isinstance(v, list):
            raise ValueError(f"{key}: must be a list")
        return v

    lots = []
    for i, x in enumerate(items("lots")):
        try:
            lots.append(PointsLot(str(x.get("lot_id", f"lot{i}")), count("points", x["points"]),
                                  dt("expires_at", x.get("expires_at")),
                                  dt("earned_at", x.get("earned_at"))))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"lots[{i}]: {exc}") from None
    coupons = []
    for i, x in enumerate(items("coupons")):
        try:
            if x["kind"] not in ("hours", "amount", "free"):
                raise ValueError("kind must be hours, amount or free")
            coupons.append(Coupon(str(x.get("coupon_id", f"coupon{i}")), x["kind"],
                                  money("value", x.get("value", "0")),
                                  dt("valid_until", x.get("valid_until"))))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"coupons[{i}]: {exc}") from None
    return MemberSnapshot(
        member_id=str(data.get("member_id", "cli")),
        tier=str(data.get("tier", rb.default_tier)),
        lots=tuple(lots), coupons=tuple(coupons),
        redeemed_this_month_value=money("redeemed_this_month_value",
                                        data.get("redeemed_this_month_value", "0")),
        redeemed_today_points=count("redeemed_today_points",
                                    data.get("redeemed_today_points", 0)),
        earned_today=count("earned_today", data.get("earned_today", 0)),
        auto_deduct=flag("auto_deduct", data.get("auto_deduct", True)),
        blocked=flag("blocked", data.get("blocked", False)),
    )


@app.command("quote")
def quote_cmd(
    rules_file: Annotated[Path, typer.Option("--rules", help="Rule bundle (TOML).")],
    exited: Annotated[str, typer.Option("--exited", help="Exit time, ISO 8601.")],
    entered: Annotated[str | None, typer.Option("--entered", help="Entry; omit = none.")] = None,
    vehicle: Annotated[str, typer.Option("--vehicle", help="Vehicle class.")] = "small",
    tier: Annotated[str | None, typer.Option("--tier", help="Member tier.")] = None,
    points: Annotated[int | None, typer.Option("--points", help="Spendable points.")] = None,
    member_file: Annotated[Path | None, typer.Option("--member", help="Member JSON.")] = None,
    coupon: Annotated[list[str] | None, typer.Option("--coupon", help="hours:3|free")] = None,
    plate: Annotated[str, typer.Option("--plate")] = "",
    lane: Annotated[str, typer.Option("--lane")] = "",
    at: Annotated[str | None, typer.Option("--at", help="Quote time (default exit).")] = None,
    paid_at: Annotated[str | None, typer.Option("--paid-at", help="Paid at a pay station.")] = None,
    paid_amount: Annotated[str, typer.Option("--paid-amount")] = "0",
    previous_exit: Annotated[str | None, typer.Option("--previous-exit")] = None,
    redeemed_month: Annotated[
        str | None, typer.Option("--redeemed-month", help="Yuan redeemed this month.")] = None,
    earned_today: Annotated[
        int | None, typer.Option("--earned-today", help="Points earned today.")] = None,
    no_spend: Annotated[bool, typer.Option("--no-spend", help="Deduct nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Price one exit: fee, coupons and points used, payable, points earned."""
    coupon = coupon or []
    rb = _bundle(rules_file)
    if points is not None and member_file is not None:
        _fail("give --points or --member, not both")
    _count("--points", points)
    _count("--earned-today", earned_today)
    _tier(rb, tier)
    month = None if redeemed_month is None else _money("--redeemed-month", redeemed_month)
    # the options override the member file's values; any of them makes this a member's quote
    given: dict[str, Any] = {}
    if tier is not None:
        given["tier"] = tier
    if month is not None:
        given["redeemed_this_month_value"] = month
    if earned_today is not None:
        given["earned_today"] = earned_today
    member: MemberSnapshot | None = None
    if member_file is not None:
        try:
            member = member_from_json(json.loads(member_file.read_text("utf-8")), rb)
        except (OSError, json.JSONDecodeError, ValueError) as exc:
            _fail(f"--member {member_file}: {exc}")
    elif points is not None or given or coupon:
        member = MemberSnapshot("cli", rb.default_tier,
                                (PointsLot("cli", points, None),) if points else ())
    if member is not None:
        extra = tuple(_coupon(c, i) for i, c in enumerate(coupon))
        member = MemberSnapshot(**{**_fields(member), **given,
                                   "coupons": member.coupons + extra})
    ex = _when("--exited", exited, rb)
    assert ex is not None
    session = SessionInput(
        entered=_when("--entered", entered, rb), exited=ex, vehicle_class=vehicle,
        plate=plate, lane_id=lane, paid_at=_when("--paid-at", paid_at, rb),
        paid_amount=_money("--paid-amount", paid_amount),
        previous_exit=_when("--previous-exit", previous_exit, rb),
    )
    try:
        q = quote_exit(session, member, rb, _when("--at", at, rb) or ex,
                       spend_points=not no_spend)
    except ValueError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(q.to_json(), ensure_ascii=False))
        return
    for line in q.explain_zh:
        typer.echo(line)
    typer.echo("")
    for line in q.explain_en:
        typer.echo(line)
    if q.flags:
        typer.echo("flags: " + ", ".join(q.flags))


def _fields(m: MemberSnapshot) -> dict[str, Any]:
    return {f: getattr(m, f) for f in MemberSnapshot.__slots__}


@app.command("earn")
def earn_cmd(
    rules_file: Annotated[Path, typer.Option("--rules", help="Rule bundle (TOML).")],
    amount: Annotated[str, typer.Option("--amount", help="Purchase in yuan, e.g. 150.8")],
    category: Annotated[str, typer.Option("--category", help="Tenant category, e.g. dining.")],
    at: Annotated[str, typer.Option("--at", help="Purchase time, ISO 8601.")],
    tier: Annotated[str | None, typer.Option("--tier")] = None,
    brand: Annotated[str | None, typer.Option("--brand")] = None,
    earned_today: Annotated[int, typer.Option("--earned-today", help="Earned today.")] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Points one purchase earns, and the rules that fired."""
    rb = _bundle(rules_file)
    when = _when("--at", at, rb)
    assert when is not None
    _tier(rb, tier)
    _count("--earned-today", earned_today)
    member = None
    if earned_today:
        member = MemberSnapshot("cli", tier or rb.default_tier, (), earned_today=earned_today)
    r = earn_for_purchase(_money("--amount", amount), category, when, member, rb,
                          brand=brand, tier=tier)
    if as_json:
        out = r.to_json()
        out["rules_version"] = rb.version
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    for line in (*r.explain_zh, "", *r.explain_en):
        typer.echo(line)


@rules.command("check")
def check_cmd(path: Annotated[Path, typer.Argument(help="Rule bundle (TOML).")]) -> None:
    """Validate a rule bundle; exit 2 with every error and its key path."""
    rb = _bundle(path)
    typer.echo(
        f"{path}: OK, version {rb.version}, effective {rb.effective_from.isoformat()}, "
        f"{rb.tz.key}; classes {', '.join(rb.vehicle_classes)}; tiers {', '.join(rb.tiers)}; "
        f"{len(rb.campaigns)} campaigns"
    )


@rules.command("simulate")
def simulate_cmd(
    sessions: Annotated[Path, typer.Option("--sessions", help="JSONL from ledger export.")],
    candidate: Annotated[Path, typer.Option("--rules", help="Candidate bundle.")],
    baseline: Annotated[Path | None, typer.Option("--baseline", help="Current bundle.")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Processes (0 = one per core).")] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Replay sessions through a candidate bundle (and a baseline) and compare."""
    from edge.pricing.simulate import format_report, simulate_file

    cand = _bundle(candidate)
    base = _bundle(baseline) if baseline is not None else None
    if not sessions.is_file():
        _fail(f"--sessions: no such file {sessions}")
    try:
        report = simulate_file(sessions, candidate, baseline if base else None,
                               workers=workers)
    except ValueError as exc:
        _fail(f"--sessions {sessions}: {exc}")
    _ = cand
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False))
    else:
        typer.echo(format_report(report))


@rules.command("gen-sessions")
def gen_cmd(
    out: Annotated[Path, typer.Option("--out", help="JSONL file to write.")],
    rules_file: Annotated[Path, typer.Option("--rules", help="Bundle for classes/tiers.")],
    count: Annotated[int, typer.Option("--count")] = 10000,
    seed: Annotated[int, typer.Option("--seed")] = 1,
    start: Annotated[str, typer.Option("--start")] = "2026-03-01T00:00:00+08:00",
    days: Annotated[int, typer.Option("--days")] = 30,
) -> None:
    """Write realistic synthetic closed sessions in the ledger-export JSONL format."""
    from edge.pricing.simulate import write_sessions

    rb = _bundle(rules_file)
    begin = _when("--start", start, rb)
    assert begin is not None
    if count < 0 or days < 1:
        _fail("--count must be >= 0 and --days >= 1")
    n = write_sessions(out, count, rb, begin, days=days, seed=seed)
    typer.echo(f"wrote {n} sessions to {out}", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
