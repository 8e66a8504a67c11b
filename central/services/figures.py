"""The marketing figures of the seed, from central's points ledger, by the SITE's month.

Points issued / redeemed / expired per month (site time zone), redemption rate, average
points per member, cost of points issued (the cost per point is a setting), value redeemed,
most popular reward types, purchases per month.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from central.db.models import Member, PointsEntry, Purchase, Redemption, Reward

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
