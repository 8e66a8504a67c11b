"""The portal's prepayment of a stay in progress: the member sees their open stay (from the
ingested lane entries) with the fee so far, prepays it in two taps through the same
``record()`` as staff and pay stations (one signed ``prepaid`` message queued), once per
form key, only for their own plate, and bad input answers a clear error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from central.db.models import AuditLog, Base, LaneEntry, Prepayment
from central.services import members
from central.services.ops_tally import utc_text
from central.web import create_app
from edge.pricing.quote import quote_exit
from edge.pricing.types import SessionInput
from edge.sync import codec
from tests.central.helpers import at
from tests.central.test_pages import PW, form_token, member_sign_in

KEY = Ed25519PrivateKey.generate()
P1, P2 = "粤B10001", "粤B10002"


@pytest.fixture
def portal(central: Any) -> Iterator[tuple[Any, TestClient]]:
    c = central
    c.now = at("2026-03-03 12:00")
    with c.tx() as s:
        for mid, phone, plate in [("M1", "13800000001", P1), ("M2", "13800000002", P2)]:
            members.enrol(s, c.rules, member_id=mid, phone=phone, name=mid, tier="gold",
                          now=at("2026-01-01 09:00"), plates=(plate,), password=PW)
    app = create_app(c)
    app.state.signing_key = KEY
    with TestClient(app, base_url="https://testserver") as client:
        yield c, client


def _entry(s: Any, seq: int, kind: str, when: datetime, sid: str, plate: str,
           payload: dict[str, Any]) -> None:
    s.add(LaneEntry(lane_id="in-1", seq=seq, entry_id=f"in-1:{seq}", kind=kind,
                    at=utc_text(when), recorded=utc_text(when), session_id=sid,
                    member_id=None, plate=plate, rules_version="v1",
                    payload=json.dumps(payload, sort_keys=True), prev_hash="0" * 64,
                    hash=f"{seq:064d}", received_at=when))


def _enter(s: Any, seq: int, plate: str, when: datetime, sid: str) -> None:
    _entry(s, seq, "session_opened", when, sid, plate,
           {"event_id": f"ev-{sid}", "vehicle_class": "small", "entry_lane": "in-1",
            "detail": {}})


def _outbox(s: Any) -> list[dict[str, Any]]:
    t = Base.metadata.tables["downlink_outbox"]
    return [dict(r._mapping) for r in s.execute(select(t).order_by(t.c.id))]


def _fee(c: Any, entered: datetime) -> Decimal:
    q = quote_exit(SessionInput(entered=entered, exited=c.now), None, c.rules, c.now)
    return q.fee


def test_member_prepays_own_stay_in_two_taps_once(portal: tuple[Any, TestClient]) -> None:
    c, client = portal
    entered = c.now - timedelta(hours=3, minutes=10)
    with c.tx() as s:
        _enter(s, 1, P1, entered, "in-1-aaa")
        _enter(s, 2, P2, entered, "in-1-bbb")
    fee = _fee(c, entered)
    assert fee > 0
    member_sign_in(client, "13800000001")
    page = client.get("/m")
    assert P1 in page.text and P2 not in page.text  # only their own car
    assert f"¥{fee}" in page.text and "in-1-bbb" not in page.text
    csrf = form_token(page.text, "csrf_token")
    key = form_token(page.text, "payment_key")
    assert form_token(page.text, "amount") == str(fee)
    form = {"csrf_token": csrf, "session_id": "in-1-aaa", "amount": str(fee),
            "payment_key": key}
    r = client.post("/m/prepay", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/m?paid={key}"
    again = client.post("/m/prepay", data=form, follow_redirects=False)  # a double tap
    assert again.status_code == 303
    with c.tx() as s:
        rows = list(s.scalars(select(Prepayment)))
        assert [(p.payment_id, p.plate, p.member_id, p.amount, p.source)
                for p in rows] == [(key, P1, "M1", fee, "portal")]
        assert rows[0].entry_event_id == "ev-in-1-aaa"
        out = _outbox(s)
        assert [o["topic"] for o in out] == [f"prepaid/{key}"] and out[0]["retain"]
        msg = codec.parse_prepaid(out[0]["payload"].encode(), c.cfg.site.site_id,
                                   KEY.public_key())
        assert (msg.plate, msg.amount) == (P1, fee)
        assert s.scalar(select(func.count()).select_from(AuditLog).where(
            AuditLog.action == "prepayment.add", AuditLog.actor == "member:M1")) == 1
    done = client.get(f"/m?paid={key}")
    assert 'id="prepaid"' in done.text and "Confirm: pay" not in done.text  # nothing due


def test_member_cannot_prepay_another_members_stay(portal: tuple[Any, TestClient]) -> None:
    c, client = portal
    entered = c.now - timedelta(hours=2)
    with c.tx() as s:
        _enter(s, 1, P2, entered, "in-1-bbb")
    member_sign_in(client, "13800000001")
    page = client.get("/m")
    assert "in-1-bbb" not in page.text
    r = client.post("/m/prepay", data={
        "csrf_token": form_token(page.text, "csrf_token"), "session_id": "in-1-bbb",
        "amount": str(_fee(c, entered)), "payment_key": "portal-x-1", "member_id": "M2",
        "plate": P2})
    assert r.status_code == 404 and "no stay in progress" in r.text
    with c.tx() as s:
        assert s.scalar(select(func.count()).select_from(Prepayment)) == 0
        assert _outbox(s) == []


def test_bad_input_is_a_clear_error_and_records_nothing(
        portal: tuple[Any, TestClient]) -> None:
    c, client = portal
    entered = c.now - timedelta(hours=3)
    with c.tx() as s:
        _enter(s, 1, P1, entered, "in-1-aaa")
    member_sign_in(client, "13800000001")
    page = client.get("/m")
    csrf, key = form_token(page.text, "csrf_token"), form_token(page.text, "payment_key")
    fee = _fee(c, entered)
    ok = {"csrf_token": csrf, "session_id": "in-1-aaa", "amount": str(fee),
          "payment_key": key}
    r = client.post("/m/prepay", data={**ok, "amount": "0.01"})
    assert r.status_code == 422 and f"the fee is now ¥{fee}" in r.text
    r = client.post("/m/prepay", data={**ok, "payment_key": "x"})
    assert r.status_code == 422 and "malformed: reload the page" in r.text
    r = client.post("/m/prepay", data={**ok, "csrf_token": "nope"})
    assert r.status_code == 403
    with c.tx() as s:
        assert s.scalar(select(func.count()).select_from(Prepayment)) == 0
    # the stay ended at the exit: nothing to prepay any more
    with c.tx() as s:
        _entry(s, 2, "session_closed", c.now - timedelta(minutes=1), "in-1-aaa", P1, {})
    assert "in-1-aaa" not in client.get("/m").text
    r = client.post("/m/prepay", data=ok)
    assert r.status_code == 404 and "it may have ended" in r.text
