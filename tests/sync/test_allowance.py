"""Offline exposure is bounded by central's per-lane allowances."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from edge.store import ExitRecord, Store
from edge.sync.allowance import spend_limit
from tests.sync.conftest import T0, Broker, make_central, make_store, make_sync, wait_until


@pytest.mark.parametrize(("available", "online", "spent", "flagged", "want"), [
    (500, True, 0, False, 500),     # online: the whole available balance
    (500, False, 0, False, 110),    # offline: allowance 100 + overdraft 10
    (500, False, 80, False, 30),    # ... minus what is already unconfirmed
    (500, False, 200, False, 0),    # never negative
    (50, False, 0, False, 50),      # never more than available
    (500, True, 0, True, 0),        # flagged: blocked everywhere
    (0, True, 0, False, 0),
    (-30, False, 0, False, 0),      # overdrawn account
])
def test_spend_limit_table(available: int, online: bool, spent: int, flagged: bool,
                           want: int) -> None:
    assert spend_limit(available=available, online=online, allowance=100, overdraft=10,
                       unconfirmed_spent=spent, flagged=flagged) == want


def _deduct(store: Store, event: str, points: int, minute: int) -> None:
    store.record_exit(ExitRecord(
        exit_event_id=event, session_id=None, plate="粤B12345",
        exited_at=T0 + timedelta(minutes=minute), member_id="M1", rules_version="v1",
        fee=Decimal("10.00"), payable=Decimal("0.00"), points_deducted=points,
        lots_used=(("central", points),), coupons_used=(), points_earned=0,
        earned_expires_at=None, quote={}))


def test_two_lanes_offline_never_exceed_their_allowances(
        tmp_path: Path, own_broker: Broker) -> None:
    central = make_central(tmp_path, own_broker.port, allowance=100)
    central.start()
    lanes = [make_store(tmp_path, "entry-1"), make_store(tmp_path, "exit-1")]
    syncs = [make_sync(s, own_broker.port) for s in lanes]
    for s in syncs:
        s.start()
    try:
        assert wait_until(central.connected.is_set, 10)
        central.add_member("M1", balance=1000, plates=("粤B12345",))
        assert wait_until(lambda: all(s.spend_limit("M1") == 1000 for s in syncs), 10)
        own_broker.kill()
        assert wait_until(lambda: not any(s.link.subscribed.is_set() for s in syncs), 10)
        spent = [0, 0]
        for i, (store, sync) in enumerate(zip(lanes, syncs, strict=True)):
            for k in range(10):  # a driver every minute, each wanting 40 points
                n = min(40, sync.spend_limit("M1", overdraft=10))
                if n:
                    _deduct(store, f"{store.lane_id}-x{k}", n, k)
                    spent[i] += n
        assert spent == [110, 110]  # allowance + overdraft each, not the 1000 balance
        own_broker.start()
        assert wait_until(lambda: central.db.balance("M1") == 1000 - 220
                          and all(s.backlog() == 0 for s in syncs), 30)
        # balance = sum of entries (the opening 1000 is an entry at central too)
        assert central.db.points_from_entries("M1") == 1000 - 220
        # back online with central's balance confirmed: the full balance is spendable
        assert wait_until(lambda: all(s.spend_limit("M1") == 780 for s in syncs), 15)
        assert all(s.verify().ok for s in lanes)
    finally:
        for s in syncs:
            s.stop()
        central.stop()


def test_offline_overdraft_is_flagged_centrally_and_blocks_every_lane(
        tmp_path: Path, own_broker: Broker) -> None:
    central = make_central(tmp_path, own_broker.port, allowance=100)
    central.start()
    lanes = [make_store(tmp_path, "entry-1"), make_store(tmp_path, "exit-1")]
    syncs = [make_sync(s, own_broker.port) for s in lanes]
    for s in syncs:
        s.start()
    try:
        assert wait_until(central.connected.is_set, 10)
        central.add_member("M1", balance=150)
        assert wait_until(lambda: all(s.spend_limit("M1") == 150 for s in syncs), 10)
        own_broker.kill()
        assert wait_until(lambda: not any(s.link.connected.is_set() for s in syncs), 10)
        for k, (store, sync) in enumerate(zip(lanes, syncs, strict=True)):
            n = sync.spend_limit("M1", overdraft=10)
            assert n == 110  # each lane alone stays within the balance ...
            _deduct(store, f"{store.lane_id}-x", n, k)
        own_broker.start()
        # ... together they overdraw it: central takes both, goes negative and flags it
        assert wait_until(lambda: central.db.balance("M1") == -70, 30)
        st = central.db.member_state("M1", {}, 0)
        assert st is not None and st.flagged
        assert wait_until(lambda: all(s.spend_limit("M1") == 0 for s in syncs)
                          and all(s.get_member("M1").blocked for s in lanes), 15)  # type: ignore[union-attr]
    finally:
        for s in syncs:
            s.stop()
        central.stop()
