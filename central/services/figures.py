"""The marketing figures of the seed, from central's points ledger, by the SITE's month.

Points issued / redeemed / expired per month (site time zone), redemption rate, average
points per member, cost of points issued (the cost per point is a setting), value redeemed,
most popular reward types, purchases per month.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, literal_column, select, text
from sqlalchemy.orm import Session

from central.db.models import Member, PointsEntry, PointsLot, Purchase, Redemption, Reward
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
VISIT_BUCKETS = ((1, 2, "1-2"), (3, 5, "3-5"), (6, 10, "6-10"), (11, 20, "11-20"),
                 (21, 10**9, "21+"))


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


def overview(s: Session, rules: RuleBundle, cost_per_point: Decimal, first: str, last: str,
             now: datetime) -> dict[str, Any]:
    """The seed's KPIs for the site-local months ``first``..``last`` (YYYY-MM), as series
    the overview page charts. Redemption rate = redeemed ÷ issued within the period (the
    seed's "point redemption rate"); outstanding share = points held now ÷ all points ever
    issued."""
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
    total_issued = sum(sum(v.values()) for v in issued.values())
    total_redeemed = sum(sum(v.values()) for v in redeemed.values())
    ever_issued = int(s.scalar(select(func.coalesce(func.sum(PointsEntry.points), 0)).where(
        PointsEntry.kind == "points_earned", PointsEntry.at < hi)) or 0)
    outstanding = int(s.scalar(select(func.coalesce(func.sum(Member.balance), 0)).where(
        Member.balance > 0)) or 0)
    members_total = int(s.scalar(select(func.count()).select_from(Member)) or 0)
    active = len(earned_by_member)

    buckets = []
    for lo_v, hi_v, label in VISIT_BUCKETS:
        who = [m for m, n in visits.items() if lo_v <= n <= hi_v]
        pts = sum(earned_by_member[m] for m in who)
        buckets.append({"visits": label, "members": len(who),
                        "avg_points": round(pts / len(who)) if who else 0})

    expiring = {}
    for days in EXPIRING_DAYS:
        expiring[str(days)] = int(s.scalar(
            select(func.coalesce(func.sum(PointsLot.remaining), 0)).where(
                PointsLot.remaining > 0, PointsLot.expires_at > now,
                PointsLot.expires_at <= now + timedelta(days=days))) or 0)

    def pct(a: int, b: int) -> str:
        return str((Decimal(100) * a / b).quantize(Decimal("0.1"))) if b else "0.0"

    return {
        "months": months,
        "issued": {k: [v[m] for m in months] for k, v in issued.items()},
        "redeemed": {k: [v[m] for m in months] for k, v in redeemed.items()},
        "expired": [expired[m] for m in months],
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
        "popular": [{"kind": k, "count": n, "points": popular_points[k]}
                    for k, n in popular.most_common()],
        "visits": buckets,
        "expiring": expiring,
    }
