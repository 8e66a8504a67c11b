"""Campaign forecasting: replay closed sessions through a candidate bundle (and a baseline).

Input is JSONL in time order: the closed sessions that ``parkedge ledger export --what
sessions`` writes, and optionally shop purchases (``"kind": "purchase"`` lines, as central's
forecast download writes them, sessions and purchases interleaved by time). Each member's
spendable balance at exit is taken from the recorded ``points_before``; the month/day
redemption caps and the daily earning cap (shared by parking and purchases, as at the lane
and at central) are tracked inside the replay from the candidate's own decisions. Work is
split across processes by member (visitors by plate) so per-member cap state stays in one
process.

Also here: a generator of realistic synthetic sessions in the same format.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from edge.pricing.bundle import RuleBundle, load_bundle
from edge.pricing.earn import earn_for_purchase
from edge.pricing.quote import quote_exit
from edge.pricing.tariff import to_cents
from edge.pricing.types import MemberSnapshot, PointsLot, SessionInput

ZERO = Decimal(0)
_KEY = re.compile(r'"member_id":\s*"([^"]*)"')
_PLATE = re.compile(r'"plate":\s*"([^"]*)"')


@dataclass
class Totals:
    """What one bundle did over the replay."""

    sessions: int = 0
    member_sessions: int = 0
    members: int = 0
    fee_total: Decimal = ZERO
    fees_collected: Decimal = ZERO
    points_issued: int = 0
    points_redeemed: int = 0
    redeemed_value: Decimal = ZERO
    coupon_value: Decimal = ZERO
    sessions_with_points: int = 0
    purchases: int = 0
    purchase_points: int = 0
    campaigns: dict[str, list[int]] = field(default_factory=dict)  # name -> [fired, points]
    by_month: dict[str, int] = field(default_factory=dict)  # site month -> points issued

    def add(self, o: Totals) -> None:
        for name in ("sessions", "member_sessions", "members", "fee_total", "fees_collected",
                     "points_issued", "points_redeemed", "redeemed_value", "coupon_value",
                     "sessions_with_points", "purchases", "purchase_points"):
            setattr(self, name, getattr(self, name) + getattr(o, name))
        for k, (n, p) in o.campaigns.items():
            c = self.campaigns.setdefault(k, [0, 0])
            c[0] += n
            c[1] += p
        for m, v in o.by_month.items():
            self.by_month[m] = self.by_month.get(m, 0) + v

    def issued(self, month: str, points: int) -> None:
        """Count ``points`` issued in site month ``month`` (``YYYY-MM``)."""
        self.points_issued += points
        if points:
            self.by_month[month] = self.by_month.get(month, 0) + points

    def fired(self, names: tuple[str, ...] | list[str], points: int) -> None:
        for name in names:
            c = self.campaigns.setdefault(name, [0, 0])
            c[0] += 1
            c[1] += points

    def report(self, *, values: bool = True) -> dict[str, Any]:
        """JSON-ready figures; ``values=False`` for recorded data, which has no yuan split."""
        issued = self.points_issued
        return {
            "sessions": self.sessions,
            "member_sessions": self.member_sessions,
            "members": self.members,
            "fee_total": str(self.fee_total),
            "fees_collected": str(self.fees_collected),
            "points_issued": issued,
            "points_redeemed": self.points_redeemed,
            "redeemed_per_issued": round(self.points_redeemed / issued, 4) if issued else None,
            "avg_points_per_member": round(issued / self.members, 2) if self.members else None,
            "cost_of_points_redeemed": str(self.redeemed_value) if values else None,
            "cost_of_coupons": str(self.coupon_value) if values else None,
            "cost_vs_fees": (round(float(self.redeemed_value / self.fees_collected), 4)
                             if self.fees_collected and values else None),
            "sessions_with_points": self.sessions_with_points,
            "purchases": self.purchases,
            "parking_points": issued - self.purchase_points,
            "purchase_points": self.purchase_points,
            "points_by_month": dict(sorted(self.by_month.items())),
            "campaigns": {k: {"fired": v[0], "points_in_sessions": v[1]}
                          for k, v in sorted(self.campaigns.items())},
        }


@dataclass
class _MemberState:
    month: tuple[int, int] = (0, 0)
    month_value: Decimal = ZERO
    day: date | None = None
    day_points: int = 0
    day_earned: int = 0


class Replayer:
    """Replays records through one bundle, keeping per-member cap state and last exits."""

    def __init__(self, rules: RuleBundle) -> None:
        self.rules = rules
        self.t = Totals()
        self.members: dict[str, _MemberState] = {}
        self.last_exit: dict[str, datetime] = {}

    def _state(self, mid: str, at: datetime) -> _MemberState:
        """The member's cap state, rolled over to the site-local day and month of ``at``."""
        state = self.members.get(mid)
        if state is None:
            state = self.members[mid] = _MemberState()
            self.t.members += 1
        d = at.astimezone(self.rules.tz).date()
        if state.day != d:
            state.day, state.day_points, state.day_earned = d, 0, 0
        if state.month != (d.year, d.month):
            state.month, state.month_value = (d.year, d.month), ZERO
        return state

    def feed_purchase(self, rec: dict[str, Any], at: datetime) -> None:
        """One shop purchase through ``earn_for_purchase``, under the shared daily cap."""
        rb = self.rules
        mid = rec.get("member_id")
        if not mid or not isinstance(mid, str):
            raise ValueError("a purchase needs a member_id")
        try:
            amount = Decimal(str(rec.get("amount")))
        except ArithmeticError:
            raise ValueError(f"amount is not a number: {rec.get('amount')!r}") from None
        state = self._state(mid, at)
        snap = MemberSnapshot(mid, rec.get("tier") or rb.default_tier, (),
                              earned_today=state.day_earned)
        e = earn_for_purchase(amount, str(rec.get("category") or ""), at, snap, rb,
                              brand=rec.get("brand") or None)
        state.day_earned += e.points
        t = self.t
        t.purchases += 1
        t.purchase_points += e.points
        t.issued(at.astimezone(rb.tz).strftime("%Y-%m"), e.points)
        t.fired(e.rules_fired, e.points)

    def feed(self, rec: dict[str, Any], entered: datetime | None, exited: datetime) -> None:
        rb = self.rules
        t = self.t
        plate = rec.get("plate") or ""
        mid = rec.get("member_id")
        member = None
        state = None
        if mid:
            state = self._state(mid, exited)
            bal = rec.get("points_before") or 0
            member = MemberSnapshot(
                mid, rec.get("tier") or rb.default_tier,
                (PointsLot("bal", int(bal), None),) if bal else (),
                redeemed_this_month_value=state.month_value,
                redeemed_today_points=state.day_points, earned_today=state.day_earned)
        # as the lane's decider: the plate's last exit before this stay began, if it had one
        prev = self.last_exit.get(plate)
        s = SessionInput(entered, exited, rec.get("vehicle_class") or "small", plate,
                         rec.get("lane_id") or "",
                         previous_exit=prev if entered and prev and prev <= entered else None)
        q = quote_exit(s, member, rb, exited, explain_lines=False)
        if plate:
            self.last_exit[plate] = exited
        t.sessions += 1
        t.fee_total += q.fee
        t.fees_collected += q.payable
        if member is not None and state is not None:
            t.member_sessions += 1
            pts_value = ZERO
            for line in q.discounts:
                if line.kind == "points":
                    pts_value += line.amount
                else:
                    t.coupon_value += line.amount
            t.redeemed_value += pts_value
            state.month_value += pts_value
            state.day_points += q.points_deducted
            state.day_earned += q.points_earned
            t.issued(exited.astimezone(rb.tz).strftime("%Y-%m"), q.points_earned)
            t.points_redeemed += q.points_deducted
            if q.points_deducted:
                t.sessions_with_points += 1
            t.fired(q.earned_rules, q.points_earned)


def _parse_time(v: Any, what: str, n: int) -> datetime | None:
    if v is None:
        return None
    try:
        d = datetime.fromisoformat(v)
    except (TypeError, ValueError):
        raise ValueError(f"line {n}: {what} is not an ISO 8601 date-time: {v!r}") from None
    if d.tzinfo is None:
        raise ValueError(f"line {n}: {what} has no UTC offset: {v!r}")
    return d


def _recorded(t: Totals, rec: dict[str, Any], members: set[str], month: str) -> None:
    """What the lanes and the tills recorded for ``rec`` (a session or a purchase)."""
    mid = rec.get("member_id")
    if mid and mid not in members:
        members.add(mid)
        t.members += 1
    if rec.get("kind") == "purchase":
        pts = int(rec.get("points") or 0)
        t.purchases += 1
        t.purchase_points += pts
        t.issued(month, pts)
        return
    t.sessions += 1
    if rec.get("fee") is not None:
        t.fee_total += Decimal(rec["fee"])
    if rec.get("payable") is not None:
        t.fees_collected += Decimal(rec["payable"])
    if mid:
        t.member_sessions += 1
        t.issued(month, int(rec.get("points_earned") or 0))
        t.points_redeemed += int(rec.get("points_deducted") or 0)
        if rec.get("points_deducted"):
            t.sessions_with_points += 1


def _shard(line: str, workers: int) -> int:
    m = _KEY.search(line) or _PLATE.search(line)
    key = m.group(1) if m else line
    return zlib.crc32(key.encode("utf-8")) % workers


def replay_lines(lines: Iterable[str], cand: Replayer, base: Replayer | None, part: int = 0,
                 workers: int = 1) -> Totals:
    """Feed every line whose member (or plate) hashes to ``part`` to the replayers; the
    recorded totals of those lines. A bad line raises ``ValueError`` naming its number."""
    recorded = Totals()
    seen: set[str] = set()
    loads = json.loads
    tz = cand.rules.tz
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if workers > 1 and _shard(line, workers) != part:
            continue
        try:
            rec = loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {n}: not JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"line {n}: not a JSON object")
        kind = rec.get("kind", "session")
        if kind not in ("session", "purchase"):
            raise ValueError(f"line {n}: kind {kind!r} is neither 'session' nor 'purchase'")
        try:
            if kind == "purchase":
                at = _parse_time(rec.get("at"), "at", n)
                if at is None:
                    raise ValueError("at is missing")
                cand.feed_purchase(rec, at)
                if base is not None:
                    base.feed_purchase(rec, at)
            else:
                at = _parse_time(rec.get("exited"), "exited", n)
                if at is None:
                    raise ValueError("exited is missing")
                entered = _parse_time(rec.get("entered"), "entered", n)
                cand.feed(rec, entered, at)
                if base is not None:
                    base.feed(rec, entered, at)
            _recorded(recorded, rec, seen, at.astimezone(tz).strftime("%Y-%m"))
        except (ValueError, TypeError, ArithmeticError) as exc:
            # NaN/Infinity/out-of-range values in an export: say which line
            msg = str(exc) or type(exc).__name__
            raise ValueError(msg if msg.startswith("line ") else f"line {n}: {msg}") from None
    return recorded


def replay_part(path: str, candidate: str, baseline: str | None, part: int, workers: int
                ) -> tuple[Totals, Totals | None, Totals]:
    """One process's share: every line whose member (or plate) hashes to ``part``."""
    cand = Replayer(load_bundle(candidate))
    base = Replayer(load_bundle(baseline)) if baseline else None
    with open(path, encoding="utf-8") as fh:
        recorded = replay_lines(fh, cand, base, part, workers)
    return cand.t, (base.t if base else None), recorded


def simulate_file(path: str | Path, candidate: str | Path, baseline: str | Path | None = None,
                  *, workers: int = 0) -> dict[str, Any]:
    """Replay ``path`` through the candidate (and baseline) bundle; a JSON-ready report."""
    workers = workers or min(os.cpu_count() or 1, 8)
    args = [(str(path), str(candidate), str(baseline) if baseline else None, k, workers)
            for k in range(workers)]
    if workers == 1:
        parts = [replay_part(*args[0])]
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            parts = pool.starmap(replay_part, args)
    cand, base, rec = Totals(), Totals(), Totals()
    for c, b, r in parts:
        cand.add(c)
        rec.add(r)
        if b is not None:
            base.add(b)
    c_rules = load_bundle(candidate)
    out: dict[str, Any] = {
        "sessions_file": str(path),
        "candidate": {"version": c_rules.version, **cand.report()},
        "recorded": rec.report(values=False),
    }
    if baseline:
        out["baseline"] = {"version": load_bundle(baseline).version, **base.report()}
    return out


def format_report(r: dict[str, Any]) -> str:
    """Side-by-side text table: candidate, baseline (if any), recorded."""
    cols = [("candidate", r["candidate"])]
    if "baseline" in r:
        cols.append(("baseline", r["baseline"]))
    cols.append(("recorded", r["recorded"]))
    keys = ["sessions", "member_sessions", "members", "fee_total", "fees_collected",
            "purchases", "points_issued", "parking_points", "purchase_points",
            "points_redeemed", "redeemed_per_issued", "avg_points_per_member",
            "cost_of_points_redeemed", "cost_of_coupons", "cost_vs_fees"]
    head = f"{'':26}" + "".join(f"{name + ' ' + str(c.get('version', '')):>24}"
                                 for name, c in cols)
    lines = [head]
    for k in keys:
        lines.append(f"{k:26}" + "".join(f"{c.get(k)!s:>24}" for _, c in cols))
    names = sorted({n for _, c in cols for n in c["campaigns"]})
    if names:
        lines.append("")
        lines.append("rules fired (times / points in those sessions)")
        for n in names:
            cells = []
            for _, c in cols:
                v = c["campaigns"].get(n)
                cells.append(f"{v['fired']} / {v['points_in_sessions']}" if v else "-")
            lines.append(f"  {n:24}" + "".join(f"{x:>24}" for x in cells))
    return "\n".join(lines)


# --------------------------------------------------------------------------- generator
def generate_sessions(count: int, rules: RuleBundle, start: datetime, *, days: int = 30,
                      seed: int = 1, priced: bool = True) -> list[dict[str, Any]]:
    """Realistic closed sessions sorted by exit: 60% members (tiers 70/20/10), peaks at
    lunch and evening, log-normal stays around 2 h, 3% multi-day, repeat visitors."""
    rnd = random.Random(seed)
    tz = rules.tz
    classes = list(rules.vehicle_classes)
    weights = [{"small": 80, "new_energy": 12, "large": 5, "motorcycle": 3}.get(c, 5)
               for c in classes]
    tiers = list(rules.tiers)
    tier_w = [70, 20, 10][: len(tiers)] + [5] * max(0, len(tiers) - 3)
    n_members = max(1, count // 8)
    pool = [(f"M{i:07d}", rnd.choices(tiers, tier_w)[0], rnd.choices(classes, weights)[0],
             f"粤B{i:05d}") for i in range(n_members)]
    hours = list(range(24))
    hour_w = [1, 1, 1, 1, 1, 2, 4, 8, 12, 14, 16, 20, 22, 18, 14, 12, 14, 18, 22, 18, 12, 8,
              4, 2]
    base = start.astimezone(tz)
    rows: list[tuple[datetime, datetime, dict[str, Any]]] = []
    for i in range(count):
        day = rnd.randrange(days)
        when = base + timedelta(days=day, hours=rnd.choices(hours, hour_w)[0],
                                minutes=rnd.randrange(60), seconds=rnd.randrange(60))
        if rnd.random() < 0.03:
            minutes = rnd.randrange(1440, 4 * 1440)
        else:
            minutes = max(1, int(rnd.lognormvariate(4.8, 0.8)))
        exited = when + timedelta(minutes=minutes, seconds=rnd.randrange(60))
        if rnd.random() < 0.6:
            mid, tier, cls, plate = pool[rnd.randrange(n_members)]
            points_before: int | None = rnd.choice([0, 20, 50, 100, 200, 400, 800])
        else:
            mid, tier, cls, plate = None, None, rnd.choices(classes, weights)[0], \
                f"粤A{rnd.randrange(100000):05d}"
            points_before = None
        entered = None if rnd.random() < 0.002 else when
        rec = {"session_id": f"S{i:08d}", "plate": plate, "member_id": mid, "tier": tier,
               "vehicle_class": cls, "lane_id": rnd.choice(["E1", "W1", "W2", "N1"]),
               "entered": entered.isoformat() if entered else None,
               "exited": exited.isoformat(), "points_before": points_before,
               "fee": None, "payable": None, "points_deducted": None, "points_earned": None,
               "rules_version": rules.version}
        rows.append((exited, when, rec))
    rows.sort(key=lambda r: r[0])
    out = [r[2] for r in rows]
    if priced:
        rp = Replayer(rules)
        for (exited, _w, rec) in rows:
            entered = datetime.fromisoformat(str(rec["entered"])) if rec["entered"] else None
            before = rp.t.points_issued, rp.t.points_redeemed, rp.t.fees_collected, rp.t.fee_total
            rp.feed(rec, entered, exited)
            rec["fee"] = str(to_cents(rp.t.fee_total - before[3]))
            rec["payable"] = str(to_cents(rp.t.fees_collected - before[2]))
            rec["points_earned"] = rp.t.points_issued - before[0] if rec["member_id"] else 0
            rec["points_deducted"] = rp.t.points_redeemed - before[1] if rec["member_id"] else 0
    return out


def write_sessions(path: str | Path, count: int, rules: RuleBundle, start: datetime, *,
                   days: int = 30, seed: int = 1, priced: bool = True) -> int:
    """Write ``count`` synthetic sessions as JSONL; returns the number written."""
    rows = generate_sessions(count, rules, start, days=days, seed=seed, priced=priced)
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return len(rows)
