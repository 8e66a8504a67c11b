"""Pay stations (#13), on SQLite and PostgreSQL: `parkedge-central paystation add|revoke|list`
(the key shown once, only its digest stored) and `POST /api/paystation/prepayments` with
the key: the staff route's checks, the payment id as idempotency key, no staff login."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from central.cli import app
from central.db.models import Paystation, Prepayment
from central.services import paystations
from central.services.errors import Invalid, NotFound, Refused
from tests.central.helpers import RULES
from tests.central.staff_client import audit_actions, login, staff_client

runner = CliRunner()
PLATE = "粤B12345"
GOOD = {"payment_id": "ps1-0001", "plate": PLATE, "amount": "30.00",
        "paid_at": "2026-03-03T09:58:00+08:00"}
URL = "/api/paystation/prepayments"


def _cli(conf: Path, *args: str) -> tuple[int, str]:
    r = runner.invoke(app, [*args, "-c", str(conf)])
    return r.exit_code, r.output


def test_cli_adds_lists_and_revokes_keys_shown_once(tmp_path: Path, db_url: str,
                                                    central: Any) -> None:
    conf = tmp_path / "central.toml"
    conf.write_text(f'[site]\nsite_id = "mall-1"\ntimezone = "Asia/Shanghai"\n'
                    f'[database]\nurl = "{db_url}"\n[rules]\nbundle = "{RULES}"\n')
    code, out = _cli(conf, "paystation", "add", "ps1", "--name", "Lobby B1")
    assert code == 0, out
    key = out.strip()
    assert key.startswith("pst_") and len(key) > 40
    with central.tx() as s:
        row = s.get(Paystation, "ps1")
        assert row is not None and row.active and row.name == "Lobby B1"
        assert row.api_key_hash == hashlib.sha256(key.encode()).hexdigest()
        dump = " ".join(str(v) for r in s.execute(text("SELECT * FROM paystations"))
                        for v in r)
        assert key not in dump  # only the digest is kept
    assert _cli(conf, "paystation", "add", "ps1")[0] == 1  # exists
    code, out = _cli(conf, "paystation", "add", "../x")
    assert code == 1 and "paystation_id" in out
    code, out = _cli(conf, "paystation", "list", "--json")
    assert code == 0 and key not in out
    assert [(r["paystation_id"], r["active"]) for r in json.loads(out)] == [("ps1", True)]
    assert _cli(conf, "paystation", "revoke", "ps1") == (0, "pay station ps1 revoked\n")
    assert "already revoked" in _cli(conf, "paystation", "revoke", "ps1")[1]
    code, out = _cli(conf, "paystation", "revoke", "nope")
    assert code == 1 and "unknown pay station" in out
    assert "revoked" in _cli(conf, "paystation", "list")[1]
    with central.tx() as s:
        assert paystations.for_key(s, key) is None  # revoked: the key opens nothing
    log = audit_actions(central, "paystation.")
    assert [e["action"] for e in reversed(log)] == ["paystation.add", "paystation.revoke"]
    assert all(e["actor"].startswith("cli:") for e in log)


def test_service_refuses_bad_ids_and_names(central: Any) -> None:
    with central.tx() as s:
        paystations.add(s, "ps1", "", central.now)
    cases: list[tuple[tuple[str, str], type[Exception], str]] = [
        (("ps1", ""), Refused, "paystation_id"), (("", ""), Invalid, "paystation_id"),
        (("a b", ""), Invalid, "paystation_id"), (("ps2", "n" * 201), Invalid, "name")]
    for (pid, name), exc, field in cases:
        with central.tx() as s, pytest.raises(exc) as e:
            paystations.add(s, pid, name, central.now)
        assert e.value.field == field  # type: ignore[attr-defined]
    with central.tx() as s, pytest.raises(NotFound):
        paystations.revoke(s, "nope", central.now)
    with central.tx() as s:
        assert [p["paystation_id"] for p in paystations.listing(s)] == ["ps1"]


def _count(c: Any) -> int:
    with c.tx() as s:
        return int(s.scalar(select(func.count()).select_from(Prepayment)))


def test_api_records_with_the_key_once_and_names_bad_fields(central: Any) -> None:
    c = central
    with c.tx() as s:
        k1 = paystations.add(s, "ps1", "Lobby", c.now)
        k2 = paystations.add(s, "ps2", "Exit 2", c.now)
    with staff_client(c) as client:
        assert client.post(URL, json=GOOD).json()["field"] == "X-API-Key"
        r = client.post(URL, json=GOOD, headers={"X-API-Key": "pst_wrong"})
        assert r.status_code == 401 and r.json()["field"] == "X-API-Key"
        h = {"X-API-Key": k1}
        r = client.post(URL, json=GOOD, headers=h)
        assert r.status_code == 201, r.text
        assert r.json()["amount"] == "30.00" and r.json()["replayed"] is False
        r = client.post(URL, json=GOOD, headers=h)
        assert r.status_code == 200 and r.json()["replayed"] is True
        r = client.post(URL, json={**GOOD, "amount": "31.00"}, headers=h)
        assert r.status_code == 409 and r.json()["field"] == "payment_id"
        r = client.post(URL, json=GOOD, headers={"X-API-Key": k2})  # another station's id
        assert r.status_code == 409 and r.json()["field"] == "payment_id"
        # a pay station key is not a staff login, nor the other way round
        assert client.post("/api/prepayments", json=GOOD, headers=h).status_code == 401
        login(client, "ops")
        assert client.post(URL, json={**GOOD, "payment_id": "x1"}).status_code == 401
        bad: list[tuple[dict[str, Any], int, str]] = [
            ({**GOOD, "amount": "-1.00"}, 422, "amount"),
            ({**GOOD, "amount": "0"}, 422, "amount"),
            ({**GOOD, "amount": "1e400"}, 422, "amount"),
            ({**GOOD, "amount": "NaN"}, 422, "amount"),
            ({**GOOD, "amount": 30.0}, 422, "amount"),
            ({**GOOD, "amount": "100000.01"}, 422, "amount"),
            ({k: v for k, v in GOOD.items() if k != "amount"}, 422, "amount"),
            ({k: v for k, v in GOOD.items() if k != "payment_id"}, 422, "payment_id"),
            ({**GOOD, "payment_id": "../x"}, 422, "payment_id"),
            ({**GOOD, "plate": "!!"}, 422, "plate"),
            ({**GOOD, "plate": "x" * 40}, 422, "plate"),
            ({**GOOD, "paid_at": "2026-03-03T12:00:00+08:00"}, 422, "paid_at"),  # future
            ({**GOOD, "paid_at": "2026-03-01T10:00:00+08:00"}, 422, "paid_at"),  # expired
            ({**GOOD, "paid_at": "2026-03-03T09:58:00"}, 422, "paid_at"),  # no offset
            ({**GOOD, "paid_at": "0001-01-01T00:00:00+08:00"}, 422, "paid_at"),
            ({**GOOD, "member_id": "nobody"}, 404, "member_id"),
            ({**GOOD, "source": "someone-else"}, 422, "source"),  # the key says who
            ({**GOOD, "fee": "1.00"}, 422, "fee"),
        ]
        for i, (body, status, field) in enumerate(bad):
            if body.get("payment_id") == GOOD["payment_id"]:
                body = {**body, "payment_id": f"bad-{i}"}
            r = client.post(URL, json=body, headers=h)
            assert r.status_code == status and r.json()["field"] == field, (body, r.text)
        r = client.post(URL, content=b"x" * (2 * 1024 * 1024),
                        headers={**h, "content-type": "application/json"})
        assert r.status_code == 413
        for content in (b'{"payment_id": "n1", "plate": "A1", "amount": 1e400}',
                        b'{"payment_id": "n2", "plate": "A1", "amount": NaN}',
                        b'{"payment_id": "n3", "plate": "A1", "amount": Infinity}'):
            r = client.post(URL, content=content, headers={
                **h, "content-type": "application/json"})
            assert r.status_code == 422 and r.json()["field"] == "amount", r.text
        r = client.post(URL, content=b'{"payment_id": ', headers={
            **h, "content-type": "application/json"})
        assert r.status_code == 422
        assert _count(c) == 1  # nothing but the first
        with c.tx() as s:
            p = s.get(Prepayment, "ps1-0001")
            assert p is not None and p.source == "paystation:ps1"
        log = audit_actions(c, "prepayment.add")
        assert [e["actor"] for e in log] == ["paystation:ps1"]
        with c.tx() as s:
            paystations.revoke(s, "ps1", c.now)
        r = client.post(URL, json={**GOOD, "payment_id": "after"}, headers=h)
        assert r.status_code == 401  # revoked: refused at once
        assert URL in client.get("/openapi.json").json()["paths"]
    assert _count(c) == 1
