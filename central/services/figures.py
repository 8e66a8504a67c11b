"""The marketing figures of the seed, from central's points ledger, by the SITE's month.

Points issued / redeemed / expired per month (site time zone), redemption rate, average
points per member, cost of points issued (the cost per point is a setting), value redeemed,
most popular reward types, purchases per month.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import String, bindparam, case, func, literal_column, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from central.db.models import (
    FiguresDaily,
    LotExpiryHour,
    Member,
    MemberDay,
    PointsEntry,
    PointsLot,
    Purchase,
    Redemption,
    Reward,
)
from central.services import rollup
from edge.pricing import RuleBundle

CENT = Decimal("0.01")


def figures(s: Session, tz: ZoneInfo, cost_per_point: Decimal) -> dict[str, Any]:
    issued: Counter[str] = Counter()
    redeemed: Counter[str] = Counter()
    expired: Counter[str] = Counter()
    for kind, at, pts in s.execute(select(PointsEntry.kind, PointsEntry.at,
                                          PointsEntry.points)):
        month = at.astimezone(tz).strftime("%Y-%m")
        if kind == "points_earned":
            issued[month] += pts
        elif kind == "points_spent":
            redeemed[month] -= pts
        elif kind == "points_expired":
            expired[month] -= pts
    purchases: Counter[str] = Counter()
    purchase_amount: dict[str, Decimal] = {}
    for at, amount in s.execute(select(Purchase.at, Purchase.amount)):
        month = at.astimezone(tz).strftime("%Y-%m")
        purchases[month] += 1
        purchase_amount[month] = purchase_amount.get(month, Decimal(0)) + amount
    popular = Counter(dict(s.execute(
        select(Reward.kind, func.count(Redemption.id)).join(
            Reward, Reward.reward_id == Redemption.reward_id).group_by(Reward.kind)).all()))
    value_redeemed = sum((v for v in s.scalars(select(Redemption.value))), Decimal(0))
    balances = [int(b) for b in s.scalars(select(Member.balance))]
    total_issued = sum(issued.values())
    total_redeemed = sum(redeemed.values())
    outstanding = sum(b for b in balances if b > 0)
    whole = total_redeemed + outstanding
    return {
        "timezone": str(tz),
        "points_issued_per_month": dict(sorted(issued.items())),
        "points_redeemed_per_month": dict(sorted(redeemed.items())),
        "points_expired_per_month": dict(sorted(expired.items())),
        "purchases_per_month": {k: {"count": purchases[k],
                                    "amount": str(purchase_amount[k].quantize(CENT))}
                                for k in sorted(purchases)},
        "points_issued": total_issued,
        "points_redeemed": total_redeemed,
        "points_expired": sum(expired.values()),
        "points_outstanding": outstanding,
        "redemption_rate_pct": str((Decimal(100) * total_redeemed / whole).quantize(
            Decimal("0.1")) if whole else Decimal("0.0")),
        "members": len(balances),
        "average_points_per_member": str((Decimal(sum(balances)) / len(balances)).quantize(
            CENT) if balances else Decimal("0.00")),
        "cost_per_point": str(cost_per_point),
        "cost_of_points_issued": str((cost_per_point * total_issued).quantize(CENT)),
        "value_redeemed": str(value_redeemed.quantize(CENT)),
        "popular_reward_types": [[k, v] for k, v in popular.most_common()],
    }


# ---------------------------------------------------------------------------- the overview page
# Definitions shown beside each chart (the pages translate the keys); kept here so the page,
# the docs and the tests name the same thing.
DEFINITIONS = ("issued", "redeemed", "rate", "average", "cost", "popular", "visits", "expiring")
EXPIRING_DAYS = (30, 60, 90)
VISIT_BUCKETS = rollup.VISIT_BUCKETS
bucket_of = rollup.bucket_of
DEFAULT_MONTHS = 6


def default_period(tz: ZoneInfo, now: datetime) -> tuple[str, str]:
    """The overview's period when none is asked: the last six site months, this one
    included (the rollup job keeps its visit groups ready)."""
    this = now.astimezone(tz)
    y, m = this.year, this.month - (DEFAULT_MONTHS - 1)
    if m <= 0:
        y, m = y - 1, m + 12
    return f"{y:04d}-{m:02d}", this.strftime("%Y-%m")


def month_range(first: str, last: str) -> list[str]:
    """'2026-01', '2026-03' -> ['2026-01', '2026-02', '2026-03'] (empty if last < first)."""
    y, m = (int(x) for x in first.split("-"))
    ly, lm = (int(x) for x in last.split("-"))
    out: list[str] = []
    while (y, m) <= (ly, lm) and len(out) < 120:
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def month_bounds(tz: ZoneInfo, first: str, last: str) -> tuple[datetime, datetime]:
    """The instants [start of ``first``, start of the month after ``last``) in the site's zone."""
    y, m = (int(x) for x in first.split("-"))
    start = datetime(y, m, 1, tzinfo=tz)
    ly, lm = (int(x) for x in last.split("-"))
    ly, lm = (ly + 1, 1) if lm == 12 else (ly, lm + 1)
    return start.astimezone(UTC), datetime(ly, lm, 1, tzinfo=tz).astimezone(UTC)


def visit_days(s: Session, rules: RuleBundle, lo: datetime, hi: datetime) -> dict[str, int]:
    """Member -> site-local days in [lo, hi) with a parking or purchase accrual (a visit).
    PostgreSQL counts them itself (``timezone()``); SQLite (the trial store) in Python."""
    cond = ((PointsEntry.kind == "points_earned") & (PointsEntry.at >= lo)
            & (PointsEntry.at < hi)
            & ((PointsLot.source.is_(None)) | (PointsLot.source != "adjustment")))
    bind = s.get_bind()
    if bind.dialect.name == "postgresql":
        day = func.date(func.timezone(str(rules.tz), PointsEntry.at))
        q = (select(PointsEntry.member_id, func.count(func.distinct(day)))
             .join(PointsLot, PointsLot.lot_id == PointsEntry.lot_id, isouter=True)
             .where(cond).group_by(PointsEntry.member_id))
        return {m: int(n) for m, n in s.execute(q)}
    seen: dict[str, set[str]] = {}
    q2 = (select(PointsEntry.member_id, PointsEntry.at)
          .join(PointsLot, PointsLot.lot_id == PointsEntry.lot_id, isouter=True).where(cond))
    for mid, at in s.execute(q2):
        seen.setdefault(mid, set()).add(at.astimezone(rules.tz).strftime("%Y-%m-%d"))
    return {m: len(d) for m, d in seen.items()}


def _source(lot_source: str | None) -> str:
    if lot_source in ("purchase", "campaign", "adjustment"):
        return lot_source
    return "parking"  # the lanes' accruals (sessions), whatever their lot's source name


def overview_raw(s: Session, rules: RuleBundle, cost_per_point: Decimal, first: str, last: str,
             now: datetime) -> dict[str, Any]:
    """``overview`` summed from the raw ledger (no rollups): the reference the rollup
    tests compare with, and the way when too much is not folded yet (before the first
    fold)."""
    tz = rules.tz
    months = month_range(first, last)
    lo, hi = month_bounds(tz, first, last)
    zero = dict.fromkeys(months, 0)
    issued = {k: dict(zero) for k in ("parking", "shop", "campaign", "adjustment")}
    redeemed = {k: dict(zero) for k in ("parking", "rewards")}
    expired = dict(zero)
    # Everything is summed by the database, grouped by a CASE on the site months' UTC
    # bounds (the same SQL on both backends), so a year of entries never comes to Python.
    starts = [month_bounds(tz, m, m)[0] for m in months]

    def month_of(col: Any) -> Any:
        """The month's index, labelled ``mi``: GROUP BY names the label (PostgreSQL would
        not match two copies of a CASE with their own bound parameters)."""
        if len(months) == 1:
            return literal_column("0").label("mi")
        return case(*[(col < starts[i + 1], i) for i in range(len(months) - 1)],
                    else_=len(months) - 1).label("mi")

    e_month = month_of(PointsEntry.at)
    in_period = (PointsEntry.at >= lo) & (PointsEntry.at < hi)
    # accruals that are not purchases, by their lot's source
    q = (select(e_month, PointsLot.source, func.sum(PointsEntry.points))
         .join(PointsLot, PointsLot.lot_id == PointsEntry.lot_id, isouter=True)
         .where(PointsEntry.kind == "points_earned", in_period,
                (PointsLot.source.is_(None)) | (PointsLot.source != "purchase"))
         .group_by(text("mi"), PointsLot.source))
    for i, src, pts in s.execute(q):
        issued[_source(src)][months[i]] += int(pts or 0)
    # purchases: the base (¥ per point of the member's tier, fractions dropped; never more
    # than what was earned, the daily cap) and what campaigns added above it
    ypp = case(*[(Member.tier == t.name, int(t.purchase_yuan_per_point * 100))
                 for t in (rules.tier(n) for n in rules.tier_names)], else_=100)
    raw_base = Purchase.amount / ypp  # cents ÷ cents-per-point: integer division on both
    base = case((raw_base < Purchase.points, raw_base), else_=Purchase.points)
    p_month = month_of(Purchase.at)
    q = (select(p_month, func.sum(Purchase.points), func.sum(base))
         .join(Member, Member.member_id == Purchase.member_id)
         .where(Purchase.at >= lo, Purchase.at < hi, Purchase.points > 0).group_by(text("mi")))
    for i, pts, b in s.execute(q):
        issued["shop"][months[i]] += int(b or 0)
        issued["campaign"][months[i]] += int(pts or 0) - int(b or 0)
    # spending and expiry
    q = (select(e_month, PointsEntry.kind, func.sum(PointsEntry.points))
         .where(PointsEntry.kind.in_(("points_spent", "points_expired")), in_period)
         .group_by(text("mi"), PointsEntry.kind))
    spent = dict(zero)
    for i, kind, pts in s.execute(q):
        if kind == "points_expired":
            expired[months[i]] -= int(pts or 0)
        else:
            spent[months[i]] -= int(pts or 0)
    # redemptions: rewards by kind (a parking-hours reward counts as parking spending);
    # the rest of the spending is the lanes' exit payments
    value = dict.fromkeys(months, Decimal(0))
    popular: Counter[str] = Counter()
    popular_points: Counter[str] = Counter()
    r_month = month_of(Redemption.at)
    q = (select(r_month, Reward.kind, func.count(Redemption.id), func.sum(Redemption.points),
                func.sum(Redemption.value))
         .join(Reward, Reward.reward_id == Redemption.reward_id)
         .where(Redemption.at >= lo, Redemption.at < hi).group_by(text("mi"), Reward.kind))
    for i, kind, n, pts, v in s.execute(q):
        m = months[i]
        value[m] += v if isinstance(v, Decimal) else Decimal(int(v or 0)) / 100
        popular[kind] += int(n)
        popular_points[kind] += int(pts or 0)
        if kind != "parking_hours":
            redeemed["rewards"][m] += int(pts or 0)
    for m in months:
        redeemed["parking"][m] = spent[m] - redeemed["rewards"][m]
    # members who earned in the period, their points and their visit days
    earned_by_member: Counter[str] = Counter(dict(
        (mid, int(p or 0)) for mid, p in s.execute(
            select(PointsEntry.member_id, func.sum(PointsEntry.points))
            .where(PointsEntry.kind == "points_earned", in_period)
            .group_by(PointsEntry.member_id))))
    visits = visit_days(s, rules, lo, hi)
    groups = Groups()
    for mid, e in earned_by_member.items():
        groups.add(visits.get(mid, 0), e)
    ever_issued = int(s.scalar(select(func.coalesce(func.sum(PointsEntry.points), 0)).where(
        PointsEntry.kind == "points_earned", PointsEntry.at < hi)) or 0)
    return _finish(months, Sums(issued, redeemed, expired, value, popular, popular_points),
                   groups, ever_issued, cost_per_point, expiring_raw(s, now), totals_raw(s))


# ------------------------------------------------------------------ shared by both readers
@dataclass
class Sums:
    """The period's per-month series, however they were summed."""

    issued: dict[str, dict[str, int]]
    redeemed: dict[str, dict[str, int]]
    expired: dict[str, int]
    value: dict[str, Decimal]
    popular: Counter[str]
    popular_points: Counter[str]


@dataclass
class Groups:
    """Active members by visit bucket (-1: earned without a visit): [members, points]."""

    by: dict[int, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))

    def add(self, visit_days: int, earned: int, n: int = 1) -> None:
        g = self.by[bucket_of(visit_days)]
        g[0] += n
        g[1] += earned

    def remove(self, visit_days: int, earned: int) -> None:
        self.add(visit_days, -earned, -1)

    @property
    def active(self) -> int:
        return sum(g[0] for g in self.by.values())


def expiring_raw(s: Session, now: datetime) -> dict[str, int]:
    """Points in lots that expire within each of EXPIRING_DAYS of ``now`` (after ``now``,
    at or before ``now`` + days), summed from the lots: the reference for ``expiring``."""
    soon = [func.coalesce(func.sum(case((PointsLot.expires_at <= now + timedelta(days=d),
                                         PointsLot.remaining), else_=0)), 0)
            for d in EXPIRING_DAYS]
    row = s.execute(select(*soon).where(
        PointsLot.remaining > 0, PointsLot.expires_at > now,
        PointsLot.expires_at <= now + timedelta(days=max(EXPIRING_DAYS)))).one()
    return {str(d): int(v or 0) for d, v in zip(EXPIRING_DAYS, row, strict=True)}


def expiring(s: Session, now: datetime) -> dict[str, int]:
    """``expiring_raw`` from the expiry-hour rollup (``lot_expiry_hours``, kept by the
    lots' triggers): the whole hours inside each window from the rollup, the two partial
    hours at its ends (the hour of ``now``, the hour of ``now`` + days) from their lots. One
    statement, so one snapshot on PostgreSQL: the rollup and the lots agree."""
    h0 = rollup.expiry_hour(now)
    ends = [now + timedelta(days=d) for d in EXPIRING_DAYS]
    hd = [rollup.expiry_hour(e) for e in ends]
    ex = LotExpiryHour

    def lots(*cond: Any) -> Any:
        return (select(func.coalesce(func.sum(PointsLot.remaining), 0))
                .where(PointsLot.remaining > 0, *cond).scalar_subquery())

    cols = [lots(PointsLot.expires_at > now,
                 PointsLot.expires_at < rollup.hour_start(h0 + 1))]
    for h, end in zip(hd, ends, strict=True):
        cols.append(select(func.coalesce(func.sum(ex.points), 0))
                    .where(ex.hour > h0, ex.hour < h).scalar_subquery())
        cols.append(lots(PointsLot.expires_at >= rollup.hour_start(h),
                         PointsLot.expires_at <= end))
    row = [int(v or 0) for v in s.execute(select(*cols)).one()]
    return {str(d): row[0] + row[1 + 2 * i] + row[2 + 2 * i]
            for i, d in enumerate(EXPIRING_DAYS)}


def totals_raw(s: Session) -> tuple[int, int]:
    """(members, points held in positive balances), from a scan of the members: the
    reference for ``rollup.member_totals``."""
    n, held = s.execute(select(
        func.count(),
        func.coalesce(func.sum(case((Member.balance > 0, Member.balance), else_=0)), 0))).one()
    return int(n), int(held)


def _finish(months: list[str], sums: Sums, groups: Groups, ever_issued: int,
            cost_per_point: Decimal, soon: dict[str, int],
            totals: tuple[int, int]) -> dict[str, Any]:
    """The page's figures from the period's sums, the members and their balances now
    (``totals``: ``rollup.member_totals`` or ``totals_raw``) and the points about to expire
    (``soon``: ``expiring`` or ``expiring_raw``)."""
    issued, redeemed, value = sums.issued, sums.redeemed, sums.value
    total_issued = sum(sum(v.values()) for v in issued.values())
    total_redeemed = sum(sum(v.values()) for v in redeemed.values())
    members_total, outstanding = totals
    active = groups.active
    buckets = []
    for i, (_lo, _hi, label) in enumerate(VISIT_BUCKETS):
        n, pts = groups.by.get(i, [0, 0])
        buckets.append({"visits": label, "members": n,
                        "avg_points": round(pts / n) if n else 0})
    def pct(a: int, b: int) -> str:
        return str((Decimal(100) * a / b).quantize(Decimal("0.1"))) if b else "0.0"

    return {
        "months": months,
        "issued": {k: [v[m] for m in months] for k, v in issued.items()},
        "redeemed": {k: [v[m] for m in months] for k, v in redeemed.items()},
        "expired": [sums.expired[m] for m in months],
        "points_issued": total_issued,
        "points_redeemed": total_redeemed,
        "redemption_rate_pct": pct(total_redeemed, total_issued),
        "points_outstanding": outstanding,
        "outstanding_share_pct": pct(outstanding, ever_issued),
        "members": members_total,
        "active_members": active,
        "avg_issued_per_active_member": round(total_issued / active) if active else 0,
        "avg_balance_per_member": round(outstanding / members_total) if members_total else 0,
        "cost_per_point": str(cost_per_point),
        "cost_of_points": [str((cost_per_point * sum(issued[k][m] for k in issued))
                               .quantize(CENT)) for m in months],
        "value_redeemed": [str(value[m].quantize(CENT)) for m in months],
        "cost_total": str((cost_per_point * total_issued).quantize(CENT)),
        "value_total": str(sum(value.values(), Decimal(0)).quantize(CENT)),
        "popular": [{"kind": k, "count": n, "points": sums.popular_points[k]}
                    for k, n in sums.popular.most_common()],
        "visits": buckets,
        "expiring": soon,
    }


# ------------------------------------------------------------------ from the rollups
TAIL_MAX = 20_000  # rows past the mark the page sums itself; more: the raw ledger (SQL)


def _next_month(m: str) -> str:
    y, mo = (int(x) for x in m.split("-"))
    return f"{y + 1:04d}-01" if mo == 12 else f"{y:04d}-{mo + 1:02d}"


def overview(s: Session, rules: RuleBundle, cost_per_point: Decimal, first: str, last: str,
             now: datetime) -> dict[str, Any]:
    """The seed's KPIs for the site-local months ``first``..``last`` (YYYY-MM), as series
    the overview page charts. Redemption rate = redeemed ÷ issued within the period (the
    seed's "point redemption rate"); outstanding share = points held now ÷ all points ever
    issued. Read from the daily rollups plus the rows not folded yet (services.rollup), so
    a render reads a few hundred rows a month, not the ledger; equal to ``overview_raw``."""
    months = month_range(first, last)
    marks = rollup.read_marks(s, rules.tz, lock=True)
    if not months or marks is None or rollup.tail_size(s, marks) > TAIL_MAX:
        return overview_raw(s, rules, cost_per_point, first, last, now)
    tail = rollup.read_tail(s, rules, marks)
    lo_day, hi_day = f"{months[0]}-01", f"{_next_month(months[-1])}-01"
    sums: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    fd = FiguresDaily
    q = (select(func.substr(fd.day, 1, 7).label("mo"), fd.kind, fd.key, func.sum(fd.points),
                func.sum(fd.n), func.sum(fd.value_cents))
         .where(fd.day >= lo_day, fd.day < hi_day).group_by(text("mo"), fd.kind, fd.key))
    for mo, kind, key, pts, n, v in s.execute(q):
        row = sums[(mo, kind, key)]
        row[0], row[1], row[2] = row[0] + int(pts), row[1] + int(n), row[2] + int(v)
    for (d, kind, key), (pts, n, v) in tail.daily.items():
        if lo_day <= d < hi_day:
            row = sums[(d[:7], kind, key)]
            row[0], row[1], row[2] = row[0] + pts, row[1] + n, row[2] + v
    out = _series(months, sums)
    ever_issued = int(s.scalar(select(func.coalesce(func.sum(fd.points), 0)).where(
        fd.kind == "points_earned", fd.day < hi_day)) or 0)
    ever_issued += sum(v[0] for (d, kind, _k), v in tail.daily.items()
                       if kind == "points_earned" and d < hi_day)
    groups = _groups(s, months, tail, lo_day, hi_day, now)
    return _finish(months, out, groups, ever_issued, cost_per_point, expiring(s, now),
                   rollup.member_totals(s))


def _series(months: list[str], sums: dict[tuple[str, str, str], list[int]]) -> Sums:
    zero = dict.fromkeys(months, 0)
    out = Sums({k: dict(zero) for k in ("parking", "shop", "campaign", "adjustment")},
               {k: dict(zero) for k in ("parking", "rewards")}, dict(zero),
               dict.fromkeys(months, Decimal(0)), Counter(), Counter())
    spent = dict(zero)
    for (m, kind, key), (pts, n, v) in sums.items():
        if kind == "points_earned" and key != "purchase":
            out.issued[_source(key or None)][m] += pts
        elif kind == "purchase":
            sign = 1 if key == "points" else -1  # campaign = points - base
            out.issued["campaign"][m] += sign * pts
            if key == "base":
                out.issued["shop"][m] += pts
        elif kind == "points_spent":
            spent[m] -= pts
        elif kind == "points_expired":
            out.expired[m] -= pts
        elif kind == "redemption":
            out.value[m] += Decimal(v) / 100
            out.popular[key] += n
            out.popular_points[key] += pts
            if key != "parking_hours":
                out.redeemed["rewards"][m] += pts
    for m in months:
        out.redeemed["parking"][m] = spent[m] - out.redeemed["rewards"][m]
    return out


def _groups(s: Session, months: list[str], tail: rollup.Tail, lo_day: str, hi_day: str,
            now: datetime) -> Groups:
    """Active members by visit bucket: the period's kept groups (rollup.period_groups),
    then the tail's members moved to their new bucket. On PostgreSQL the tail's members go
    as one array parameter (``= ANY``), not a list of thousands of bound parameters that
    SQLAlchemy and psycopg each rewrite (~50 ms for 1,000 members)."""
    groups = Groups()
    for b, (n, pts) in rollup.period_groups(s, months[0], months[-1], now).items():
        groups.by[b] = [n, pts]
    days: dict[str, dict[str, list[int]]] = defaultdict(dict)
    for (mid, d), ev in tail.member_days.items():
        if lo_day <= d < hi_day:
            days[mid][d] = ev
    if not days:
        return groups
    who = sorted(days)
    pg = s.get_bind().dialect.name == "postgresql"

    def among(col: Any) -> Any:
        if pg:
            return col == func.any(bindparam("who", who, type_=ARRAY(String)))
        return col.in_(who)

    # their folded days in the period: the month sums (member_months = these days summed)
    # and the days already counted as visits, in one read
    before: dict[str, tuple[int, int]] = {}
    seen: set[tuple[str, str]] = set()
    for mid, d, e, v in s.execute(
            select(MemberDay.member_id, MemberDay.day, MemberDay.earned, MemberDay.visits)
            .where(among(MemberDay.member_id), MemberDay.day >= lo_day,
                   MemberDay.day < hi_day)):
        e0, v0 = before.get(mid, (0, 0))
        before[mid] = (e0 + int(e), v0 + (1 if v > 0 else 0))
        if v > 0:
            seen.add((mid, d))
    for mid in who:
        e, v = before.get(mid, (0, 0))
        if mid in before:
            groups.remove(v, e)
        e += sum(x[0] for x in days[mid].values())
        v += sum(1 for d, x in days[mid].items() if x[1] > 0 and (mid, d) not in seen)
        groups.add(v, e)
    return groups
