"""Prepayment rows at the lane do not grow for ever: ``prepayments.prune`` deletes what no
longer guards anything (an expired payment is never taken again: the downlink drops it),
keeps what still does, and upgrades a file from before retention."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from edge.store import Store, StoreError
from edge.store import prepayments as pp

PAID = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
EXPIRES = PAID + timedelta(hours=24)


def _p(pid: str, plate: str = "沪A12345") -> pp.Prepayment:
    return pp.Prepayment(pid, plate, Decimal("30.00"), PAID, EXPIRES)


def _rev(pid: str, plate: str = "沪A12345") -> pp.Revocation:
    return pp.Revocation(pid, plate, Decimal("30.00"), PAID, PAID + timedelta(minutes=5))


def _ids(db: Path, table: str) -> set[str]:
    with sqlite3.connect(db) as c:
        return {r[0] for r in c.execute(f"SELECT payment_id FROM {table}")}


def test_prune_keeps_what_guards_and_deletes_what_expired(tmp_path: Path) -> None:
    db = tmp_path / "lane.db"
    store = Store.open(db, "X1")
    try:
        for pid in ("kept", "revoked", "used", "used-revoked"):
            assert pp.receive(store, _p(pid, plate=f"沪A{len(pid):05d}"), PAID)
        with store._tx() as tx:  # two of them let their cars out (as an exit's commit does)
            tx.conn.execute("UPDATE prepayments SET used_session = 's', used_at = :t "
                            "WHERE payment_id IN ('used', 'used-revoked')",
                            {"t": "2026-11-23T03:00:00.000000+00:00"})
        assert pp.revoke(store, _rev("revoked", "沪A00007"), PAID) == "revoked"
        assert pp.revoke(store, _rev("used-revoked", "沪A00012"), PAID) == "used"
        everything = {"kept", "revoked", "used", "used-revoked"}
        # before expiry + KEEP nothing goes: a replayed message could still be taken
        assert pp.prune(store, EXPIRES + pp.KEEP - timedelta(minutes=1)) == {
            "prepayments": 0, "revocations": 0}
        with pytest.raises(StoreError, match="revoked"):
            pp.receive(store, _p("revoked", "沪A00007"), PAID)
        # a week after expiry: the unused ones and the revocation of the dropped one
        assert pp.prune(store, EXPIRES + pp.KEEP + timedelta(minutes=1)) == {
            "prepayments": 1, "revocations": 1}
        assert _ids(db, "prepayments") == everything - {"kept", "revoked"}
        assert _ids(db, "prepaid_revocations") == {"used-revoked"}  # its use is still held
        # a month after the exits: the used ones, then the last revocation
        later = PAID + timedelta(hours=1) + pp.KEEP_USED + timedelta(minutes=1)
        assert pp.prune(store, later) == {"prepayments": 2, "revocations": 1}
        assert _ids(db, "prepayments") == set() and _ids(db, "prepaid_revocations") == set()
        assert store.verify().ok  # the ledger is untouched: only the guard rows go
    finally:
        store.close()


def test_a_file_from_before_retention_gets_the_column(tmp_path: Path) -> None:
    db = tmp_path / "lane.db"
    store = Store.open(db, "X1")
    store.close()
    with sqlite3.connect(db) as c:  # the table as the lanes made it before
        c.execute("CREATE TABLE prepaid_revocations (payment_id TEXT PRIMARY KEY, revoked_at "
                  "TEXT NOT NULL, received_at TEXT NOT NULL, outcome TEXT NOT NULL)")
        c.execute("INSERT INTO prepaid_revocations VALUES ('old', 'x', "
                  "'2026-10-01T00:00:00.000000+00:00', 'revoked')")
    store = Store.open(db, "X1")
    try:
        assert pp.receive(store, _p("new"), PAID)  # creates the rest, adds the column
        assert pp.revoke(store, _rev("new"), PAID) == "revoked"
        with sqlite3.connect(db) as c:
            rows = dict(c.execute("SELECT payment_id, expires_at FROM prepaid_revocations"))
        assert rows == {"old": None, "new": "2026-11-24T02:00:00.000000+00:00"}
        # the old row (no expiry known) goes KEEP_USED after it was received
        assert pp.prune(store, datetime(2026, 10, 30, tzinfo=UTC))["revocations"] == 0
        assert pp.prune(store, datetime(2026, 11, 1, tzinfo=UTC))["revocations"] == 1
        assert _ids(db, "prepaid_revocations") == {"new"}
    finally:
        store.close()
