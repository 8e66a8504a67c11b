"""Ledger up to central through a real Mosquitto: exactly once, whatever dies when."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.store import Store
from edge.sync import codec, topics
from tests.sync.conftest import (
    CENTRAL_KEY,
    KEYS,
    SITE,
    Broker,
    make_central,
    make_store,
    make_sync,
    wait_until,
    write_events,
)


def _all_ids(store: Store) -> set[str]:
    return {e.entry_id for e in store.entries(0, 1_000_000)}


def _assert_exactly_once(central_ids: list[str], *stores: Store) -> None:
    want: set[str] = set()
    for s in stores:
        want |= _all_ids(s)
        v = s.verify()
        assert v.ok, v.problems
    assert len(central_ids) == len(want)  # count: no duplicates ...
    assert set(central_ids) == want  # ... and no entry missing


def test_backlog_drains_exactly_once_and_status_is_retained(
        tmp_path: Path, broker: Broker) -> None:
    store = make_store(tmp_path, "entry-1")
    write_events(store, 300)
    central = make_central(tmp_path, broker.port)
    central.start()
    sync = make_sync(store, broker.port, batch_max_entries=50, window=3)
    sync.start()
    try:
        assert wait_until(lambda: central.db.count_entries() >= 300 and sync.backlog() == 0)
        assert store.unacked(limit=10) == []
        _assert_exactly_once(central.db.entry_ids(), store)
        assert sync.uplink.batches_sent >= 6  # bounded batches, not one blob
        assert wait_until(lambda: central.lane_status.get("entry-1", {}).get("backlog") == 0)
    finally:
        sync.stop()
    # The stop published a retained "offline" status that a newcomer sees.
    got: list[dict[str, object]] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="probe")
    c.on_message = lambda _c, _u, m: got.append(json.loads(m.payload))
    c.connect("127.0.0.1", broker.port)
    c.subscribe(topics.status(SITE, "entry-1"), qos=1)
    c.loop_start()
    try:
        assert wait_until(lambda: bool(got), 5)
        assert got[-1]["state"] == "offline" and got[-1]["last_acked_seq"] == 300
    finally:
        c.loop_stop()
        c.disconnect()
        central.stop()


def test_broker_killed_and_restarted_mid_stream(tmp_path: Path, own_broker: Broker) -> None:
    store = make_store(tmp_path, "entry-1")
    central = make_central(tmp_path, own_broker.port)
    central.start()
    sync = make_sync(store, own_broker.port, batch_max_entries=20, window=2)
    sync.start()
    total = 400

    def writer() -> None:
        for i in range(0, total, 10):
            write_events(store, 10, i)
            sync.notify()
            time.sleep(0.01)

    w = threading.Thread(target=writer)
    w.start()
    try:
        assert wait_until(lambda: central.db.count_entries() >= 60, 15)
        own_broker.kill()  # SIGKILL mid-stream: in-flight batches and acks are lost
        w.join(30)
        assert sync.backlog() > 0  # the rest waited on disk
        time.sleep(1.0)
        own_broker.start()
        assert wait_until(lambda: central.db.count_entries() >= total and sync.backlog() == 0,
                          30)
        _assert_exactly_once(central.db.entry_ids(), store)
    finally:
        sync.stop()
        central.stop()


def test_broker_down_while_hundreds_of_vehicles_pass(tmp_path: Path, own_broker: Broker) -> None:
    store = make_store(tmp_path, "entry-1")
    central = make_central(tmp_path, own_broker.port)
    central.start()
    sync = make_sync(store, own_broker.port)
    sync.start()
    try:
        assert wait_until(sync.link.connected.is_set, 10)
        own_broker.kill()
        assert wait_until(lambda: not sync.link.connected.is_set(), 10)
        t = time.monotonic()
        write_events(store, 600)  # the lane never waits for the network
        write_s = time.monotonic() - t
        assert sync.backlog() == 600
        assert sync.uplink.in_flight == 0
        own_broker.start()
        assert wait_until(lambda: central.db.count_entries() >= 600 and sync.backlog() == 0, 30)
        _assert_exactly_once(central.db.entry_ids(), store)
        assert write_s < 30
    finally:
        sync.stop()
        central.stop()


def test_tampered_hmac_is_rejected_and_counted(tmp_path: Path, broker: Broker) -> None:
    store = make_store(tmp_path, "lane-x")
    write_events(store, 30)
    central = make_central(tmp_path, broker.port)
    central.start()
    sync = make_sync(store, broker.port, hmac_key=b"not-the-key-central-holds")
    sync.start()
    try:
        assert wait_until(lambda: central.stats["rejected_bad_hmac"] >= 1, 10)
        time.sleep(0.5)
        assert central.db.entry_ids("lane-x") == []  # nothing committed
        assert sync.backlog() == 30  # and nothing acked: the lane keeps it
        assert len(store.unacked(limit=100)) == 30
    finally:
        sync.stop()
        central.stop()


def test_replayed_batch_is_committed_once_across_central_restart(
        tmp_path: Path, broker: Broker) -> None:
    """QoS 1 redelivery and a lane that lost its acks: the same batch again changes nothing,
    even after central restarts, and is acked again every time."""
    store = make_store(tmp_path, "lane-x")
    write_events(store, 40)
    es = store.entries(0, 100)
    raw = codec.encode_batch(SITE, "lane-x", [codec.encode_entry(e) for e in es], 1, 40,
                             KEYS["lane-x"], datetime.now(UTC))
    acks: list[codec.Ack] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="replayer")
    c.on_message = lambda _c, _u, m: acks.append(codec.parse_ack(bytes(m.payload),
                                                                 KEYS["lane-x"]))
    c.connect("127.0.0.1", broker.port)
    c.subscribe(topics.ack(SITE, "lane-x"), qos=1)
    c.loop_start()
    central = make_central(tmp_path, broker.port)
    central.start()
    try:
        assert wait_until(central.connected.is_set, 10)
        for _ in range(2):
            c.publish(topics.ledger(SITE, "lane-x"), raw, qos=1).wait_for_publish(5)
        assert wait_until(lambda: len(acks) >= 2, 10)
        assert central.stats["committed"] == 40 and central.stats["duplicates"] == 40
        central.stop()
        central = make_central(tmp_path, broker.port)
        central.start()
        assert wait_until(central.connected.is_set, 10)
        c.publish(topics.ledger(SITE, "lane-x"), raw, qos=1).wait_for_publish(5)
        assert wait_until(lambda: len(acks) >= 3, 10)
        assert central.stats["committed"] == 0 and central.stats["duplicates"] == 40
        assert sorted(central.db.entry_ids()) == sorted(e.entry_id for e in es)
        assert all(a.upto == 40 and a.ranges == () for a in acks)
    finally:
        c.loop_stop()
        c.disconnect()
        central.stop()


def test_lane_process_killed_mid_publish_and_restarted(tmp_path: Path, broker: Broker) -> None:
    script = Path(__file__).with_name("lane_proc.py")
    db = tmp_path / "lane-x.db"
    central = make_central(tmp_path, broker.port)
    central.start()

    def run(n: int) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, str(script), str(db), "lane-x",
                                 str(broker.port), KEYS["lane-x"].decode(), str(n)],
                                stdout=subprocess.PIPE, text=True)
    try:
        p = run(500)
        assert wait_until(lambda: central.db.count_entries() >= 80, 20)
        # central goes away, so what the lane writes from now on stays unacknowledged (the sync
        # keeps up with 2 ms writes: without this, half the kills found nothing in flight)
        central.stop()
        time.sleep(0.3)
        p.send_signal(signal.SIGKILL)  # mid-publish: batches in flight, acks unprocessed
        p.wait(10)
        assert p.returncode == -signal.SIGKILL
        store = Store.open(db, "lane-x")
        written = len(store.entries(0, 1_000_000))
        assert 80 <= written < 500  # really killed in the middle
        assert len(store.unacked(limit=1_000_000)) > 0
        central = make_central(tmp_path, broker.port)
        central.start()
        assert wait_until(central.connected.is_set, 10)
        p2 = run(0)  # restart: sends the rest from disk, nothing new written
        out, _ = p2.communicate(timeout=60)
        assert p2.returncode == 0, out
        assert wait_until(lambda: central.db.count_entries() >= written, 10)
        _assert_exactly_once(central.db.entry_ids(), store)
        assert store.unacked(limit=10) == []
    finally:
        central.stop()


def test_built_from_the_lane_config(tmp_path: Path, broker: Broker) -> None:
    from edge.config.models import SyncConfig
    from edge.sync.service import LaneSync

    cfg = SyncConfig.model_validate({
        "enabled": True, "broker_url": f"mqtt://127.0.0.1:{broker.port}",
        "hmac_key": KEYS["exit-1"].decode(), "batch_max_entries": 7, "window": 2})
    store = make_store(tmp_path, "exit-1")
    write_events(store, 30)
    central = make_central(tmp_path, broker.port)
    central.start()
    sync = LaneSync.from_config(cfg, store, site=SITE)
    sync.start()
    try:
        assert wait_until(lambda: sync.backlog() == 0, 15)
        assert sync.uplink.batches_sent >= 5  # batch_max_entries came from the config
        assert len(central.db.entry_ids("exit-1")) == 30
    finally:
        sync.stop()
        central.stop()


def test_reinstalled_lane_reusing_sequences_is_refused_not_deduplicated(
        tmp_path: Path, broker: Broker) -> None:
    central = make_central(tmp_path, broker.port)
    central.start()
    first = make_store(tmp_path, "lane-x")
    write_events(first, 10)
    sync = make_sync(first, broker.port)
    sync.start()
    try:
        assert wait_until(lambda: sync.backlog() == 0, 10)
    finally:
        sync.stop()
        first.close()
    fresh_dir = tmp_path / "reinstalled"
    fresh_dir.mkdir()
    fresh = make_store(fresh_dir, "lane-x")  # a fresh file: seqs 1.. again, other content
    write_events(fresh, 12, start=500)
    sync = make_sync(fresh, broker.port)
    sync.start()
    try:
        assert wait_until(lambda: central.stats["rejected_seq_conflict"] >= 1, 10)
        assert sorted(central.db.entry_ids("lane-x")) == sorted(f"lane-x:{i}"
                                                                for i in range(1, 11))
        assert central.stats["duplicates"] == 0  # not silently swallowed as duplicates
        assert sync.backlog() == 12  # and never acknowledged: nothing is lost
    finally:
        sync.stop()
        central.stop()


def test_window_bounds_in_flight_and_unacked_batches_are_resent_with_backoff(
        tmp_path: Path, broker: Broker) -> None:
    """No central: nothing is acked, so only `window` distinct batches ever leave, each
    resent after the ack timeout with a doubling back-off, and nothing is marked done."""
    store = make_store(tmp_path, "lane-x")
    write_events(store, 100)
    seen: list[str] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ledger-watch")
    c.on_message = lambda _c, _u, m: seen.append(json.loads(m.payload)["batch_id"])
    c.connect("127.0.0.1", broker.port)
    c.subscribe(topics.ledger(SITE, "lane-x"), qos=1)
    c.loop_start()
    time.sleep(0.3)
    sync = make_sync(store, broker.port, batch_max_entries=10, window=2, ack_timeout_s=0.5)
    sync.start()
    try:
        time.sleep(4.0)  # sends at 0, resends at ~0.5+1, ~1.5+2 (back-off 1 s, then 2 s)
        assert set(seen) == {"lane-x:1-10", "lane-x:11-20"}
        per_batch = {b: seen.count(b) for b in set(seen)}
        # a fixed 0.5 s timeout would give ~8 each; the doubling back-off gives 3-4
        assert all(2 <= n <= 4 for n in per_batch.values()), per_batch
        assert sync.uplink.in_flight == 2 and sync.backlog() == 100
        assert len(store.unacked(limit=1000)) == 100
    finally:
        sync.stop()
        c.loop_stop()
        c.disconnect()


def test_acks_free_the_window_at_once_and_are_saved_in_groups(
        tmp_path: Path, broker: Broker) -> None:
    """Driven step by step from this thread (no worker, no central): an ack frees the window
    immediately, but reaches the store only ``ack_save_s`` later while batches are in
    flight, and at once when none is left."""
    store = make_store(tmp_path, "lane-x")
    write_events(store, 60)
    sync = make_sync(store, broker.port, batch_max_entries=10, window=3)
    up = sync.uplink
    up.ack_save_s = 0.5
    sync.link.start()
    try:
        assert wait_until(sync.link.connected.is_set)
        assert up.step() and up.in_flight == 3  # seqs 1-30
        up.on_acks([codec.Ack("lane-x", 10, (), None), codec.Ack("lane-x", 10, ((21, 30),), None)])
        assert up.in_flight == 1 and up.step() and up.in_flight == 3  # 31-50 went out
        assert up.acked_seq == 0 and len(store.unacked(limit=100)) == 60  # not saved yet
        time.sleep(0.6)
        up.step()  # the pending acks are saved now: 1-10 and 21-30
        assert up.acked_seq == 10 and [e.seq for e in store.unacked(limit=100)][:10] == [
            *range(11, 21)] and len(store.unacked(limit=100)) == 40
        up.on_acks([codec.Ack("lane-x", 50, (), None)])
        assert up.in_flight == 0 and up.acked_seq == 50  # nothing in flight: saved at once
        assert [e.seq for e in store.unacked(limit=100)] == [*range(51, 61)]
    finally:
        sync.link.stop()
        sync.state.close()


def test_oversized_and_garbage_messages_never_stop_the_lane(
        tmp_path: Path, broker: Broker) -> None:
    store = make_store(tmp_path, "lane-x")
    sync = make_sync(store, broker.port)
    sync.start()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="vandal")
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        assert wait_until(sync.link.subscribed.is_set, 10)
        # over the lane's 4 MiB limit, under the broker's packet limit: dropped at the lane
        big = b"{" + b" " * (4 * 1024 * 1024 + 1000) + b"}"
        c.publish(topics.member(SITE, "M1"), big, qos=1).wait_for_publish(10)
        for junk in (b"", b"null", b"[]", b'{"v":1,"type":"member"}', b"\xff" * 100):
            c.publish(topics.member(SITE, "M1"), junk, qos=1).wait_for_publish(5)
        c.publish(topics.ack(SITE, "lane-x"), b'{"v":1,"type":"ack","upto":-1}',
                  qos=1).wait_for_publish(5)
        good = codec.MemberState("M1", 1, 0, "member", None, False, False, True, 42, (), 10, {})
        c.publish(topics.member(SITE, "M1"), codec.encode_member(good, SITE, CENTRAL_KEY),
                  qos=1).wait_for_publish(5)
        assert wait_until(lambda: sync.state.account("M1") is not None, 10)
        assert sync.link.oversized == 1 and sync.refusals.counts["too_large"] == 1
        # 5 junk members, the oversized one, the bad ack: each counted
        assert sum(sync.refusals.counts.values()) == 7 and sync.bad_acks == 1
        assert sync.spend_limit("M1") == 42
    finally:
        c.loop_stop()
        c.disconnect()
        sync.stop()
