"""Prepayment end to end (#13): paid through ``parkedge-central``'s API, its outbox row
published to a real Mosquitto, a real exit lane (LaneSync + Store + Decider) lets the car
paid 10 minutes earlier out for nothing and charges the one paid 25 minutes earlier the
extra time (the bundle's ``pay_grace_minutes`` = 15).

The outbox is published here the way the ingest's outbox publisher does (topic
``parkedge/{site}/{row.topic}``, QoS 1, the row's ``retain``); once that publisher is merged
(``central.ingest``), ``test_..._through_the_outbox_publisher`` is where it takes over.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from central.app import Central
from central.config import parse_config
from central.db.models import Base
from central.services import staff
from central.web import create_app
from edge.lane.decide import Decider, LanePolicy
from edge.lpr.source import PlateRead
from edge.pricing import load_bundle
from edge.store import Store
from edge.sync.link import LinkSettings
from edge.sync.service import LaneSync
from tests.central.helpers import config_dict
from tests.sync.conftest import KEYS, REPO, Broker, public_hex, wait_until

SITE = "mall-1"  # the central tests' site
KEY = Ed25519PrivateKey.generate()
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
PAID_AT = T0 + timedelta(minutes=60)
PW = "correct horse battery"
TZ = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def central(tmp_path: Path) -> Iterator[Any]:
    c = Central.from_config(parse_config(config_dict(f"sqlite:///{tmp_path / 'c.db'}")),
                            migrate=True)
    c.now = PAID_AT + timedelta(minutes=1)  # type: ignore[attr-defined]
    c.clock = lambda: c.now  # type: ignore[attr-defined]
    yield c
    c.close()


def publish_outbox(c: Any, port: int) -> int:
    """What the outbox publisher does: every unpublished row, in order, then marked. (The
    ingest leader's own drain is tested in tests/central/test_ingest_mqtt.py, where an outbox
    row goes out through a real worker.)"""
    t = Base.metadata.tables["downlink_outbox"]
    cli = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"central-pub-{port}")
    cli.connect("127.0.0.1", port)
    cli.loop_start()
    n = 0
    try:
        with c.tx() as s:
            for r in s.execute(select(t).where(t.c.published_at.is_(None)).order_by(t.c.id)):
                cli.publish(f"parkedge/{r.site_id}/{r.topic}", r.payload.encode(), qos=1,
                            retain=r.retain).wait_for_publish(5)
                s.execute(t.update().where(t.c.id == r.id).values(published_at=c.clock()))
                n += 1
    finally:
        cli.loop_stop()
        cli.disconnect()
    return n


def _pay(c: Any, client: TestClient, h: dict[str, str], pid: str, plate: str) -> None:
    r = client.post("/api/prepayments", headers=h, json={
        "payment_id": pid, "plate": plate, "amount": "30.00",
        "paid_at": PAID_AT.isoformat(), "source": "paystation-1"})
    assert r.status_code == 201, r.text


def _run(tmp_path: Path, central: Any, port: int, publish: Any) -> None:
    with central.tx() as s:
        staff.add_user(s, "ops", "operations", PW, central.now)
    app = create_app(central)
    app.state.signing_key = KEY
    with TestClient(app, base_url="https://testserver") as client:
        r = client.post("/api/staff/login", json={"username": "ops", "password": PW})
        h = {"X-CSRF-Token": r.json()["csrf_token"]}
        _pay(central, client, h, "pay-a", "粤B10001")
        _pay(central, client, h, "pay-b", "粤B20002")
    assert publish(central, port) == 2  # published before the lane is even up: retained
    store = Store.open(tmp_path / "exit-1.db", "exit-1")
    for plate in ("粤B10001", "粤B20002"):
        store.record_entry(plate=plate, entered_at=T0, event_id=f"in-{plate[-1]}",
                           lane_id="entry-1")
    sync = LaneSync(store, site=SITE, settings=LinkSettings(
        host="127.0.0.1", port=port, client_id="exit-1", keepalive_s=5),
        hmac_key=KEYS["exit-1"], public_key_hex=public_hex(KEY),
        wallclock=lambda: PAID_AT + timedelta(minutes=2))
    bundle = load_bundle(REPO / "config" / "rules.example.toml")
    decider = Decider(store, lambda: bundle, LanePolicy("exit-1", "exit", TZ))
    sync.start()
    try:
        assert wait_until(lambda: sync.downlink.applied["prepaid"] == 2, 15), (
            sync.downlink.applied, sync.downlink.rejected)
        at10, at25 = PAID_AT + timedelta(minutes=10), PAID_AT + timedelta(minutes=25)
        a = decider.decide(PlateRead("粤B10001", 0.99, at10, "t", "out-a"), at10)
        assert a.outcome == "exit_paid" and a.open_barrier
        b = decider.decide(PlateRead("粤B20002", 0.99, at25, "t", "out-b"), at25)
        assert b.outcome == "exit_owed" and not b.open_barrier
        sb = store.get_session(b.session_id or "")
        assert sb is not None and sb.payable == Decimal("12.50")  # 25 min x ¥0.50
    finally:
        sync.stop()


def test_paid_through_central_api_then_lane_exits_within_and_after_grace(
        tmp_path: Path, own_broker: Broker, central: Any) -> None:
    _run(tmp_path, central, own_broker.port, publish_outbox)
