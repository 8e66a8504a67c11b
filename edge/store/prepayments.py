"""Prepayments: money paid at central (pay station, member portal) before the car leaves.

Central sends each one to the site's lanes as a signed ``prepaid`` message
(docs/sync-protocol.md). The lane keeps it here, unused, with a ``lane_event``
``prepaid_received`` in the ledger (so the receipt is in the lane's ledger too); the exit
of that plate's stay hands it to the pricing engine (``paid_amount``/``paid_at``: within the
bundle's ``pay_grace_minutes`` nothing more is owed, after it only the extra time) and, in
the exit's own transaction, marks it used with a ``payment_received`` entry (method
``prepaid``). A reversed exit gives it back. Idempotent on the payment id.

Central revokes a refunded prepayment (``prepaid_revoked``, ``revoke``): an unused one is
deleted with a ``lane_event`` ``prepaid_revoked``, a used one stays (the car is gone) with a
``lane_event`` ``prepaid_revoked_after_use``; either way its id is kept in
``prepaid_revocations``, so a replayed ``prepaid`` message never brings it back and a
replayed revocation changes nothing.

The tables live in the lane's file but outside the versioned store schema (created here,
``IF NOT EXISTS``), so the prepayment feature needs no store migration step.

Retention (``prune``, run by the daemon every few hours): a prepayment message past its
``expires_at`` is never taken (the downlink drops it as an old retained copy), so once a
payment has expired its rows guard nothing. Unused expired prepayments and their revocation
ids go ``KEEP`` after expiry; used ones ``KEEP_USED`` after their exit (a refund arriving
later still finds the use to report, and a reversed exit finds them to give back).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from edge.store import checks
from edge.store.codec import parse_ts, ts
from edge.store.engine import Db
from edge.store.types import EntryKind, LedgerEntry, Session, StoreError

if TYPE_CHECKING:
    from edge.store.store import Store
    from edge.store.tx import Tx

#: A payment made at central may carry a time a little after the lane's exit time (two
#: clocks): it still belongs to that exit.
CLOCK_SKEW = timedelta(seconds=120)

DDL = (
    """CREATE TABLE IF NOT EXISTS prepayments (
        payment_id TEXT PRIMARY KEY,
        plate TEXT NOT NULL,
        amount TEXT NOT NULL,
        paid_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        member_id TEXT,
        entry_event_id TEXT,
        source TEXT,
        received_at TEXT NOT NULL,
        used_session TEXT,
        used_at TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS ix_prepayments_plate ON prepayments (plate, used_session)",
    # One row per payment central revoked (refunded) that this lane held: the id stays
    # here after the prepayment's row is gone, so a replayed ``prepaid`` message cannot
    # bring it back and a replayed revocation changes nothing (``outcome``: ``revoked``
    # = dropped unused, ``used`` = it had already let the car out: a conflict for the desk).
    """CREATE TABLE IF NOT EXISTS prepaid_revocations (
        payment_id TEXT PRIMARY KEY,
        revoked_at TEXT NOT NULL,
        received_at TEXT NOT NULL,
        outcome TEXT NOT NULL,
        expires_at TEXT
    )""",
)

#: How long rows outlive what they guard (``prune``).
KEEP = timedelta(days=7)
KEEP_USED = timedelta(days=30)


@dataclass(frozen=True)
class Prepayment:
    payment_id: str
    plate: str
    amount: Decimal
    paid_at: datetime
    expires_at: datetime
    member_id: str | None = None
    entry_event_id: str | None = None
    source: str | None = None


#: Stores whose tables are known to be there and current: checked once per store object
#: (a prepayment message need not pay for a PRAGMA and the DDL every time).
_READY: weakref.WeakSet[Store] = weakref.WeakSet()


def ensure(store: Store) -> None:
    """Create the tables, and add the column a file from before retention lacks, in a write
    transaction of their own (so a later refusal's rollback cannot undo them), once per
    store object."""
    if store in _READY:
        return
    with store._write() as c:
        for stmt in DDL:
            c.execute(stmt)
        cols = {r[1] for r in c.execute("PRAGMA table_info(prepaid_revocations)")}
        if "expires_at" not in cols:  # a file from before retention: its rows keep NULL
            c.execute("ALTER TABLE prepaid_revocations ADD COLUMN expires_at TEXT")
    _READY.add(store)


def _exists(c: Db) -> bool:
    return c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                     "name = 'prepayments'").fetchone() is not None


def _revocations_exist(c: Db) -> bool:
    return c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                     "name = 'prepaid_revocations'").fetchone() is not None


def _same(row: tuple[object, ...], p: Prepayment) -> bool:
    return (row[0] == p.plate and Decimal(str(row[1])) == p.amount
            and row[2] == ts(p.paid_at) and row[3] == ts(p.expires_at)
            and row[4] == p.entry_event_id)


def receive(store: Store, p: Prepayment, at: datetime) -> bool:
    """Keep a prepayment and record its receipt in the ledger, in one transaction.

    True if new; False for the same payment again (a retained copy, a QoS 1 duplicate).
    The same payment id with other content is refused (``StoreError``)."""
    checks.nonempty(p.payment_id, "payment_id")
    checks.nonempty(p.plate, "plate")
    amount = checks.amount(p.amount, "amount")
    ensure(store)
    with store._tx() as tx:
        c = tx.conn
        if c.execute("SELECT 1 FROM prepaid_revocations WHERE payment_id = :i",
                     {"i": p.payment_id}).fetchone() is not None:
            raise StoreError(f"revoked: prepayment {p.payment_id!r} was revoked by central "
                             "(refunded): not taken again")
        old = c.execute("SELECT plate, amount, paid_at, expires_at, entry_event_id FROM "
                        "prepayments WHERE payment_id = :i", {"i": p.payment_id}).fetchone()
        if old is not None:
            if not _same(tuple(old), p):
                raise StoreError(f"payment_id: prepayment {p.payment_id!r} already received "
                                 "with other content")
            return False
        c.execute("INSERT INTO prepayments (payment_id, plate, amount, paid_at, expires_at, "
                  "member_id, entry_event_id, source, received_at) VALUES "
                  "(:i, :p, :a, :t, :x, :m, :e, :s, :r)",
                  {"i": p.payment_id, "p": p.plate, "a": str(amount), "t": ts(p.paid_at),
                   "x": ts(p.expires_at), "m": p.member_id, "e": p.entry_event_id,
                   "s": p.source, "r": ts(at)})
        sid = c.execute("SELECT session_id FROM sessions WHERE plate = :p AND "
                        "status = 'open'", {"p": p.plate}).fetchone()
        tx.append(EntryKind.LANE_EVENT, at, plate=p.plate, member_id=p.member_id,
                  session_id=sid[0] if sid else None, payload={
                      "event": "prepaid_received", "detail": {
                          "payment_id": p.payment_id, "amount": amount,
                          "paid_at": p.paid_at.isoformat(),
                          "expires_at": p.expires_at.isoformat(),
                          "entry_event_id": p.entry_event_id, "source": p.source}})
        return True


@dataclass(frozen=True)
class Revocation:
    """Central's revocation of a prepayment, as the lane checks it against its own row."""

    payment_id: str
    plate: str
    amount: Decimal
    paid_at: datetime
    revoked_at: datetime
    #: the payment's own expiry, as central's revocation names it: how long a tombstone of a
    #: payment this lane never held must stay (``revoke``); None: no tombstone kept
    expires_at: datetime | None = None


#: What ``revoke`` did: ``revoked`` (dropped, unused), ``used`` (it had let the car out:
#: recorded as a conflict, nothing undone), ``dup`` (already revoked here: a replay),
#: ``unknown`` (this lane never held it: its id kept, outcome ``not_held``, when the
#: revocation names the expiry), ``mismatch`` (the lane holds another payment under that id:
#: nothing done).
REVOKE_OUTCOMES = ("revoked", "used", "dup", "unknown", "mismatch")


def _keep_revocation(c: Db, r: Revocation, at: datetime, outcome: str, expires_at: str) -> None:
    """The revoked id kept (``prepaid_revocations``) until ``expires_at`` plus retention."""
    c.execute("INSERT INTO prepaid_revocations (payment_id, revoked_at, received_at, outcome, "
              "expires_at) VALUES (:i, :v, :r, :o, :x)",
              {"i": r.payment_id, "v": ts(r.revoked_at), "r": ts(at), "o": outcome,
               "x": expires_at})


def revoke(store: Store, r: Revocation, at: datetime) -> str:
    """Apply central's revocation of a prepayment in ONE transaction, and say what it did
    (``REVOKE_OUTCOMES``).

    Unused: its row is deleted, its id kept in ``prepaid_revocations`` and a ``lane_event``
    ``prepaid_revoked`` written (it reaches central in the next batch); the next exit of the
    stay prices without it. Already used by an exit (the car is gone): nothing is undone, the
    id is kept and a ``lane_event`` ``prepaid_revoked_after_use`` records the conflict for
    central's desk. Unknown (this lane never held it): its id alone is kept until the
    payment's expiry (outcome ``not_held``, no ledger entry: nothing changed hands here), so
    the old ``prepaid`` message replayed later is refused here too, as on the lanes that held
    it. Another content under the id, or already revoked: nothing is written at all."""
    checks.nonempty(r.payment_id, "payment_id")
    ensure(store)
    with store._tx() as tx:
        c = tx.conn
        if c.execute("SELECT 1 FROM prepaid_revocations WHERE payment_id = :i",
                     {"i": r.payment_id}).fetchone() is not None:
            return "dup"
        row = c.execute("SELECT plate, amount, paid_at, expires_at, member_id, used_session, "
                        "used_at FROM prepayments WHERE payment_id = :i",
                        {"i": r.payment_id}).fetchone()
        if row is None:
            if r.expires_at is not None:
                _keep_revocation(c, r, at, "not_held", ts(r.expires_at))
            return "unknown"
        plate, amount, paid_at, expires_at, member_id, used_session, used_at = row
        if (plate != r.plate or Decimal(str(amount)) != r.amount
                or paid_at != ts(r.paid_at)):
            return "mismatch"
        outcome = "revoked" if used_session is None else "used"
        _keep_revocation(c, r, at, outcome, expires_at)
        detail: dict[str, object] = {
            "payment_id": r.payment_id, "amount": Decimal(str(amount)),
            "paid_at": parse_ts(paid_at).isoformat(),
            "expires_at": parse_ts(expires_at).isoformat(),
            "revoked_at": r.revoked_at.isoformat()}
        if used_session is None:
            c.execute("DELETE FROM prepayments WHERE payment_id = :i", {"i": r.payment_id})
            sid = c.execute("SELECT session_id FROM sessions WHERE plate = :p AND "
                            "status = 'open'", {"p": plate}).fetchone()
            tx.append(EntryKind.LANE_EVENT, at, plate=plate, member_id=member_id,
                      session_id=sid[0] if sid else None,
                      payload={"event": "prepaid_revoked", "detail": detail})
        else:
            detail.update(used_session=used_session, used_at=used_at)
            tx.append(EntryKind.LANE_EVENT, at, plate=plate, member_id=member_id,
                      session_id=used_session,
                      payload={"event": "prepaid_revoked_after_use", "detail": detail})
        return outcome


def for_exit(c: Db, session: Session, exited_at: datetime) -> tuple[Prepayment, ...]:
    """The unused prepayments of this stay: same plate, paid after it began (and before
    the exit, give or take the clocks' skew), not expired, and naming this stay when they
    name one."""
    if not _exists(c):
        return ()
    rows = c.execute(
        "SELECT payment_id, plate, amount, paid_at, expires_at, member_id, entry_event_id, "
        "source FROM prepayments WHERE plate = :p AND used_session IS NULL "
        "AND paid_at >= :e AND paid_at <= :x AND expires_at >= :now ORDER BY paid_at",
        {"p": session.plate, "e": ts(session.entered_at),
         "x": ts(exited_at + CLOCK_SKEW), "now": ts(exited_at)}).fetchall()
    out = []
    for r in rows:
        if r[6] is not None and r[6] != session.entry_event_id:
            continue
        out.append(Prepayment(r[0], r[1], Decimal(r[2]), parse_ts(r[3]), parse_ts(r[4]),
                              r[5], r[6], r[7]))
    return tuple(out)


def consume(tx: Tx, uses: tuple[tuple[str, Decimal], ...], session_id: str, plate: str,
            member_id: str | None, at: datetime) -> list[LedgerEntry]:
    """Inside the exit's transaction: mark each used by this stay, one ``payment_received``
    each. A prepayment already used (another exit won a race) refuses the whole exit."""
    c = tx.conn
    out = []
    for pid, amount in uses:
        row = c.execute("SELECT amount, paid_at FROM prepayments WHERE payment_id = :i "
                        "AND used_session IS NULL", {"i": pid}).fetchone()
        if row is None or Decimal(row[0]) != amount:
            raise StoreError(f"prepaid: prepayment {pid!r} is unknown or already used")
        c.execute("UPDATE prepayments SET used_session = :s, used_at = :t "
                  "WHERE payment_id = :i", {"s": session_id, "t": ts(at), "i": pid})
        out.append(tx.append(EntryKind.PAYMENT_RECEIVED, at, session_id=session_id,
                             member_id=member_id, plate=plate, payload={
                                 "amount": amount, "method": "prepaid",
                                 "payment_id": pid, "paid_at": row[1],
                                 "idem_key": f"prepaid:{pid}"}))
    return out


def release(tx: Tx, session_id: str, plate: str, member_id: str | None, at: datetime,
            reason: str) -> list[LedgerEntry]:
    """A reversed exit: its prepayments count again for the stay's next exit."""
    c = tx.conn
    if not _exists(c):
        return []
    rows = c.execute("SELECT payment_id, amount FROM prepayments WHERE used_session = :s",
                     {"s": session_id}).fetchall()
    revoked = {r[0] for r in c.execute(
        "SELECT payment_id FROM prepaid_revocations WHERE payment_id IN "
        "(SELECT payment_id FROM prepayments WHERE used_session = :s)", {"s": session_id})
    } if rows and _revocations_exist(c) else set()
    out = []
    for pid, amount in rows:
        if pid in revoked:  # refunded since: given back, it is gone rather than usable
            c.execute("DELETE FROM prepayments WHERE payment_id = :i", {"i": pid})
        else:
            c.execute("UPDATE prepayments SET used_session = NULL, used_at = NULL "
                      "WHERE payment_id = :i", {"i": pid})
        out.append(tx.append(EntryKind.CORRECTION, at, session_id=session_id,
                             member_id=member_id, plate=plate, payload={
                                 "action": "prepaid_returned", "payment_id": pid,
                                 "amount": amount, "reason": reason}))
    return out


def prune(store: Store, now: datetime) -> dict[str, int]:
    """Delete the rows that no longer guard anything (module docstring, Retention); the
    number deleted of each kind. Revocations of a file from before retention (no
    ``expires_at``) go ``KEEP_USED`` after they were received."""
    with store._read() as c:
        if not _exists(c):
            return {"prepayments": 0, "revocations": 0}
    ensure(store)
    with store._write() as c:
        old, old_used = ts(now - KEEP), ts(now - KEEP_USED)
        n_pre = c.execute(
            "DELETE FROM prepayments WHERE (used_session IS NULL AND expires_at < :o) "
            "OR (used_session IS NOT NULL AND used_at < :u)",
            {"o": old, "u": old_used}).rowcount
        n_rev = c.execute(
            "DELETE FROM prepaid_revocations WHERE (expires_at IS NOT NULL AND expires_at < :o "
            "AND payment_id NOT IN (SELECT payment_id FROM prepayments)) "
            "OR (expires_at IS NULL AND received_at < :u)", {"o": old, "u": old_used}).rowcount
        return {"prepayments": int(n_pre), "revocations": int(n_rev)}


def revocations(store: Store) -> list[dict[str, object]]:
    """Every revocation this lane applied (payment id, when, outcome)."""
    with store._read() as c:
        if not _revocations_exist(c):
            return []
        cols = ("payment_id", "revoked_at", "received_at", "outcome")
        rows = c.execute(f"SELECT {', '.join(cols)} FROM prepaid_revocations "
                         "ORDER BY received_at, payment_id")
        return [dict(zip(cols, r, strict=True)) for r in rows]


def list_all(store: Store) -> list[dict[str, object]]:
    """Every prepayment this lane holds (for tests, reports, the operator)."""
    with store._read() as c:
        if not _exists(c):
            return []
        cols = ("payment_id", "plate", "amount", "paid_at", "expires_at", "member_id",
                "entry_event_id", "source", "received_at", "used_session", "used_at")
        rows = c.execute(f"SELECT {', '.join(cols)} FROM prepayments ORDER BY paid_at")
        return [dict(zip(cols, r, strict=True)) for r in rows]
