"""Prepayment (#13): paid at central, sent to the exit lanes as a signed ``prepaid``
message over a real Mosquitto; the exit opens with nothing to pay within the bundle's
``pay_grace_minutes`` (15) and charges only the extra time after it; the receipt and the
settlement are in the lane's ledger and reach central through the normal uplink."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.lane.decide import Decider, LanePolicy
from edge.lpr.source import PlateRead
from edge.pricing import load_bundle
from edge.store import EntryKind, Store
from edge.store import prepayments as store_prepaid
from edge.sync import codec, topics
from tests.sync.conftest import (
    CENTRAL_KEY,
    REPO,
    SITE,
    Broker,
    make_central,
    make_store,
    make_sync,
    wait_until,
)
from tests.sync.test_downlink import Raw

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
PAID_AT = T0 + timedelta(minutes=60)  # both cars paid their first hour: 60 min x ¥0.50
A, B = "粤B10001", "粤B20002"


def prepaid(pid: str, plate: str, amount: str = "30.00", *, paid_at: datetime = PAID_AT,
            site: str = SITE, key: Ed25519PrivateKey = CENTRAL_KEY, **kw: Any) -> bytes:
    return codec.encode_prepaid(codec.Prepaid(
        pid, plate, Decimal(amount), paid_at, paid_at + timedelta(hours=24),
        source="paystation-1", **kw), site, key)


@pytest.fixture
def raw(own_broker: Broker) -> Any:
    r = Raw(own_broker.port)
    yield r
    r.close()


def _exit_lane(tmp_path: Path, port: int, clock: list[datetime]) -> tuple[Store, Any, Decider]:
    store = make_store(tmp_path, "exit-1")
    sync = make_sync(store, port, wallclock=lambda: clock[0])
    bundle = load_bundle(REPO / "config" / "rules.example.toml")
    assert bundle.pay_grace_minutes == 15
    decider = Decider(store, lambda: bundle, LanePolicy("exit-1", "exit", TZ))
    return store, sync, decider


def _kinds(store: Store) -> list[tuple[str, str | None, dict[str, Any]]]:
    return [(str(e.kind), e.plate, e.payload) for e in store.entries(0, 1000)]


def test_paid_at_central_leaves_within_grace_free_and_after_it_pays_the_extra(
        tmp_path: Path, own_broker: Broker, raw: Raw) -> None:
    clock = [PAID_AT + timedelta(seconds=5)]
    central = make_central(tmp_path, own_broker.port)
    central.start()
    store, sync, decider = _exit_lane(tmp_path, own_broker.port, clock)
    for plate in (A, B):
        store.record_entry(plate=plate, entered_at=T0, event_id=f"in-{plate[-1]}",
                           lane_id="entry-1")
    # The lane was offline when central published: the retained copy reaches it at connect.
    raw.pub(topics.prepaid(SITE, "pay-a"), prepaid("pay-a", A), retain=True)
    sync.start()
    try:
        raw.pub(topics.prepaid(SITE, "pay-b"), prepaid("pay-b", B), retain=True)
        assert wait_until(lambda: sync.downlink.applied["prepaid"] == 2, 15), (
            sync.downlink.applied, sync.downlink.rejected)
        # QoS 1 redelivery / a second publish of the same payment: applied once
        raw.pub(topics.prepaid(SITE, "pay-a"), prepaid("pay-a", A))
        assert wait_until(lambda: sync.downlink.applied["prepaid_dup"] == 1, 10)
        received = [p for k, _, p in _kinds(store)
                    if k == "lane_event" and p["event"] == "prepaid_received"]
        assert [r["detail"]["payment_id"] for r in received] == ["pay-a", "pay-b"]

        # +10 min after paying: opens, nothing to pay
        a = decider.decide(PlateRead(A, 0.99, PAID_AT + timedelta(minutes=10), "t", "out-a"),
                           PAID_AT + timedelta(minutes=10))
        assert a.outcome == "exit_paid" and a.open_barrier
        sa = store.get_session(a.session_id or "")
        assert sa is not None and sa.status == "closed" and sa.payable == Decimal("0.00")
        assert sa.fee == Decimal("30.00")  # charged up to the payment: the hour paid for

        # +25 min after paying: the grace (15) is over, the extra 25 minutes are owed
        b = decider.decide(PlateRead(B, 0.99, PAID_AT + timedelta(minutes=25), "t", "out-b"),
                           PAID_AT + timedelta(minutes=25))
        assert b.outcome == "exit_owed" and not b.open_barrier
        sb = store.get_session(b.session_id or "")
        assert sb is not None and sb.status == "owed"
        assert sb.fee == Decimal("42.50") and sb.payable == Decimal("12.50")
        store.record_payment(sb.session_id, Decimal("12.50"), "cash",
                             PAID_AT + timedelta(minutes=26), "lane-pay-b")
        assert store.get_session(sb.session_id).status == "closed"  # type: ignore[union-attr]

        paid = [(plate, p["amount"], p["method"], p.get("payment_id"))
                for k, plate, p in _kinds(store) if k == "payment_received"]
        assert paid == [(A, "30.00", "prepaid", "pay-a"), (B, "30.00", "prepaid", "pay-b"),
                        (B, "12.50", "cash", None)]
        used = {p["payment_id"]: p["used_session"] for p in store_prepaid.list_all(store)}
        assert used == {"pay-a": sa.session_id, "pay-b": sb.session_id}
        fee_b = next(p for k, plate, p in _kinds(store) if k == "fee_charged" and plate == B)
        assert "pay_grace_exceeded" in fee_b["quote"]["flags"]
        assert fee_b["quote"]["prepaid"] == "30.00"

        # a replayed read of A does not charge or settle twice
        again = decider.decide(PlateRead(A, 0.99, PAID_AT + timedelta(minutes=11), "t",
                                         "out-a"), PAID_AT + timedelta(minutes=11))
        assert again.open_barrier
        assert sum(1 for k, _, _ in _kinds(store) if k == "payment_received") == 3

        # both ledgers: every entry, receipts and settlements included, is at central
        last = store.tail()[0]
        assert wait_until(lambda: len(list(central.db.export_lane("exit-1"))) == last, 20)
        at_central = list(central.db.export_lane("exit-1"))
        assert [e["payload"]["payment_id"] for e in at_central
                if e["kind"] == "payment_received" and e["payload"]["method"] == "prepaid"
                ] == ["pay-a", "pay-b"]
        assert sum(1 for e in at_central if e["kind"] == "lane_event"
                   and e["payload"]["event"] == "prepaid_received") == 2
    finally:
        sync.stop()
        central.stop()
    # A restart sees the retained copies again: nothing new is recorded.
    store2 = Store.open(tmp_path / "exit-1.db", "exit-1")
    sync2 = make_sync(store2, own_broker.port, wallclock=lambda: clock[0])
    sync2.start()
    try:
        assert wait_until(lambda: sync2.downlink.applied["prepaid_dup"] == 2, 15)
        assert sum(1 for e in store2.entries(0, 1000) if e.kind == EntryKind.LANE_EVENT
                   and e.payload["event"] == "prepaid_received") == 2
    finally:
        sync2.stop()


def _resign(body: dict[str, Any], key: Ed25519PrivateKey = CENTRAL_KEY) -> bytes:
    body.pop("sig", None)
    return codec.canonical(codec.sign_ed25519(body, key))


def test_forged_and_out_of_range_prepayments_are_refused_and_counted(
        tmp_path: Path, own_broker: Broker, raw: Raw) -> None:
    clock = [PAID_AT]
    store, sync, _decider = _exit_lane(tmp_path, own_broker.port, clock)
    store.record_entry(plate=A, entered_at=T0, event_id="in-a", lane_id="entry-1")
    sync.start()
    rej = sync.downlink.rejected
    good = json.loads(prepaid("p1", A))
    t = topics.prepaid(SITE, "p1")
    try:
        assert wait_until(sync.link.subscribed.is_set, 10)
        bad: list[tuple[str, bytes]] = []
        bad.append(("bad_signature", prepaid("p1", A, key=Ed25519PrivateKey.generate())))
        unsigned = dict(good)
        del unsigned["sig"]
        bad.append(("unsigned", codec.canonical(unsigned)))
        tampered = dict(good, amount="300.00")  # central signed 30.00
        bad.append(("bad_signature", codec.canonical(tampered)))
        bad.append(("wrong_site", prepaid("p1", A, site="other-mall")))
        bad.append(("too_large", _resign(dict(good, pad="x" * 5000))))
        bad.append(("schema", _resign(dict(good, amount="-1.00"))))
        bad.append(("schema", _resign(dict(good, amount="100000.01"))))
        bad.append(("schema", _resign(dict(good, amount="NaN"))))
        bad.append(("schema", _resign(dict(good, amount="1e400"))))
        bad.append(("schema", _resign(dict(good, amount=30))))  # money is a string
        bad.append(("schema", _resign(dict(good, plate="x" * 300))))
        bad.append(("schema", _resign(dict(good, payment_id="p 1/../x"))))
        bad.append(("schema", _resign(dict(good, expires_at=good["paid_at"]))))
        bad.append(("future", prepaid("p1", A, paid_at=PAID_AT + timedelta(hours=1))))
        bad.append(("schema", prepaid("p2", A)))  # on p1's topic: the topic names the id
        bad.append(("not_json", b"\xff{"))
        for _, payload in bad:
            raw.pub(t, payload)
        want: dict[str, int] = {}
        for reason, _ in bad:
            want[reason] = want.get(reason, 0) + 1
        assert wait_until(lambda: all(rej[r] >= n for r, n in want.items()), 15), rej
        assert store_prepaid.list_all(store) == []
        # the good one, then the same payment id with another amount: a conflict
        raw.pub(t, prepaid("p1", A))
        assert wait_until(lambda: sync.downlink.applied["prepaid"] == 1, 10)
        raw.pub(t, prepaid("p1", A, "29.00"))
        assert wait_until(lambda: rej["prepaid_conflict"] == 1, 10)
        assert [p["amount"] for p in store_prepaid.list_all(store)] == ["30.00"]
        # an expired retained copy is skipped, not refused; an empty payload (central
        # cleared the retained copy) is nothing
        clock[0] = PAID_AT + timedelta(days=2)
        raw.pub(topics.prepaid(SITE, "p3"), prepaid("p3", A))
        raw.pub(topics.prepaid(SITE, "p3"), b"")
        assert wait_until(lambda: sync.downlink.applied["prepaid_expired"] == 1
                          and sync.downlink.applied["prepaid_cleared"] == 1, 10)
        assert len(store_prepaid.list_all(store)) == 1
    finally:
        sync.stop()
    # nothing refused touched the ledger: one receipt only
    assert sum(1 for e in store.entries(0, 1000) if e.kind == EntryKind.LANE_EVENT) == 1


def test_a_prepayment_applies_only_to_its_own_stay(tmp_path: Path) -> None:
    """Paid before this stay began (a previous visit), named for another stay, or expired:
    not applied. A reversed exit gives the prepayment back for the next exit."""
    store = make_store(tmp_path, "exit-1")
    bundle = load_bundle(REPO / "config" / "rules.example.toml")
    decider = Decider(store, lambda: bundle, LanePolicy("exit-1", "exit", TZ))
    store.record_entry(plate=A, entered_at=T0, event_id="in-a", lane_id="entry-1")
    exp = PAID_AT + timedelta(hours=24)
    for p in (store_prepaid.Prepayment("old", A, Decimal("5.00"), T0 - timedelta(hours=1),
                                       T0 + timedelta(hours=23)),
              store_prepaid.Prepayment("other", A, Decimal("5.00"), PAID_AT, exp,
                                       entry_event_id="in-zzz"),
              store_prepaid.Prepayment("mine", A, Decimal("30.00"), PAID_AT, exp,
                                       entry_event_id="in-a")):
        assert store_prepaid.receive(store, p, PAID_AT)
    at = PAID_AT + timedelta(minutes=5)
    d = decider.decide(PlateRead(A, 0.99, at, "t", "out-a"), at)
    assert d.outcome == "exit_paid"
    assert [p["payment_id"] for p in store_prepaid.list_all(store) if p["used_session"]] == [
        "mine"]
    store.reverse_exit(d.session_id or "", at + timedelta(seconds=5), "backed away")
    assert all(p["used_session"] is None for p in store_prepaid.list_all(store))
    assert any(e.kind == EntryKind.CORRECTION and e.payload["action"] == "prepaid_returned"
               for e in store.entries(0, 100))
    later = at + timedelta(minutes=3)
    d2 = decider.decide(PlateRead(A, 0.99, later, "t", "out-a2"), later)
    assert d2.outcome == "exit_paid"


def test_the_same_payment_id_twice_is_one_receipt(tmp_path: Path) -> None:
    store = make_store(tmp_path, "exit-1")
    p = store_prepaid.Prepayment("x1", A, Decimal("1.00"), PAID_AT,
                                 PAID_AT + timedelta(hours=1))
    assert store_prepaid.receive(store, p, PAID_AT) is True
    assert store_prepaid.receive(store, p, PAID_AT) is False
    assert len(store.entries(0, 10)) == 1
