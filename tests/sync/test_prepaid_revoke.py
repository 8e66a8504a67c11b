"""Revocation of a refunded prepayment at the lane (#13), over a real Mosquitto with a real
lane (``LaneSync`` + SQLite ``Store`` + ``Decider``): central's signed ``prepaid_revoked``
drops an unused prepayment (one transaction: row gone, id kept, ledger entry) and the exit
then charges the full fee; one that already let the car out is recorded as a conflict and
nothing is undone; forged, oversized, foreign, unknown or mismatched revocations are
refused, counted and change nothing; replays neither resurrect nor re-revoke anything.

The central half on SQLite and PostgreSQL (refund through the API, the outbox, the
reconnect snapshot, the desk's view) is in tests/central/test_refund.py; the last test here
runs central's ingest worker on Mosquitto and on RabbitMQ."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from central.db.models import DownlinkOutbox
from central.services import prepay, refunds
from edge.lane.decide import Decider, LanePolicy
from edge.lpr.source import PlateRead
from edge.pricing import load_bundle
from edge.store import EntryKind, Store, StoreError
from edge.store import prepayments as store_prepaid
from edge.store.types import ExitRecord
from edge.sync import codec, topics
from tests.sync.conftest import (
    CENTRAL_KEY,
    REPO,
    SITE,
    Broker,
    make_store,
    make_sync,
    wait_until,
)
from tests.sync.test_brokers import Watcher, _central
from tests.sync.test_downlink import Raw
from tests.sync.test_prepaid import PAID_AT, T0, TZ, A, B, _exit_lane, prepaid

EXPIRES = PAID_AT + timedelta(hours=24)


def revoked(pid: str, plate: str, amount: str = "30.00", *, paid_at: datetime = PAID_AT,
            revoked_at: datetime = PAID_AT + timedelta(minutes=3), site: str = SITE,
            key: Ed25519PrivateKey = CENTRAL_KEY) -> bytes:
    return codec.encode_prepaid_revoked(codec.PrepaidRevoked(
        pid, plate, Decimal(amount), paid_at, paid_at + timedelta(hours=24), revoked_at),
        site, key)


def _resign(body: dict[str, Any], key: Ed25519PrivateKey = CENTRAL_KEY) -> bytes:
    body.pop("sig", None)
    return codec.canonical(codec.sign_ed25519(body, key))


@pytest.fixture
def raw(own_broker: Broker) -> Any:
    r = Raw(own_broker.port)
    yield r
    r.close()


def _events(store: Store, event: str) -> list[dict[str, Any]]:
    return [e.payload["detail"] for e in store.entries(0, 1000)
            if e.kind == EntryKind.LANE_EVENT and e.payload["event"] == event]


def _exit(decider: Decider, plate: str, at: datetime, ev: str) -> Any:
    return decider.decide(PlateRead(plate, 0.99, at, "t", ev), at)


def _exit_at_ten(store: Store, plate: str) -> Any:
    """``plate`` leaves through exit-1 ten minutes after paying, on the example rules."""
    bundle = load_bundle(REPO / "config" / "rules.example.toml")
    return _exit(Decider(store, lambda: bundle, LanePolicy("exit-1", "exit", TZ)), plate,
                 PAID_AT + timedelta(minutes=10), "out-a")


def test_a_revoked_prepayment_is_dropped_and_the_exit_charges_the_full_fee(
        tmp_path: Path, own_broker: Broker, raw: Raw) -> None:
    clock = [PAID_AT + timedelta(minutes=4)]
    store, sync, decider = _exit_lane(tmp_path, own_broker.port, clock)
    for plate in (A, B):
        store.record_entry(plate=plate, entered_at=T0, event_id=f"in-{plate[-1]}",
                           lane_id="entry-1")
    sync.start()
    try:
        assert wait_until(sync.link.subscribed.is_set, 10)
        for pid, plate in (("pay-a", A), ("pay-b", B)):
            raw.pub(topics.prepaid(SITE, pid), prepaid(pid, plate), retain=True)
        assert wait_until(lambda: sync.downlink.applied["prepaid"] == 2, 10)
        # central refunded pay-a: the revocation, then the retained copy cleared
        raw.pub(topics.prepaid(SITE, "pay-a"), revoked("pay-a", A))
        raw.pub(topics.prepaid(SITE, "pay-a"), b"", retain=True)
        assert wait_until(lambda: sync.downlink.applied["prepaid_revoked"] == 1
                          and sync.downlink.applied["prepaid_cleared"] == 1, 10), (
            sync.downlink.applied, sync.downlink.rejected)
        assert not sync.downlink.rejected
        assert [p["payment_id"] for p in store_prepaid.list_all(store)] == ["pay-b"]
        [rv] = store_prepaid.revocations(store)
        assert (rv["payment_id"], rv["outcome"]) == ("pay-a", "revoked")
        [ev] = _events(store, "prepaid_revoked")
        assert ev["payment_id"] == "pay-a" and ev["amount"] == "30.00"
        sa_open = store.find_open_session(A)
        assert sa_open is not None
        rev_entry = next(e for e in store.entries(0, 1000) if e.kind == EntryKind.LANE_EVENT
                         and e.payload["event"] == "prepaid_revoked")
        assert rev_entry.session_id == sa_open.session_id and rev_entry.plate == A
        # +10 min: A pays for its whole stay (70 min), B (not refunded) leaves for nothing
        at = PAID_AT + timedelta(minutes=10)
        a = _exit(decider, A, at, "out-a")
        assert a.outcome == "exit_owed" and not a.open_barrier
        sa = store.get_session(a.session_id or "")
        assert sa is not None and sa.fee == Decimal("35.00") and sa.payable == sa.fee
        b = _exit(decider, B, at, "out-b")
        assert b.outcome == "exit_paid" and b.open_barrier
        assert not any(e.kind == EntryKind.PAYMENT_RECEIVED and e.plate == A
                       for e in store.entries(0, 1000))
    finally:
        sync.stop()


def test_a_revocation_after_the_car_left_on_it_records_the_conflict_and_undoes_nothing(
        tmp_path: Path, own_broker: Broker, raw: Raw) -> None:
    """The race: the lane (cut off from central) let the car out on the prepayment before
    the refund reached it."""
    clock = [PAID_AT + timedelta(minutes=4)]
    store, sync, decider = _exit_lane(tmp_path, own_broker.port, clock)
    store.record_entry(plate=A, entered_at=T0, event_id="in-a", lane_id="entry-1")
    sync.start()
    try:
        assert wait_until(sync.link.subscribed.is_set, 10)
        raw.pub(topics.prepaid(SITE, "pay-a"), prepaid("pay-a", A))
        assert wait_until(lambda: sync.downlink.applied["prepaid"] == 1, 10)
        a = _exit(decider, A, PAID_AT + timedelta(minutes=5), "out-a")
        assert a.outcome == "exit_paid" and a.open_barrier
        before = store.entries(0, 1000)
        raw.pub(topics.prepaid(SITE, "pay-a"), revoked("pay-a", A))
        assert wait_until(lambda: sync.downlink.applied["prepaid_revoked_after_use"] == 1,
                          10), (sync.downlink.applied, sync.downlink.rejected)
        after = store.entries(0, 1000)
        assert after[:len(before)] == before and len(after) == len(before) + 1  # only that
        [ev] = _events(store, "prepaid_revoked_after_use")
        assert ev["payment_id"] == "pay-a" and ev["used_session"] == a.session_id
        assert after[-1].session_id == a.session_id
        [row] = store_prepaid.list_all(store)
        assert row["used_session"] == a.session_id  # not undone
        s = store.get_session(a.session_id or "")
        assert s is not None and s.status == "closed"
        assert [r["outcome"] for r in store_prepaid.revocations(store)] == ["used"]
        # a reversed exit gives it back, but it was refunded: it is gone, not usable
        store.reverse_exit(a.session_id or "", PAID_AT + timedelta(minutes=6), "backed away")
        assert store_prepaid.list_all(store) == []
        later = PAID_AT + timedelta(minutes=7)
        again = _exit(decider, A, later, "out-a2")
        assert again.outcome == "exit_owed"
    finally:
        sync.stop()


def test_a_revocation_between_the_exit_look_and_its_commit_refuses_that_exit_whole(
        tmp_path: Path) -> None:
    """The other order of the race, inside one lane: the exit priced with the prepayment,
    the revocation committed first; the exit's transaction finds it gone and writes nothing,
    and the next try charges the full fee."""
    store = make_store(tmp_path, "exit-1")
    s, _ = store.record_entry(plate=A, entered_at=T0, event_id="in-a", lane_id="entry-1")
    assert store_prepaid.receive(store, store_prepaid.Prepayment(
        "pay-a", A, Decimal("30.00"), PAID_AT, EXPIRES), PAID_AT)
    at = PAID_AT + timedelta(minutes=5)
    with store.snapshot() as r:
        [p] = store_prepaid.for_exit(r.c, s, at)  # what the decider read
    assert store_prepaid.revoke(store, store_prepaid.Revocation(
        "pay-a", A, Decimal("30.00"), PAID_AT, at), at) == "revoked"
    n = len(store.entries(0, 1000))
    with pytest.raises(StoreError, match="unknown or already used"):
        store.record_exit(ExitRecord(
            exit_event_id="out-a", session_id=s.session_id, plate=A, exited_at=at,
            member_id=None, rules_version="r", fee=Decimal("32.50"), payable=Decimal("0.00"),
            points_deducted=0, lots_used=(), coupons_used=(), points_earned=0,
            earned_expires_at=None, quote={}, prepaid=((p.payment_id, p.amount),)))
    assert len(store.entries(0, 1000)) == n
    open_again = store.find_open_session(A)
    assert open_again is not None and open_again.status == "open"
    with store.snapshot() as r:
        assert store_prepaid.for_exit(r.c, open_again, at) == ()


def test_forged_oversized_foreign_and_mismatched_revocations_change_nothing(
        tmp_path: Path, own_broker: Broker, raw: Raw) -> None:
    clock = [PAID_AT + timedelta(minutes=4)]
    store, sync, _decider = _exit_lane(tmp_path, own_broker.port, clock)
    store.record_entry(plate=A, entered_at=T0, event_id="in-a", lane_id="entry-1")
    rej = sync.downlink.rejected
    t = topics.prepaid(SITE, "p1")
    good = json.loads(revoked("p1", A))
    sync.start()
    try:
        assert wait_until(sync.link.subscribed.is_set, 10)
        raw.pub(t, prepaid("p1", A))
        assert wait_until(lambda: sync.downlink.applied["prepaid"] == 1, 10)
        n = len(store.entries(0, 1000))
        bad: list[tuple[str, bytes]] = []
        bad.append(("bad_signature", revoked("p1", A, key=Ed25519PrivateKey.generate())))
        unsigned = dict(good)
        del unsigned["sig"]
        bad.append(("unsigned", codec.canonical(unsigned)))
        bad.append(("bad_signature", codec.canonical(dict(good, payment_id="p2"))))
        bad.append(("wrong_site", revoked("p1", A, site="other-mall")))
        bad.append(("too_large", _resign(dict(good, pad="x" * 5000))))
        bad.append(("schema", _resign(dict(good, amount="NaN"))))
        bad.append(("schema", _resign(dict(good, amount=30))))
        bad.append(("schema", _resign(dict(good, revoked_at="yesterday"))))
        bad.append(("schema", _resign(dict(good, revoked_at=(T0 - timedelta(days=1))
                                           .isoformat()))))
        bad.append(("schema", revoked("p2", A)))  # on p1's topic: the topic names the id
        bad.append(("future", revoked("p1", A, revoked_at=clock[0] + timedelta(hours=1))))
        bad.append(("revoke_mismatch", revoked("p1", A, "3.00")))
        bad.append(("revoke_mismatch", revoked("p1", B)))
        for _reason, payload in bad:
            raw.pub(t, payload)
        want: dict[str, int] = {}
        for reason, _ in bad:
            want[reason] = want.get(reason, 0) + 1
        assert wait_until(lambda: all(rej[r] >= k for r, k in want.items()), 15), rej
        assert {r: rej[r] for r in want} == want
        assert [p["payment_id"] for p in store_prepaid.list_all(store)] == ["p1"]
        assert store_prepaid.revocations(store) == []
        assert len(store.entries(0, 1000)) == n  # nothing refused touched the ledger
        # a revocation over the snapshot topic: the same checks
        snap = topics.snapshot(SITE, "exit-1")
        raw.pub(snap, revoked("p1", A, key=Ed25519PrivateKey.generate()))
        raw.pub(snap, _resign(dict(good, pad="x" * 5000)))
        assert wait_until(lambda: rej["bad_signature"] == 3 and rej["too_large"] == 2, 10), rej
        assert store_prepaid.revocations(store) == []
        # the genuine one still applies
        raw.pub(t, revoked("p1", A))
        assert wait_until(lambda: sync.downlink.applied["prepaid_revoked"] == 1, 10)
        assert store_prepaid.list_all(store) == []
    finally:
        sync.stop()


def test_replays_neither_resurrect_nor_re_revoke(tmp_path: Path, own_broker: Broker,
                                                 raw: Raw) -> None:
    clock = [PAID_AT + timedelta(minutes=4)]
    store, sync, _decider = _exit_lane(tmp_path, own_broker.port, clock)
    store.record_entry(plate=A, entered_at=T0, event_id="in-a", lane_id="entry-1")
    t = topics.prepaid(SITE, "pay-a")
    old_prepaid, old_revoked = prepaid("pay-a", A), revoked("pay-a", A)
    sync.start()
    try:
        assert wait_until(sync.link.subscribed.is_set, 10)
        raw.pub(t, old_prepaid)
        raw.pub(t, old_revoked)
        assert wait_until(lambda: sync.downlink.applied["prepaid_revoked"] == 1, 10)
        n = len(store.entries(0, 1000))
        # the old prepaid message again (live, and as a retained copy), the old revocation
        # again, and the revocation through the reconnect snapshot
        raw.pub(t, old_prepaid)
        raw.pub(t, old_prepaid, retain=True)
        raw.pub(t, old_revoked)
        raw.pub(topics.snapshot(SITE, "exit-1"), old_revoked)
        assert wait_until(lambda: sync.downlink.rejected["prepaid_revoked"] == 2
                          and sync.downlink.applied["prepaid_revoked_dup"] == 2, 10), (
            sync.downlink.applied, sync.downlink.rejected)
        assert store_prepaid.list_all(store) == [] and len(store.entries(0, 1000)) == n
    finally:
        sync.stop()
    # after a restart: the retained old prepaid copy comes again, and is refused again
    store2 = Store.open(tmp_path / "exit-1.db", "exit-1")
    sync2 = make_sync(store2, own_broker.port, wallclock=lambda: clock[0])
    sync2.start()
    try:
        assert wait_until(lambda: sync2.downlink.rejected["prepaid_revoked"] == 1, 10)
        assert store_prepaid.list_all(store2) == [] and len(store2.entries(0, 1000)) == n
        assert _exit_at_ten(store2, A).outcome == "exit_owed"
    finally:
        sync2.stop()


def test_a_lane_that_never_held_a_refunded_payment_refuses_its_replay(
        tmp_path: Path, own_broker: Broker, raw: Raw) -> None:
    """A lane away when a payment was made gets only its revocation (live, or in the
    reconnect answer): it keeps the id (outcome ``not_held``, no ledger entry, no refusal),
    so the old ``prepaid`` message replayed within its validity is refused here too and the
    car pays; the id goes with retention once the payment has expired."""
    clock = [PAID_AT + timedelta(minutes=4)]
    store, sync, _decider = _exit_lane(tmp_path, own_broker.port, clock)
    store.record_entry(plate=A, entered_at=T0, event_id="in-a", lane_id="entry-1")
    n = len(store.entries(0, 1000))
    sync.start()
    try:
        assert wait_until(sync.link.subscribed.is_set, 10)
        raw.pub(topics.prepaid(SITE, "p9"), revoked("p9", A))  # live
        raw.pub(topics.snapshot(SITE, "exit-1"), revoked("p8", A))  # the reconnect answer
        d = sync.downlink
        assert wait_until(lambda: d.applied["prepaid_revoked_not_held"] == 2, 10), (
            d.applied, d.rejected)
        assert not sync.refusals.counts, sync.refusals.counts
        kept = {r["payment_id"]: r["outcome"] for r in store_prepaid.revocations(store)}
        assert kept == {"p8": "not_held", "p9": "not_held"}
        assert len(store.entries(0, 1000)) == n  # nothing changed hands here
        raw.pub(topics.prepaid(SITE, "p9"), prepaid("p9", A))  # the replay
        raw.pub(topics.prepaid(SITE, "p8"), prepaid("p8", A), retain=True)
        assert wait_until(lambda: d.rejected["prepaid_revoked"] == 2, 10), d.rejected
        assert store_prepaid.list_all(store) == [] and len(store.entries(0, 1000)) == n
        assert _exit_at_ten(store, A).outcome == "exit_owed"  # the full fee
    finally:
        sync.stop()
        raw.pub(topics.prepaid(SITE, "p8"), b"", retain=True)
    assert store_prepaid.prune(store, EXPIRES + store_prepaid.KEEP - timedelta(minutes=1)) \
        == {"prepayments": 0, "revocations": 0}
    assert store_prepaid.prune(store, EXPIRES + store_prepaid.KEEP + timedelta(minutes=1)) \
        == {"prepayments": 0, "revocations": 2}


@pytest.fixture(params=["mosquitto", "rabbitmq"])
def either_broker(request: pytest.FixtureRequest) -> Any:
    """The session's Mosquitto, then the session's RabbitMQ node (docs/brokers.md)."""
    return request.getfixturevalue("broker" if request.param == "mosquitto" else "rabbitmq")


@contextmanager
def _exit_lane_and_central(tmp_path: Path, broker: Any, plate: str,
                           event_id: str) -> Iterator[tuple[Any, Store, Any, str]]:
    """Central's ingest worker and an exit lane holding ``plate``'s open stay, connected and
    holding the rules: (central, the lane's store, its sync, a fresh payment id, since the
    session's brokers outlive the test); both stopped after."""
    central = _central(tmp_path, broker)
    central.start()
    x_store = make_store(tmp_path, "exit-1")
    x_store.record_entry(plate=plate, entered_at=datetime.now(UTC) - timedelta(hours=1),
                         event_id=event_id, lane_id="entry-1")
    x_sync = make_sync(x_store, broker.port)
    try:
        assert wait_until(central.connected.is_set)
        x_sync.start()
        assert wait_until(lambda: x_sync.downlink.applied["rules"] >= 1, 30)
        yield central, x_store, x_sync, f"pay-{uuid.uuid4().hex[:12]}"
    finally:
        x_sync.stop()
        central.stop()


def _prepay(central: Any, pid: str, plate: str) -> None:
    with central.tx() as s:
        prepay.prepay(s, SITE, payment_id=pid, amount=Decimal("30.00"), paid_at=None,
                      now=datetime.now(UTC), key=CENTRAL_KEY, source="paystation-1",
                      plate=plate)


def _outbox_done(central: Any) -> bool:
    with central.tx() as s:
        return all(r.published_at is not None for r in s.scalars(select(DownlinkOutbox)))


def test_on_both_brokers_an_away_lane_learns_the_refund_and_a_late_one_knows_neither(
        tmp_path: Path, either_broker: Any) -> None:
    """parkedge-central's ingest worker on Mosquitto and on RabbitMQ's MQTT plugin (which
    delivers no retained copy through ``prepaid/+``): a lane that held the payment and was
    away during the refund drops it from its reconnect snapshot; a lane that connects
    after the refund never holds the payment, refuses nothing and keeps the refund's id."""
    port = either_broker.port
    with _exit_lane_and_central(tmp_path, either_broker, A, "in-a") as (
            central, x_store, x_sync, pid):
        _prepay(central, pid, A)
        assert wait_until(lambda: x_sync.downlink.applied["prepaid"] == 1, 30), (
            x_sync.downlink.applied, x_sync.downlink.rejected)
        x_sync.stop()
        with central.tx() as s:
            refunds.refund(s, pid, actor="staff:ops", reason="driver asked",
                           now=datetime.now(UTC), key=CENTRAL_KEY)
        assert wait_until(lambda: _outbox_done(central), 30)
        late = make_store(tmp_path, "lane-x")
        late_sync = make_sync(late, port)
        late_sync.start()
        try:
            assert wait_until(
                lambda: late_sync.downlink.applied["prepaid_revoked_not_held"] >= 1, 30), (
                late_sync.downlink.applied, late_sync.downlink.rejected)
            assert store_prepaid.list_all(late) == []
            assert [(r["payment_id"], r["outcome"]) for r in store_prepaid.revocations(late)
                    ] == [(pid, "not_held")]  # kept: a replay of the payment is refused
            assert not late_sync.refusals.counts
        finally:
            late_sync.stop()
        x_sync2 = make_sync(x_store, port)
        x_sync2.start()
        try:
            assert wait_until(lambda: x_sync2.downlink.applied["prepaid_revoked"] == 1, 30), (
                x_sync2.downlink.applied, x_sync2.downlink.rejected)
            assert store_prepaid.list_all(x_store) == []
            assert [r["payment_id"] for r in store_prepaid.revocations(x_store)] == [pid]
        finally:
            x_sync2.stop()


def test_on_both_brokers_a_lane_away_when_paid_gets_the_prepayment_on_reconnect(
        tmp_path: Path, either_broker: Any) -> None:
    """A prepayment published while the exit lane was away: RabbitMQ delivers no retained
    copy through ``prepaid/+``, so the lane gets it from central's reconnect answer (on
    Mosquitto the retained copy may come too: one receipt, the other a duplicate)."""
    port = either_broker.port
    pid = ""
    try:
        with _exit_lane_and_central(tmp_path, either_broker, B, "in-b") as (
                central, x_store, x_sync, pid):
            x_sync.stop()
            _prepay(central, pid, B)
            assert wait_until(lambda: _outbox_done(central), 30)
            x_sync2 = make_sync(x_store, port)
            x_sync2.start()
            try:
                d = x_sync2.downlink
                assert wait_until(lambda: d.applied["prepaid"] == 1, 30), (d.applied,
                                                                            d.rejected)
                assert [p["payment_id"] for p in store_prepaid.list_all(x_store)] == [pid]
                assert not x_sync2.refusals.counts, x_sync2.refusals.counts
                received = [e for e in x_store.entries(0, 1000)
                            if e.kind == EntryKind.LANE_EVENT
                            and e.payload["event"] == "prepaid_received"]
                assert len(received) == 1  # one receipt however many copies came
            finally:
                x_sync2.stop()
    finally:
        # the session's broker keeps the payment's retained copy for a day: later tests'
        # lanes would each take it (a ledger entry more than they expect)
        if pid:
            w = Watcher(port, f"parkedge/{SITE}/none")
            try:
                w.publish(topics.prepaid(SITE, pid), b"", retain=True)
            finally:
                w.close()
