"""Reading session rows (one per stay) into ``Session`` values, on a caller's connection."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from edge.store.codec import parse_ts, parse_ts_opt
from edge.store.engine import q
from edge.store.types import Session, StoreError

COLS = (
    "session_id, plate, entered_at, entry_lane, vehicle_class, member_id, status, exited_at, "
    "exit_lane, fee, payable, paid, points_deducted, points_earned, rules_version, "
    "exit_event_id, entry_event_id, points_before, balance_after"
)


def to_session(r: Any) -> Session:
    m = r._mapping
    return Session(
        session_id=m["session_id"],
        plate=m["plate"],
        entered_at=parse_ts(m["entered_at"]),
        entry_lane=m["entry_lane"],
        vehicle_class=m["vehicle_class"],
        member_id=m["member_id"],
        status=m["status"],
        exited_at=parse_ts_opt(m["exited_at"]),
        exit_lane=m["exit_lane"],
        fee=None if m["fee"] is None else Decimal(m["fee"]),
        payable=None if m["payable"] is None else Decimal(m["payable"]),
        paid=Decimal(m["paid"]),
        points_deducted=int(m["points_deducted"]),
        points_earned=int(m["points_earned"]),
        rules_version=m["rules_version"],
        exit_event_id=m["exit_event_id"],
        entry_event_id=m["entry_event_id"],
        points_before=m["points_before"],
        balance_after=m["balance_after"],
    )


def find(c: Connection, session_id: str) -> Session | None:
    r = c.execute(q(f"SELECT {COLS} FROM sessions WHERE session_id = :s"),
                  {"s": session_id}).first()
    return None if r is None else to_session(r)


def get(c: Connection, session_id: str) -> Session:
    s = find(c, session_id)
    if s is None:
        raise StoreError(f"session_id: unknown session {session_id!r}")
    return s


def open_for_plate(c: Connection, plate: str) -> Session | None:
    r = c.execute(q(f"SELECT {COLS} FROM sessions WHERE plate = :p AND status = 'open'"),
                  {"p": plate}).first()
    return None if r is None else to_session(r)


def by_entry_event(c: Connection, event_id: str) -> Session | None:
    r = c.execute(q(f"SELECT {COLS} FROM sessions WHERE entry_event_id = :e"),
                  {"e": event_id}).first()
    return None if r is None else to_session(r)
