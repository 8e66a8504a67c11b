"""The marketing page end to end in headless Chromium: a real Mosquitto, a real central with
its page, a real lane (SQLite store + LaneSync) subscribed, and Debian's /usr/bin/chromium
driven by Playwright (no browser download). Used as marketing would: look a member up,
redeem a parking-hour coupon (it must reach the lane's store within seconds), edit and
publish a campaign (the lane must accept a new signed bundle), read the figures."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from parkedge_sim.central.figures import figures

from edge.store import ExitRecord
from tests.sync.conftest import (
    T0,
    Broker,
    example_bundle,
    wait_until,
    web_site,
)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
TZ = ZoneInfo("Asia/Shanghai")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="apt-get install chromium")


@pytest.fixture
def site(tmp_path: Path, own_broker: Broker) -> Iterator[dict[str, Any]]:
    with web_site(tmp_path, own_broker.port, "seed-1") as s:
        central, web, lane, sync, holder = s.central, s.web, s.lane, s.sync, s.holder
        assert central.publish_rules(example_bundle("seed-1")) == 1
        assert wait_until(lambda: sync.state.rules_serial() == (1, "seed-1"), 10)
        central.add_member("M1", name="Li", balance=500, plates=("粤B12345",))
        central.add_member("M2", name="Wang", balance=80)
        central.purchase("pos-1", "M1", Decimal("150.8"), "retail", T0)  # +150
        central.add_reward("2h", "parking_hours", "2 hours parking", 100, Decimal("2"))
        central.add_reward("mug", "merchandise", "Mall mug", 40, Decimal("25"))
        assert wait_until(lambda: sync.spend_limit("M1") == 650, 10)
        lane.record_exit(ExitRecord(  # a stay paid with 30 points at the lane
            exit_event_id="x-1", session_id=None, plate="粤B12345",
            exited_at=T0 + timedelta(hours=5), member_id="M1", rules_version="seed-1",
            fee=Decimal("150.00"), payable=Decimal("0.00"), points_deducted=30,
            lots_used=(("central", 30),), coupons_used=(), points_earned=0,
            earned_expires_at=None, quote={"points_value": "150.00"}))
        sync.notify()
        assert wait_until(lambda: central.db.balance("M1") == 620 and sync.backlog() == 0, 10)
        yield {"url": f"http://127.0.0.1:{web.port}/", "central": central, "lane": lane,
               "sync": sync, "holder": holder, "tmp": tmp_path}


def _text(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text()).strip()


def _coupons_on_lane(site: dict[str, Any]) -> list[str]:
    view = site["lane"].member_view("M1", datetime.now(UTC), TZ)
    return [c.coupon_id for c in view.coupons]


def test_marketing_page_member_redeem_campaign_and_figures(
        site: dict[str, Any], browser: Any) -> None:
    central, sync = site["central"], site["sync"]
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(site["url"])

    # a member's real-time balance and history
    page.locator("#members tr[data-member='M1']").click()
    page.wait_for_function("document.querySelector('#m-balance').innerText === '620'",
                           timeout=10000)
    assert "Li" in _text(page, "#m-id") and _text(page, "#m-plates") == "粤B12345"
    history = page.locator("#history tbody tr").all_inner_texts()
    assert any("points_deducted" in h and "-30" in h for h in history), history
    assert any("purchase" in h and "150" in h for h in history), history
    assert central.purchase("pos-2", "M1", Decimal("60"), "retail", T0 + timedelta(hours=1)) == 60
    page.wait_for_function(  # a sale elsewhere shows without reloading the page
        "document.querySelector('#m-balance').innerText === '680'", timeout=5000)

    # redeem a parking-hour coupon: it reaches the lane's own store within seconds
    page.select_option("#redeem-reward", "2h")
    t = time.monotonic()
    page.get_by_role("button", name="redeem").click()
    page.wait_for_function(
        "document.querySelector('#redeem-result').innerText.includes('coupon cp-')",
        timeout=5000)
    coupon = _text(page, "#redeem-result").split("coupon ")[1].split(",")[0]
    assert wait_until(lambda: _coupons_on_lane(site) == [coupon], 5, 0.02)
    elapsed = time.monotonic() - t
    assert elapsed < 5.0, elapsed
    assert wait_until(lambda: sync.spend_limit("M1") == 580, 5)  # 680 - 100 on the lane too
    page.wait_for_function("document.querySelector('#m-balance').innerText === '580'",
                           timeout=5000)  # the page refreshes every second
    assert coupon in _text(page, "#m-coupons")
    # a desk reward: points only, no coupon for the lanes
    page.select_option("#redeem-reward", "mug")
    page.get_by_role("button", name="redeem").click()
    page.wait_for_function("document.querySelector('#m-balance').innerText === '540'",
                           timeout=5000)
    assert _coupons_on_lane(site) == [coupon]
    history = page.locator("#history tbody tr").all_inner_texts()
    assert any("redeemed merchandise" in h and "-40" in h for h in history), history
    assert any("redeemed parking_hours" in h and "-100" in h for h in history), history

    # edit the campaign and publish it: the lane accepts a new signed bundle
    assert _text(page, "#serial") == "1"
    bundle = json.loads(page.locator("#campaign").input_value())
    assert bundle["version"] == "seed-1"
    bundle["version"] = "dining-x2-december"
    dining = next(c for c in bundle["campaigns"] if c["name"] == "dining_x1.5")
    dining.update(name="dining_x2", multiplier="2")
    page.locator("#campaign").fill(json.dumps(bundle, indent=1, ensure_ascii=False))
    page.get_by_role("button", name="sign and publish").click()
    page.wait_for_function(
        "document.querySelector('#publish-result').innerText.includes('serial 2')",
        timeout=5000)
    assert wait_until(lambda: sync.state.rules_serial() == (2, "dining-x2-december"), 5)
    assert wait_until(lambda: site["holder"].current().version == "dining-x2-december", 5)
    assert {c.name: c.multiplier for c in site["holder"].current().campaigns}["dining_x2"] == 2
    # a broken campaign is refused on the page and never reaches the lane
    bundle["version"] = "broken"
    bundle["tariffs"]["small"]["rate"] = "-1"
    page.locator("#campaign").fill(json.dumps(bundle))
    page.get_by_role("button", name="sign and publish").click()
    page.wait_for_function(
        "document.querySelector('#publish-result').className === 'err'", timeout=5000)
    assert "rate" in _text(page, "#publish-result")
    page.wait_for_function("document.querySelector('#serial').innerText === '2'",
                           timeout=5000)
    assert sync.state.rules_serial()[0] == 2

    # the figures, as central computes them (and prints with --json)
    page.wait_for_function(
        "document.querySelector('#figures tr[data-figure=\"points_redeemed_catalogue\"]')"
        ".innerText.includes('140')", timeout=5000)
    want = figures(central.db)
    shown = {r.get_attribute("data-figure"): r.locator("td").nth(1).inner_text().strip()
             for r in page.locator("#figures tr").all()}
    for k in ("points_issued", "points_redeemed", "points_redeemed_catalogue",
              "redemption_rate_pct", "average_points_per_member", "cost_of_points_issued",
              "value_redeemed"):
        assert shown[k] == str(want[k]), (k, shown[k], want[k])
    assert json.loads(shown["popular_reward_types"]) == want["popular_reward_types"]
    assert json.loads(shown["points_issued_per_month"]) == want["points_issued_per_month"]
    assert 0 <= float(want["redemption_rate_pct"]) <= 100

    # a screenshot worth looking at: large, and not a blank page
    shot = site["tmp"] / "marketing-page.png"
    page.screenshot(path=str(shot), full_page=True)
    Path(os.environ.get("BENCH_SHOT_DIR", site["tmp"])).joinpath(
        "marketing-page.png").write_bytes(shot.read_bytes())
    assert shot.stat().st_size > 20_000
    from PIL import Image
    img = Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")
    assert img.height >= 900 and len(img.getcolors(1 << 20) or []) > 50
    page.close()
