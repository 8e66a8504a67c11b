"""Publishing a campaign: the site's bundle (configured + published campaigns) is validated,
signed and queued in the outbox with the campaign row and its audit line; a real lane on a
real Mosquitto accepts it through the ingest leader, and accepts the bundle without it after
an unpublish. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from parkedge_sim.broker import MosquittoBroker
from sqlalchemy import select

from central.app import Central
from central.config import parse_config
from central.db.models import AuditLog, Campaign, DownlinkOutbox
from central.services import campaign_publish as cp
from central.services import campaigns
from central.services.errors import Invalid, NotFound, Refused
from edge.pricing import RuleBundle
from edge.pricing.bundle import parse_bundle
from edge.sync import codec
from tests.central.helpers import RULES, at
from tests.central.test_ingest_mqtt import broker, lane, site_config, wait_until

__all__ = ["broker"]  # the fixture, shared with the ingest tests

SITE = "mall-1"
NIGHT = {"name": "night_x2", "applies_to": "purchase", "time_window": ["18:00", "22:00"],
         "multiplier": "2"}


def _base() -> dict[str, Any]:
    return campaigns.bundle_data(RULES)


def _outbox_rules(s: Any) -> list[DownlinkOutbox]:
    return list(s.scalars(select(DownlinkOutbox).where(DownlinkOutbox.topic == "rules")
                          .order_by(DownlinkOutbox.id)))


def test_publish_queues_the_signed_site_bundle_and_unpublish_takes_it_out(
        central: Any) -> None:
    key = Ed25519PrivateKey.generate()
    now = at("2026-03-03 10:00")
    with central.tx() as s:
        p = cp.publish(s, site=SITE, base=_base(), key=key, campaign=NIGHT,
                       budget=Decimal("5000"), actor="staff:mkt", now=now)
    with central.tx() as s:
        (row,) = _outbox_rules(s)
        assert row.retain and row.site_id == SITE
        signed = codec.parse_rules(row.payload.encode(), key.public_key(), SITE)
        assert signed.serial == p.serial
        bundle = parse_bundle(signed.bundle)
        assert [c.name for c in bundle.campaigns][-1] == "night_x2"
        assert bundle.version == p.bundle_version != "central-test-1"
        assert cp.site_rules(s, SITE, _base()).version == p.bundle_version
        c = s.scalar(select(Campaign))
        assert c is not None and c.state == "published" and c.budget == Decimal("5000.00")
        assert c.rules_serial == p.serial
        audit = s.scalars(select(AuditLog).where(AuditLog.action == "campaign.publish")).one()
        assert audit.actor == "staff:mkt" and json.loads(audit.after)["sent_to_lanes"]
    # the same name again is refused, nothing written
    with pytest.raises(Refused), central.tx() as s:
        cp.publish(s, site=SITE, base=_base(), key=key, campaign=NIGHT, budget=None,
                   actor="staff:mkt", now=now)
    # a name of the configured bundle is refused too
    with pytest.raises(Refused), central.tx() as s:
        cp.publish(s, site=SITE, base=_base(), key=key,
                   campaign={**NIGHT, "name": "brand_x3"}, budget=None, actor="staff:mkt",
                   now=now)
    # a table the lanes would refuse: refused here, no row, no message
    with pytest.raises(Invalid), central.tx() as s:
        cp.publish(s, site=SITE, base=_base(), key=key,
                   campaign={**NIGHT, "name": "bad", "multiplier": "-3"}, budget=None,
                   actor="staff:mkt", now=now)
    with central.tx() as s:
        assert len(_outbox_rules(s)) == 1 and s.scalar(
            select(Campaign).where(Campaign.name == "bad")) is None
    with central.tx() as s:
        u = cp.unpublish(s, site=SITE, base=_base(), key=key, name="night_x2",
                         actor="staff:mkt", now=now)
    assert u.serial == p.serial + 1
    with central.tx() as s:
        last = _outbox_rules(s)[-1]
        bundle = parse_bundle(codec.parse_rules(last.payload.encode(), key.public_key(),
                                                SITE).bundle)
        assert "night_x2" not in [c.name for c in bundle.campaigns]
        assert bundle.version == "central-test-1"
        assert s.scalar(select(Campaign)).state == "unpublished"
        assert [a.action for a in s.scalars(select(AuditLog).order_by(AuditLog.id))] == [
            "campaign.publish", "campaign.unpublish"]
        # the page's list keeps it, with its state
        assert [(x["name"], x["state"]) for x in campaigns.published(s, SITE)] == [
            ("night_x2", "unpublished")]
    with pytest.raises(Refused), central.tx() as s:
        cp.unpublish(s, site=SITE, base=_base(), key=key, name="night_x2",
                     actor="staff:mkt", now=now)
    with pytest.raises(NotFound), central.tx() as s:
        cp.unpublish(s, site=SITE, base=_base(), key=key, name="nope", actor="staff:mkt",
                     now=now)
    # published again: the row comes back with the next serial
    with central.tx() as s:
        again = cp.publish(s, site=SITE, base=_base(), key=key, campaign=NIGHT, budget=None,
                           actor="staff:mkt", now=now)
    assert again.serial == u.serial + 1 and again.bundle_version == p.bundle_version


def _names(b: RuleBundle) -> list[str]:
    return [c.name for c in b.campaigns]


def test_a_real_lane_accepts_the_published_campaign_and_its_removal(
        tmp_path: Path, db_url: str, broker: MosquittoBroker) -> None:
    d, pub = site_config(tmp_path, db_url, broker.port)
    c = Central.from_config(parse_config(d))
    worker = c.ingest_worker(client_id="central-campaigns")
    worker.start()
    seen: list[RuleBundle] = []
    store, sync = lane(tmp_path, "entry-1", broker.port, pub, seen)
    try:
        sync.start()
        assert wait_until(lambda: sync.state.rules_serial()[1] == "central-test-1")
        with c.tx() as s:
            p = cp.publish(s, site=SITE, base=_base(), key=worker.signing_key,
                           campaign=NIGHT, budget=None, actor="staff:mkt", now=c.clock())
        assert wait_until(lambda: sync.state.rules_serial() == (p.serial, p.bundle_version))
        assert "night_x2" in _names(seen[-1])
        assert not sync.refusals.counts
        # a new leader (restart) republishes the same bundle: the lane keeps it
        worker.stop()
        n = len(seen)
        worker = c.ingest_worker(client_id="central-campaigns-2")
        worker.start()
        assert wait_until(lambda: len(seen) > n, timeout=10)  # the republished copy
        assert _names(seen[-1])[-1] == "night_x2"
        assert sync.state.rules_serial() == (p.serial, p.bundle_version)
        with c.tx() as s:
            u = cp.unpublish(s, site=SITE, base=_base(), key=worker.signing_key,
                             name="night_x2", actor="staff:mkt", now=c.clock())
        assert wait_until(lambda: sync.state.rules_serial() == (u.serial, "central-test-1"))
        assert "night_x2" not in _names(seen[-1])
        assert not sync.refusals.counts
    finally:
        sync.stop()
        worker.stop()
        store.close()
        c.close()


# ---------------------------------------------------------------- the JSON API
API_PW = "correct horse battery"


def _api_login(client: Any, user: str) -> dict[str, str]:
    r = client.post("/api/staff/login", json={"username": user, "password": API_PW})
    assert r.status_code == 200, r.text
    return {"X-CSRF-Token": r.json()["csrf_token"]}


def test_api_lists_validates_publishes_and_unpublishes(central: Any) -> None:
    from fastapi.testclient import TestClient

    from central.services import staff
    from central.web import create_app

    with central.tx() as s:
        staff.add_user(s, "mkt", "marketing", API_PW, central.now)
        staff.add_user(s, "aud", "auditor", API_PW, central.now)
    app = create_app(central)
    with TestClient(app, base_url="https://testserver") as client:
        h = _api_login(client, "mkt")
        draft = {"name": "night_x2", "time_from": "18:00", "time_to": "22:00",
                 "multiplier": "2", "budget": "500", "categories": ["dining"]}
        r = client.post("/api/campaigns/validate", json=draft, headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["campaign"]["time_window"] == ["18:00", "22:00"]
        assert 'categories = ["dining"]' in r.json()["toml"]
        # every bad field named, as the form names them
        r = client.post("/api/campaigns/validate", headers=h, json={
            **draft, "multiplier": "abc", "time_to": "", "date_from": "2026-13-01"})
        assert r.status_code == 422
        assert {e["field"] for e in r.json()["errors"]} >= {"multiplier", "time_from",
                                                            "date_from"}
        r = client.post("/api/campaigns/validate", headers=h, json={**draft, "bogus": 1})
        assert r.status_code == 422 and r.json()["field"] == "bogus"
        # no signing key: 409, nothing recorded
        r = client.post("/api/campaigns", json=draft, headers=h)
        assert r.status_code == 409 and r.json()["field"] == "ingest.signing_key"
        key = Ed25519PrivateKey.generate()
        app.state.signing_key = key
        r = client.post("/api/campaigns", json=draft, headers=h)
        assert r.status_code == 201, r.text
        serial = r.json()["rules_serial"]
        r2 = client.post("/api/campaigns", json=draft, headers=h)  # the name is taken
        assert r2.status_code == 422 and r2.json()["field"] == "name"
        names = [(c["name"], c["source"]) for c in client.get("/api/campaigns").json()]
        assert ("brand_x3", "bundle") in names and ("night_x2", "central") in names
        one = client.get("/api/campaigns/night_x2").json()
        assert one["state"] == "published" and one["rules_serial"] == serial
        assert one["figures"]["points_given"] == 0 and one["budget"] == "500.00"
        assert client.get("/api/campaigns/brand_x3").json()["source"] == "bundle"
        assert client.get("/api/campaigns/nope").status_code == 404
        bundle = client.get("/api/campaigns/bundle").json()
        assert bundle["campaigns"][-1]["name"] == "night_x2"
        assert bundle["version"] == r.json()["bundle_version"]
        assert client.get("/api/campaigns/night_x2/figures").json()["underperforming"] is False
        its = client.get("/api/campaigns/night_x2/bundle").json()
        assert its["rules_serial"] == serial and its["bundle"]["version"] == bundle["version"]
        assert its["bundle"]["campaigns"][-1] == its["campaign"]
        assert its["toml"].startswith("[[campaigns]]")
        # an auditor reads, and may not write
        client.cookies.clear()
        ha = _api_login(client, "aud")
        assert client.get("/api/campaigns").status_code == 200
        assert client.post("/api/campaigns/validate", json=draft,
                           headers=ha).status_code == 403
        assert client.post("/api/campaigns/night_x2/unpublish",
                           headers=ha).status_code == 403
        client.cookies.clear()
        h = _api_login(client, "mkt")
        assert client.post("/api/campaigns/night_x2/unpublish", headers={}).status_code == 403
        r = client.post("/api/campaigns/night_x2/unpublish", headers=h)
        assert r.status_code == 200 and r.json()["rules_serial"] == serial + 1
        assert client.get("/api/campaigns/night_x2").json()["state"] == "unpublished"
        assert client.get("/api/campaigns/bundle").json()["version"] == "central-test-1"
        assert "/api/campaigns/validate" in client.get("/openapi.json").json()["paths"]


def test_pos_purchases_earn_with_the_published_campaign(central: Any) -> None:
    """Purchases earn at central: a purchase campaign published here applies to them, and
    no longer after it is unpublished."""
    from fastapi.testclient import TestClient

    from central.services import members, purchases
    from central.web import create_app

    key = Ed25519PrivateKey.generate()
    with central.tx() as s:
        api_key = purchases.add_shop(s, "shoe-2", "Shoes", "retail")
        members.enrol(s, central.rules, member_id="M1", phone=None, name="Li", tier="member",
                      now=at("2026-01-01 09:00"))
    buy = {"shop_id": "shoe-2", "member_id": "M1", "amount": "60.00",
           "at": "2026-03-03T10:00:00+08:00"}  # a Tuesday: retail ¥60 is 60 points
    h = {"X-API-Key": api_key}
    with TestClient(create_app(central), base_url="https://testserver") as client:
        r = client.post("/api/pos/purchases", json={**buy, "idempotency_key": "p1"}, headers=h)
        assert r.status_code == 201 and r.json()["points"] == 60
        with central.tx() as s:
            cp.publish(s, site=SITE, base=_base(), key=key,
                       campaign={"name": "retail_x2", "applies_to": "purchase",
                                 "categories": ["retail"], "multiplier": "2"},
                       budget=None, actor="staff:mkt", now=central.now)
        r = client.post("/api/pos/purchases", json={**buy, "idempotency_key": "p2"}, headers=h)
        assert r.status_code == 201 and "retail_x2" in r.json()["rules_fired"]
        assert r.json()["points"] == 40  # 120, but 100 a day with the first 60
        with central.tx() as s:
            cp.unpublish(s, site=SITE, base=_base(), key=key, name="retail_x2",
                         actor="staff:mkt", now=central.now)
        central.now = at("2026-03-04 12:00")
        buy["at"] = "2026-03-04T10:00:00+08:00"
        r = client.post("/api/pos/purchases", json={**buy, "idempotency_key": "p3"}, headers=h)
        assert r.json()["points"] == 60 and "retail_x2" not in r.json()["rules_fired"]


def test_concurrent_publishes_each_keep_the_other(central: Any) -> None:
    """Two campaigns published at once (PostgreSQL, threads): the last bundle sent has both
    (publishes are serialised, so neither builds its bundle without the other's row)."""
    import threading

    if central.engine.dialect.name != "postgresql":
        pytest.skip("real concurrency: PostgreSQL")
    key = Ed25519PrivateKey.generate()
    start = threading.Barrier(4)
    errors: list[str] = []

    def go(i: int) -> None:
        start.wait()
        try:
            with central.tx() as s:
                cp.publish(s, site=SITE, base=_base(), key=key,
                           campaign={**NIGHT, "name": f"c{i}"}, budget=None,
                           actor="staff:mkt", now=central.now)
        except Exception as exc:  # recorded, asserted empty below
            errors.append(repr(exc))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    with central.tx() as s:
        rows = _outbox_rules(s)
        serials = [codec.parse_rules(r.payload.encode(), key.public_key(), SITE).serial
                   for r in rows]
        last = codec.parse_rules(rows[-1].payload.encode(), key.public_key(), SITE)
    assert serials == sorted(serials) and len(set(serials)) == 4
    assert {"c0", "c1", "c2", "c3"} <= {c["name"] for c in last.bundle["campaigns"]}
