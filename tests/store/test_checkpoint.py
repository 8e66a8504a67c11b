"""Deferred WAL checkpoints: off the commits, on request, with a safety net."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from edge.store import Store

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


def event(store: Store, i: int) -> None:
    store.record_lane_event("tick", T0, detail={"i": i})


def test_deferred_commits_leave_the_wal_to_checkpoint_if_due(store: Store) -> None:
    store.defer_checkpoints(every=4)
    assert store._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    for i in range(3):
        event(store, i)
    assert not store.checkpoint_due and not store.checkpoint_if_due()
    event(store, 3)
    assert store.checkpoint_due
    assert store.checkpoint_if_due()
    assert not store.checkpoint_due


def test_a_store_nobody_asks_still_checkpoints_itself(store: Store) -> None:
    store.defer_checkpoints(every=2)
    for i in range(7):
        event(store, i)
    assert store.checkpoint_due  # 7 writes, nobody asked
    event(store, 7)  # the 8th (4 x every) checkpoints inline
    assert not store.checkpoint_due
    assert store.verify().ok


def test_automatic_checkpoint_is_sqlites_default_until_deferred(db: Path) -> None:
    with Store.open(db, "X1") as s:
        assert s._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
        assert not s.checkpoint_due
