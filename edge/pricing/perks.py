"""Monthly tier perks (seed: gold members get two free 3-hour coupons a month).

The engine only says which coupons a member is entitled to for a month, with stable ids so
issuing them twice is harmless; the store/central side records them.
"""

from __future__ import annotations

from datetime import date, datetime

from edge.pricing.bundle import RuleBundle
from edge.pricing.calendar import add_months, local_instant
from edge.pricing.checks import MAX_INSTANT, MIN_INSTANT
from edge.pricing.types import Coupon


def monthly_perk_coupons(rules: RuleBundle, tier: str, member_id: str, month: date
                         ) -> tuple[Coupon, ...]:
    """Coupons ``tier`` earns for ``month`` (valid until the month's end, site time)."""
    if not isinstance(month, date) or not MIN_INSTANT.year <= month.year < MAX_INSTANT.year:
        raise ValueError(f"month must be a date in {MIN_INSTANT.year}..{MAX_INSTANT.year - 1}, "
                         f"got {month!r}")
    t = rules.tiers.get(tier)
    if t is None:
        return ()
    first = date(month.year, month.month, 1)
    until: datetime = local_instant(add_months(first, 1), 0, rules.tz)
    out: list[Coupon] = []
    for i, (kind, value, count) in enumerate(t.monthly_coupons):
        for n in range(count):
            cid = f"perk:{member_id}:{first:%Y-%m}:{i}:{n}"
            out.append(Coupon(cid, kind, value, until))  # type: ignore[arg-type]
    return tuple(out)
