"""Prepayments for staff (#13), on SQLite and PostgreSQL: list, one, and the refund
(operations, audited, once): refused with 409 once a lane has let the car out on it
(its ``payment_received`` reached central through ingest), allowed again after a reversed
exit gave it back; the refund clears the retained message in the same transaction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from parkedge_sim.broker import MosquittoBroker
from sqlalchemy import select

from central import metrics
from central.app import Central
from central.config import parse_config
from central.db.models import DownlinkOutbox, LaneEntry, Prepayment
from central.services import prepay, refunds, staff
from central.services.errors import Invalid, NotFound
from central.web import create_app
from edge.lane.decide import Decider, LanePolicy
from edge.lpr.source import PlateRead
from edge.pricing import load_bundle
from edge.store import Store
from edge.store import prepayments as store_prepaid
from edge.sync import codec
from edge.sync.service import LaneSync
from tests.central.helpers import at
from tests.central.staff_client import KEY, audit_actions, login, staff_client
from tests.central.test_ingest import batch, committer, entry
from tests.central.test_ingest_mqtt import (
    KEYS,
    REPO,
    _have_roster,
    _outbox_done,
    lane,
    site_config,
    wait_until,
)

SITE = "mall-1"
PLATE = "粤B12345"


def _pay(c: Any, pid: str, amount: str = "30.00") -> None:
    with c.tx() as s:
        prepay.prepay(s, SITE, payment_id=pid, amount=Decimal(amount), paid_at=None,
                      now=c.now, key=KEY, source="paystation:ps1", plate=PLATE)


def _exit_used(c: Any, pid: str, seq: int, session: str, *, returned: bool = False) -> None:
    """What the exit lane X1 sends when it lets the car out on ``pid`` (and, with
    ``returned``, the reversed exit giving it back), committed by central's ingest."""
    e = entry("X1", seq, "payment_received", payload={
        "amount": "30.00", "method": "prepaid", "payment_id": pid,
        "paid_at": "2026-03-03T01:58:00.000000+00:00", "idem_key": f"prepaid:{pid}"})
    e["session_id"] = session
    es = [e]
    if returned:
        r = entry("X1", seq + 1, "correction", payload={
            "action": "prepaid_returned", "payment_id": pid, "amount": "30.00",
            "reason": "exit reversed"})
        r["session_id"] = session
        es.append(r)
    out = committer(c).commit([batch("X1", es)])
    assert out is not None


def _outbox(c: Any, pid: str) -> list[tuple[str, bool]]:
    with c.tx() as s:
        return [(r.payload, r.retain) for r in s.scalars(
            select(DownlinkOutbox).where(DownlinkOutbox.topic == f"prepaid/{pid}")
            .order_by(DownlinkOutbox.id))]


@pytest.fixture
def client(central: Any) -> Any:
    central.now = at("2026-03-03 10:00")
    with staff_client(central) as cl:
        yield cl


def test_refund_once_audited_and_cleared_from_the_broker(central: Any,
                                                         client: TestClient) -> None:
    c = central
    _pay(c, "p1")
    url = "/api/prepayments/p1/refund"
    assert client.post(url, json={"reason": "x"}).status_code == 401
    for user in ("mkt", "aud", "adm"):
        h = login(client, user)
        r = client.post(url, json={"reason": "driver changed mind"}, headers=h)
        assert r.status_code == 403 and r.json()["field"] == "role", (user, r.text)
        assert client.get("/api/prepayments/p1").status_code == 200  # every role reads
    h = login(client, "ops")
    assert client.post(url, json={"reason": "x"}).status_code == 403  # no CSRF token
    for body, field in [({}, "reason"), ({"reason": ""}, "reason"),
                        ({"reason": "r" * 201}, "reason"), ({"reason": 5}, "reason"),
                        ({"reason": "x", "amount": "1.00"}, "amount")]:
        r = client.post(url, json=body, headers=h)
        assert r.status_code == 422 and r.json()["field"] == field, (body, r.text)
    for content in (b'{"reason": NaN}', b'{"reason": 1e400}'):
        r = client.post(url, content=content, headers={**h, "content-type": "application/json"})
        assert r.status_code == 422 and r.json()["field"] == "reason", r.text
    r = client.post(url, content=b'{"reason": "' + b"r" * 300_000 + b'"}',
                    headers={**h, "content-type": "application/json"})
    assert r.status_code == 413
    r = client.post("/api/prepayments/nope/refund", json={"reason": "x"}, headers=h)
    assert r.status_code == 404 and r.json()["field"] == "payment_id"
    r = client.post("/api/prepayments/..%2Fx/refund", json={"reason": "x"}, headers=h)
    assert r.status_code in (404, 422)
    assert client.get("/api/prepayments/p1").json()["refunded_at"] is None  # nothing yet
    [(payload, retained)] = _outbox(c, "p1")
    assert payload and retained  # only the prepaid message itself
    r = client.post(url, json={"reason": "driver changed mind"}, headers=h)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["replayed"] is False and out["refunded_by"] == "staff:ops"
    assert out["refund_reason"] == "driver changed mind" and out["used_by"] == []
    assert datetime.fromisoformat(out["refunded_at"]) == c.now
    again = client.post(url, json={"reason": "twice"}, headers=h)
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert again.json()["refund_reason"] == "driver changed mind"
    msgs = _outbox(c, "p1")
    # once: the signed revocation (not retained), then the retained copy cleared
    assert len(msgs) == 3 and msgs[2] == ("", True) and msgs[1][1] is False
    rv = codec.parse_prepaid_revoked(msgs[1][0].encode(), SITE, KEY.public_key())
    assert (rv.payment_id, rv.plate, rv.amount, rv.revoked_at) == (
        "p1", PLATE, Decimal("30.00"), c.now)
    log = audit_actions(c, "prepayment.refund")
    assert len(log) == 1 and log[0]["actor"] == "staff:ops"
    assert log[0]["before"] == {"refunded_at": None}
    assert log[0]["after"]["reason"] == "driver changed mind"
    assert log[0]["after"]["amount"] == "30.00"
    with c.tx() as s:  # the clearing job has nothing more to do for it
        assert prepay.clear_expired(s, SITE, c.now + prepay.TTL * 2) == 0
    assert len(_outbox(c, "p1")) == 3


def test_refund_refused_once_a_lane_used_it_allowed_after_a_reversed_exit(
        central: Any, client: TestClient) -> None:
    c = central
    _pay(c, "p1")
    _pay(c, "p2")
    _exit_used(c, "p1", 1, "sess-1")
    _exit_used(c, "p2", 2, "sess-2", returned=True)
    h = login(client, "ops")
    r = client.post("/api/prepayments/p1/refund", json={"reason": "x"}, headers=h)
    assert r.status_code == 409 and r.json()["field"] == "payment_id", r.text
    assert "X1" in r.json()["message"]
    one = client.get("/api/prepayments/p1").json()
    assert one["refunded_at"] is None and len(_outbox(c, "p1")) == 1  # nothing applied
    assert [(u["lane_id"], u["seq"], u["session_id"]) for u in one["used_by"]] == [
        ("X1", 1, "sess-1")]
    assert audit_actions(c, "prepayment.refund") == []
    r = client.post("/api/prepayments/p2/refund", json={"reason": "exit reversed"},
                    headers=h)
    assert r.status_code == 200 and r.json()["used_by"] == []


def test_list_and_one_with_filters_and_bad_queries(central: Any,
                                                   client: TestClient) -> None:
    c = central
    _pay(c, "p1")
    _pay(c, "p2", "12.50")
    with c.tx() as s:
        refunds.refund(s, "p2", actor="staff:ops", reason="x", now=c.now, key=KEY)
    _pay(c, "p3")
    _exit_used(c, "p3", 1, "sess-3")
    login(client, "aud")
    used = {p["payment_id"]: [u["session_id"] for u in p["used_by"]]
            for p in client.get("/api/prepayments").json()}
    assert used == {"p1": [], "p2": [], "p3": ["sess-3"]}  # one query for the whole page
    with c.tx() as s:
        s.delete(s.get(Prepayment, "p3"))
    assert {p["payment_id"] for p in client.get("/api/prepayments").json()} == {"p1", "p2"}
    got = client.get("/api/prepayments", params={"refunded": "true"}).json()
    assert [(p["payment_id"], p["amount"]) for p in got] == [("p2", "12.50")]
    got = client.get("/api/prepayments", params={"refunded": "false", "plate": PLATE}).json()
    assert [p["payment_id"] for p in got] == ["p1"]
    assert client.get("/api/prepayments", params={"plate": "粤A00000"}).json() == []
    assert len(client.get("/api/prepayments", params={"limit": 1}).json()) == 1
    one = client.get("/api/prepayments/p1").json()
    assert one["amount"] == "30.00" and one["source"] == "paystation:ps1"
    assert one["plate"] == PLATE and one["site_id"] == SITE
    for params, field in [({"limit": 0}, "limit"), ({"limit": 1001}, "limit"),
                          ({"limit": "abc"}, "limit"), ({"refunded": "maybe"}, "refunded"),
                          ({"member_id": "../x"}, "member_id"), ({"plate": ""}, "plate")]:
        r = client.get("/api/prepayments", params=params)
        assert r.status_code == 422 and r.json()["field"] == field, (params, r.text)
    r = client.get("/api/prepayments/nope")
    assert r.status_code == 404 and r.json()["field"] == "payment_id"
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/prepayments/{payment_id}", "/api/prepayments/{payment_id}/refund"} <= set(
        paths)
    assert "get" in paths["/api/prepayments"] and "post" in paths["/api/prepayments"]


def test_refund_service_checks(central: Any) -> None:
    c = central
    _pay(c, "p1")
    with c.tx() as s, pytest.raises(Invalid):
        refunds.refund(s, "p1", actor="staff:ops", reason="", now=c.now, key=KEY)
    with c.tx() as s, pytest.raises(NotFound):
        refunds.refund(s, "p9", actor="staff:ops", reason="x", now=c.now, key=KEY)
    with c.tx() as s:
        p = s.get(Prepayment, "p1")
        assert p is not None and p.refunded_at is None and p.cleared_at is None


# ------------------------------------------------------------------ with real lanes (#13)
# parkedge-central's ingest worker (SQLite and PostgreSQL) and real lanes (LaneSync,
# SQLite stores, Decider) over a Mosquitto of the test's own: the refund's revocation
# reaches the lanes, a lane away during the refund learns it from its reconnect snapshot,
# a lane that joins later knows neither, and a refund racing a use shows at the desk.

PW = "correct horse battery"
EXIT_RULES = REPO / "config" / "rules.example.toml"


@pytest.fixture
def mosq(tmp_path: Path) -> Iterator[MosquittoBroker]:
    b = MosquittoBroker(tmp_path)
    b.start()
    yield b
    b.stop()


@contextmanager
def _site(tmp_path: Path, db_url: str, port: int) -> Iterator[tuple[Central, Any, str]]:
    d, pub = site_config(tmp_path, db_url, port)
    c = Central.from_config(parse_config(d))
    with c.tx() as s:
        staff.add_user(s, "ops", "operations", PW, c.clock())
    try:
        with TestClient(create_app(c), base_url="https://testserver") as cl:
            r = cl.post("/api/staff/login", json={"username": "ops", "password": PW})
            assert r.status_code == 200, r.text
            cl.headers["X-CSRF-Token"] = r.json()["csrf_token"]
            yield c, cl, pub
    finally:
        c.close()


def _pay_api(cl: TestClient, pid: str, plate: str) -> None:
    r = cl.post("/api/prepayments", json={"payment_id": pid, "plate": plate,
                                          "amount": "30.00", "source": "paystation-1"})
    assert r.status_code == 201, r.text


def _refund_api(cl: TestClient, pid: str) -> dict[str, Any]:
    r = cl.post(f"/api/prepayments/{pid}/refund", json={"reason": "driver asked"})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _decider(store: Store) -> Decider:
    bundle = load_bundle(EXIT_RULES)
    return Decider(store, lambda: bundle, LanePolicy(store.lane_id, "exit",
                                                     ZoneInfo("Asia/Shanghai")))


def _leave(store: Store, plate: str, at: datetime, ev: str) -> Any:
    return _decider(store).decide(PlateRead(plate, 0.99, at, "t", ev), at)


def _lane_events(c: Central, lane_id: str, event: str) -> list[dict[str, Any]]:
    with c.tx() as s:
        rows = s.scalars(select(LaneEntry).where(LaneEntry.lane_id == lane_id,
                                                 LaneEntry.kind == "lane_event"))
        return [p["detail"] for r in rows if (p := json.loads(r.payload))["event"] == event]


def test_refund_revokes_at_the_lanes_away_lane_learns_it_late_joiner_needs_nothing(
        tmp_path: Path, db_url: str, mosq: MosquittoBroker) -> None:
    with _site(tmp_path, db_url, mosq.port) as (c, cl, pub):
        worker = c.ingest_worker(client_id="central-refund")
        worker.start()
        now = c.clock()
        x_store, x_sync = lane(tmp_path, "exit-1", mosq.port, pub)
        for plate in ("粤B10001", "粤B30003"):
            x_store.record_entry(plate=plate, entered_at=now - timedelta(minutes=60),
                                 event_id=f"in-{plate[-1]}", lane_id="entry-1")
        x_sync.start()
        e_sync = None
        try:
            assert wait_until(lambda: _have_roster(x_sync))
            _pay_api(cl, "pay-a", "粤B10001")
            _pay_api(cl, "pay-c", "粤B30003")
            assert wait_until(lambda: x_sync.downlink.applied["prepaid"] == 2), (
                x_sync.downlink.applied, x_sync.downlink.rejected)
            # the refund reaches the exit lane: dropped, and the car pays the full fee
            out = _refund_api(cl, "pay-a")
            assert out["refunded_at"] and out["used_by"] == []
            assert wait_until(lambda: x_sync.downlink.applied["prepaid_revoked"] == 1), (
                x_sync.downlink.applied, x_sync.downlink.rejected)
            assert [p["payment_id"] for p in store_prepaid.list_all(x_store)] == ["pay-c"]
            a = _leave(x_store, "粤B10001", now + timedelta(minutes=10), "out-a")
            assert a.outcome == "exit_owed" and not a.open_barrier
            sa = x_store.get_session(a.session_id or "")
            assert sa is not None and sa.fee > 0 and sa.payable == sa.fee
            # the lane's record of the revocation reaches central
            assert wait_until(lambda: [d["payment_id"] for d in _lane_events(
                c, "exit-1", "prepaid_revoked")] == ["pay-a"])
            # the exit lane goes away; pay-c is refunded meanwhile
            x_sync.stop()
            _refund_api(cl, "pay-c")
            assert wait_until(lambda: _outbox_done(c))
            # a lane that joins now never learns either payment: it keeps their ids only
            e_store, e_sync = lane(tmp_path, "entry-1", mosq.port, pub)
            e_sync.start()
            assert wait_until(
                lambda: e_sync.downlink.applied["prepaid_revoked_not_held"] == 2), (
                e_sync.downlink.applied, e_sync.downlink.rejected)
            assert store_prepaid.list_all(e_store) == []
            assert sorted((r["payment_id"], r["outcome"]) for r in store_prepaid.revocations(
                e_store)) == [("pay-a", "not_held"), ("pay-c", "not_held")]
            assert not e_sync.refusals.counts and e_sync.downlink.applied["prepaid"] == 0
            # the exit lane comes back: the reconnect snapshot carries pay-c's revocation
            x_sync2 = LaneSync(x_store, site="mall-1", settings=x_sync.link.settings,
                               hmac_key=KEYS["exit-1"].encode(), public_key_hex=pub,
                               ack_timeout_s=1.0, status_interval_s=0.3)
            x_sync2.start()
            try:
                assert wait_until(lambda: x_sync2.downlink.applied["prepaid_revoked"] == 1
                                  and x_sync2.downlink.applied["prepaid_revoked_dup"] == 1), (
                    x_sync2.downlink.applied, x_sync2.downlink.rejected)
                assert store_prepaid.list_all(x_store) == []
                assert not x_sync2.refusals.counts
                cc = _leave(x_store, "粤B30003", now + timedelta(minutes=10), "out-c")
                assert cc.outcome == "exit_owed"
                assert wait_until(lambda: sorted(d["payment_id"] for d in _lane_events(
                    c, "exit-1", "prepaid_revoked")) == ["pay-a", "pay-c"])
            finally:
                x_sync2.stop()
            one = cl.get("/api/prepayments/pay-c").json()
            assert one["refunded_at"] and one["used_by"] == []
            assert cl.get("/api/prepayments", params={"conflict": "true"}).json() == []
        finally:
            x_sync.stop()
            if e_sync is not None:
                e_sync.stop()
            worker.stop()
            x_store.close()


def test_refund_racing_a_use_at_a_lane_cut_off_from_central_reaches_the_desk(
        tmp_path: Path, db_url: str, mosq: MosquittoBroker) -> None:
    with _site(tmp_path, db_url, mosq.port) as (c, cl, pub):
        worker = c.ingest_worker(client_id="central-refund")
        worker.start()
        now = c.clock()
        x_store, x_sync = lane(tmp_path, "exit-1", mosq.port, pub)
        x_store.record_entry(plate="粤B20002", entered_at=now - timedelta(minutes=60),
                             event_id="in-b", lane_id="entry-1")
        x_sync.start()
        worker2 = None
        try:
            assert wait_until(lambda: _have_roster(x_sync))
            _pay_api(cl, "pay-b", "粤B20002")
            assert wait_until(lambda: x_sync.downlink.applied["prepaid"] == 1)
            worker.stop()  # central is cut off: the lane lets the car out on the payment
            b = _leave(x_store, "粤B20002", now + timedelta(minutes=10), "out-b")
            assert b.outcome == "exit_paid" and b.open_barrier
            out = _refund_api(cl, "pay-b")  # central has not heard of the use: refunded
            assert out["used_by"] == []
            worker2 = c.ingest_worker(client_id="central-refund-2")
            worker2.start()
            assert wait_until(
                lambda: x_sync.downlink.applied["prepaid_revoked_after_use"] == 1), (
                x_sync.downlink.applied, x_sync.downlink.rejected)
            [row] = store_prepaid.list_all(x_store)
            assert row["used_session"] == b.session_id  # nothing undone: the car is gone
            # the lane's use and its record of the conflict reach central (the exit's
            # entries may commit after the later ones: wait for the whole ledger)
            assert wait_until(lambda: x_sync.backlog() == 0 and [
                d["payment_id"] for d in _lane_events(c, "exit-1",
                                                      "prepaid_revoked_after_use")] == ["pay-b"])
            one = cl.get("/api/prepayments/pay-b").json()  # the desk sees both
            assert one["refunded_at"] and [u["session_id"] for u in one["used_by"]] == [
                b.session_id]
            got = cl.get("/api/prepayments", params={"conflict": "true"}).json()
            assert [p["payment_id"] for p in got] == ["pay-b"]
            assert metrics.REGISTRY.get_sample_value("central_prepaid_refund_conflicts") == 1
            again = cl.post("/api/prepayments/pay-b/refund", json={"reason": "again"})
            assert again.status_code == 200 and again.json()["replayed"] is True
        finally:
            x_sync.stop()
            worker.stop()
            if worker2 is not None:
                worker2.stop()
            x_store.close()
