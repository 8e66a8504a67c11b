"""#12 item 2 (sync half): one bad entry never stalls sync, and a stalled backlog alerts.

Reproduced before: a lane entry with a 300-character plate made central refuse that batch
(its codec took plates up to 256), the lane resent it for ever, central's watermark stopped
and the lane's and central's balances drifted (58 vs 59).
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from edge.metrics import REGISTRY
from edge.store import ExitRecord, Store
from edge.sync import codec, topics
from tests.sync.conftest import (
    SITE,
    T0,
    Broker,
    make_central,
    make_store,
    make_sync,
    wait_until,
)


def _exit(store: Store, n: int, plate: str, points: int) -> None:
    store.record_exit(ExitRecord(
        exit_event_id=f"x-{n}", session_id=None, plate=plate, exited_at=T0 + timedelta(hours=n),
        member_id="M1", rules_version="v1", fee=Decimal("10.00"), payable=Decimal("0.00"),
        points_deducted=points, lots_used=(("central", points),), coupons_used=(),
        points_earned=0, earned_expires_at=None, quote={}))


def test_entry_beyond_the_field_limits_is_flagged_and_the_backlog_drains(
        tmp_path: Path, own_broker: Broker) -> None:
    central = make_central(tmp_path, own_broker.port)
    central.start()
    store = make_store(tmp_path, "exit-1")
    store.upsert_member("M1", tier="member", version=1)
    store.set_lots("M1", [("central", 100, None, None)])
    central.add_member("M1", balance=100)
    _exit(store, 1, "粤B12345", 20)
    _exit(store, 2, "X" * 300, 11)  # the plate central's codec refused, with points
    _exit(store, 3, "粤B12345", 10)
    sync = make_sync(store, own_broker.port, batch_max_entries=2)
    sync.start()
    try:
        assert wait_until(lambda: sync.backlog() == 0, 20), (sync.backlog(), central.stats)
        assert central.stats["flagged"] >= 1
        flagged = central.db.flagged("exit-1")
        assert flagged and all("plate" in f["reason"] for f in flagged)
        assert json.loads(flagged[0]["raw"])["plate"] == "X" * 300
        # everything recorded, the points of the flagged entry too: no drift
        last = store.entries(0, 1000)[-1].seq
        assert len(central.db.entry_ids("exit-1")) == last
        assert central.db.balance("M1") == 100 - 20 - 11 - 10
        assert wait_until(lambda: store.balance("M1", T0) == central.db.balance("M1"), 10)
        assert central.stats.get("rejected_schema", 0) == 0
    finally:
        sync.stop()
        central.stop()


def test_forged_batch_is_still_refused_and_alerts(
        tmp_path: Path, own_broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    """A bad MAC is forgery (or a misconfigured lane): refused, counted, logged as an
    error, and the lane's backlog shows as stalled on both sides."""
    caplog.set_level(logging.INFO)
    central = make_central(tmp_path, own_broker.port, stall_alert_s=1.0)
    central.start()
    store = make_store(tmp_path, "exit-1")
    store.record_lane_event("loop_check", T0)
    sync = make_sync(store, own_broker.port, hmac_key=b"not-exit-1s-key", stall_alert_s=1.0,
                     status_interval_s=0.2)
    statuses: list[dict[str, object]] = []
    sync.start()
    try:
        assert wait_until(lambda: central.stats["rejected_bad_hmac"] >= 1, 10)
        assert wait_until(lambda: sync.backlog_stalled, 10)
        assert wait_until(lambda: central.stalled_lanes() == ["exit-1"], 10)
        assert central.lane_status["exit-1"]["backlog_stalled"]  # lane_status.stalled
        assert any(r.levelno == logging.ERROR and "bad_hmac" in r.getMessage()
                   for r in caplog.records)
        assert any(r.levelno == logging.ERROR and "backlog stalled" in r.getMessage()
                   and r.name == "edge.sync.service" for r in caplog.records)
        assert REGISTRY.get_sample_value("parkedge_sync_backlog_stalled") == 1
        assert REGISTRY.get_sample_value("parkedge_sync_backlog") == 1
        statuses.append(central.lane_status["exit-1"])
        assert statuses[-1]["backlog_stalled"] is True and statuses[-1]["backlog"] == 1
        assert sync.backlog() == 1  # nothing acked: the entry is kept
    finally:
        sync.stop()
        central.stop()


def test_backlog_that_moves_is_not_stalled(tmp_path: Path, own_broker: Broker) -> None:
    central = make_central(tmp_path, own_broker.port, stall_alert_s=1.0)
    central.start()
    store = make_store(tmp_path, "exit-1")
    sync = make_sync(store, own_broker.port, stall_alert_s=1.0)
    sync.start()
    try:
        for i in range(20):
            store.record_lane_event("loop_check", T0 + timedelta(seconds=i))
            sync.notify()
            assert wait_until(lambda: sync.backlog() == 0, 10)
        assert not sync.backlog_stalled and central.stalled_lanes() == []
        assert REGISTRY.get_sample_value("parkedge_sync_backlog_stalled") in (None, 0)
        st = codec.parse_status(codec.encode_status("exit-1", "online", 0, 20, T0))
        assert st["backlog_stalled"] is False
        assert topics.status(SITE, "exit-1") in topics.all_statuses(SITE).replace("+", "exit-1")
    finally:
        sync.stop()
        central.stop()
