"""``parkedge_bad_input_total{source="sync"}`` counts what the lane refuses from the broker
(#12 item 9): malformed messages on every topic it listens to and malformed acks, published
by a second client on a real Mosquitto."""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.metrics import REGISTRY
from edge.sync import topics
from tests.sync.conftest import SITE, Broker, make_store, make_sync, wait_until


def counted() -> float:
    return REGISTRY.get_sample_value("parkedge_bad_input_total", {"source": "sync"}) or 0.0


def test_malformed_sync_messages_and_acks_are_counted(tmp_path: Path, own_broker: Broker) -> None:
    store = make_store(tmp_path, "exit-1")
    sync = make_sync(store, own_broker.port)
    sync.start()
    raw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hostile")
    raw.connect("127.0.0.1", own_broker.port)
    raw.loop_start()
    try:
        assert wait_until(sync.link.subscribed.is_set, 10)
        n0, rejected0 = counted(), sum(sync.downlink.rejected.values())
        bad = [
            (topics.sessions_opened(SITE), b"not json"),
            (topics.sessions_closed(SITE), b'{"v": 1, "type": "session_closed"}'),
            (topics.member(SITE, "M1"), b"[]"),
            (topics.snapshot(SITE, "exit-1"), b"{"),
        ]
        for topic, payload in bad:
            raw.publish(topic, payload, qos=1).wait_for_publish(5)
        assert wait_until(lambda: sum(sync.downlink.rejected.values()) - rejected0 == 4, 10)
        assert counted() == n0 + 4
        raw.publish(topics.ack(SITE, "exit-1"), b'{"upto": "lots"}', qos=1).wait_for_publish(5)
        assert wait_until(lambda: sync.bad_acks == 1, 10)
        assert counted() == n0 + 5
    finally:
        raw.loop_stop()
        raw.disconnect()
        sync.stop()
        store.close()
