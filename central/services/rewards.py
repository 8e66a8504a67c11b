"""The reward catalogue and redemptions, within the bundle's monthly redemption cap.

A redemption spends points from lots (soonest-expiring first), counts its yuan value against
the member's cap for the site-local month (seed: ¥200), and turns a parking or discount
reward into a coupon the lanes take at the exit. The member's redemption key makes a retry
harmless.

A reward may be limited to some tiers (``tiers``, NULL: every tier) and, when physical
(merchandise, experiences), have a ``stock``: a redemption takes one with a single
conditional ``UPDATE ... SET stock = stock - 1 WHERE stock > 0``, so concurrent redemptions
of the last one cannot both succeed and the stock never goes below 0 (a CHECK says so too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from central.db.models import Coupon, Member, Redemption, Reward
from central.services.errors import Forbidden, Invalid, NotFound, Refused
from central.services.points import lock_member, spend
from edge.fields import FieldError, check_id
from edge.pricing import RuleBundle

KINDS = ("parking_hours", "discount", "merchandise", "experience")
STOCKED = ("merchandise", "experience")  # physical: they may have a stock
COUPON_DAYS = 90
MAX_STOCK = 1_000_000


def tiers_of(r: Reward) -> list[str] | None:
    """The tiers that may redeem ``r``, or None for every tier."""
    return None if r.tiers is None else list(json.loads(r.tiers))


def reward_json(r: Reward) -> dict[str, Any]:
    return {"reward_id": r.reward_id, "kind": r.kind, "name": r.name, "points": r.points,
            "value": str(r.value), "hours": r.hours, "active": r.active,
            "tiers": tiers_of(r), "category": r.category, "stock": r.stock}


def _check_extra(kind: str, tiers: list[str] | None, category: str | None,
                 stock: int | None, known_tiers: tuple[str, ...] | None) -> None:
    if tiers is not None:
        if not tiers:
            raise Invalid("tiers", "name at least one tier, or none for every tier")
        unknown = [t for t in tiers if known_tiers is not None and t not in known_tiers]
        if unknown:
            raise Invalid("tiers", f"unknown tier {unknown[0]!r}")
    if category is not None and not (1 <= len(category) <= 32 and category.isprintable()):
        raise Invalid("category", "1..32 printable characters")
    if stock is not None:
        if kind not in STOCKED:
            raise Invalid("stock", "only merchandise and experiences have a stock")
        if not 0 <= stock <= MAX_STOCK:
            raise Invalid("stock", f"must be 0..{MAX_STOCK}")


def put_reward(s: Session, *, reward_id: str, kind: str, name: str, points: int,
               value: Decimal, hours: int | None = None, active: bool = True,
               tiers: list[str] | None = None, category: str | None = None,
               stock: int | None = None, known_tiers: tuple[str, ...] | None = None
               ) -> Reward:
    """Create or replace a catalogue entry (redemptions keep their own points and value).
    ``tiers`` None: every tier may redeem; ``stock`` None: no limit."""
    try:
        check_id(reward_id, "reward_id")
    except FieldError as exc:
        raise Invalid("reward_id", str(exc).removeprefix("reward_id: ")) from None
    if kind not in KINDS:
        raise Invalid("kind", f"must be one of {', '.join(KINDS)}")
    if not 0 < points <= 10_000_000:
        raise Invalid("points", "must be 1..10000000")
    if not value.is_finite() or value < 0 or value > 100_000 or value != value.quantize(
            Decimal("0.01")):
        raise Invalid("value", "yuan, 0..100000 with at most 2 decimals")
    if (kind == "parking_hours") != (hours is not None):
        raise Invalid("hours", "required for parking_hours rewards, and only for them")
    if hours is not None and not 1 <= hours <= 72:
        raise Invalid("hours", "must be 1..72")
    if not name.strip() or len(name) > 200:
        raise Invalid("name", "1..200 characters")
    _check_extra(kind, tiers, category, stock, known_tiers)
    r = s.get(Reward, reward_id)
    if r is None:
        r = Reward(reward_id=reward_id)
        s.add(r)
    r.kind, r.name, r.points, r.value, r.hours, r.active = kind, name, points, value, hours, \
        active
    r.tiers = None if tiers is None else json.dumps(sorted(set(tiers)))
    r.category, r.stock = category, stock
    return r


def take_one(s: Session, reward_id: str) -> None:
    """One of a stocked reward, atomically (409 when none is left); no-op if unlimited."""
    res = s.execute(update(Reward).where(Reward.reward_id == reward_id,
                                         Reward.stock.is_not(None), Reward.stock > 0)
                    .values(stock=Reward.stock - 1).execution_options(
                        synchronize_session=False))
    if getattr(res, "rowcount", 0) == 1:
        return
    left = s.scalar(select(Reward.stock).where(Reward.reward_id == reward_id))
    if left is not None:
        raise Refused("reward_id", f"{reward_id!r} is out of stock")


def month_of(rules: RuleBundle, at: datetime) -> str:
    return at.astimezone(rules.tz).strftime("%Y-%m")


def redeemed_value(s: Session, member_id: str, month: str) -> Decimal:
    v = s.scalar(select(func.sum(Redemption.value)).where(
        Redemption.member_id == member_id, Redemption.month == month))
    return v if isinstance(v, Decimal) else Decimal("0.00")  # SUM keeps the Cents type


def catalogue_for(s: Session, rules: RuleBundle, member_id: str, spendable: int,
                  now: datetime) -> dict[str, Any]:
    """The active rewards a member's tier may redeem, each saying whether it can be redeemed
    now and, if not, why (points short, the monthly cap, out of stock): the cap shown where
    it bites."""
    m = s.get(Member, member_id)
    if m is None:
        raise NotFound("member_id", f"unknown member {member_id!r}")
    month = month_of(rules, now)
    cap = rules.monthly_cap_value
    used = redeemed_value(s, member_id, month)
    left = None if cap is None else max(cap - used, Decimal("0.00"))
    out = []
    for r in s.scalars(select(Reward).where(Reward.active.is_(True))
                       .order_by(Reward.points, Reward.reward_id)):
        allowed = tiers_of(r)
        if allowed is not None and m.tier not in allowed:
            continue
        why = ("out_of_stock" if r.stock == 0 else
               "monthly_cap" if left is not None and r.value > left else
               "points" if r.points > spendable else None)
        out.append({**reward_json(r), "redeemable": why is None, "why_not": why})
    return {"month": month, "cap": None if cap is None else str(cap), "redeemed": str(used),
            "cap_left": None if left is None else str(left), "rewards": out}


@dataclass(frozen=True)
class RedeemResult:
    redemption_id: int
    points: int
    value: Decimal
    coupon_id: str | None
    replayed: bool


def redeem(s: Session, rules: RuleBundle, *, member_id: str, reward_id: str,
           redemption_key: str, now: datetime) -> RedeemResult:
    try:
        check_id(redemption_key, "redemption_key")
    except FieldError as exc:
        raise Invalid("redemption_key", str(exc).removeprefix("redemption_key: ")) from None
    m = lock_member(s, member_id)
    old = s.scalar(select(Redemption).where(Redemption.redemption_key == redemption_key))
    if old is not None:
        if old.member_id != member_id or old.reward_id != reward_id:
            raise Refused("redemption_key", "already used for another redemption")
        return RedeemResult(old.id, old.points, old.value, old.coupon_id, True)
    r = s.get(Reward, reward_id)
    if r is None or not r.active:
        raise NotFound("reward_id", f"unknown reward {reward_id!r}")
    if m.blocked:
        raise Refused("member_id", "the account is blocked")
    allowed = tiers_of(r)
    if allowed is not None and m.tier not in allowed:
        raise Forbidden("reward_id", f"for tiers {', '.join(allowed)}; the member is "
                                     f"{m.tier}")
    month = month_of(rules, now)
    cap = rules.monthly_cap_value
    if cap is not None:
        used = redeemed_value(s, member_id, month)
        if used + r.value > cap:
            raise Refused("reward_id", f"monthly redemption cap ¥{cap}: ¥{used} redeemed in "
                                       f"{month}, this reward is worth ¥{r.value}")
    take_one(s, reward_id)
    spend(s, m, r.points, now, kind="points_spent", ref=f"redemption:{redemption_key}",
          field="reward_id")
    coupon_id = None
    if r.kind in ("parking_hours", "discount"):
        coupon_id = f"redeem:{redemption_key}"
        s.add(Coupon(coupon_id=coupon_id, member_id=member_id,
                     kind="hours" if r.kind == "parking_hours" else "amount",
                     value=str(r.hours) if r.kind == "parking_hours" else str(r.value),
                     valid_until=now + timedelta(days=COUPON_DAYS), source="redemption",
                     issued_at=now))
    rec = Redemption(redemption_key=redemption_key, member_id=member_id, reward_id=reward_id,
                     points=r.points, value=r.value, at=now, month=month, coupon_id=coupon_id)
    s.add(rec)
    s.flush()
    return RedeemResult(rec.id, r.points, r.value, coupon_id, False)
