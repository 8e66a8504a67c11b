"""What comes down or across: signed rules, member accounts, sessions between lanes, POS."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from edge.pricing import parse_bundle
from edge.rules_holder import RulesHolder
from edge.store import ExitRecord, Store
from edge.sync import codec, topics
from tests.sync.conftest import (
    CENTRAL_KEY,
    KEYS,
    SITE,
    T0,
    Broker,
    make_central,
    make_store,
    make_sync,
    public_hex,
    roster,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]


def _bundle(version: str, effective_from: str = "2026-01-01T00:00:00+08:00") -> dict[str, Any]:
    d = tomllib.loads((ROOT / "config/rules.example.toml").read_text("utf-8"))
    d["version"] = version
    d["effective_from"] = effective_from
    return d


class Raw:
    """A plain paho client to inject (possibly hostile) messages."""

    def __init__(self, port: int) -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{port}-{id(self)}")
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def pub(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def raw(own_broker: Broker) -> Any:
    r = Raw(own_broker.port)
    yield r
    r.close()


def test_rule_bundles_good_applied_at_its_time_bad_ones_rejected(
        tmp_path: Path, own_broker: Broker, raw: Raw) -> None:
    key = Ed25519PrivateKey.generate()
    now = [datetime(2026, 11, 23, 12, 0, tzinfo=UTC)]
    holder = RulesHolder(parse_bundle(_bundle("v1")), clock=lambda: now[0])
    store = make_store(tmp_path, "exit-1")
    sync = make_sync(store, own_broker.port, public_key_hex=public_hex(key),
                     on_rules=holder.offer)
    sync.start()
    rej = sync.downlink.rejected
    t = topics.rules(SITE)
    try:
        assert wait_until(sync.link.subscribed.is_set, 10)
        # good, effective in one hour: queued, then in force once the clock gets there
        raw.pub(t, codec.sign_rules(_bundle("v2", "2026-11-23T13:00:00+00:00"), 2, key, SITE),
                True)
        assert wait_until(lambda: sync.downlink.applied["rules"] == 1, 10)
        assert holder.current().version == "v1"
        now[0] += timedelta(hours=1)
        assert holder.current().version == "v2"
        # tampered
        d = json.loads(codec.sign_rules(_bundle("v3"), 3, key, SITE))
        d["bundle"]["tariffs"]["small"]["rate"] = "0.01"
        raw.pub(t, json.dumps(d).encode())
        # unsigned
        d = json.loads(codec.sign_rules(_bundle("v4"), 4, key, SITE))
        del d["sig"]
        raw.pub(t, json.dumps(d).encode())
        # signed by someone else
        raw.pub(t, codec.sign_rules(_bundle("v5"), 5, Ed25519PrivateKey.generate(), SITE))
        # replayed older (a genuine, signed serial 1)
        raw.pub(t, codec.sign_rules(_bundle("v0"), 1, key, SITE))
        # malformed bundle, correctly signed
        bad = _bundle("v6")
        bad["tariffs"]["small"]["rate"] = "-5"
        raw.pub(t, codec.sign_rules(bad, 6, key, SITE))
        raw.pub(t, b"\x00not json")
        assert wait_until(lambda: sum(rej.values()) >= 6, 10), rej
        assert rej["bad_signature"] == 2 and rej["unsigned"] == 1 and rej["older"] == 1
        assert rej["bad_bundle"] == 1 and rej["not_json"] == 1
        assert holder.current().version == "v2"
        assert sync.state.rules_serial() == (2, "v2")
    finally:
        sync.stop()
    # After a restart the accepted serial is remembered: the older one is still refused.
    store2 = Store.open(tmp_path / "exit-1.db", "exit-1")
    sync2 = make_sync(store2, own_broker.port, public_key_hex=public_hex(key))
    sync2.start()
    try:
        # the retained serial 2 arrives again: offered (the holder starts from its file), no news
        assert wait_until(lambda: sync2.downlink.applied["rules_same"] == 1, 10)
        raw.pub(t, codec.sign_rules(_bundle("v0"), 1, key, SITE))
        assert wait_until(lambda: sync2.downlink.rejected["older"] >= 1, 10)
    finally:
        sync2.stop()


def _member_msg(version: int, prev: int, balance: int, applied: dict[str, int],
                flagged: bool = False) -> bytes:
    return codec.encode_member(codec.MemberState(
        "M1", version, prev, "member", "Li", False, flagged, True, balance, ("粤B12345",), 100,
        applied), SITE, CENTRAL_KEY)


def _exit_with_points(store: Store, event: str, points: int, at: datetime) -> None:
    store.record_exit(ExitRecord(
        exit_event_id=event, session_id=None, plate="粤B12345", exited_at=at, member_id="M1",
        rules_version="v1", fee=Decimal("10.00"), payable=Decimal("0.00"),
        points_deducted=points, lots_used=(("central", points),), coupons_used=(),
        points_earned=0, earned_expires_at=None, quote={}))


def test_member_deltas_versions_gaps_and_available_balance(
        tmp_path: Path, own_broker: Broker, raw: Raw) -> None:
    store = make_store(tmp_path, "exit-1")
    sync = make_sync(store, own_broker.port)
    # no central here: keep the lane's entries unacknowledged
    sync.start()
    t = topics.member(SITE, "M1")
    try:
        assert wait_until(sync.link.subscribed.is_set, 10)
        raw.pub(t, _member_msg(1, 0, 500, {}))
        assert wait_until(lambda: sync.state.account("M1") is not None, 10)
        assert store.balance("M1", T0) == 500
        assert store.member_for_plate("粤B12345") is not None
        _exit_with_points(store, "x1", 30, T0)  # a deduction central has not seen
        seq = store.entries(0, 100)[-1].seq
        # an older/replayed version changes nothing
        raw.pub(t, _member_msg(1, 0, 9999, {}))
        # central's balance moved (POS +150) without this lane's deduction applied:
        # available = 650 - 30
        raw.pub(t, _member_msg(2, 1, 650, {"exit-1": 0}))
        assert wait_until(lambda: store.balance("M1", T0) == 620, 10)
        assert sync.downlink.applied["member_stale"] >= 1
        # central has now applied it: available = its balance
        raw.pub(t, _member_msg(3, 2, 620, {"exit-1": seq}))
        assert wait_until(lambda: sync.state.account("M1").version == 3, 10)  # type: ignore[union-attr]
        assert store.balance("M1", T0) == 620
        # a gap (version 5 after 3): applied, and a snapshot is requested
        got: list[bytes] = []
        raw.c.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
        raw.c.subscribe(topics.snapshot_request(SITE), qos=1)
        raw.pub(t, _member_msg(5, 4, 600, {"exit-1": seq}))
        assert wait_until(lambda: any(b'"gap"' in g for g in got)
                          and sync.state.account("M1").version == 5, 10)  # type: ignore[union-attr]
        assert codec.parse_snapshot_request(got[-1]) == ("exit-1", ("M1",), "gap")
        assert store.balance("M1", T0) == 600
        # central unbinds the plate and binds another one
        raw.pub(t, codec.encode_member(codec.MemberState(
            "M1", 6, 5, "member", "Li", False, False, True, 600, ("粤B54321",), 100,
            {"exit-1": seq}), SITE, CENTRAL_KEY))
        assert wait_until(lambda: sync.state.account("M1").version == 6, 10)  # type: ignore[union-attr]
        assert store.member_for_plate("粤B12345") is None
        assert store.member_for_plate("粤B54321") is not None
        # overdrawn and flagged by central: blocked here
        raw.pub(t, _member_msg(7, 6, -20, {"exit-1": seq}, flagged=True))
        assert wait_until(lambda: sync.state.account("M1").version == 7, 10)  # type: ignore[union-attr]
        assert store.get_member("M1").blocked  # type: ignore[union-attr]
        assert store.balance("M1", T0) == 0
        # hostile member messages are dropped, counted, the lane keeps going
        raw.pub(t, b'{"v":1,"type":"member","member_id":"M1","version":"8"}')
        raw.pub(topics.member(SITE, "M2"), _member_msg(9, 8, 1, {}))  # wrong topic
        assert wait_until(lambda: sync.downlink.rejected["schema"] >= 1
                          and sync.downlink.rejected["unsigned"] >= 1, 10)
        assert sync.state.account("M1").version == 7  # type: ignore[union-attr]
    finally:
        sync.stop()


def test_sessions_cross_lanes_and_points_flow_through_central(
        tmp_path: Path, own_broker: Broker) -> None:
    central = make_central(tmp_path, own_broker.port)
    central.start()
    entry = make_store(tmp_path, "entry-1")
    exit_ = make_store(tmp_path, "exit-1")
    s_entry = make_sync(entry, own_broker.port)
    s_exit = make_sync(exit_, own_broker.port)
    s_entry.start()
    s_exit.start()
    try:
        assert wait_until(lambda: central.connected.is_set() and s_exit.link.subscribed.is_set()
                          and s_entry.link.subscribed.is_set(), 10)
        central.publish_rules(_bundle("v1"))
        central.add_member("M1", balance=0, plates=("粤B12345",))
        # POS: the seed's worked example, ¥150.8 -> 150 points, reaches both lanes
        assert central.purchase("pos-1", "M1", Decimal("150.8"), "retail",
                                datetime(2026, 11, 23, 10, 0, tzinfo=UTC)) == 150
        assert central.purchase("pos-1", "M1", Decimal("150.8"), "retail",
                                datetime(2026, 11, 23, 10, 0, tzinfo=UTC)) == 150  # replay
        assert wait_until(lambda: exit_.get_member("M1") is not None
                          and exit_.balance("M1", T0) == 150, 10)
        # a vehicle enters at the entry lane ...
        entry.record_entry(plate="粤B12345", entered_at=T0, event_id="ev-1", member_id="M1")
        s_entry.notify()
        assert wait_until(lambda: exit_.find_open_session("粤B12345") is not None, 10)
        cached = exit_.find_open_session("粤B12345")
        assert cached is not None and cached.entry_lane == "entry-1"
        assert cached.entry_event_id == "ev-1" and cached.entered_at == T0
        # ... and leaves at the exit lane, paying 30 points
        exit_.record_exit(ExitRecord(
            exit_event_id="x-1", session_id=cached.session_id, plate="粤B12345",
            exited_at=T0 + timedelta(hours=5), member_id="M1", rules_version="v1",
            fee=Decimal("150.00"), payable=Decimal("0.00"), points_deducted=30,
            lots_used=(("central", 30),), coupons_used=(), points_earned=0,
            earned_expires_at=None, quote={}))
        s_exit.notify()
        assert wait_until(lambda: entry.find_open_session("粤B12345") is None, 10)
        assert wait_until(lambda: central.db.balance("M1") == 120 and s_exit.backlog() == 0
                          and s_entry.backlog() == 0, 10)
        assert central.db.points_from_entries("M1") == 120  # balance = sum of entries
        assert wait_until(lambda: entry.balance("M1", T0) == 120, 10)
        assert entry.verify().ok and exit_.verify().ok
    finally:
        s_entry.stop()
        s_exit.stop()
        central.stop()


def test_overdraft_from_two_lanes_goes_negative_and_is_flagged(
        tmp_path: Path, own_broker: Broker) -> None:
    """Central never refuses what happened: both lanes spent the same 100 points."""
    central = make_central(tmp_path, own_broker.port)
    central.start()
    a, b = make_store(tmp_path, "entry-1"), make_store(tmp_path, "exit-1")
    for s in (a, b):
        s.upsert_member("M1", tier="member", version=1)
        s.set_lots("M1", [("central", 100, None, None)])
    central.add_member("M1", balance=100)
    _exit_with_points(a, "xa", 80, T0)
    _exit_with_points(b, "xb", 70, T0)
    sa, sb = make_sync(a, own_broker.port), make_sync(b, own_broker.port)
    sa.start()
    sb.start()
    try:
        assert wait_until(lambda: central.db.balance("M1") == -50, 15)
        st = central.db.member_state("M1", {}, 0)
        assert st is not None and st.flagged
        assert wait_until(lambda: a.get_member("M1").blocked  # type: ignore[union-attr]
                          and b.get_member("M1").blocked, 10)  # type: ignore[union-attr]
        central.settle("M1", 50)
        assert wait_until(lambda: not a.get_member("M1").blocked, 10)  # type: ignore[union-attr]
    finally:
        sa.stop()
        sb.stop()
        central.stop()


def test_entry_arriving_after_a_no_entry_exit_becomes_a_correction(
        tmp_path: Path, own_broker: Broker, raw: Raw) -> None:
    entry, exit_ = make_store(tmp_path, "entry-1"), make_store(tmp_path, "exit-1")
    entry.record_entry(plate="粤B77777", entered_at=T0, event_id="ev-late")  # lane offline
    raw.pub(topics.lanes(SITE), roster(), retain=True)  # what central publishes
    s_exit = make_sync(exit_, own_broker.port)
    s_exit.start()
    try:
        assert wait_until(s_exit.link.subscribed.is_set, 10)
        # the vehicle leaves before its entry event arrived: no-entry policy, flat fee
        exit_.record_exit(ExitRecord(
            exit_event_id="x-late", session_id=None, plate="粤B77777",
            exited_at=T0 + timedelta(hours=2), member_id=None, rules_version="v1",
            fee=Decimal("20.00"), payable=Decimal("20.00"), points_deducted=0, lots_used=(),
            coupons_used=(), points_earned=0, earned_expires_at=None, quote={},
            flags=("no_entry",)))
        s_entry = make_sync(entry, own_broker.port)
        s_entry.start()  # the entry lane comes back and forwards its ledger
        try:
            assert wait_until(lambda: s_exit.downlink.applied["late_entry"] == 1, 10)
            # replayed announcement: still one correction, and no phantom open session
            raw.pub(topics.sessions_opened(SITE), codec.encode_session_opened(
                codec.SessionOpened("entry-1", "ev-late", "粤B77777", T0, "small", None,
                                    None), SITE, codec.lane_session_key(KEYS["entry-1"],
                                                                        "entry-1")))
            assert wait_until(lambda: s_exit.downlink.applied["session_dup"] >= 1, 10)
        finally:
            s_entry.stop()
        assert exit_.find_open_session("粤B77777") is None
        fixes = [e for e in exit_.entries(0, 100) if e.kind == "correction"]
        assert len(fixes) == 1 and fixes[0].payload["action"] == "late_entry"
        assert fixes[0].payload["detail"]["event_id"] == "ev-late"
        assert fixes[0].session_id == exit_.list_sessions()[0].session_id
        assert exit_.verify().ok
    finally:
        s_exit.stop()
