"""Points as lots: every accrual a lot with its expiry under the bundle's policy, every
movement an entry, and ``members.balance`` their cached sum, all in one transaction.

Every function here locks the member's row first (``SELECT ... FOR UPDATE`` on PostgreSQL;
SQLite's ``BEGIN IMMEDIATE`` serialises writers), so two workers touching one member queue
up instead of both spending the same lot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from central.db.models import Member, PointsEntry, PointsLot
from central.services.errors import Invalid, NotFound, Refused
from central.services.lots import take_from_lots
from edge.pricing import PointsLot as EngineLot
from edge.pricing import RuleBundle, earned_expiry


def lock_member(s: Session, member_id: str, field: str = "member_id") -> Member:
    m = s.get(Member, member_id, with_for_update=True)
    if m is None:
        raise NotFound(field, f"unknown member {member_id!r}")
    return m


def _entry(s: Session, m: Member, kind: str, points: int, at: datetime, *,
           lot_id: str | None, ref: str | None, unique_key: str | None = None) -> None:
    s.add(PointsEntry(member_id=m.member_id, kind=kind, points=points, at=at, lot_id=lot_id,
                      ref=ref, unique_key=unique_key))
    m.balance = m.balance + points
    m.version = m.version + 1


def accrue(s: Session, rules: RuleBundle, m: Member, points: int, earned_at: datetime, *,
           lot_id: str, source: str, ref: str | None = None) -> PointsLot:
    """A new lot of ``points`` (expiry from the bundle) and its ``points_earned`` entry.
    The caller holds the member's lock (``lock_member``)."""
    if points <= 0:
        raise Invalid("points", "must be > 0")
    lot = PointsLot(lot_id=lot_id, member_id=m.member_id, points=points, remaining=points,
                    earned_at=earned_at, expires_at=earned_expiry(rules, earned_at),
                    source=source)
    s.add(lot)
    _entry(s, m, "points_earned", points, earned_at, lot_id=lot_id, ref=ref,
           unique_key=f"earn:{lot_id}")
    repay_debt(s, m, lot)
    return lot


def engine_lots(s: Session, member_id: str, *, lock: bool = False) -> dict[str, PointsLot]:
    q = select(PointsLot).where(PointsLot.member_id == member_id, PointsLot.remaining > 0)
    if lock:
        q = q.with_for_update()
    return {lot.lot_id: lot for lot in s.scalars(q)}


def _as_engine(rows: dict[str, PointsLot]) -> tuple[EngineLot, ...]:
    return tuple(EngineLot(r.lot_id, r.remaining, r.expires_at, r.earned_at)
                 for r in rows.values())


def spend(s: Session, m: Member, points: int, at: datetime, *, kind: str, ref: str,
          field: str = "points") -> list[tuple[str, int]]:
    """Take ``points`` from the member's live lots, soonest-expiring first (edge.pricing's
    order); one negative entry per lot touched. Refused if the live lots are short."""
    if points <= 0:
        raise Invalid(field, "must be > 0")
    rows = engine_lots(s, m.member_id, lock=True)
    try:
        taken = take_from_lots(_as_engine(rows), points, at)
    except ValueError:
        raise Refused(field, f"not enough points: {points} needed, "
                             f"{spendable(s, m.member_id, at)} spendable") from None
    for lot_id, n in taken:
        rows[lot_id].remaining -= n
        _entry(s, m, kind, -n, at, lot_id=lot_id, ref=ref)
    return taken


def spendable(s: Session, member_id: str, at: datetime) -> int:
    """Points the member may spend at ``at`` (lots not yet expired)."""
    q = select(func.coalesce(func.sum(PointsLot.remaining), 0)).where(
        PointsLot.member_id == member_id, PointsLot.remaining > 0,
        (PointsLot.expires_at.is_(None)) | (PointsLot.expires_at > at))
    return int(s.scalar(q) or 0)


def adjust(s: Session, rules: RuleBundle, member_id: str, points: int, at: datetime, *,
           reason: str, ref: str) -> None:
    """A manual correction by operations: positive = a new lot, negative = spent from lots."""
    if points == 0:
        raise Invalid("points", "must not be 0")
    if not reason.strip():
        raise Invalid("reason", "required")
    m = lock_member(s, member_id)
    if points > 0:
        accrue(s, rules, m, points, at, lot_id=f"adjust:{ref}", source="adjustment", ref=reason)
    else:
        spend(s, m, -points, at, kind="adjustment", ref=reason)


@dataclass(frozen=True)
class Expired:
    member_id: str
    lot_id: str
    points: int
    expires_at: datetime


def due_to_expire(s: Session, now: datetime) -> list[Expired]:
    q = (select(PointsLot).where(PointsLot.remaining > 0, PointsLot.expires_at.is_not(None),
                                 PointsLot.expires_at <= now)
         .order_by(PointsLot.member_id, PointsLot.expires_at, PointsLot.lot_id))
    return [Expired(r.member_id, r.lot_id, r.remaining, r.expires_at)  # type: ignore[arg-type]
            for r in s.scalars(q)]


def expire_member(s: Session, member_id: str, now: datetime) -> list[Expired]:
    """Write off the member's dead lots: one ``points_expired`` entry per lot with the unique
    key ``expire:<lot>``. Under the member lock a second worker finds nothing left to do."""
    m = lock_member(s, member_id)
    done: list[Expired] = []
    for lot in engine_lots(s, member_id, lock=True).values():
        if lot.expires_at is None or lot.expires_at > now:
            continue
        n = lot.remaining
        lot.remaining = 0
        _entry(s, m, "points_expired", -n, lot.expires_at, lot_id=lot.lot_id,
               ref="expiry", unique_key=f"expire:{lot.lot_id}")
        done.append(Expired(member_id, lot.lot_id, n, lot.expires_at))
    return done


def ledger_sums(s: Session, member_id: str) -> tuple[int, int, int]:
    """(cached balance, sum of entries, sum of lots' remaining): always three equal numbers."""
    bal = s.scalar(select(Member.balance).where(Member.member_id == member_id))
    ent = s.scalar(select(func.coalesce(func.sum(PointsEntry.points), 0))
                   .where(PointsEntry.member_id == member_id))
    lots = s.scalar(select(func.coalesce(func.sum(PointsLot.remaining), 0))
                    .where(PointsLot.member_id == member_id))
    return int(bal or 0), int(ent or 0), int(lots or 0)


def repay_debt(s: Session, m: Member, lot: PointsLot) -> None:
    """A new lot first pays the member's debt lot (``debt:<member>``: what lanes spent
    offline beyond the lots, central/ingest), so nothing is spendable while in debt. No
    entry: the sum of the lots does not change."""
    debt = s.scalar(select(PointsLot).where(PointsLot.lot_id == f"debt:{m.member_id}")
                    .with_for_update())
    if debt is None or debt.remaining >= 0:
        return
    pay = min(-debt.remaining, lot.remaining)
    lot.remaining -= pay
    debt.remaining += pay
