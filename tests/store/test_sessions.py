"""Entries: idempotent on the event id, superseding a missed exit, listing, cancelling."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge.store import EntryKind, Store, StoreError

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=TZ)


def test_entry_is_idempotent_on_event_id(store: Store) -> None:
    s1, new1 = store.record_entry(plate="沪A12345", entered_at=T0, event_id="cam-1",
                                  vehicle_class="small", rules_version="r1",
                                  detail={"confidence": 0.97})
    s2, new2 = store.record_entry(plate="沪A12345", entered_at=T0 + timedelta(seconds=2),
                                  event_id="cam-1")
    assert new1 and not new2
    assert s1 == s2
    assert s1.session_id.startswith("X1-") and len(s1.session_id) == len("X1-") + 12
    assert s1.entered_at == T0 and s1.entered_at.utcoffset() == timedelta(0)
    opened = [e for e in store.entries() if e.kind is EntryKind.SESSION_OPENED]
    assert len(opened) == 1
    assert opened[0].payload["detail"] == {"confidence": 0.97}
    assert opened[0].rules_version == "r1"


def test_new_entry_supersedes_a_missed_exit(store: Store) -> None:
    old, _ = store.record_entry(plate="沪A12345", entered_at=T0, event_id="e1")
    new, created = store.record_entry(plate="沪A12345", entered_at=T0 + timedelta(days=1),
                                      event_id="e2")
    assert created and new.session_id != old.session_id
    assert store.get_session(old.session_id).status == "closed"  # type: ignore[union-attr]
    assert store.find_open_session("沪A12345") == new
    kinds = [(e.kind, e.payload.get("action")) for e in store.entries()]
    assert kinds == [(EntryKind.SESSION_OPENED, None), (EntryKind.CORRECTION, "superseded"),
                     (EntryKind.SESSION_OPENED, None)]
    assert store.verify().ok


def test_open_plates_and_listing(store: Store) -> None:
    for i, plate in enumerate(["粤B11111", "沪A22222", "京C33333"]):
        store.record_entry(plate=plate, entered_at=T0 + timedelta(minutes=i), event_id=f"e{i}",
                           lane_id="N1")
    assert store.open_plates() == sorted(["粤B11111", "沪A22222", "京C33333"])
    listed = store.list_sessions(open_only=True, limit=2)
    assert [s.plate for s in listed] == ["京C33333", "沪A22222"]  # newest first
    assert all(s.entry_lane == "N1" and s.session_id.startswith("N1-") for s in listed)
    # ledger entries are still written as the store's own lane
    assert {e.lane_id for e in store.entries()} == {"X1"}


def test_cancel_entry_closes_with_a_correction(store: Store) -> None:
    s, _ = store.record_entry(plate="沪A12345", entered_at=T0, event_id="e1")
    e = store.cancel_entry(s.session_id, T0 + timedelta(seconds=30), "vehicle reversed away")
    assert e is not None and e.kind is EntryKind.CORRECTION
    assert e.payload == {"action": "entry_cancelled", "reason": "vehicle reversed away"}
    assert store.find_open_session("沪A12345") is None
    assert store.cancel_entry(s.session_id, T0, "again") is None


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"plate": ""}, "plate: must be a non-empty string"),
        ({"event_id": " "}, "event_id"),
        ({"entered_at": datetime(2026, 11, 23, 9, 0)}, "entered_at: naive datetime"),
        ({"entered_at": "2026-11-23"}, "entered_at: expected a datetime"),
    ],
)
def test_bad_entries_are_refused(store: Store, kw: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"plate": "沪A12345", "entered_at": T0, "event_id": "e1"}
    args.update(kw)
    with pytest.raises(StoreError, match=match):
        store.record_entry(**args)  # type: ignore[arg-type]
    assert store.entries() == []


def test_lane_events_and_manual_open(store: Store) -> None:
    ev = store.record_lane_event("no_plate", T0, detail={"loop": "arming"})
    mo = store.record_manual_open("fire drill", "wang", T0 + timedelta(minutes=1))
    corr = store.record_correction("fee_adjusted", T0 + timedelta(minutes=2),
                                   reason="central refund", corrects=ev.entry_id)
    assert (ev.entry_id, mo.entry_id, corr.entry_id) == ("X1:1", "X1:2", "X1:3")
    assert mo.kind is EntryKind.MANUAL_OPEN
    assert mo.payload == {"operator": "wang", "reason": "fire drill"}
    assert corr.payload["corrects"] == "X1:1"
    assert [e.seq for e in store.entries(after_seq=1)] == [2, 3]
    with pytest.raises(StoreError, match="reason"):
        store.record_manual_open("", "wang", T0)


def test_lane_id_is_checked_and_missing_directory_named(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="lane_id"):
        Store.open(tmp_path / "a.db", "X:1")
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(tmp_path / "nope" / "a.db", "X1")


def test_file_is_wal_full_sync_with_foreign_keys(store: Store, db: Path) -> None:
    import sqlite3

    c = sqlite3.connect(db)
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    c.close()
    with store._engine.connect() as conn:  # the store's own connection settings
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert (conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 1000


def test_checkpoint_folds_the_wal(store: Store, db: Path) -> None:
    for i in range(50):
        store.record_lane_event("tick", T0 + timedelta(seconds=i), detail={"pad": "x" * 300})
    busy, frames, done = store.checkpoint()
    assert busy == 0 and frames > 0 and done == frames
    assert store.verify().ok
