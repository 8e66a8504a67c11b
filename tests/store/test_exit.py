"""The exit transaction: what it writes, that it is all-or-nothing, and never deducts twice."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge.store import EntryKind, ExitRecord, Store, StoreError
from edge.store.engine import raw

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=TZ)
PLATE = "沪A12345"
Make = Callable[..., ExitRecord]


def _enter(store: Store, event: str = "e1", plate: str = PLATE, at: datetime = T0) -> str:
    s, created = store.record_entry(plate=plate, entered_at=at, event_id=event, member_id="M1")
    assert created
    return s.session_id


def _count(db: Path, sql: str) -> int:
    with sqlite3.connect(db) as c:
        return int(c.execute(sql).fetchone()[0])


def test_exit_writes_every_entry_and_moves_points(store: Store, member: str,
                                                  exit_rec: Make) -> None:
    sid = _enter(store)
    res = store.record_exit(exit_rec(session_id=sid))
    kinds = [e.kind for e in res.entries]
    assert kinds == [EntryKind.SESSION_CLOSED, EntryKind.FEE_CHARGED, EntryKind.COUPON_USED,
                     EntryKind.POINTS_DEDUCTED, EntryKind.POINTS_EARNED]
    assert not res.replayed
    # 800 - 400 + 10 earned
    assert res.balance_after == 410
    assert store.balance("M1", T0 + timedelta(hours=3)) == 410
    s = res.session
    assert (s.status, s.fee, s.payable, s.points_deducted, s.points_earned) == (
        "closed", Decimal("15.00"), Decimal("0.00"), 400, 10)
    assert s.points_before == 800
    ded = res.entries[3].payload
    assert ded == {"points": 400, "lots": [["L1", 300], ["L2", 100]], "value": "4.00"}
    assert res.entries[1].payload["quote"]["fee"] == "15.00"
    assert [e.entry_id for e in res.entries] == [f"X1:{n}" for n in range(2, 7)]
    assert store.find_open_session(PLATE) is None
    view = store.member_view("M1", T0 + timedelta(hours=3), TZ)
    assert view.coupons == ()
    assert {lot.lot_id: lot.points for lot in view.lots} == {"L2": 400, "earn:x1": 10}
    assert store.get_member("M1") is not None
    assert store.get_member("M1").balance == 410  # type: ignore[union-attr]


def test_replaying_the_same_exit_event_never_deducts_twice(store: Store, member: str,
                                                           exit_rec: Make, db: Path) -> None:
    sid = _enter(store)
    first = store.record_exit(exit_rec(session_id=sid))
    n = _count(db, "SELECT COUNT(*) FROM ledger_entries")
    for _ in range(3):
        again = store.record_exit(exit_rec(session_id=sid))
        assert again.replayed
        assert again.session == first.session
        assert again.entries == first.entries  # the same result, payloads included
        assert again.balance_after == 410
    assert _count(db, "SELECT COUNT(*) FROM ledger_entries") == n
    assert store.balance("M1", T0 + timedelta(hours=3)) == 410
    assert store.verify().ok


def test_a_second_exit_event_for_a_closed_session_is_a_replay(store: Store, member: str,
                                                              exit_rec: Make) -> None:
    """A duplicate camera push with a fresh event id must not deduct again."""
    sid = _enter(store)
    store.record_exit(exit_rec(session_id=sid))
    dup = store.record_exit(exit_rec(session_id=sid, exit_event_id="x2",
                                     lots_used=(("L2", 400),)))
    assert dup.replayed
    assert dup.session.exit_event_id == "x1"
    assert len(dup.entries) == 5
    assert store.balance("M1", T0 + timedelta(hours=3)) == 410


def test_overspending_a_lot_is_refused_and_nothing_is_written(store: Store, member: str,
                                                              exit_rec: Make, db: Path) -> None:
    sid = _enter(store)
    before = _count(db, "SELECT COUNT(*) FROM ledger_entries")
    with pytest.raises(StoreError, match=r"L1.*300 points left, 350 requested"):
        store.record_exit(exit_rec(session_id=sid, points_deducted=350, lots_used=(("L1", 350),),
                                   coupons_used=()))
    assert _count(db, "SELECT COUNT(*) FROM ledger_entries") == before
    assert store.balance("M1", T0) == 800
    assert store.find_open_session(PLATE) is not None
    # the same event id is still usable: the refused attempt left no idempotency key
    assert not store.record_exit(exit_rec(session_id=sid)).replayed


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"lots_used": (("L1", 300),)}, "sum 300 != points_deducted 400"),
        ({"lots_used": (("NOPE", 400),)}, "no lot 'NOPE'"),
        ({"coupons_used": ("C9",)}, "no coupon 'C9'"),
        ({"fee": 15.0}, "fee: 15.0 must be a Decimal"),
        ({"payable": Decimal("-1")}, "payable: -1 must not be negative"),
        ({"points_earned": -5}, "points_earned: -5"),
        ({"exited_at": datetime(2026, 11, 23, 12, 0)}, "exited_at: naive datetime"),
        ({"member_id": None}, "member_id: required"),
        ({"member_id": "GHOST"}, "unknown member 'GHOST'"),
        ({"session_id": "X1-doesnotexist"}, "unknown session"),
        ({"coupons_used": ("C1", "C1")}, "listed twice"),
        ({"quote": [1, 2]}, "quote: expected"),
        ({"quote": {"points_value": "lots"}}, "quote: points value unreadable"),
        ({"quote": {"discounts": [{"kind": "points", "amount": None}]}}, "quote: points value"),
    ],
)
def test_bad_exit_records_are_refused_with_the_field_named(
    store: Store, member: str, exit_rec: Make, kw: dict[str, object], match: str
) -> None:
    kw.setdefault("session_id", _enter(store))
    with pytest.raises(StoreError, match=match):
        store.record_exit(exit_rec(**kw))
    # all or nothing: e.g. the coupon marked used before a bad lot was found is unused again
    assert store.balance("M1", T0) == 800
    assert [c.coupon_id for c in store.member_view("M1", T0, TZ).coupons] == ["C1"]
    assert [e.kind for e in store.entries()] == [EntryKind.SESSION_OPENED]
    assert store.find_open_session(PLATE) is not None
    assert store.verify().ok


def test_expired_lot_and_used_coupon_are_refused(store: Store, member: str,
                                                 exit_rec: Make) -> None:
    late = T0 + timedelta(days=31)  # L1 expired
    sid = _enter(store, at=late - timedelta(hours=1))
    with pytest.raises(StoreError, match="lot 'L1' expired"):
        store.record_exit(exit_rec(session_id=sid, exited_at=late, coupons_used=()))
    with pytest.raises(StoreError, match="coupon 'C1' expired"):
        store.record_exit(exit_rec(session_id=sid, exited_at=late, lots_used=(("L2", 400),)))


def test_exit_without_entry_record_creates_a_closed_session(store: Store, member: str,
                                                            exit_rec: Make) -> None:
    res = store.record_exit(exit_rec(session_id=None, payable=Decimal("5.00"),
                                     points_deducted=0, lots_used=(), coupons_used=(),
                                     points_earned=0))
    assert res.session.entry_lane is None
    assert res.session.status == "owed"
    assert store.find_open_session(PLATE) is None
    assert store.record_exit(exit_rec(session_id=None)).replayed


def test_non_member_exit_owes_then_pays(store: Store, exit_rec: Make) -> None:
    s, _ = store.record_entry(plate="粤B88888", entered_at=T0, event_id="e9")
    res = store.record_exit(exit_rec(session_id=s.session_id, plate="粤B88888", member_id=None,
                                     exit_event_id="x9", payable=Decimal("15.00"),
                                     points_deducted=0, lots_used=(), coupons_used=(),
                                     points_earned=0))
    assert res.session.status == "owed"
    assert res.balance_after is None
    at = T0 + timedelta(hours=3, minutes=1)
    p1 = store.record_payment(s.session_id, Decimal("10.00"), "cash", at, "pay-1")
    assert p1.payload["outstanding"] == "5.00"
    assert store.get_session(s.session_id).status == "owed"  # type: ignore[union-attr]
    again = store.record_payment(s.session_id, Decimal("10.00"), "cash", at, "pay-1")
    assert again.entry_id == p1.entry_id
    store.record_payment(s.session_id, Decimal("5.00"), "qr", at, "pay-2")
    done = store.get_session(s.session_id)
    assert done is not None and done.status == "closed" and done.paid == Decimal("15.00")
    with pytest.raises(StoreError, match="owes nothing"):
        store.record_payment(s.session_id, Decimal("1"), "cash", at, "pay-3")
    with pytest.raises(StoreError, match="amount: must be greater than zero"):
        store.record_payment(s.session_id, Decimal("0"), "cash", at, "pay-4")
    inside, _ = store.record_entry(plate="粤B99999", entered_at=T0, event_id="e10")
    with pytest.raises(StoreError, match="not been charged yet"):
        store.record_payment(inside.session_id, Decimal("1"), "cash", at, "pay-5")


def test_reverse_exit_gives_everything_back_and_reopens(store: Store, member: str,
                                                        exit_rec: Make) -> None:
    sid = _enter(store)
    store.record_exit(exit_rec(session_id=sid))
    at = T0 + timedelta(hours=3, seconds=20)
    corr = store.reverse_exit(sid, at, "vehicle reversed away")
    assert [e.payload["action"] for e in corr] == [
        "points_returned", "coupon_returned", "earned_revoked", "session_reopened"]
    assert all(e.kind is EntryKind.CORRECTION for e in corr)
    assert store.balance("M1", at) == 800
    s = store.find_open_session(PLATE)
    assert s is not None and s.session_id == sid and s.status == "open"
    view = store.member_view("M1", at, TZ)
    assert [c.coupon_id for c in view.coupons] == ["C1"]
    assert view.redeemed_this_month_value == Decimal("0.00")
    assert view.redeemed_today_points == 0 and view.earned_today == 0
    assert store.reverse_exit(sid, at, "again") == []  # nothing left to reverse
    # it leaves later, for real, with a new event: deducts once more, correctly
    res = store.record_exit(exit_rec(session_id=sid, exit_event_id="x2",
                                     exited_at=at + timedelta(minutes=5)))
    assert not res.replayed and res.balance_after == 410
    assert store.verify().ok


def test_last_exit_finds_the_recorded_result(store: Store, member: str, exit_rec: Make) -> None:
    sid = _enter(store)
    assert store.last_exit(PLATE, T0) is None
    first = store.record_exit(exit_rec(session_id=sid))
    found = store.last_exit(PLATE, T0 + timedelta(hours=2))
    assert found is not None and found.replayed
    assert found.session.session_id == sid and found.balance_after == 410
    assert [e.entry_id for e in found.entries] == [e.entry_id for e in first.entries]
    assert store.last_exit(PLATE, T0 + timedelta(hours=4)) is None


def _trace(store: Store) -> list[str]:
    """Every statement the store's own connection runs from now on, as SQLite sees it."""
    seen: list[str] = []
    with store._engine.connect() as conn:
        raw(conn).set_trace_callback(seen.append)
    return seen


def _writes(statements: list[str]) -> list[str]:
    return [s for s in statements if s.split()[0].upper() in ("INSERT", "UPDATE", "DELETE")]


def test_an_exit_is_one_write_transaction_and_a_replay_writes_nothing(
        store: Store, member: str, exit_rec: Make) -> None:
    """Ledger first, all or nothing: the whole exit between one BEGIN IMMEDIATE and its COMMIT."""
    sid = _enter(store)
    seen = _trace(store)
    first = store.record_exit(exit_rec(session_id=sid))
    assert seen[0] == "BEGIN IMMEDIATE" and seen[-1] == "COMMIT", seen
    assert [s for s in seen if s in ("BEGIN", "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")] == [
        "BEGIN IMMEDIATE", "COMMIT"]
    assert len([s for s in _writes(seen) if "ledger_entries" in s]) == len(first.entries) == 5
    seen.clear()
    again = store.record_exit(exit_rec(session_id=sid))
    assert again.replayed and again.entries == first.entries and again.session == first.session
    assert seen[0] == "BEGIN IMMEDIATE" and seen[-1] == "COMMIT" and _writes(seen) == []


def test_a_snapshot_is_one_read_transaction(store: Store, member: str, exit_rec: Make) -> None:
    sid = _enter(store)
    store.record_exit(exit_rec(session_id=sid))
    seen = _trace(store)
    with store.snapshot() as r:
        assert r.find_open_session(PLATE) is None
        found = r.last_exit(PLATE, T0)
        assert found is not None and found.session.session_id == sid
        assert r.member_view("M1", T0 + timedelta(hours=3), TZ).balance == 410
        m = r.member_for_plate(PLATE)
        assert m is not None and m.member_id == "M1"
    assert seen[0] == "BEGIN" and seen[-1] == "COMMIT" and _writes(seen) == []
    assert seen.count("BEGIN") == 1
    with pytest.raises(StoreError, match="after its transaction ended"):
        r.open_plates()
