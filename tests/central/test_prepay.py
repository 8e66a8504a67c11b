"""Prepayment at central (#13), on SQLite and PostgreSQL: recorded once per payment id, its
signed ``prepaid`` message in ``downlink_outbox`` in the same transaction, bad input a 4xx
naming the field, staff operations only (CSRF as every staff write)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from central.db.models import Base, Prepayment
from central.services import members, prepay, staff
from central.services.errors import Invalid, NotFound, Refused
from central.web import create_app
from edge.sync import codec
from tests.central.helpers import at

PW = "correct horse battery"
KEY = Ed25519PrivateKey.generate()
SITE = "mall-1"
PLATE = "粤B12345"


def _outbox(s: Any) -> list[dict[str, Any]]:
    t = Base.metadata.tables["downlink_outbox"]
    return [dict(r._mapping) for r in s.execute(select(t).order_by(t.c.id))]


def _count(s: Any) -> int:
    return int(s.scalar(select(func.count()).select_from(Prepayment)))


def _pay(s: Any, c: Any, pid: str = "pay-1", amount: str = "30.00", **kw: Any) -> Any:
    return prepay.prepay(s, SITE, payment_id=pid, amount=Decimal(amount),
                         paid_at=kw.pop("paid_at", None), now=c.now, key=KEY,
                         source="paystation-1", **{"plate": PLATE, **kw})


def test_prepay_is_idempotent_and_queues_a_signed_message(central: Any) -> None:
    c = central
    with c.tx() as s:
        r = _pay(s, c)
    assert not r.replayed and r.amount == Decimal("30.00")
    assert r.expires_at == r.paid_at + prepay.TTL
    with c.tx() as s:
        again = _pay(s, c)
        assert again.replayed and again.paid_at == r.paid_at
        with pytest.raises(Refused) as e:
            _pay(s, c, amount="31.00")
        assert e.value.field == "payment_id"
    with c.tx() as s:
        assert _count(s) == 1
        rows = _outbox(s)
    assert len(rows) == 1
    row = rows[0]
    assert row["topic"] == "prepaid/pay-1" and row["retain"] is True
    assert row["site_id"] == SITE and row["published_at"] is None
    assert row["created_at"].tzinfo is not None
    # what a lane of this site does with it: verifies with central's public key
    msg = codec.parse_prepaid(row["payload"].encode(), SITE, KEY.public_key())
    assert (msg.payment_id, msg.plate, msg.amount) == ("pay-1", PLATE, Decimal("30.00"))
    assert msg.paid_at == r.paid_at and msg.source == "paystation-1"
    with pytest.raises(codec.SyncMessageError):
        codec.parse_prepaid(row["payload"].encode(), "other-site", KEY.public_key())


def test_payment_and_message_commit_or_roll_back_together(central: Any) -> None:
    c = central
    with pytest.raises(RuntimeError), c.tx() as s:
        _pay(s, c, "pay-x")
        assert _count(s) == 1 and len(_outbox(s)) == 1  # both inside the transaction
        raise RuntimeError("the request failed after the service ran")
    with c.tx() as s:
        assert _count(s) == 0 and _outbox(s) == []
    # a refused payment writes neither
    with c.tx() as s, pytest.raises(Invalid):
        _pay(s, c, "pay-y", amount="-1")
    with c.tx() as s:
        assert _count(s) == 0 and _outbox(s) == []


def test_member_without_plate_uses_their_only_plate(central: Any) -> None:
    c = central
    with c.tx() as s:
        members.enrol(s, c.rules, member_id="m1", phone="13800000001", name="A",
                      tier="member", now=c.now, plates=(PLATE,))
        members.enrol(s, c.rules, member_id="m2", phone="13800000002", name="B",
                      tier="member", now=c.now, plates=("粤B00001", "粤B00002"))
    with c.tx() as s:
        r = prepay.prepay(s, SITE, payment_id="p1", amount="12.50", paid_at=None, now=c.now,
                          key=KEY, source="portal", member_id="m1")
        assert (r.plate, r.member_id) == (PLATE, "m1")
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"member_id": "m2"}, Invalid, "plate"),  # two plates: which car?
        ({"member_id": "nobody"}, NotFound, "member_id"),
        ({"member_id": "m2", "plate": PLATE}, Refused, "plate"),  # not m2's car
        ({}, Invalid, "plate"),
    ]
    for kw, exc, field in cases:
        with c.tx() as s, pytest.raises(exc) as e:
            prepay.prepay(s, SITE, payment_id="p2", amount="1.00", paid_at=None, now=c.now,
                          key=KEY, source="portal", **kw)
        assert e.value.field == field, kw  # type: ignore[attr-defined]


def test_expired_prepayments_are_cleared_from_the_broker_once(central: Any) -> None:
    c = central
    with c.tx() as s:
        _pay(s, c, "old")
    with c.tx() as s:
        assert prepay.clear_expired(s, SITE, c.now) == 0
    with c.tx() as s:
        assert prepay.clear_expired(s, SITE, c.now + prepay.TTL + timedelta(seconds=1)) == 1
    with c.tx() as s:
        assert prepay.clear_expired(s, SITE, c.now + prepay.TTL + timedelta(hours=1)) == 0
        rows = _outbox(s)
    assert [(r["topic"], r["payload"], r["retain"]) for r in rows][1:] == [
        ("prepaid/old", "", True)]


@pytest.fixture
def web(central: Any) -> Iterator[tuple[Any, TestClient]]:
    central.now = at("2026-03-03 12:00")
    with central.tx() as s:
        for name, role in [("ops", "operations"), ("mkt", "marketing")]:
            staff.add_user(s, name, role, PW, central.now)
    app = create_app(central)
    app.state.signing_key = KEY
    with TestClient(app, base_url="https://testserver") as client:
        yield central, client


def _login(client: TestClient, user: str) -> dict[str, str]:
    r = client.post("/api/staff/login", json={"username": user, "password": PW})
    assert r.status_code == 200, r.text
    return {"X-CSRF-Token": r.json()["csrf_token"]}


GOOD = {"payment_id": "ps1-0001", "plate": PLATE, "amount": "30.00",
        "paid_at": "2026-03-03T11:58:00+08:00", "source": "paystation-1"}


def test_api_records_once_and_names_the_field_of_bad_input(
        web: tuple[Any, TestClient]) -> None:
    c, client = web
    assert client.post("/api/prepayments", json=GOOD).status_code == 401
    h = _login(client, "mkt")
    r = client.post("/api/prepayments", json=GOOD, headers=h)
    assert r.status_code == 403 and r.json()["field"] == "role"
    h = _login(client, "ops")
    r = client.post("/api/prepayments", json=GOOD)  # the cookie, without the CSRF token
    assert r.status_code == 403 and r.json()["field"] == "X-CSRF-Token"
    r = client.post("/api/prepayments", json=GOOD, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["amount"] == "30.00" and r.json()["replayed"] is False
    r = client.post("/api/prepayments", json=GOOD, headers=h)
    assert r.status_code == 200 and r.json()["replayed"] is True
    r = client.post("/api/prepayments", json={**GOOD, "amount": "40.00"}, headers=h)
    assert r.status_code == 409 and r.json()["field"] == "payment_id"
    bad: list[tuple[dict[str, Any], int, str]] = [
        ({**GOOD, "amount": "-1.00"}, 422, "amount"),
        ({**GOOD, "amount": "0"}, 422, "amount"),
        ({**GOOD, "amount": "1e400"}, 422, "amount"),
        ({**GOOD, "amount": "NaN"}, 422, "amount"),
        ({**GOOD, "amount": 30}, 422, "amount"),
        ({**GOOD, "amount": "100000.01"}, 422, "amount"),
        ({**GOOD, "amount": "1.234"}, 422, "amount"),
        ({k: v for k, v in GOOD.items() if k != "amount"}, 422, "amount"),
        ({k: v for k, v in GOOD.items() if k != "payment_id"}, 422, "payment_id"),
        ({**GOOD, "payment_id": "../x"}, 422, "payment_id"),
        ({**GOOD, "plate": "!!"}, 422, "plate"),
        ({**GOOD, "plate": "x" * 40}, 422, "plate"),
        ({**GOOD, "paid_at": "2026-03-03T14:00:00+08:00"}, 422, "paid_at"),  # future
        ({**GOOD, "paid_at": "2026-03-01T10:00:00+08:00"}, 422, "paid_at"),  # expired
        ({**GOOD, "paid_at": "2026-03-03T11:58:00"}, 422, "paid_at"),  # no offset
        ({**GOOD, "paid_at": "9999-12-31T23:59:00+08:00"}, 422, "paid_at"),
        ({**GOOD, "member_id": "nobody"}, 404, "member_id"),
        ({**GOOD, "fee": "1.00"}, 422, "fee"),  # extra field
    ]
    for i, (body, status, field) in enumerate(bad):
        if body.get("payment_id") == GOOD["payment_id"]:
            body = {**body, "payment_id": f"bad-{i}"}  # a fresh id: no replay can mask it
        r = client.post("/api/prepayments", json=body, headers=h)
        assert r.status_code == status and r.json()["field"] == field, (body, r.text)
    with c.tx() as s:
        assert _count(s) == 1 and len(_outbox(s)) == 1
        log = [e for e in staff_audit(s) if e["action"] == "prepayment.add"]
    assert len(log) == 1 and log[0]["actor"] == "staff:ops"
    assert "/api/prepayments" in client.get("/openapi.json").json()["paths"]


def staff_audit(s: Any) -> list[dict[str, Any]]:
    from central.services import audit

    return audit.entries(s)


def test_api_without_a_signing_key_records_nothing(central: Any) -> None:
    central.now = at("2026-03-03 12:00")
    with central.tx() as s:
        staff.add_user(s, "ops", "operations", PW, central.now)
    with TestClient(create_app(central), base_url="https://testserver") as client:
        h = _login(client, "ops")
        r = client.post("/api/prepayments", json=GOOD, headers=h)
        assert r.status_code == 503 and r.json()["field"] == "signing_key"
    with central.tx() as s:
        assert _count(s) == 0
