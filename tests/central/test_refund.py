"""Prepayments for staff (#13), on SQLite and PostgreSQL: list, one, and the refund
(operations, audited, once): refused with 409 once a lane has let the car out on it
(its ``payment_received`` reached central through ingest), allowed again after a reversed
exit gave it back; the refund clears the retained message in the same transaction."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from central.db.models import DownlinkOutbox, Prepayment
from central.services import prepay, refunds
from central.services.errors import Invalid, NotFound
from edge.sync import codec
from tests.central.helpers import at
from tests.central.staff_client import KEY, audit_actions, login, staff_client
from tests.central.test_ingest import batch, committer, entry

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
