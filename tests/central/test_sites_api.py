"""The sites and lanes API (#13), on SQLite and PostgreSQL: every staff role reads, only
operations registers and disables lanes (audited), bad input is a 4xx naming the field
with nothing applied; and an ingest worker's start leaves a lane staff disabled disabled."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from central.app import Central
from central.config import parse_config
from central.db.models import Lane, LaneEntry, LaneStatus
from central.services import sites
from tests.central.helpers import at, config_dict
from tests.central.staff_client import audit_actions, login, staff_client

SITE = "mall-1"


def _secret(path: Path, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return str(path)


def _central(tmp_path: Path, db_url: str, lanes: list[str]) -> Central:
    """A Central whose config lists ``lanes`` (E* entry, X* exit), keys in files."""
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    for lane in lanes:
        if not (keys / f"{lane}.key").exists():
            _secret(keys / f"{lane}.key", os.urandom(16).hex().encode())
    pem = tmp_path / "site.pem"
    if not pem.exists():
        _secret(pem, Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    cfg = parse_config(config_dict(db_url, ingest={
        "keys_dir": str(keys), "signing_key": {"file": str(pem)},
        "lanes": [{"id": x, "kind": "entry" if x.startswith("E") else "exit",
                   "name": f"lane {x}"} for x in lanes]}))
    c = Central.from_config(cfg)
    c.now = at("2026-03-03 12:00")  # type: ignore[attr-defined]
    c.clock = lambda: c.now  # type: ignore[attr-defined]
    return c


@pytest.fixture
def site(tmp_path: Path, db_url: str) -> Iterator[tuple[Central, TestClient]]:
    c = _central(tmp_path, db_url, ["E1", "X1"])
    now = c.clock()
    with c.tx() as s:
        for lane_id, kind in [("E1", "entry"), ("X1", "exit"), ("X9", "exit")]:
            s.add(Lane(site_id=SITE, lane_id=lane_id, name=f"lane {lane_id}", kind=kind,
                       enabled=lane_id != "X9", created_at=now))
        s.add(LaneStatus(site_id=SITE, lane_id="E1", state="online", backlog=3,
                         last_acked_seq=7, last_seen_at=now, stalled=False, updated_at=now))
        s.add(LaneStatus(site_id=SITE, lane_id="X1", state="offline", backlog=40,
                         last_acked_seq=2, last_seen_at=now - timedelta(hours=1),
                         stalled=True, updated_at=now))
        for seq in range(1, 8):
            s.add(LaneEntry(lane_id="E1", seq=seq, entry_id=f"E1-{seq}", kind="lane_event",
                            at=f"2026-03-03T04:00:0{seq}.000000+00:00",
                            recorded=f"2026-03-03T04:00:0{seq}.000000+00:00", payload="{}",
                            prev_hash="0" * 64, hash=f"{seq:064d}", received_at=now))
    with staff_client(c) as client:
        yield c, client
    c.close()


def test_every_role_reads_sites_lanes_and_their_status(site: tuple[Central, TestClient]
                                                       ) -> None:
    _c, client = site
    assert client.get("/api/sites").status_code == 401
    for user in ("aud", "mkt", "ops", "adm"):
        login(client, user)
        r = client.get("/api/sites")
        assert r.status_code == 200, (user, r.text)
        assert r.json() == [{"site_id": SITE, "timezone": "Asia/Shanghai", "lanes": 3,
                             "lanes_enabled": 2, "lanes_online": 1}]
    assert client.get(f"/api/sites/{SITE}").json()["lanes"] == 3
    lanes = {x["lane_id"]: x for x in client.get(f"/api/sites/{SITE}/lanes").json()}
    assert sorted(lanes) == ["E1", "X1", "X9"]
    e1 = lanes["E1"]
    assert e1["status"]["online"] is True and e1["status"]["backlog"] == 3
    assert e1["status"]["last_acked_seq"] == 7 and e1["committed_seq"] == 7
    assert e1["committed_entries"] == 7 and e1["configured"] is True
    x1 = lanes["X1"]
    assert x1["status"]["online"] is False and x1["status"]["stalled"] is True
    assert x1["committed_seq"] == 0
    assert lanes["X9"]["status"] is None and lanes["X9"]["configured"] is False
    assert client.get(f"/api/sites/{SITE}/lanes/E1").json() == e1
    for url, field in [("/api/sites/other", "site_id"), ("/api/sites/other/lanes", "site_id"),
                       (f"/api/sites/{SITE}/lanes/NOPE", "lane_id")]:
        r = client.get(url)
        assert r.status_code == 404 and r.json()["field"] == field, (url, r.text)
    r = client.get(f"/api/sites/{SITE}/lanes/{'x' * 80}")
    assert r.status_code == 422 and r.json()["field"] == "lane_id"
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/sites", "/api/sites/{site_id}/lanes",
            "/api/sites/{site_id}/lanes/{lane_id}"} <= set(paths)
    assert "patch" in paths["/api/sites/{site_id}/lanes/{lane_id}"]


def _lane_rows(c: Central) -> list[tuple[str, bool, str | None]]:
    with c.tx() as s:
        return [(r.lane_id, r.enabled, r.disabled_by) for r in
                s.scalars(select(Lane).order_by(Lane.lane_id))]


def test_only_operations_registers_and_disables_lanes_audited(
        site: tuple[Central, TestClient]) -> None:
    c, client = site
    new = {"lane_id": "X2", "kind": "exit", "name": "north exit"}
    for user in ("mkt", "aud", "adm"):
        h = login(client, user)
        r = client.post(f"/api/sites/{SITE}/lanes", json=new, headers=h)
        assert r.status_code == 403 and r.json()["field"] == "role", (user, r.text)
        r = client.patch(f"/api/sites/{SITE}/lanes/E1",
                         json={"enabled": False, "reason": "x"}, headers=h)
        assert r.status_code == 403, (user, r.text)
    h = login(client, "ops")
    assert client.post(f"/api/sites/{SITE}/lanes", json=new).status_code == 403  # no CSRF
    r = client.post(f"/api/sites/{SITE}/lanes", json=new, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["enabled"] is True and r.json()["configured"] is False
    r = client.post(f"/api/sites/{SITE}/lanes", json=new, headers=h)
    assert r.status_code == 409 and r.json()["field"] == "lane_id"
    before = _lane_rows(c)
    bad: list[tuple[dict[str, Any], int, str]] = [
        ({"kind": "exit"}, 422, "lane_id"),
        ({"lane_id": "X3"}, 422, "kind"),
        ({"lane_id": "X3", "kind": "both"}, 422, "kind"),
        ({"lane_id": "../x", "kind": "exit"}, 422, "lane_id"),
        ({"lane_id": 3, "kind": "exit"}, 422, "lane_id"),
        ({"lane_id": "X3", "kind": "exit", "name": "n" * 201}, 422, "name"),
        ({"lane_id": "X3", "kind": "exit", "key": "secret"}, 422, "key"),
    ]
    for body, status, field in bad:
        r = client.post(f"/api/sites/{SITE}/lanes", json=body, headers=h)
        assert r.status_code == status and r.json()["field"] == field, (body, r.text)
    r = client.post("/api/sites/other/lanes", json={"lane_id": "X3", "kind": "exit"},
                    headers=h)
    assert r.status_code == 404 and r.json()["field"] == "site_id"
    patches: list[tuple[dict[str, Any], str]] = [
        ({"enabled": False}, "reason"), ({"reason": "x"}, "enabled"),
        ({"enabled": "no", "reason": "x"}, "enabled"), ({"enabled": 0, "reason": "x"}, "enabled"),
        ({"enabled": False, "reason": ""}, "reason"),
        ({"enabled": False, "reason": "x", "by": "me"}, "by")]
    for body, field in patches:
        r = client.patch(f"/api/sites/{SITE}/lanes/E1", json=body, headers=h)
        assert r.status_code == 422 and r.json()["field"] == field, (body, r.text)
    raw: list[tuple[bytes, int, str]] = [
        (b'{"enabled": NaN, "reason": "x"}', 422, "enabled"),
        (b'{"enabled": 1e400, "reason": "x"}', 422, "enabled"),
        (b'{"enabled": false, "reason": 1e400}', 422, "reason"),
        (b'{"enabled": false,', 422, ""),
        (b'{"enabled": false, "reason": "' + b"x" * 300_000 + b'"}', 413, "body")]
    for content, status, field in raw:
        r = client.patch(f"/api/sites/{SITE}/lanes/E1", content=content,
                         headers={**h, "content-type": "application/json"})
        assert r.status_code == status, (content[:40], r.text)
        assert not field or r.json()["field"] == field, (content[:40], r.text)
    r = client.patch(f"/api/sites/{SITE}/lanes/NOPE", json={"enabled": False, "reason": "x"},
                     headers=h)
    assert r.status_code == 404 and r.json()["field"] == "lane_id"
    assert _lane_rows(c) == before  # nothing half-applied
    r = client.patch(f"/api/sites/{SITE}/lanes/E1",
                     json={"enabled": False, "reason": "barrier arm broken"}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["enabled"] is False and r.json()["disabled_by"] == "staff:ops"
    r = client.patch(f"/api/sites/{SITE}/lanes/E1",
                     json={"enabled": True, "reason": "arm replaced"}, headers=h)
    assert r.json()["enabled"] is True and r.json()["disabled_by"] is None
    log = audit_actions(c, "lane.")
    assert [(e["action"], e["target"], e["actor"]) for e in reversed(log)] == [
        ("lane.register", f"lane:{SITE}/X2", "staff:ops"),
        ("lane.disable", f"lane:{SITE}/E1", "staff:ops"),
        ("lane.enable", f"lane:{SITE}/E1", "staff:ops")]
    assert log[1]["after"]["reason"] == "barrier arm broken"
    assert log[1]["before"] == {"enabled": True, "disabled_by": None}


def test_ingest_start_keeps_lanes_staff_disabled_disabled(tmp_path: Path, db_url: str) -> None:
    c = _central(tmp_path, db_url, ["E1", "X1"])
    try:
        c.ingest_worker("w1")._upsert_lanes()
        assert _lane_rows(c) == [("E1", True, None), ("X1", True, None)]
        with c.tx() as s:
            sites.set_enabled(s, SITE, "X1", False, "staff:ops", frozenset())
        c.ingest_worker("w2")._upsert_lanes()  # a restart: X1 is still in the config
        assert _lane_rows(c) == [("E1", True, None), ("X1", False, "staff:ops")]
        with c.tx() as s:
            sites.set_enabled(s, SITE, "X1", True, "staff:ops", frozenset())
            sites.set_enabled(s, SITE, "E1", False, "staff:ops", frozenset())
        c.ingest_worker("w3")._upsert_lanes()
        assert _lane_rows(c) == [("E1", False, "staff:ops"), ("X1", True, None)]
    finally:
        c.close()
    # a lane that leaves the config is disabled (not by staff), and comes back with it
    c = _central(tmp_path, db_url, ["E1"])
    try:
        c.ingest_worker("w4")._upsert_lanes()
        assert _lane_rows(c) == [("E1", False, "staff:ops"), ("X1", False, None)]
        with c.tx() as s:
            assert s.scalar(select(func.count()).select_from(Lane)) == 2
    finally:
        c.close()
    c = _central(tmp_path, db_url, ["E1", "X1"])
    try:
        c.ingest_worker("w5")._upsert_lanes()
        assert _lane_rows(c) == [("E1", False, "staff:ops"), ("X1", True, None)]
    finally:
        c.close()
