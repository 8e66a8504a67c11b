"""The marketing figures of the seed document, computed from central's committed ledger.

Points issued per month, redemption rate, average points per member, cost of points issued
vs value redeemed, most popular reward types, visit frequency vs points accumulated. Months
are UTC calendar months of the entry time (the site time zone is a TODO). Served by the
marketing page (``/api/figures``) and printed by ``python -m parkedge_sim.central --json``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from edge.sync.codec import points_delta
from parkedge_sim.central.db import CentralDB, entries, members, purchases, redemptions

_VISIT_BUCKETS = ((1, 1, "1"), (2, 3, "2-3"), (4, 9, "4-9"), (10, 10**9, "10+"))


def figures(db: CentralDB, *, point_cost: Decimal = Decimal("0.05")) -> dict[str, Any]:
    """All figures as JSON-ready values (money and rates as strings).

    ``redemption_rate_pct`` = 100 x redeemed / (redeemed + outstanding): of all the points
    members ever had to spend, the share they spent. *Redeemed* = points spent at the lanes
    (net of points returned by corrections) plus points spent on catalogue rewards;
    *outstanding* = the sum of the positive balances now. It is always 0-100, and equals
    redeemed / issued when every point came from the ledger or the POS and no account is
    overdrawn; opening balances given to members (``add_member(balance=)``) count as points
    they had, which a ratio to *issued* points alone would not see (it could exceed 100 %).
    """
    issued: Counter[str] = Counter()
    redeemed: Counter[str] = Counter()
    value_redeemed = Decimal(0)
    rewards: Counter[str] = Counter()
    visits: Counter[str] = Counter()
    earned_by: Counter[str] = Counter()
    redeemed_catalogue = 0
    value_catalogue = Decimal(0)
    parking_hours = Decimal(0)
    with db.engine.connect() as c:
        for kind, at, mid, payload in c.execute(select(
                entries.c.kind, entries.c.at, entries.c.member_id, entries.c.payload).where(
                entries.c.kind.in_(("points_earned", "points_deducted", "coupon_used",
                                    "session_closed", "correction")))):
            p = json.loads(payload)
            month = str(at)[:7]
            pts = points_delta(kind, p)
            if kind == "points_earned" or (kind == "correction"
                                           and p.get("action") == "earned_revoked"):
                issued[month] += pts
                if mid:
                    earned_by[mid] += pts
            elif kind == "points_deducted" or (kind == "correction"
                                             and p.get("action") == "points_returned"):
                redeemed[month] -= pts
                sign = 1 if kind == "points_deducted" else -1
                value_redeemed += sign * Decimal(str(p.get("value", "0")))
                if kind == "points_deducted":
                    rewards["parking_time"] += 1
            elif kind == "coupon_used":
                rewards[f"coupon:{p.get('kind', 'unknown')}"] += 1
            elif kind == "session_closed" and mid:
                visits[mid] += 1
        for at, mid, pts in c.execute(select(purchases.c.at, purchases.c.member_id,
                                             purchases.c.points)):
            issued[str(at)[:7]] += int(pts)
            earned_by[mid] += int(pts)
        for kind, pts, value in c.execute(select(redemptions.c.kind, redemptions.c.points,
                                                 redemptions.c.value)):
            rewards[kind] += 1
            redeemed_catalogue += int(pts)
            if kind == "parking_hours":
                parking_hours += Decimal(value)
            else:  # discount, merchandise, experience: valued in yuan
                value_catalogue += Decimal(value)
        balances = [int(b) for b in c.execute(select(members.c.balance)).scalars()]
    total_issued, total_redeemed = sum(issued.values()), sum(redeemed.values())
    spent = total_redeemed + redeemed_catalogue
    outstanding = sum(b for b in balances if b > 0)
    buckets: dict[str, list[int]] = defaultdict(list)
    for mid, n in visits.items():
        for lo, hi, name in _VISIT_BUCKETS:
            if lo <= n <= hi:
                buckets[name].append(earned_by.get(mid, 0))
    return {
        "points_issued_per_month": dict(sorted(issued.items())),
        "points_redeemed_per_month": dict(sorted(redeemed.items())),
        "points_issued": total_issued,
        "points_redeemed": total_redeemed,
        "points_redeemed_catalogue": redeemed_catalogue,
        "points_outstanding": outstanding,
        "redemption_rate_pct": _pct(max(spent, 0), max(spent, 0) + outstanding),
        "members": len(balances),
        "average_points_per_member": str((Decimal(sum(balances)) / len(balances))
                                         .quantize(Decimal("0.01")) if balances else Decimal(0)),
        "cost_of_points_issued": str((point_cost * total_issued).quantize(Decimal("0.01"))),
        "value_redeemed": str((value_redeemed + value_catalogue).quantize(Decimal("0.01"))),
        "value_redeemed_parking_points": str(value_redeemed.quantize(Decimal("0.01"))),
        "value_redeemed_catalogue": str(value_catalogue.quantize(Decimal("0.01"))),
        "parking_hours_redeemed": str(parking_hours),
        "popular_reward_types": [[k, v] for k, v in rewards.most_common()],
        "visits_vs_points": {name: {"members": len(v), "avg_points": str(
            (Decimal(sum(v)) / len(v)).quantize(Decimal("0.1")))}
            for _lo, _hi, name in _VISIT_BUCKETS if (v := buckets.get(name))},
    }


def _pct(part: int, whole: int) -> str:
    return str((Decimal(100) * part / whole).quantize(Decimal("0.1")) if whole else Decimal(0))


def history(db: CentralDB, member_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """A member's committed transactions, newest first: ledger entries from the lanes, POS
    purchases and catalogue redemptions; ``points`` is the signed effect on the balance
    (None for entries that move no points)."""
    out: list[dict[str, Any]] = []
    with db.engine.connect() as c:
        for eid, kind, at, payload in c.execute(
                select(entries.c.entry_id, entries.c.kind, entries.c.at, entries.c.payload)
                .where(entries.c.member_id == member_id).order_by(entries.c.id.desc())
                .limit(limit)):
            p = json.loads(payload)
            out.append({"id": eid, "kind": kind, "at": at,
                        "points": points_delta(kind, p) or None})
        for pid, at, amount, pts in c.execute(
                select(purchases.c.purchase_id, purchases.c.at, purchases.c.amount,
                       purchases.c.points).where(purchases.c.member_id == member_id)
                .order_by(purchases.c.at.desc()).limit(limit)):
            out.append({"id": pid, "kind": "purchase", "at": at, "points": int(pts),
                        "amount": amount})
        for rid, at, kind, pts, value in c.execute(
                select(redemptions.c.redemption_id, redemptions.c.at, redemptions.c.kind,
                       redemptions.c.points, redemptions.c.value)
                .where(redemptions.c.member_id == member_id)
                .order_by(redemptions.c.at.desc()).limit(limit)):
            out.append({"id": rid, "kind": f"redeemed {kind}", "at": at, "points": -int(pts),
                        "value": value})
    out.sort(key=lambda r: datetime.fromisoformat(str(r["at"])), reverse=True)
    return out[:limit]
