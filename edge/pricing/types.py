"""Plain values the engine takes and returns.

Frozen dataclasses, not pydantic: they are built on every exit and in the simulator's hot
loop, and the lane and the store construct them from their own rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

CouponKind = Literal["hours", "amount", "free"]
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class PointsLot:
    """Points earned together, spendable until ``expires_at`` (exclusive; None = never)."""

    lot_id: str
    points: int
    expires_at: datetime | None
    earned_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Coupon:
    """A parking coupon: ``hours`` off the stay, an ``amount`` in yuan off, or ``free``."""

    coupon_id: str
    kind: CouponKind
    value: Decimal
    valid_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class SessionInput:
    """One stay as the lane saw it. ``entered=None`` means no entry record."""

    entered: datetime | None
    exited: datetime
    vehicle_class: str = "small"
    plate: str = ""
    lane_id: str = ""
    paid_at: datetime | None = None
    paid_amount: Decimal = ZERO
    previous_exit: datetime | None = None


@dataclass(frozen=True, slots=True)
class MemberSnapshot:
    """What the ledger knows about a member at the quote time (the engine never looks it up)."""

    member_id: str
    tier: str
    lots: tuple[PointsLot, ...]
    coupons: tuple[Coupon, ...] = ()
    redeemed_this_month_value: Decimal = ZERO
    redeemed_today_points: int = 0
    earned_today: int = 0
    auto_deduct: bool = True
    blocked: bool = False


@dataclass(frozen=True, slots=True)
class DiscountLine:
    """One deduction: a coupon (ref = coupon_id) or points from one lot (ref = lot_id)."""

    kind: Literal["coupon", "points"]
    ref: str
    points: int
    amount: Decimal

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "ref": self.ref,
            "points": self.points,
            "amount": str(self.amount),
        }


@dataclass(frozen=True, slots=True)
class PurchaseEarn:
    """Points one purchase earns and every rule that decided it."""

    points: int
    rules_fired: tuple[str, ...]
    explain_en: tuple[str, ...]
    explain_zh: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "points": self.points,
            "rules_fired": list(self.rules_fired),
            "explain_en": list(self.explain_en),
            "explain_zh": list(self.explain_zh),
        }


@dataclass(frozen=True)
class Quote:
    """Everything decided for one exit; what the display, receipt and dispute desk show."""

    fee: Decimal
    discounts: tuple[DiscountLine, ...]
    points_deducted: int
    lots_used: tuple[tuple[str, int], ...]
    coupons_used: tuple[str, ...]
    payable: Decimal
    points_earned: int
    earned_expires_at: datetime | None
    earned_rules: tuple[str, ...]
    balance_before: int
    balance_after: int
    duration_minutes: int
    rules_version: str
    flags: tuple[str, ...]
    explain_en: tuple[str, ...] = ()
    explain_zh: tuple[str, ...] = ()
    prepaid: Decimal = ZERO
    vehicle_class: str = "small"
    is_member: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def discount_total(self) -> Decimal:
        return sum((d.amount for d in self.discounts), ZERO)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: money as decimal strings, points as ints, times ISO 8601."""
        return {
            "fee": str(self.fee),
            "discounts": [d.to_json() for d in self.discounts],
            "points_deducted": self.points_deducted,
            "lots_used": [[lot, pts] for lot, pts in self.lots_used],
            "coupons_used": list(self.coupons_used),
            "prepaid": str(self.prepaid),
            "payable": str(self.payable),
            "points_earned": self.points_earned,
            "earned_expires_at": (
                self.earned_expires_at.isoformat() if self.earned_expires_at else None
            ),
            "earned_rules": list(self.earned_rules),
            "balance_before": self.balance_before,
            "balance_after": self.balance_after,
            "duration_minutes": self.duration_minutes,
            "vehicle_class": self.vehicle_class,
            "rules_version": self.rules_version,
            "flags": list(self.flags),
            "explain": list(self.explain_zh),
            "explain_en": list(self.explain_en),
            "explain_zh": list(self.explain_zh),
        }

    def display_lines_zh(self) -> list[str]:
        """At most 4 lines of at most 16 display columns for the lane LED board."""
        from edge.pricing.explain import display_lines_zh

        return display_lines_zh(self)
