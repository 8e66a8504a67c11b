"""Publishing a campaign through the form in headless Chromium, against a real
`parkedge-central serve` (SQLite, ingest in the same process) on a real Mosquitto, with a
real lane (``LaneSync`` on its SQLite store): the lane accepts the new signed bundle with the
campaign, and after Unpublish the bundle without it. Screenshots as test_pages_browser."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge.pricing import RuleBundle
from tests.central.helpers import central_site, serving
from tests.central.pages_seed import seed
from tests.central.test_ingest_mqtt import lane, wait_until
from tests.central.test_pages_browser import CHROMIUM, shot, staff_login

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="apt-get install chromium")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with central_site(tmp_path) as cs:
        c = cs.central
        c.now = datetime.now(UTC)  # type: ignore[attr-defined]
        c.clock = lambda: c.now  # type: ignore[attr-defined]
        seed(c, n_members=5)
        seen: list[RuleBundle] = []
        store, sync = lane(tmp_path, "entry-1", cs.broker.port, cs.pub, seen)
        try:
            with serving(cs.cfg_path, cs.port, cs.log) as (url, _):
                sync.start()
                yield {"url": url, "sync": sync, "seen": seen, "log": cs.log}
        finally:
            sync.stop()
            store.close()


def test_publish_through_the_form_and_the_lane_accepts_it(site: dict[str, Any],
                                                          browser: Any) -> None:
    sync, seen = site["sync"], site["seen"]
    assert wait_until(lambda: sync.state.rules_serial()[1] == "central-test-1"), \
        site["log"].read_text()[-2000:]
    serial0 = sync.state.rules_serial()[0]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    staff_login(page, site["url"], "mkt")
    page.goto(site["url"] + "/campaigns")
    page.get_by_label("名称").fill("evening_x2")
    page.locator('input[name="days"][value="tue"]').check()
    page.locator("#cf-multiplier").fill("2")
    page.locator("#cf-budget").fill("800")
    page.get_by_role("button", name="预测").click()
    page.wait_for_selector("#forecast")
    with page.expect_navigation():
        page.get_by_role("button", name="发布").click()
    assert "evening_x2" in page.locator("[role=status]").inner_text()
    assert "evening_x2" in page.locator("#published").inner_text()
    # the lane accepted the signed bundle with the campaign
    assert wait_until(lambda: sync.state.rules_serial()[0] > serial0
                      and "+c" in (sync.state.rules_serial()[1] or ""), timeout=30)
    assert "evening_x2" in [c.name for c in seen[-1].campaigns]
    assert not sync.refusals.counts
    shot(page, "campaign-published")
    page.goto(site["url"] + "/campaigns/evening_x2")
    page.wait_for_selector("body[data-charts=ready]")
    assert page.locator("#cf-given").inner_text() == "0"
    shot(page, "campaign-figures")
    with page.expect_navigation():
        page.goto(site["url"] + "/campaigns")
    with page.expect_navigation():
        page.locator("#published").get_by_role("button").first.click()
    assert "evening_x2" in page.locator("[role=status]").inner_text()
    assert wait_until(lambda: sync.state.rules_serial()[1] == "central-test-1", timeout=30)
    assert "evening_x2" not in [c.name for c in seen[-1].campaigns]
    assert not sync.refusals.counts
    page.close()
