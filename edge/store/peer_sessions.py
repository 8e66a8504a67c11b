"""Sessions another lane opened or closed, kept here as state, not as ledger history.

One stay is one session from entry to exit across lanes (#12 item 13). The lane that saw the
car enter writes ``session_opened``; the lane that saw it leave writes ``session_closed``
under the same session id. The other lanes of the site keep a copy of the row (so an exit lane
can price the stay offline, and an entry lane knows the car left), and a copy is not history:
keeping or closing it writes no ledger entry. Before, every lane that heard of an arrival
wrote its own ``session_opened`` (another session id) and the entry lane an ``entry_cancelled``
correction on every normal exit, so central's history showed each arrival twice and a
correction per stay.

Corrections stay for real ones: when a new arrival finds the plate still inside (a missed
exit), a lane that has written anything about the old stay documents its end (``superseded``);
a lane that only held a copy closes it silently.
"""

from __future__ import annotations

from datetime import datetime

from edge.store import sessions
from edge.store.codec import ts
from edge.store.tx import Tx
from edge.store.types import EntryKind, Session, StoreError


def cache_opened(tx: Tx, *, session_id: str, plate: str, entered_at: datetime, event_id: str,
                 entry_lane: str, vehicle_class: str = "small", member_id: str | None = None,
                 rules_version: str | None = None) -> tuple[Session, bool]:
    """Keep another lane's open session under its own id; ``(session, False)`` if known."""
    c = tx.conn
    at_s = ts(entered_at, "entered_at")
    old = sessions.by_entry_event(c, event_id)
    if old is not None:
        return old, False
    if sessions.find(c, session_id) is not None:
        raise StoreError(f"session_id: {session_id!r} is already another stay here")
    status = "open"
    prev = sessions.open_for_plate(c, plate)
    if prev is not None and prev.entered_at > entered_at:
        status = "closed"  # it arrived late: the stay we hold began after it, so it ended
    elif prev is not None:
        c.execute("UPDATE sessions SET status = 'closed' WHERE session_id = :s",
                  {"s": prev.session_id})
        if wrote_about(tx, prev.session_id):
            tx.append(EntryKind.CORRECTION, entered_at, session_id=prev.session_id,
                      member_id=prev.member_id, plate=plate, payload={
                          "action": "superseded", "by_event": event_id,
                          "reason": "new entry while a session was open (missed exit)"})
    c.execute(
        "INSERT INTO sessions (session_id, plate, entered_at, entry_lane, vehicle_class, "
        "member_id, status, rules_version, entry_event_id) VALUES "
        "(:s, :p, :e, :l, :v, :m, :st, :r, :ev)",
        {"s": session_id, "p": plate, "e": at_s, "l": entry_lane, "v": vehicle_class,
         "m": member_id, "st": status, "r": rules_version, "ev": event_id},
    )
    return tx.session(session_id), True


def close(tx: Tx, session_id: str, exit_lane: str) -> Session | None:
    """Another lane recorded this stay's exit: the copy here is closed (``exit_lane`` says
    where), nothing is written to the ledger. None if it was not open here."""
    s = sessions.find(tx.conn, session_id)
    if s is None or s.status != "open":
        return None
    tx.conn.execute("UPDATE sessions SET status = 'closed', exit_lane = :l "
                    "WHERE session_id = :s", {"s": session_id, "l": exit_lane})
    return tx.session(session_id)


def wrote_about(tx: Tx, session_id: str) -> bool:
    """True if this lane's ledger has an entry for the session (its own record of it)."""
    return tx.conn.execute(
        "SELECT 1 FROM ledger_entries WHERE session_id = :s AND lane_id = :l LIMIT 1",
        {"s": session_id, "l": tx.lane_id}).fetchone() is not None
