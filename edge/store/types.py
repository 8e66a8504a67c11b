"""Value types the store hands out: frozen, timezone-aware, Decimal money, int points.

They are plain dataclasses (not ORM rows) so that the lane can keep them after the
transaction that produced them has ended, and so that a caller can never write through one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any


class StoreError(Exception):
    """A request the ledger refuses (unknown session, overspent lot, bad value...).

    Raised before anything is written: the transaction is rolled back as a whole.
    """


class StorageUnavailable(StoreError):
    """The file could not be written durably (disk full, I/O error, read-only, vanished).

    Nothing of the transaction was written. Unlike a refused request it says nothing about
    the request: the same write may succeed once space returns (the lane's retry probe).
    """


class LedgerDamaged(StoreError):
    """The ledger file is damaged or has lost committed entries (start-up check).

    ``problems`` lists what was found, one line each, for the operator.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


class EntryKind(StrEnum):
    SESSION_OPENED = "session_opened"
    SESSION_CLOSED = "session_closed"
    FEE_CHARGED = "fee_charged"
    POINTS_DEDUCTED = "points_deducted"
    POINTS_EARNED = "points_earned"
    COUPON_USED = "coupon_used"
    PAYMENT_RECEIVED = "payment_received"
    MANUAL_OPEN = "manual_open"
    CORRECTION = "correction"
    LANE_EVENT = "lane_event"


@dataclass(frozen=True)
class LedgerEntry:
    """One append-only ledger row, exactly as hashed."""

    pos: int
    entry_id: str
    lane_id: str
    seq: int
    kind: EntryKind
    at: datetime
    recorded: datetime
    session_id: str | None
    member_id: str | None
    plate: str | None
    rules_version: str | None
    payload: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Session:
    """One stay. ``entry_lane`` is None when the vehicle left with no entry record."""

    session_id: str
    plate: str
    entered_at: datetime
    entry_lane: str | None
    vehicle_class: str
    member_id: str | None
    status: str  # "open" | "closed" | "owed"
    exited_at: datetime | None
    exit_lane: str | None
    fee: Decimal | None
    payable: Decimal | None
    paid: Decimal
    points_deducted: int
    points_earned: int
    rules_version: str | None
    exit_event_id: str | None
    entry_event_id: str | None = None
    points_before: int | None = None
    balance_after: int | None = None


@dataclass(frozen=True)
class Member:
    member_id: str
    tier: str
    name: str | None
    version: int
    auto_deduct: bool
    blocked: bool
    balance: int  # cached: points remaining in all lots, expired or not


@dataclass(frozen=True)
class LotView:
    """A spendable points lot (field names match ``edge.pricing.PointsLot``)."""

    lot_id: str
    points: int  # remaining
    expires_at: datetime | None
    earned_at: datetime | None


@dataclass(frozen=True)
class CouponView:
    """An unused, valid coupon (field names match ``edge.pricing.Coupon``)."""

    coupon_id: str
    kind: str
    value: Decimal
    valid_until: datetime | None


@dataclass(frozen=True)
class MemberView:
    """What the pricing engine needs about a member at one instant."""

    member_id: str
    tier: str
    auto_deduct: bool
    blocked: bool
    lots: tuple[LotView, ...]
    coupons: tuple[CouponView, ...]
    redeemed_this_month_value: Decimal
    redeemed_today_points: int
    earned_today: int
    balance: int


@dataclass(frozen=True)
class ExitRecord:
    """Everything decided for one exit, committed in one transaction by ``record_exit``."""

    exit_event_id: str
    session_id: str | None
    plate: str
    exited_at: datetime
    member_id: str | None
    rules_version: str
    fee: Decimal
    payable: Decimal
    points_deducted: int
    lots_used: tuple[tuple[str, int], ...]
    coupons_used: tuple[str, ...]
    points_earned: int
    earned_expires_at: datetime | None
    quote: dict[str, Any]
    flags: tuple[str, ...] = ()
    #: ``(payment_id, amount)`` of central prepayments this exit settles (already inside
    #: ``payable``): marked used, each with a ``payment_received`` entry, in the same commit.
    prepaid: tuple[tuple[str, Decimal], ...] = ()


@dataclass(frozen=True)
class ExitResult:
    session: Session
    entries: tuple[LedgerEntry, ...]
    replayed: bool
    balance_after: int | None


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    problems: list[str] = field(default_factory=list)
