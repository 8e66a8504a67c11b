"""Outbox state for sync: unacked entries per peer, acks with out-of-order ranges."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from edge.store import Store, StoreError

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


def _fill(store: Store, n: int) -> None:
    for i in range(n):
        store.record_lane_event("tick", T0 + timedelta(seconds=i))


def test_unacked_follows_acks_and_ranges(store: Store) -> None:
    _fill(store, 10)
    assert [e.seq for e in store.unacked(limit=3)] == [1, 2, 3]
    store.mark_acked("central", 3)
    assert [e.seq for e in store.unacked()] == [4, 5, 6, 7, 8, 9, 10]
    store.mark_acked("central", 3, [(6, 7), (9, 9)])
    assert [e.seq for e in store.unacked()] == [4, 5, 8, 10]
    store.mark_acked("central", 2, [(4, 5)])  # acked_seq never goes back; 4-5 joins 1-3, 6-7
    assert [e.seq for e in store.unacked()] == [8, 10]
    assert [e.seq for e in store.unacked(peer="other")] == list(range(1, 11))
    store.mark_acked("central", 0, [(8, 8), (10, 10)])
    assert store.unacked() == []
    with pytest.raises(StoreError, match="empty"):
        store.mark_acked("central", 0, [(12, 11)])


def test_outbox_state_survives_reopen(store: Store, db: object) -> None:
    _fill(store, 4)
    store.mark_acked("central", 1, [(3, 3)])
    store.close()
    with Store.open(str(db), "X1") as again:
        assert [e.seq for e in again.unacked()] == [2, 4]
