"""POS purchases: the seed's earning rules through ``edge.pricing.earn_for_purchase``, one
lot per purchase, and an idempotency key per shop so a retried POST earns once.

The shop's category (dining, retail ...) comes from the shop's record, not the request, so
a till cannot claim the dining bonus. The daily cap counts every point earned on the
purchase's local day (site time zone), whatever the source.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from central.db.models import PointsEntry, PointsLot, Purchase, Shop
from central.services.errors import Forbidden, Invalid, NotFound, Refused
from central.services.passwords import digest
from central.services.points import accrue, lock_member
from edge.fields import FieldError, check_id
from edge.pricing import MemberSnapshot, RuleBundle, earn_for_purchase
from edge.pricing.calendar import local_instant

CATEGORIES = ("retail", "dining", "entertainment", "services", "other")


@dataclass(frozen=True)
class PurchaseIn:
    shop_id: str
    idempotency_key: str
    member_id: str
    amount: Decimal
    at: datetime
    brand: str | None = None

    def digest(self) -> str:
        body = {"shop_id": self.shop_id, "idempotency_key": self.idempotency_key,
                "member_id": self.member_id, "amount": str(self.amount),
                "at": self.at.isoformat(), "brand": self.brand}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class PurchaseResult:
    purchase_id: int
    points: int
    rules_fired: tuple[str, ...]
    expires_at: datetime | None
    replayed: bool


@dataclass(frozen=True)
class PosLimits:
    max_age_days: int = 35
    future_minutes: int = 10
    max_amount: Decimal = Decimal("1000000")


def add_shop(s: Session, shop_id: str, name: str, category: str) -> str:
    """Register a shop; returns its API key (shown once, only its digest is kept)."""
    try:
        check_id(shop_id, "shop_id")
    except FieldError as exc:
        raise Invalid("shop_id", str(exc).removeprefix("shop_id: ")) from None
    if category not in CATEGORIES:
        raise Invalid("category", f"must be one of {', '.join(CATEGORIES)}")
    if s.get(Shop, shop_id) is not None:
        raise Refused("shop_id", f"shop {shop_id!r} exists")
    key = "pos_" + secrets.token_urlsafe(32)
    s.add(Shop(shop_id=shop_id, name=name, category=category, api_key_hash=digest(key),
               active=True))
    return key


def shop_for_key(s: Session, api_key: str) -> Shop | None:
    shop = s.scalar(select(Shop).where(Shop.api_key_hash == digest(api_key)))
    return shop if shop is not None and shop.active else None


def validate(p: PurchaseIn, now: datetime, limits: PosLimits) -> None:
    """Range checks a type system cannot do; each names its field."""
    if not p.amount.is_finite():
        raise Invalid("amount", "must be a finite number")
    if p.amount <= 0:
        raise Invalid("amount", "must be > 0")
    if p.amount > limits.max_amount:
        raise Invalid("amount", f"at most {limits.max_amount}")
    if p.amount != p.amount.quantize(Decimal("0.01")):
        raise Invalid("amount", "at most 2 decimals")
    if p.at.tzinfo is None:
        raise Invalid("at", "must carry a UTC offset")
    if p.at > now + timedelta(minutes=limits.future_minutes):
        raise Invalid("at", "is in the future")
    if p.at < now - timedelta(days=limits.max_age_days):
        raise Invalid("at", f"is more than {limits.max_age_days} days old")
    for name, v in (("idempotency_key", p.idempotency_key), ("member_id", p.member_id),
                    ("shop_id", p.shop_id)):
        try:
            check_id(v, name)
        except FieldError as exc:
            raise Invalid(name, str(exc).removeprefix(f"{name}: ")) from None
    if p.brand is not None and not 1 <= len(p.brand) <= 64:
        raise Invalid("brand", "1..64 characters")


def earned_on_day(s: Session, rules: RuleBundle, member_id: str, when: datetime) -> int:
    day = when.astimezone(rules.tz).date()
    start = local_instant(day, 0, rules.tz)
    end = local_instant(day + timedelta(days=1), 0, rules.tz)
    q = select(func.coalesce(func.sum(PointsEntry.points), 0)).where(
        PointsEntry.member_id == member_id, PointsEntry.kind == "points_earned",
        PointsEntry.at >= start, PointsEntry.at < end)
    return int(s.scalar(q) or 0)


def record_purchase(s: Session, rules: RuleBundle, p: PurchaseIn, now: datetime, *,
                    shop: Shop | None = None, limits: PosLimits = PosLimits()
                    ) -> PurchaseResult:
    """Record one purchase and its points, or return the first recording of the same key.

    ``shop`` is the shop the API key belongs to (None from the CLI/batch import, where the
    row's shop_id is trusted). The same key with different content is refused."""
    validate(p, now, limits)
    row = s.get(Shop, p.shop_id)
    if row is None or not row.active:
        raise NotFound("shop_id", f"unknown shop {p.shop_id!r}")
    if shop is not None and shop.shop_id != p.shop_id:
        raise Forbidden("shop_id", "this API key belongs to another shop")
    m = lock_member(s, p.member_id)  # serialises retries of one key behind the first
    old = s.scalar(select(Purchase).where(Purchase.shop_id == p.shop_id,
                                          Purchase.idempotency_key == p.idempotency_key))
    if old is not None:
        if old.request_hash != p.digest():
            raise Refused("idempotency_key", "already used for a different purchase")
        lot_exp = None
        if old.lot_id:
            lot = s.scalar(select(PointsLot).where(PointsLot.lot_id == old.lot_id))
            lot_exp = lot.expires_at if lot else None
        return PurchaseResult(old.id, old.points, tuple(json.loads(old.rules_fired)),
                              lot_exp, True)
    snap = MemberSnapshot(m.member_id, m.tier, (), blocked=m.blocked,
                          earned_today=earned_on_day(s, rules, m.member_id, p.at))
    earn = earn_for_purchase(p.amount, row.category, p.at, snap, rules, brand=p.brand)
    rec = Purchase(shop_id=p.shop_id, idempotency_key=p.idempotency_key,
                   member_id=m.member_id, amount=p.amount, category=row.category,
                   brand=p.brand, at=p.at, points=earn.points,
                   rules_fired=json.dumps(list(earn.rules_fired)), request_hash=p.digest())
    s.add(rec)
    s.flush()
    expires = None
    if earn.points > 0:
        rec.lot_id = f"purchase:{rec.id}"
        lot = accrue(s, rules, m, earn.points, p.at, lot_id=rec.lot_id, source="purchase",
                     ref=f"{p.shop_id}:{p.idempotency_key}")
        expires = lot.expires_at
    return PurchaseResult(rec.id, earn.points, earn.rules_fired, expires, False)
