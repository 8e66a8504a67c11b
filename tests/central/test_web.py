"""The HTTP layer on both backends: staff sessions (cookie flags, CSRF, roles, rate limit,
audit), members seeing only their own data, the POS feed's bad input, the listen guard."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from central.config import parse_config
from central.services import members, purchases, staff
from central.web import create_app
from central.web.serve import listen_problems
from tests.central.helpers import at, config_dict

PW = "correct horse battery"


@pytest.fixture
def web(central: Any) -> Iterator[tuple[Any, TestClient]]:
    central.now = at("2026-03-03 12:00")
    with central.tx() as s:
        for name, role in [("ops", "operations"), ("mkt", "marketing"), ("aud", "auditor"),
                           ("adm", "admin")]:
            staff.add_user(s, name, role, PW, central.now)
    with TestClient(create_app(central), base_url="https://testserver") as client:
        yield central, client


def login(client: TestClient, user: str, password: str = PW) -> dict[str, str]:
    r = client.post("/api/staff/login", json={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return {"X-CSRF-Token": r.json()["csrf_token"]}


def test_openapi_documents_the_api(web: tuple[Any, TestClient]) -> None:
    _c, client = web
    paths = client.get("/openapi.json").json()["paths"]
    for p in ["/api/members", "/api/members/{member_id}/plates", "/api/members/{member_id}/lots",
              "/api/members/{member_id}/history", "/api/members/{member_id}/balance",
              "/api/rewards", "/api/redemptions", "/api/figures", "/api/pos/purchases",
              "/api/pos/purchases.csv", "/api/me", "/api/me/lots", "/api/me/redemptions"]:
        assert p in paths, p


def test_staff_session_cookie_csrf_and_audit(web: tuple[Any, TestClient]) -> None:
    _c, client = web
    r = client.post("/api/staff/login", json={"username": "ops", "password": PW})
    cookie = r.headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
    body = {"member_id": "m1", "tier": "gold", "phone": "13800000001", "plates": ["粤B12345"]}
    r = client.post("/api/members", json=body)
    assert r.status_code == 403 and r.json()["field"] == "X-CSRF-Token"
    r = client.post("/api/members", json=body, headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403
    r = client.post("/api/members", json=body, headers=csrf)
    assert r.status_code == 201, r.text
    assert client.get("/api/members/m1").json()["plates"] == ["粤B12345"]
    r = client.post("/api/members/m1/plates", json={"plate": "ab-123"}, headers=csrf)
    assert r.status_code == 201 and r.json()["plate"] == "AB123"
    r = client.delete("/api/members/m1/plates/AB123", headers=csrf)
    assert r.status_code == 200
    log = client.get("/api/audit").json()
    mine = [e for e in log if e["actor"] == "staff:ops"]
    assert [e["action"] for e in mine][:3] == ["plate.unbind", "plate.bind", "member.add"]
    assert mine[0]["before"] == {"plates": ["AB123", "粤B12345"]}
    assert mine[0]["after"] == {"plates": ["粤B12345"]}
    assert client.delete("/api/audit").status_code == 405  # nobody edits the audit log
    assert client.post("/api/staff/logout", headers=csrf).status_code == 204
    assert client.get("/api/members/m1").status_code == 401


def test_roles(web: tuple[Any, TestClient]) -> None:
    _c, client = web
    assert client.get("/api/members").status_code == 401
    reward = {"kind": "discount", "name": "¥50 voucher", "points": 40, "value": "50"}
    h = login(client, "aud")
    assert client.get("/api/figures").status_code == 200
    r = client.post("/api/members", json={"member_id": "m1", "tier": "member"}, headers=h)
    assert r.status_code == 403 and r.json()["field"] == "role"
    h = login(client, "ops")
    assert client.put("/api/rewards/v50", json=reward, headers=h).status_code == 403
    h = login(client, "mkt")
    assert client.put("/api/rewards/v50", json=reward, headers=h).status_code == 200
    assert client.post("/api/staff/users", json={"username": "x1", "role": "auditor",
                                                 "password": PW}, headers=h).status_code == 403
    h = login(client, "adm")
    r = client.post("/api/staff/users", json={"username": "x1", "role": "auditor",
                                              "password": PW}, headers=h)
    assert r.status_code == 201
    assert client.post("/api/staff/users/mkt/disable", headers=h).status_code == 200
    r = client.post("/api/staff/login", json={"username": "mkt", "password": PW})
    assert r.status_code == 401


def test_login_rate_limit(web: tuple[Any, TestClient]) -> None:
    c, client = web
    for _ in range(c.cfg.web.login_max_failures):
        r = client.post("/api/staff/login", json={"username": "ops", "password": "wrong pw"})
        assert r.status_code == 401
    r = client.post("/api/staff/login", json={"username": "ops", "password": PW})
    assert r.status_code == 429 and "Retry-After" in r.headers
    c.now = at("2026-03-03 13:00")  # the window has passed
    assert client.post("/api/staff/login",
                       json={"username": "ops", "password": PW}).status_code == 200


def test_members_see_only_their_own_data(web: tuple[Any, TestClient]) -> None:
    c, client = web
    with c.tx() as s:
        members.enrol(s, c.rules, member_id="alice", phone="13800000001", name="A",
                      tier="member", now=c.now, password="alice's long password")
        members.enrol(s, c.rules, member_id="bob", phone="13800000002", name="B",
                      tier="member", now=c.now)
        code = members.issue_code(s, "bob", c.now)
        purchases.add_shop(s, "cafe", "Cafe", "dining")
    bob = TestClient(client.app, base_url="https://testserver")
    r = bob.post("/api/member/login", json={"phone": "13800000002", "code": code})
    assert r.status_code == 200
    r = client.post("/api/member/login", json={"phone": "13800000002", "code": code})
    assert r.status_code == 401  # a one-time code works once
    r = client.post("/api/member/login", json={"phone": "13800000001",
                                               "password": "alice's long password"})
    assert r.status_code == 200
    h = {"X-CSRF-Token": r.json()["csrf_token"]}
    assert client.get("/api/me").json()["member_id"] == "alice"
    assert bob.get("/api/me").json()["member_id"] == "bob"
    for url in ["/api/members/bob", "/api/members/bob/lots", "/api/members/bob/history",
                "/api/members/bob/balance", "/api/members/bob/redemptions", "/api/members"]:
        assert client.get(url).status_code == 401, url
    r = client.post("/api/me/redemptions", json={"reward_id": "x", "redemption_key": "k1",
                                                 "member_id": "bob"}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "member_id"
    r = client.get("/api/me/lots", params={"member_id": "bob"})
    assert r.status_code == 200 and r.json() == []
    r = client.post("/api/me/redemptions", json={"reward_id": "x", "redemption_key": "k1"},
                    headers={"X-CSRF-Token": bob.cookies.get("pe_member") or "x"})
    assert r.status_code == 403  # alice's session, some other token


@pytest.fixture
def pos(web: tuple[Any, TestClient]) -> tuple[Any, TestClient, str]:
    c, client = web
    with c.tx() as s:
        members.enrol(s, c.rules, member_id="m1", phone=None, name="", tier="member",
                      now=c.now)
        key = purchases.add_shop(s, "cafe", "Cafe", "dining")
        purchases.add_shop(s, "shop", "Shop", "retail")
    return c, client, key


GOOD = {"shop_id": "cafe", "idempotency_key": "till1-0001", "member_id": "m1",
        "amount": "60.00", "at": "2026-03-03T11:30:00+08:00"}


def test_pos_purchase_and_replay(pos: tuple[Any, TestClient, str]) -> None:
    c, client, key = pos
    h = {"X-API-Key": key}
    r = client.post("/api/pos/purchases", json=GOOD, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["points"] == 90 and r.json()["rules_fired"][-1] == "dining_x1.5"
    again = client.post("/api/pos/purchases", json=GOOD, headers=h)
    assert again.status_code == 200 and again.json()["replayed"]
    assert again.json()["purchase_id"] == r.json()["purchase_id"]
    r = client.post("/api/pos/purchases", json={**GOOD, "amount": "61.00"}, headers=h)
    assert r.status_code == 409 and r.json()["field"] == "idempotency_key"
    with c.tx() as s:
        assert members.get_member(s, "m1").balance == 90


def _refused_count(labels: dict[str, str]) -> float:
    from central.metrics import REGISTRY

    total = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "central_requests_refused_total" and all(
                    sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _raw(client: TestClient, text: str, key: str) -> Any:
    return client.post("/api/pos/purchases", content=text.encode(),
                       headers={"X-API-Key": key, "Content-Type": "application/json"})


@pytest.mark.parametrize(("change", "status", "field"), [
    ({"amount": None}, 422, "amount"),                  # missing (None = drop)
    ({"colour": "red"}, 422, "colour"),                 # extra field
    ({"amount": 60}, 422, "amount"),                    # a number, not a decimal string
    ({"amount": "1e400"}, 422, "amount"),
    ({"amount": "NaN"}, 422, "amount"),
    ({"amount": "-5"}, 422, "amount"),
    ({"amount": "0"}, 422, "amount"),
    ({"amount": "60.001"}, 422, "amount"),
    ({"member_id": 7}, 422, "member_id"),
    ({"member_id": "x" * 65}, 422, "member_id"),
    ({"at": "0001-01-01T00:00:00+08:00"}, 422, "at"),
    ({"at": "9999-12-31T23:59:00+08:00"}, 422, "at"),
    ({"at": "2026-03-03T11:30:00"}, 422, "at"),          # no offset
    ({"at": "2026-03-05T11:30:00+08:00"}, 422, "at"),    # future
    ({"at": "2025-01-03T11:30:00+08:00"}, 422, "at"),    # too old
    ({"at": "yesterday"}, 422, "at"),
    ({"member_id": "ghost"}, 404, "member_id"),
    ({"shop_id": "nowhere"}, 404, "shop_id"),
    ({"shop_id": "shop"}, 403, "shop_id"),               # another shop's purchases
    ({"brand": ""}, 422, "brand"),
])
def test_pos_bad_input_names_the_field(pos: tuple[Any, TestClient, str],
                                       change: dict[str, Any], status: int,
                                       field: str) -> None:
    c, client, key = pos
    body = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    labels = {"route": "/api/pos/purchases"}
    before = _refused_count(labels)
    r = client.post("/api/pos/purchases", json=body, headers={"X-API-Key": key})
    assert r.status_code == status, r.text
    assert r.json()["field"] == field, r.json()
    assert _refused_count(labels) == before + 1  # counted
    with c.tx() as s:
        assert members.get_member(s, "m1").balance == 0  # nothing half-applied


def test_pos_raw_bodies(pos: tuple[Any, TestClient, str]) -> None:
    c, client, key = pos
    for text in ['{"amount": 1e400}', '{"amount": NaN}', '{"amount": Infinity}']:
        body = json.dumps(GOOD).replace('"amount": "60.00"', text[1:-1])
        r = _raw(client, body, key)
        assert r.status_code == 422 and r.json()["field"] == "amount", (text, r.text)
    assert _raw(client, "not json", key).status_code == 422
    assert _raw(client, "[1, 2]", key).status_code == 422
    big = json.dumps({**GOOD, "brand": "x" * (c.cfg.web.max_body_bytes + 10)})
    before = _refused_count({"error": "too_large"})
    r = _raw(client, big, key)
    assert r.status_code == 413 and r.json()["field"] == "body"
    assert _refused_count({"error": "too_large"}) == before + 1
    r = client.post("/api/pos/purchases", json=GOOD)
    assert r.status_code == 401 and r.json()["field"] == "X-API-Key"
    r = client.post("/api/pos/purchases", json=GOOD, headers={"X-API-Key": "pos_guess"})
    assert r.status_code == 401
    with c.tx() as s:
        assert members.get_member(s, "m1").balance == 0


def test_pos_csv_batch(pos: tuple[Any, TestClient, str]) -> None:
    c, client, key = pos
    h = {"X-API-Key": key, "Content-Type": "text/csv"}
    head = "shop_id,idempotency_key,member_id,amount,at,brand\n"
    good = head + ("cafe,n1,m1,60.00,2026-03-03T10:00:00+08:00,\n"
                   "cafe,n2,m1,50.00,2026-03-02T19:00:00+08:00,brand-a\n")
    bad = head + ("cafe,n3,m1,60.00,2026-03-03T10:00:00+08:00,\n"
                  "cafe,n4,m1,NaN,2026-03-03T10:00:00+08:00,\n")
    r = client.post("/api/pos/purchases.csv", content=bad, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "line 3: amount"
    r = client.post("/api/pos/purchases.csv", content=good, headers=h)
    assert r.status_code == 200, r.text
    assert (r.json()["recorded"], [x["points"] for x in r.json()["results"]]) == (2, [90, 100])
    r = client.post("/api/pos/purchases.csv", content=good, headers=h)
    assert r.json()["replayed"] == 2
    with c.tx() as s:
        assert members.get_member(s, "m1").balance == 190  # the bad file added nothing


def test_serve_refuses_other_addresses_without_tls_and_admin(central: Any,
                                                             tmp_path: Path) -> None:
    assert listen_problems(central) == []  # loopback by default
    url = central.cfg.database.url
    open_cfg = parse_config(config_dict(url, web={"listen": "0.0.0.0"}))
    central.cfg = open_cfg
    problems = listen_problems(central)
    assert len(problems) == 2 and "tls_cert" in problems[0] and "admin" in problems[1]
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("cert")
    key.write_text("key")
    key.chmod(0o600)
    central.cfg = parse_config(config_dict(url, web={"listen": "0.0.0.0",
                                                     "tls_cert": str(cert),
                                                     "tls_key": {"file": str(key)}}))
    assert [p for p in listen_problems(central) if "admin" in p]
    with central.tx() as s:
        staff.add_user(s, "root", "admin", PW, central.now)
    assert listen_problems(central) == []


def test_serve_command_runs_uvicorn_and_refuses_open_address(tmp_path: Path,
                                                             db_url: str) -> None:
    """The real command: a uvicorn process on a free loopback port answers /healthz and logs
    JSON lines; the same config with listen 0.0.0.0 exits 2 without starting."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from tests.central.helpers import RULES

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    conf = tmp_path / "central.toml"
    base = (f'[site]\nsite_id = "mall-1"\ntimezone = "Asia/Shanghai"\n[database]\n'
            f'url = "{db_url}"\n[rules]\nbundle = "{RULES}"\n[jobs]\nenabled = false\n')
    conf.write_text(base + f'[web]\nport = {port}\n')
    exe = [sys.executable, "-m", "central", "serve", "-c", str(conf)]
    p = subprocess.Popen(exe, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert json.loads(r.read()) == {"status": "ok"}
                    break
            except OSError:
                assert p.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        p.terminate()
        out = p.communicate(timeout=20)[0].decode()
    assert any(line.startswith("{") and '"level"' in line for line in out.splitlines()), out
    conf.write_text(base + f'[web]\nport = {port}\nlisten = "0.0.0.0"\n')
    r = subprocess.run(exe, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "tls_cert" in r.stderr and "admin" in r.stderr


def test_member_redeems_and_staff_correct_through_the_api(pos: tuple[Any, TestClient, str]
                                                          ) -> None:
    c, client, key = pos
    with c.tx() as s:
        members.set_member_password(s, "m1", "member's long password")
        s.get(members.Member, "m1").phone = "13800000009"  # type: ignore[union-attr]
    assert client.post("/api/pos/purchases", json=GOOD,
                       headers={"X-API-Key": key}).status_code == 201
    h = login(client, "mkt")
    park = {"kind": "parking_hours", "name": "2 hours", "points": 20, "value": "10",
            "hours": 2}
    assert client.put("/api/rewards/p2h", json=park, headers=h).status_code == 200
    r = client.put("/api/rewards/p2h", headers={**h, "Content-Type": "application/json"},
                   content=json.dumps(park).replace('"points": 20', '"points": 1e400'))
    assert r.status_code == 422 and r.json()["field"] == "points", r.text
    for bad, field in [({"points": 2.5}, "points"), ({"value": "NaN"}, "value"),
                       ({"hours": None, "kind": "parking_hours"}, "hours"),
                       ({"kind": "yacht"}, "kind"), ({"extra": 1}, "extra")]:
        body = {k: v for k, v in {**park, **bad}.items() if v is not None}
        r = client.put("/api/rewards/p2h", json=body, headers=h)
        assert r.status_code == 422 and r.json()["field"] == field, (bad, r.text)
    member = TestClient(client.app, base_url="https://testserver")
    r = member.post("/api/member/login", json={"phone": "13800000009",
                                               "password": "member's long password"})
    mh = {"X-CSRF-Token": r.json()["csrf_token"]}
    r = member.post("/api/me/redemptions", json={"reward_id": "p2h", "redemption_key": "q1"},
                    headers=mh)
    assert r.status_code == 201 and r.json()["coupon_id"] == "redeem:q1"
    r = member.post("/api/me/redemptions", json={"reward_id": "nope", "redemption_key": "q2"},
                    headers=mh)
    assert r.status_code == 404 and r.json()["field"] == "reward_id"
    me = member.get("/api/me").json()
    assert me["balance"] == 70 and [x["coupon_id"] for x in me["coupons"]] == ["redeem:q1"]
    assert [e["kind"] for e in member.get("/api/me/history").json()] == ["points_spent",
                                                                        "points_earned"]
    h = login(client, "ops")
    r = client.post("/api/members/m1/adjustments",
                    json={"points": -30, "reason": "goodwill reversal", "ref": "fix-1"},
                    headers=h)
    assert r.status_code == 201 and r.json()["balance"] == 40
    r = client.post("/api/members/m1/adjustments",
                    json={"points": -300, "reason": "too much", "ref": "fix-2"}, headers=h)
    assert r.status_code == 409 and r.json()["field"] == "points"
    line = client.get("/api/audit").json()[0]
    assert (line["action"], line["before"], line["after"]["balance"]) == (
        "points.adjust", {"balance": 70}, 40)
    csv = "member_id,phone,name,tier,plates\nz1,,Z,member,ZZ1\n"
    r = client.post("/api/members/import", content=csv,
                    headers={**h, "Content-Type": "text/csv"})
    assert r.status_code == 200 and r.json() == {"enrolled": 1}
    with c.tx() as s:
        from central.services.points import ledger_sums
        assert ledger_sums(s, "m1") == (40, 40, 40)
