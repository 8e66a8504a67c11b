"""#12 item 5: nothing that comes down the broker is believed.

Each test runs a real lane sync against a real Mosquitto, and a second paho client (the
attacker on the site LAN with broker access) publishes the forged message that was
reproduced against the code before this change. Each forgery must be refused, counted and
logged, and change nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from edge.metrics import REGISTRY
from edge.pricing import parse_bundle
from edge.rules_holder import RulesHolder
from edge.sync import codec, topics
from edge.sync.service import LaneSync
from tests.sync.conftest import (
    CENTRAL_KEY,
    KEYS,
    SITE,
    Broker,
    example_bundle,
    make_store,
    make_sync,
    roster,
    wait_until,
    write_events,
)


class Attacker:
    """A second paho client on the broker, publishing whatever it likes."""

    def __init__(self, port: int) -> None:
        self.disconnected = False
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"attacker-{time.time_ns()}")
        self.c.on_disconnect = self._gone
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _gone(self, *_a: Any) -> None:
        self.disconnected = True

    def pub(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def attacker(own_broker: Broker) -> Iterator[Attacker]:
    a = Attacker(own_broker.port)
    yield a
    a.close()


@pytest.fixture
def lane(tmp_path: Path, own_broker: Broker, attacker: Attacker) -> Iterator[LaneSync]:
    """exit-1, no central: whatever it gets comes from the attacker (or the test's roster)."""
    attacker.pub(topics.lanes(SITE), roster(), retain=True)  # central's, signed
    store = make_store(tmp_path, "exit-1")
    sync = make_sync(store, own_broker.port)
    sync.start()
    assert wait_until(sync.link.subscribed.is_set, 10)
    assert wait_until(lambda: sync.downlink.applied["lanes"] == 1, 10)
    yield sync
    sync.stop()


def _member(version: int, balance: int, **kw: Any) -> codec.MemberState:
    base: dict[str, Any] = {
        "member_id": "M1", "version": version, "prev_version": version - 1, "tier": "member",
        "name": "Li", "blocked": False, "flagged": False, "auto_deduct": True,
        "balance": balance, "plates": ("粤B12345",), "allowance": 100, "applied": {}}
    base.update(kw)
    return codec.MemberState(**base)


def _unsigned(m: codec.MemberState) -> bytes:
    """The message as it was before: no site, no signature."""
    d = codec.member_to_wire(m, SITE)
    d.pop("site")
    return codec.canonical(d)


def _resigned(raw: bytes, **change: Any) -> bytes:
    """A central-signed message changed and signed again with central's real key: what
    only central (or a thief of its key) could send. Range checks must still hold."""
    d = json.loads(raw)
    d.update(change)
    d.pop("sig")
    return codec.canonical(codec.sign_ed25519(d, CENTRAL_KEY))


def _refused(reason: str) -> float:
    return REGISTRY.get_sample_value("parkedge_sync_refused_total", {"reason": reason}) or 0.0


# ---------------------------------------------------------------- acks
def test_forged_ack_cannot_acknowledge_the_backlog(lane: LaneSync, attacker: Attacker,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Before: an ack with upto = 10**6 set the backlog to 0 and entries never left."""
    caplog.set_level(logging.WARNING, logger="edge.sync")
    before = _refused("unsigned")
    write_events(lane.store, 30)
    lane.notify()
    assert wait_until(lambda: lane.uplink.sent_max == 30, 10)
    t = topics.ack(SITE, "exit-1")
    forged = {"v": 1, "type": "ack", "lane": "exit-1", "upto": 10**6, "ranges": [],
              "batch_id": None}
    attacker.pub(t, codec.canonical(forged))
    forged["hmac"] = codec.mac(b"guessed-key", codec.canonical(forged))
    attacker.pub(t, codec.canonical(forged))
    # even MACed with the lane's own key (a leaked key): never beyond what was written
    attacker.pub(t, codec.encode_ack("exit-1", 10**6, [], None, KEYS["exit-1"]))
    r = lane.refusals.counts
    assert wait_until(lambda: r["unsigned"] == 1 and r["bad_hmac"] == 1
                      and r["ack_beyond_written"] == 1, 10), r
    time.sleep(0.3)
    assert lane.backlog() == 30 and lane.uplink.acked_seq == 0
    assert len(lane.store.unacked(limit=100)) == 30
    assert "sync message refused (unsigned)" in caplog.text
    assert "sync message refused (ack_beyond_written)" in caplog.text
    assert _refused("unsigned") == before + 1  # the Prometheus counter too


def test_ack_is_cut_back_to_what_the_lane_has_sent(tmp_path: Path, own_broker: Broker,
                                                   attacker: Attacker) -> None:
    store = make_store(tmp_path, "exit-1")
    write_events(store, 50)
    sync = make_sync(store, own_broker.port, batch_max_entries=10, window=2)
    sync.start()
    try:
        assert wait_until(lambda: sync.uplink.sent_max == 20, 10)
        attacker.pub(topics.ack(SITE, "exit-1"),
                     codec.encode_ack("exit-1", 45, [], None, KEYS["exit-1"]))
        assert wait_until(lambda: sync.refusals.counts["ack_beyond_sent"] == 1, 10)
        assert wait_until(lambda: sync.uplink.acked_seq == 20, 10)
        assert store.unacked(limit=100)[0].seq == 21
    finally:
        sync.stop()


# ---------------------------------------------------------------- sessions between lanes
def _opened(origin: str, event: str, plate: str, at: datetime) -> codec.SessionOpened:
    return codec.SessionOpened(origin, event, plate, at, "small", None, None)


def test_forged_session_opened_cannot_make_a_stay_free(lane: LaneSync,
                                                       attacker: Attacker) -> None:
    """Before: a session_opened with entered_at = now let a 4-hour stay leave for 0.00."""
    now = datetime.now(UTC)
    four_h = now - timedelta(hours=4)
    entry_key = codec.lane_session_key(KEYS["entry-1"], "entry-1")
    t = topics.sessions_opened(SITE)
    attacker.pub(t, codec.encode_session_opened(
        _opened("entry-1", "ev-real", "粤B12345", four_h), SITE, entry_key))
    assert wait_until(lambda: lane.store.find_open_session("粤B12345") is not None, 10)
    # unsigned, as the attacker could send it before
    unsigned = json.loads(codec.encode_session_opened(
        _opened("entry-1", "ev-forged", "粤B12345", now), SITE, entry_key))
    unsigned.pop("sig")
    attacker.pub(t, codec.canonical(unsigned))
    # signed with a key of the attacker's, claiming to be entry-1 or an unknown lane
    own = Ed25519PrivateKey.generate()
    attacker.pub(t, codec.encode_session_opened(
        _opened("entry-1", "ev-forged2", "粤B12345", now), SITE, own))
    attacker.pub(t, codec.encode_session_opened(
        _opened("entry-9", "ev-forged3", "粤B12345", now), SITE, own))
    # a compromised entry lane (its real key): may not move the known stay later
    attacker.pub(t, codec.encode_session_opened(
        _opened("entry-1", "ev-forged4", "粤B12345", now), SITE, entry_key))
    # ... nor open one in the future, nor close the stay before it began
    attacker.pub(t, codec.encode_session_opened(
        _opened("entry-1", "ev-future", "粤B99999", now + timedelta(hours=1)), SITE,
        entry_key))
    attacker.pub(topics.sessions_closed(SITE), codec.encode_session_closed(
        codec.SessionClosed("entry-1", None, "粤B12345", four_h - timedelta(hours=1), "x-9"),
        SITE, entry_key))
    r = lane.refusals.counts
    assert wait_until(lambda: r["unsigned"] == 1 and r["bad_signature"] == 1
                      and r["unknown_lane"] == 1 and r["session_moves_later"] == 1
                      and r["future"] == 1 and r["close_before_entry"] == 1, 10), r
    s = lane.store.find_open_session("粤B12345")
    assert s is not None
    assert abs((s.entered_at - four_h).total_seconds()) < 1
    assert lane.store.find_open_session("粤B99999") is None


def _flood(attacker: Attacker, n: int, key: Ed25519PrivateKey | None) -> None:
    t = topics.sessions_opened(SITE)
    now = datetime.now(UTC) - timedelta(minutes=5)
    for i in range(n):
        s = _opened("entry-1", f"flood-{i}", f"粤F{i:05d}", now)
        raw = codec.encode_session_opened(s, SITE, key or Ed25519PrivateKey.generate())
        if key is None:
            d = json.loads(raw)
            d.pop("sig")
            raw = codec.canonical(d)
        attacker.c.publish(t, raw, qos=0)


@pytest.mark.parametrize("n", [2000, pytest.param(20_000, marks=pytest.mark.slow)])
def test_session_flood_adds_no_ledger_entries(lane: LaneSync, attacker: Attacker,
                                              n: int) -> None:
    """Before: 20,000 forged session messages added 2,184 ledger entries per lane."""
    _flood(attacker, n, None)
    assert wait_until(lambda: lane.refusals.counts["unsigned"] >= n * 0.95, 60), \
        lane.refusals.counts
    assert lane.store.entries(0, 10) == []


def test_session_rate_is_bounded_even_for_a_real_lane_key(
        lane: LaneSync, attacker: Attacker, monkeypatch: pytest.MonkeyPatch) -> None:
    """A compromised lane signs its own messages: the lanes still take only a burst (600
    here instead of the real 5,000, to keep the test short; the bucket reads it when the
    origin's first event arrives)."""
    monkeypatch.setattr("edge.sync.downlink.SESSION_BURST", 600)
    n = 600 + 400
    _flood(attacker, n, codec.lane_session_key(KEYS["entry-1"], "entry-1"))
    assert wait_until(lambda: lane.downlink.applied["session_opened"]
                      + lane.refusals.counts["session_rate"] >= n * 0.95, 60)
    assert lane.refusals.counts["session_rate"] > 0
    assert lane.downlink.applied["session_opened"] <= 600 + 200


def test_a_backlog_announced_again_takes_no_tokens(
        lane: LaneSync, attacker: Attacker, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lane back from an outage re-sends session events the others already hold: those
    are replays (same event_id), applied idempotently without spending the origin's burst,
    so the real new arrivals behind them still get in."""
    monkeypatch.setattr("edge.sync.downlink.SESSION_BURST", 50)
    key = codec.lane_session_key(KEYS["entry-1"], "entry-1")
    t = topics.sessions_opened(SITE)
    now = datetime.now(UTC)
    known = [_opened("entry-1", f"ev-k{i}", f"粤B{i:05d}", now - timedelta(hours=2))
             for i in range(40)]
    for s in known:
        attacker.pub(t, codec.encode_session_opened(s, SITE, key))
    assert wait_until(lambda: lane.downlink.applied["session_opened"] >= 40, 20)
    for _ in range(3):  # three reconnects re-announce the same 40: 120 events, 0 tokens
        for s in known:
            attacker.pub(t, codec.encode_session_opened(s, SITE, key))
    fresh = [_opened("entry-1", f"ev-n{i}", f"粤C{i:05d}", now - timedelta(minutes=5))
             for i in range(9)]
    for s in fresh:
        attacker.pub(t, codec.encode_session_opened(s, SITE, key))
    assert wait_until(lambda: all(lane.store.find_open_session(s.plate) is not None
                                  for s in fresh), 20)
    assert lane.refusals.counts["session_rate"] == 0


# ---------------------------------------------------------------- member states
def test_forged_member_version_cannot_freeze_a_member(lane: LaneSync,
                                                      attacker: Attacker) -> None:
    """Before: version 2**63-1 froze a member on both lanes (every real state was older)."""
    t = topics.member(SITE, "M1")
    attacker.pub(t, codec.encode_member(_member(1, 500), SITE, CENTRAL_KEY))
    assert wait_until(lambda: lane.state.account("M1") is not None, 10)
    attacker.pub(t, _unsigned(_member(2**63 - 1, 999_999)))
    attacker.pub(t, _resigned(codec.encode_member(_member(2, 500), SITE, CENTRAL_KEY),
                              version=2**63 - 1, prev_version=2**63 - 2))
    attacker.pub(t, codec.encode_member(_member(1_000_005, 500), SITE, CENTRAL_KEY))
    r = lane.refusals.counts
    assert wait_until(lambda: r["unsigned"] == 1 and r["schema"] == 1
                      and r["version_jump"] == 1, 10), r
    attacker.pub(t, codec.encode_member(_member(2, 450), SITE, CENTRAL_KEY))
    assert wait_until(lambda: lane.store.balance("M1", datetime.now(UTC)) == 450, 10)


def test_huge_balance_is_refused_whole(lane: LaneSync, attacker: Attacker) -> None:
    """Before: a balance of 10**30 was half-applied (member updated, then a traceback)."""
    t = topics.member(SITE, "M1")
    attacker.pub(t, codec.encode_member(_member(1, 500), SITE, CENTRAL_KEY))
    assert wait_until(lambda: lane.state.account("M1") is not None, 10)
    attacker.pub(t, _unsigned(_member(2, 10**30, tier="gold", plates=("粤B00000",))))
    attacker.pub(t, _resigned(codec.encode_member(_member(2, 1, tier="gold"), SITE,
                                                  CENTRAL_KEY), balance=10**30))
    r = lane.refusals.counts
    assert wait_until(lambda: r["unsigned"] == 1 and r["schema"] == 1, 10), r
    assert r["internal"] == 0
    m = lane.store.get_member("M1")
    assert m is not None and m.tier == "member"
    assert lane.store.balance("M1", datetime.now(UTC)) == 500
    assert lane.store.member_for_plate("粤B00000") is None
    assert lane.state.account("M1").version == 1  # type: ignore[union-attr]


def test_snapshot_with_one_forged_member_is_refused(lane: LaneSync,
                                                    attacker: Attacker) -> None:
    good = codec.signed_member(_member(1, 500), SITE, CENTRAL_KEY)
    bad = json.loads(_unsigned(_member(1, 10**6, member_id="M2")))
    attacker.pub(topics.snapshot(SITE, "exit-1"), codec.encode_snapshot([good, bad]))
    assert wait_until(lambda: lane.refusals.counts["unsigned"] == 1, 10)
    assert lane.state.account("M1") is None and lane.state.account("M2") is None


def test_forged_lane_roster_is_refused(lane: LaneSync, attacker: Attacker) -> None:
    rogue = Ed25519PrivateKey.generate()
    attacker.pub(topics.lanes(SITE), roster({"rogue": b"x"}, serial=99, key=rogue))
    assert wait_until(lambda: lane.refusals.counts["bad_signature"] == 1, 10)
    attacker.pub(topics.sessions_opened(SITE), codec.encode_session_opened(
        _opened("rogue", "ev-r", "粤B55555", datetime.now(UTC)), SITE,
        codec.lane_session_key(b"x", "rogue")))
    assert wait_until(lambda: lane.refusals.counts["unknown_lane"] == 1, 10)


# ---------------------------------------------------------------- rule bundles
def test_rule_bundle_signed_for_another_site_is_refused(tmp_path: Path, own_broker: Broker,
                                                        attacker: Attacker) -> None:
    """Before: a bundle central signed for another site (same key) was accepted."""
    holder = RulesHolder(parse_bundle(example_bundle("v1")), clock=lambda: datetime.now(UTC))
    store = make_store(tmp_path, "exit-1")
    sync = make_sync(store, own_broker.port, on_rules=holder.offer)
    sync.start()
    t = topics.rules(SITE)
    try:
        assert wait_until(sync.link.subscribed.is_set, 10)
        attacker.pub(t, codec.sign_rules(example_bundle("other-v9"), 9, CENTRAL_KEY,
                                         "other-mall"))
        # the format before: signed over bundle and serial only, no site
        bundle = example_bundle("old-v8")
        sig = CENTRAL_KEY.sign(codec.canonical({"bundle": bundle, "serial": 8})).hex()
        attacker.pub(t, codec.canonical({"v": 1, "type": "rules", "serial": 8,
                                         "bundle": bundle, "alg": "ed25519", "sig": sig}))
        assert wait_until(lambda: sync.refusals.counts["wrong_site"] == 2, 10), \
            sync.refusals.counts
        assert holder.current().version == "v1" and sync.state.rules_serial() == (0, None)
        attacker.pub(t, codec.sign_rules(example_bundle("v2"), 2, CENTRAL_KEY, SITE))
        assert wait_until(lambda: sync.state.rules_serial() == (2, "v2"), 10)
    finally:
        sync.stop()


# ---------------------------------------------------------------- size
def test_message_over_the_lane_limit_is_counted_and_logged(
        lane: LaneSync, attacker: Attacker, caplog: pytest.LogCaptureFixture) -> None:
    """Before: messages over 4 MB were dropped without a log line."""
    caplog.set_level(logging.WARNING, logger="edge.sync")
    attacker.pub(topics.member(SITE, "M1"), b"{" + b" " * (4 * 1024 * 1024 + 100) + b"}")
    assert wait_until(lambda: lane.refusals.counts["too_large"] == 1, 10)
    assert "sync message refused (too_large)" in caplog.text


@pytest.mark.parametrize("mb", [8, pytest.param(60, marks=pytest.mark.slow)])
def test_message_over_the_broker_limit_never_reaches_the_lane(
        lane: LaneSync, attacker: Attacker, mb: int) -> None:
    """Before: a 60 MB message was delivered and cost the lane 186 MB. Now the broker's
    max_packet_size refuses it: the sender is disconnected, the lane never sees it."""
    attacker.c.publish(topics.member(SITE, "M1"), b"x" * (mb * 1024 * 1024), qos=1)
    assert wait_until(lambda: attacker.disconnected, 20)
    ok = Attacker(lane.link.settings.port)
    try:
        ok.pub(topics.member(SITE, "M1"), codec.encode_member(_member(1, 7), SITE,
                                                              CENTRAL_KEY))
        assert wait_until(lambda: lane.state.account("M1") is not None, 10)
    finally:
        ok.close()
    assert lane.link.oversized == 0 and lane.refusals.counts["too_large"] == 0


def test_own_session_echo_is_not_a_refusal_before_any_roster(tmp_path: Path,
                                                             own_broker: Broker) -> None:
    """A lane hears its own announcements back; with no roster yet (central not seen) they
    verify with its own key and are skipped, not counted as forgeries."""
    store = make_store(tmp_path, "entry-1")
    sync = make_sync(store, own_broker.port)
    sync.start()
    try:
        assert wait_until(sync.link.subscribed.is_set, 10)
        store.record_entry(plate="粤B12345", entered_at=datetime.now(UTC), event_id="ev-own")
        sync.notify()
        assert wait_until(lambda: sync.uplink.sent_max == 1, 10)
        time.sleep(0.5)
        assert sum(sync.refusals.counts.values()) == 0, sync.refusals.counts
    finally:
        sync.stop()
