"""The central's marketing page and figures, over real HTTP, fed through real MQTT lanes."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from parkedge_sim.central.figures import figures
from parkedge_sim.central.web import MarketingWeb

from edge.store import ExitRecord
from tests.sync.conftest import (
    T0,
    Broker,
    example_bundle,
    make_central,
    make_store,
    make_sync,
    wait_until,
    web_site,
)

ROOT = Path(__file__).resolve().parents[2]


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        body = r.read().decode()
        return json.loads(body) if r.headers.get_content_type() == "application/json" else body


def _post(port: int, path: str, body: bytes,
          ctype: str = "application/json", host: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": ctype} | ({"Host": host} if host else {})
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_figures_members_history_and_campaign_publishing(
        tmp_path: Path, own_broker: Broker) -> None:
    with web_site(tmp_path, own_broker.port, "v1") as s:
        central, web, lane, sync, holder = s.central, s.web, s.lane, s.sync, s.holder
        central.add_member("M1", balance=0, plates=("粤B12345",))
        central.purchase("pos-1", "M1", Decimal("150.8"), "retail",
                         datetime(2026, 11, 23, 10, 0, tzinfo=UTC))
        assert wait_until(lambda: sync.spend_limit("M1") == 150, 10)
        lane.record_exit(ExitRecord(
            exit_event_id="x-1", session_id=None, plate="粤B12345",
            exited_at=T0 + timedelta(hours=5), member_id="M1", rules_version="v1",
            fee=Decimal("150.00"), payable=Decimal("0.00"), points_deducted=30,
            lots_used=(("central", 30),), coupons_used=(), points_earned=0,
            earned_expires_at=None, quote={"points_value": "150.00"}))
        sync.notify()
        assert wait_until(lambda: central.db.balance("M1") == 120 and sync.backlog() == 0, 10)

        f = _get(web.port, "/api/figures")
        assert f == figures(central.db)
        assert f["points_issued_per_month"] == {"2026-11": 150}
        assert (f["points_issued"], f["points_redeemed"]) == (150, 30)
        assert f["redemption_rate_pct"] == "20.0" and f["points_outstanding"] == 120
        assert f["average_points_per_member"] == "120.00"
        assert f["value_redeemed"] == "150.00" and f["cost_of_points_issued"] == "7.50"
        assert f["popular_reward_types"] == [["parking_time", 1]]
        assert f["visits_vs_points"] == {"1": {"members": 1, "avg_points": "150.0"}}

        m = _get(web.port, "/api/members/M1")
        assert m["balance"] == 120 and m["plates"] == ["粤B12345"]
        moves = [(h["kind"], h["points"]) for h in m["history"] if h["points"]]
        assert moves == [("points_deducted", -30), ("purchase", 150)], m["history"]
        page = _get(web.port, "/")  # rendered by its script: see test_marketing_browser
        assert "<h2>Figures</h2>" in page and 'api("/api/figures")' in page
        assert _get(web.port, "/api/members") == [{"member_id": "M1", "name": None,
                                                   "tier": "member", "balance": 120,
                                                   "flagged": False}]
        with pytest.raises(urllib.error.HTTPError):
            _get(web.port, "/api/members/nobody")

        # a campaign edited on the page reaches the lane as a new signed bundle
        status, body = _post(web.port, "/api/rules", json.dumps(example_bundle("v2")).encode())
        assert status == 200 and body["serial"] >= 1
        assert wait_until(lambda: holder.current().version == "v2", 10)
        bad = example_bundle("v3")
        bad["tariffs"]["small"]["rate"] = "-1"
        status, body = _post(web.port, "/api/rules", json.dumps(bad).encode())
        assert status == 400 and "rate" in body["error"]
        status, _ = _post(web.port, "/api/rules", b"[1, 2]")
        assert status == 400
        assert holder.current().version == "v2"
    out = subprocess.run([sys.executable, "-m", "parkedge_sim.central", "--site", "mall",
                          "--db", f"sqlite:///{tmp_path / 'central.db'}", "--json"],
                         capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout)["points_redeemed"] == 30


def test_marketing_page_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    central = make_central(tmp_path, 1)
    try:
        with pytest.raises(ValueError, match="loopback"):
            MarketingWeb(central, host="0.0.0.0")
    finally:
        central.db.close()


def test_reward_catalogue_coupon_reaches_the_lane_and_comes_back_used(
        tmp_path: Path, own_broker: Broker) -> None:
    central = make_central(tmp_path, own_broker.port, rules_bundle=example_bundle("v1"))
    central.start()
    lane = make_store(tmp_path, "exit-1")
    sync = make_sync(lane, own_broker.port)
    sync.start()
    try:
        assert wait_until(lambda: central.connected.is_set() and sync.link.subscribed.is_set())
        central.add_member("M1", balance=150, plates=("粤B12345",))
        central.add_reward("2h", "parking_hours", "2 hours parking", 100, Decimal("2"))
        central.add_reward("mug", "merchandise", "Mall mug", 40, Decimal("25"))
        now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
        t = datetime.now(UTC)
        cid = central.redeem("r1", "M1", "2h", now)
        assert cid == "cp-r1"
        assert central.redeem("r1", "M1", "2h", now) is None  # replay: nothing twice
        with pytest.raises(ValueError, match="not enough"):
            central.redeem("r2", "M1", "2h", now)  # 50 left
        assert central.redeem("r3", "M1", "mug", now) is None  # desk reward: no coupon

        def coupon_here() -> bool:
            if sync.state.account("M1") is None:
                return False
            v = lane.member_view("M1", now, ZoneInfo("Asia/Shanghai"))
            return [c.coupon_id for c in v.coupons] == ["cp-r1"] and v.balance == 10
        assert wait_until(coupon_here, 10)
        assert datetime.now(UTC) - t < timedelta(seconds=5)  # "within seconds"
        cp = lane.member_view("M1", now, ZoneInfo("Asia/Shanghai")).coupons[0]
        assert (cp.kind, cp.value) == ("hours", Decimal("2"))
        lane.record_exit(ExitRecord(
            exit_event_id="x-1", session_id=None, plate="粤B12345",
            exited_at=now + timedelta(hours=1), member_id="M1", rules_version="v1",
            fee=Decimal("30.00"), payable=Decimal("0.00"), points_deducted=0, lots_used=(),
            coupons_used=("cp-r1",), points_earned=0, earned_expires_at=None, quote={}))
        sync.notify()
        assert wait_until(lambda: sync.backlog() == 0, 10)
        st = central.db.member_state("M1", {}, 0)
        assert st is not None and st.coupons == () and st.balance == 10
        f = figures(central.db)
        assert dict((k, v) for k, v in f["popular_reward_types"]) == {
            "parking_hours": 1, "merchandise": 1, "coupon:hours": 1}
        assert f["points_redeemed_catalogue"] == 140
        assert f["redemption_rate_pct"] == "93.3"  # 140 spent of the 150 the member had
    finally:
        sync.stop()
        central.stop()


def test_rewards_redeemed_and_campaigns_through_the_api_and_a_true_redemption_rate(
        tmp_path: Path, own_broker: Broker) -> None:
    """Catalogue and redemptions over HTTP; posts must be JSON from a loopback Host. With an
    opening balance of 500 and only 50 points issued since, spending 500 is a 90.9 % rate
    (500 of the 550 points the member had), not 1000 % of the points issued."""
    key = Ed25519PrivateKey.generate()
    central = make_central(tmp_path, own_broker.port, signing_key=key,
                           rules_bundle=example_bundle("v1"))
    central.start()
    web = MarketingWeb(central)
    web.start()
    try:
        assert wait_until(central.connected.is_set)
        central.add_member("M1", balance=500, name="Li")
        central.purchase("pos-1", "M1", Decimal("50"), "retail", T0)
        for rw in ({"reward_id": "2h", "kind": "parking_hours", "name": "2 hours",
                    "points": 100, "value": "2"},
                   {"reward_id": "spa", "kind": "experience", "name": "Spa", "points": 200,
                    "value": 80}):
            assert _post(web.port, "/api/rewards", json.dumps(rw).encode())[0] == 200
        assert [r["reward_id"] for r in _get(web.port, "/api/rewards")] == ["2h", "spa"]
        status, body = _post(web.port, "/api/rewards", json.dumps(
            {"reward_id": "x", "kind": "car", "name": "A car", "points": 1, "value": 1}).encode())
        assert status == 400 and "kind" in body["error"]

        status, body = _post(web.port, "/api/redeem",
                             json.dumps({"member_id": "M1", "reward_id": "2h"}).encode())
        assert status == 200 and body["coupon_id"].startswith("cp-") and body["balance"] == 450
        status, body = _post(web.port, "/api/redeem",
                             json.dumps({"member_id": "M1", "reward_id": "spa"}).encode())
        assert status == 200 and body["coupon_id"] is None and body["balance"] == 250
        spa = json.dumps({"member_id": "M1", "reward_id": "spa"}).encode()
        assert _post(web.port, "/api/redeem", spa)[1]["balance"] == 50
        status, body = _post(web.port, "/api/redeem", spa)
        assert status == 400 and "not enough" in body["error"]
        m = _get(web.port, "/api/members/M1")
        assert [c["kind"] for c in m["coupons"]] == ["hours"] and m["balance"] == 50
        assert sorted((h["kind"], h["points"]) for h in m["history"]) == [
            ("purchase", 50), ("redeemed experience", -200), ("redeemed experience", -200),
            ("redeemed parking_hours", -100)]

        # a form post (cross-site) and a foreign Host (DNS rebinding) are refused
        form = b"member_id=M1&reward_id=2h"
        assert _post(web.port, "/api/redeem", form, "application/x-www-form-urlencoded")[0] == 400
        status, body = _post(web.port, "/api/redeem", json.dumps(
            {"member_id": "M1", "reward_id": "2h"}).encode(), host="evil.example")
        assert status == 400 and "loopback" in body["error"]
        assert central.db.balance("M1") == 50

        serial = _get(web.port, "/api/rules")["serial"]
        status, body = _post(web.port, "/api/rules", json.dumps(example_bundle("v2")).encode())
        assert status == 200 and body["serial"] == serial + 1
        assert _get(web.port, "/api/rules")["bundle"]["version"] == "v2"

        f = figures(central.db)
        assert (f["points_issued"], f["points_redeemed_catalogue"]) == (50, 500)
        assert f["redemption_rate_pct"] == "90.9"  # 500 of 550; not 1000 % of the 50 issued
        assert (f["value_redeemed_catalogue"], f["parking_hours_redeemed"]) == ("160.00", "2")
        assert dict(map(tuple, f["popular_reward_types"])) == {"parking_hours": 1,
                                                               "experience": 2}
    finally:
        web.stop()
        central.stop()
