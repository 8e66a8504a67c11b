"""A site cut off from central while its own broker is up (docs/network_faults.md): cars must
keep crossing entry -> exit, and the lanes must spend points as offline lanes do."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.store import ExitRecord, Store
from edge.sync import codec, topics
from tests.sync.conftest import (
    CENTRAL_KEY,
    SITE,
    T0,
    Broker,
    make_central,
    make_store,
    make_sync,
    roster,
    wait_until,
)


class _Probe:
    """A plain client on the site's broker: publishes what central would have left
    retained, and keeps the lanes' statuses."""

    def __init__(self, port: int) -> None:
        self.statuses: list[dict[str, object]] = []
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{id(self)}")
        self.c.on_message = lambda _c, _u, m: self.statuses.append(json.loads(m.payload))
        self.c.connect("127.0.0.1", port)
        self.c.subscribe(topics.status(SITE, "exit-1"), qos=1)
        self.c.loop_start()

    def pub(self, topic: str, payload: bytes, retain: bool = True) -> None:
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_sessions_reach_the_exit_lane_while_central_never_acks(
        tmp_path: Path, own_broker: Broker) -> None:
    """No central on the broker (cut off): the entry lane's window fills with unacked
    batches, and the sessions opened after that still reach the exit lane."""
    probe = _Probe(own_broker.port)
    probe.pub(topics.lanes(SITE), roster())  # the roster central left retained before the cut
    entry, exit_ = make_store(tmp_path, "entry-1"), make_store(tmp_path, "exit-1")
    s_entry = make_sync(entry, own_broker.port, batch_max_entries=1, window=1,
                        ack_timeout_s=30.0)
    s_exit = make_sync(exit_, own_broker.port)
    syncs = (s_entry, s_exit)
    for s in syncs:
        s.start()
    try:
        assert wait_until(lambda: all(s.link.subscribed.is_set() for s in syncs)
                          and s_exit.state.lane_roster()[0] == 1, 10)
        for i in range(3):
            plate = f"粤B0000{i}"
            entry.record_entry(plate=plate, entered_at=T0 + timedelta(minutes=i),
                               event_id=f"ev-{i}")
            s_entry.notify()

            def heard(p: str = plate) -> bool:
                return exit_.find_open_session(p) is not None

            assert wait_until(heard, 10), (
                f"{plate} not announced (window {s_entry.uplink.in_flight} in flight, "
                f"backlog {s_entry.backlog()})")
        # the window was full the whole time: one batch in flight, nothing acknowledged
        assert s_entry.uplink.in_flight == 1 and s_entry.backlog() == 3
        # announced once each: the exit lane holds one open session per plate
        assert [exit_.find_open_session(f"粤B0000{i}") is not None for i in range(3)] == [
            True] * 3
    finally:
        for s in syncs:
            s.stop()
        probe.close()


def _deduct(store: Store, event: str, points: int, minute: int) -> None:
    store.record_exit(ExitRecord(
        exit_event_id=event, session_id=None, plate="粤B12345",
        exited_at=T0 + timedelta(minutes=minute), member_id="M1", rules_version="v1",
        fee=Decimal("10.00"), payable=Decimal("0.00"), points_deducted=points,
        lots_used=(("central", points),), coupons_used=(), points_earned=0,
        earned_expires_at=None, quote={}))


def test_spend_limit_is_offline_once_central_owes_an_ack(
        tmp_path: Path, own_broker: Broker) -> None:
    """The lane's MQTT link stays up (the site broker), central stops answering: after
    ``central_silence_s`` the lane spends at most the allowance and says it is offline;
    when central acks again it is online with the whole balance."""
    central = make_central(tmp_path, own_broker.port, allowance=100)
    central.start()
    store = make_store(tmp_path, "exit-1")
    sync = make_sync(store, own_broker.port, central_silence_s=1.5)
    sync.start()
    probe = _Probe(own_broker.port)
    try:
        assert wait_until(central.connected.is_set, 10)
        central.add_member("M1", balance=1000, plates=("粤B12345",))
        assert wait_until(lambda: sync.spend_limit("M1") == 1000, 10)
        central.stop()  # cut off: the broker (the site's) and the lane's link stay up
        _deduct(store, "x-0", 40, 0)
        sync.notify()
        time.sleep(0.5)
        assert sync.link.connected.is_set()
        assert sync.spend_limit("M1", overdraft=10) == 960  # not overdue yet: online
        assert wait_until(lambda: sync.spend_limit("M1", overdraft=10) == 70, 5)
        assert sync.link.connected.is_set() and not sync.central_reachable()
        assert wait_until(lambda: bool(probe.statuses)
                          and probe.statuses[-1]["state"] == "offline", 5), probe.statuses[-3:]
        central = make_central(tmp_path, own_broker.port, allowance=100)
        central.start()  # back: the resent batch is acked
        assert wait_until(lambda: sync.backlog() == 0 and sync.central_reachable(), 20)
        assert wait_until(lambda: sync.spend_limit("M1") == 960, 15)
        assert wait_until(lambda: probe.statuses[-1]["state"] == "online", 5)
        # every status parses as central reads it
        for st in probe.statuses:
            codec.parse_status(json.dumps(st).encode())
    finally:
        sync.stop()
        probe.close()
        central.stop()


def test_an_idle_lane_stays_online(tmp_path: Path, own_broker: Broker) -> None:
    """Nothing to send, nothing owed: an idle lane is not taken for cut off."""
    probe = _Probe(own_broker.port)
    store = make_store(tmp_path, "exit-1")
    sync = make_sync(store, own_broker.port, central_silence_s=1.0)
    sync.start()
    try:
        assert wait_until(sync.link.subscribed.is_set, 10)
        good = codec.MemberState("M1", 1, 0, "member", None, False, False, True, 500, (), 100,
                                 {})
        probe.pub(topics.member(SITE, "M1"), codec.encode_member(good, SITE, CENTRAL_KEY),
                  retain=False)
        assert wait_until(lambda: sync.state.account("M1") is not None, 10)
        time.sleep(1.5)
        assert sync.central_reachable() and sync.spend_limit("M1") == 500
    finally:
        sync.stop()
        probe.close()
