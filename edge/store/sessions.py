"""Reading session rows (one per stay) into ``Session`` values, on a caller's connection."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from edge.store.codec import parse_ts, parse_ts_opt
from edge.store.engine import Db
from edge.store.types import Session, StoreError

COLS = (
    "session_id, plate, entered_at, entry_lane, vehicle_class, member_id, status, exited_at, "
    "exit_lane, fee, payable, paid, points_deducted, points_earned, rules_version, "
    "exit_event_id, entry_event_id, points_before, balance_after"
)


def to_session(r: Sequence[Any]) -> Session:
    """A row selected as ``COLS``, in that order."""
    (sid, plate, entered_at, entry_lane, vehicle_class, member_id, status, exited_at,
     exit_lane, fee, payable, paid, deducted, earned, rules_version, exit_event_id,
     entry_event_id, points_before, balance_after) = r
    return Session(
        session_id=sid,
        plate=plate,
        entered_at=parse_ts(entered_at),
        entry_lane=entry_lane,
        vehicle_class=vehicle_class,
        member_id=member_id,
        status=status,
        exited_at=parse_ts_opt(exited_at),
        exit_lane=exit_lane,
        fee=None if fee is None else Decimal(fee),
        payable=None if payable is None else Decimal(payable),
        paid=Decimal(paid),
        points_deducted=int(deducted),
        points_earned=int(earned),
        rules_version=rules_version,
        exit_event_id=exit_event_id,
        entry_event_id=entry_event_id,
        points_before=points_before,
        balance_after=balance_after,
    )


def find(c: Db, session_id: str) -> Session | None:
    r = c.execute(f"SELECT {COLS} FROM sessions WHERE session_id = :s",
                  {"s": session_id}).fetchone()
    return None if r is None else to_session(r)


def get(c: Db, session_id: str) -> Session:
    s = find(c, session_id)
    if s is None:
        raise StoreError(f"session_id: unknown session {session_id!r}")
    return s


def open_for_plate(c: Db, plate: str) -> Session | None:
    r = c.execute(f"SELECT {COLS} FROM sessions WHERE plate = :p AND status = 'open'",
                  {"p": plate}).fetchone()
    return None if r is None else to_session(r)


def by_entry_event(c: Db, event_id: str) -> Session | None:
    r = c.execute(f"SELECT {COLS} FROM sessions WHERE entry_event_id = :e",
                  {"e": event_id}).fetchone()
    return None if r is None else to_session(r)
