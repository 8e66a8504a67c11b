"""The key sync scenarios on both brokers: Mosquitto 2.0 and RabbitMQ 3.10's MQTT plugin.

Why (#16): the lanes and central must run unchanged on a broker that clusters. RabbitMQ
3.10 keeps retained messages per node and delivers none through a wildcard subscription
(docs/brokers.md), so nothing a lane needs may depend on a retained copy: each scenario
here is one a lane meets after an outage, on each broker.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from parkedge_sim.rabbitmq import RabbitMQBroker

from edge.pricing import parse_bundle
from edge.rules_holder import RulesHolder
from edge.sync import codec, topics
from edge.sync import service as sync_service

from .conftest import (
    KEYS,
    SITE,
    example_bundle,
    make_central,
    make_store,
    make_sync,
    wait_until,
    write_events,
)

LANE_PROC = Path(__file__).with_name("lane_proc.py")


@pytest.fixture(params=["mosquitto", "rabbitmq"])
def site_broker(request: pytest.FixtureRequest) -> Any:
    """The session's Mosquitto, then the session's RabbitMQ node."""
    return request.getfixturevalue("broker" if request.param == "mosquitto" else "rabbitmq")


def _central(tmp_path: Path, site_broker: Any) -> Any:
    """Central's ingest on the broker: plain subscriptions (one worker) on RabbitMQ 3.10,
    which grants ``$share/...`` and delivers nothing on it (docs/brokers.md). The brokers
    are the session's: the rules and roster an earlier test's central left retained are
    cleared first (each test's central numbers its bundles from 1 in its own database)."""
    w = Watcher(site_broker.port, f"parkedge/{SITE}/none")
    try:
        for t in (topics.rules(SITE), topics.lanes(SITE)):
            w.publish(t, b"", retain=True)
    finally:
        w.close()
    return make_central(tmp_path, site_broker.port,
                        share_group="" if isinstance(site_broker, RabbitMQBroker) else "central")


def _got(w: Watcher, payload: bytes) -> bool:
    return any(p == payload for _t, p, _r in w.got)


class Watcher:
    """A plain MQTT client (not the lanes' code) that records what reaches it."""

    def __init__(self, port: int, topic: str) -> None:
        self.got: list[tuple[str, bytes, bool]] = []
        self.subscribed = False
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{time.monotonic_ns()}")
        c.on_message = lambda _c, _u, m: self.got.append((m.topic, bytes(m.payload), m.retain))
        c.on_subscribe = lambda *_a: setattr(self, "subscribed", True)
        c.on_connect = lambda cl, *_a: cl.subscribe(topic, 1)
        c.connect("127.0.0.1", port, 10)
        c.loop_start()
        self.client = c
        assert wait_until(lambda: self.subscribed, 15)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def watchers() -> Iterator[list[Watcher]]:
    made: list[Watcher] = []
    yield made
    for w in made:
        w.close()


def test_batches_reach_central_and_are_acked(tmp_path: Path, site_broker: Any) -> None:
    central = _central(tmp_path, site_broker)
    central.start()
    lane = make_store(tmp_path, "entry-1")
    sync = make_sync(lane, site_broker.port, batch_max_entries=20)
    try:
        assert wait_until(central.connected.is_set)
        write_events(lane, 120)
        sync.start()
        assert wait_until(lambda: sync.backlog() == 0, 30), sync.backlog()
        assert central.stats["committed"] == 120
        assert central.applied()["entry-1"] == 120
    finally:
        sync.stop()
        central.stop()


def test_member_state_reaches_a_lane_that_subscribed_later(tmp_path: Path,
                                                           site_broker: Any) -> None:
    """The state is published (retained) before the lane exists: on RabbitMQ the retained
    copy never comes through ``members/+``; the snapshot answer on connect brings it."""
    central = _central(tmp_path, site_broker)
    central.start()
    assert wait_until(central.connected.is_set)
    central.add_member("M7", balance=640, plates=("粤B77777",))
    lane = make_store(tmp_path, "exit-1")
    sync = make_sync(lane, site_broker.port)
    sync.start()
    try:
        assert wait_until(lambda: (a := sync.state.account("M7")) is not None
                          and a.central_balance == 640, 20)
        assert lane.member_for_plate("粤B77777") is not None
    finally:
        sync.stop()
        central.stop()


def test_rules_and_roster_reach_a_lane_whose_broker_lost_the_retained_copies(
        tmp_path: Path, site_broker: Any, watchers: list[Watcher]) -> None:
    """A lane connecting to a broker (node) without the retained bundle and roster — a
    RabbitMQ cluster node other than central's, played here by clearing them — still gets
    both, signed, in central's answer to its snapshot request (failed before: it waited for
    a retained copy that never came)."""
    central = _central(tmp_path, site_broker)
    central.start()
    assert wait_until(central.connected.is_set)
    serial = central.publish_rules(example_bundle("campaign-b1"))
    w = Watcher(site_broker.port, f"parkedge/{SITE}/#")
    watchers.append(w)
    for t in (topics.rules(SITE), topics.lanes(SITE)):  # the lane's node has no copy
        w.publish(t, b"", retain=True)
    holder = RulesHolder(parse_bundle(example_bundle("seed")), clock=lambda: datetime.now(UTC))
    lane = make_store(tmp_path, "exit-1")
    sync = make_sync(lane, site_broker.port, on_rules=holder.offer)
    sync.start()
    try:
        assert wait_until(lambda: sync.state.rules_serial() == (serial, "campaign-b1"), 20)
        assert wait_until(lambda: sync.state.lane_roster()[0] == central.roster_serial, 5)
        assert set(sync.state.lane_roster()[1]) == set(KEYS)
        assert sync.refusals.counts == {}, sync.refusals.counts
    finally:
        sync.stop()
        central.stop()


def test_rules_reach_a_lane_that_connects_later(tmp_path: Path, site_broker: Any) -> None:
    central = _central(tmp_path, site_broker)
    central.start()
    assert wait_until(central.connected.is_set)
    serial = central.publish_rules(example_bundle("campaign-b2"))
    lane = make_store(tmp_path, "entry-1")
    sync = make_sync(lane, site_broker.port)
    sync.start()
    try:
        assert wait_until(lambda: sync.state.rules_serial() == (serial, "campaign-b2"), 20)
    finally:
        sync.stop()
        central.stop()


def test_status_goes_offline_by_last_will_when_the_lane_is_killed(
        tmp_path: Path, site_broker: Any, watchers: list[Watcher]) -> None:
    """SIGKILL: no clean disconnect, the broker publishes the retained last will; a watcher
    subscribing afterwards (exact topic) gets it retained on both brokers."""
    status_topic = topics.status(SITE, "lane-x")
    w = Watcher(site_broker.port, status_topic)
    watchers.append(w)
    proc = subprocess.Popen([sys.executable, str(LANE_PROC), str(tmp_path / "x.db"), "lane-x",
                             str(site_broker.port), KEYS["lane-x"].decode(), "100000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def states() -> list[str]:
            return [codec.parse_status(p)["state"] for _t, p, _r in w.got]
        assert wait_until(lambda: "online" in states(), 30), w.got
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert wait_until(lambda: states()[-1:] == ["offline"], 20), states()
        later = Watcher(site_broker.port, status_topic)
        watchers.append(later)
        assert wait_until(lambda: len(later.got) >= 1, 10)
        assert codec.parse_status(later.got[-1][1])["state"] == "offline"
        assert later.got[-1][2] is True  # delivered as the retained copy
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_central_that_subscribes_later_learns_every_lane_status(
        tmp_path: Path, site_broker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Central subscribes to ``lane/+/status``: RabbitMQ delivers no retained copy through
    a wildcard, so an idle lane republishes its unchanged status every STATUS_HEARTBEAT_S
    (failed before on RabbitMQ: a restarted central never heard of an idle lane)."""
    monkeypatch.setattr(sync_service, "STATUS_HEARTBEAT_S", 1.0)
    lane = make_store(tmp_path, "entry-1")
    sync = make_sync(lane, site_broker.port)
    sync.start()
    central = None
    try:
        assert wait_until(sync.link.subscribed.is_set)
        time.sleep(1.0)  # its status is out (retained) before central subscribes
        central = _central(tmp_path, site_broker)
        central.start()
        assert wait_until(lambda: "entry-1" in central.lane_status, 10), central.lane_status
        assert central.lane_status["entry-1"]["state"] == "online"
    finally:
        sync.stop()
        if central is not None:
            central.stop()


def test_a_dot_in_a_topic_level_splits_it_on_rabbitmq(rabbitmq: Any, broker: Any,
                                                      watchers: list[Watcher]) -> None:
    """The difference, measured: RabbitMQ maps ``/`` to ``.`` in routing keys, so a lane id
    ``a.b`` is two levels there and its ledger misses central's ``lane/+/ledger``."""
    got = {}
    for name, node in (("mosquitto", broker), ("rabbitmq", rabbitmq)):
        w = Watcher(node.port, f"parkedge/{SITE}/lane/+/ledger")
        watchers.append(w)
        w.publish(f"parkedge/{SITE}/lane/a.b/ledger", b"x")
        w.publish(f"parkedge/{SITE}/lane/ab/ledger", b"y")
        assert wait_until(partial(_got, w, b"y"), 10)
        time.sleep(0.3)
        got[name] = sorted(p for _t, p, _r in w.got)
    assert got == {"mosquitto": [b"x", b"y"], "rabbitmq": [b"y"]}


@pytest.mark.parametrize("site,lane", [("mall", "entry.1"), ("mall.2", "entry-1")])
def test_sync_topics_refuse_a_dot_in_an_id(tmp_path: Path, site: str, lane: str) -> None:
    """So a lane with such an id fails at start with a clear error instead of syncing into
    nothing on RabbitMQ (edge.fields.check_id allows dots)."""
    with pytest.raises(ValueError, match="without / \\+ # \\."):
        topics.status(site, lane)
    with pytest.raises(ValueError, match="without"):
        topics.member("mall", "M.1")
