"""The portal → lane round trip in headless Chromium (Debian's, driven by Playwright): a real
``parkedge-central serve`` with its ingest worker (SQLite), the tests' own Mosquitto on a
free loopback port, and a real entry and exit lane (``LaneSync`` on SQLite stores). A
member's car enters; the member signs in on the portal, redeems a parking coupon in two taps
and the exit lane's store has the coupon within seconds; then prepays the stay in two taps
and the exit lane's store has the signed prepayment, which prices the exit at nothing more
to pay. Screenshot as test_pages_browser (docs/screenshots/ with PARKEDGE_SCREENSHOTS=1)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from central.app import Central
from central.db.models import LaneEntry
from central.services import members, points, rewards
from edge.pricing.quote import quote_exit
from edge.pricing.types import SessionInput
from edge.store import prepayments
from tests.central.helpers import central_site, serving
from tests.central.test_ingest_mqtt import lane, wait_until
from tests.central.test_pages_browser import CHROMIUM, shot

ROOT = Path(__file__).resolve().parents[2]
PW = "correct horse battery"
PLATE = "粤B12345"
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="apt-get install chromium")


def _seed(c: Central, now: datetime) -> None:
    with c.tx() as s:
        m = members.enrol(s, c.rules, member_id="M1", phone="13800000001", name="王芳",
                          tier="gold", now=now - timedelta(days=30), plates=(PLATE,),
                          password=PW)
        points.accrue(s, c.rules, m, 500, now - timedelta(days=1), lot_id="seed",
                      source="test")
        members.enrol(s, c.rules, member_id="M2", phone="13800000002", name="李强",
                      tier="gold", now=now - timedelta(days=30), plates=("粤B99999",),
                      password=PW)
        rewards.put_reward(s, reward_id="park-2h", kind="parking_hours", name="2小时停车券",
                           points=100, value=Decimal("10"), hours=2)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with central_site(tmp_path) as cs:
        c = cs.central
        _seed(c, datetime.now(UTC))
        entry, entry_sync = lane(tmp_path, "entry-1", cs.broker.port, cs.pub)
        exit_, exit_sync = lane(tmp_path, "exit-1", cs.broker.port, cs.pub)
        try:
            with serving(cs.cfg_path, cs.port, cs.log) as (url, _):
                entry_sync.start()
                exit_sync.start()
                yield {"url": url, "central": c, "entry": entry, "entry_sync": entry_sync,
                       "exit": exit_, "log": cs.log}
        finally:
            exit_sync.stop()
            entry_sync.stop()
            entry.close()
            exit_.close()


def _ingested(c: Central, sid: str) -> bool:
    with c.tx() as s:
        return s.scalar(select(LaneEntry.id).where(LaneEntry.session_id == sid,
                                                   LaneEntry.kind == "session_opened")) \
            is not None


def test_portal_coupon_and_prepayment_reach_the_exit_lane(site: dict[str, Any],
                                                         browser: Any) -> None:
    c, entry, exit_ = site["central"], site["entry"], site["exit"]
    tz = c.cfg.site.tz
    entered = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2, minutes=30)
    opened, _ = entry.record_entry(plate=PLATE, entered_at=entered, event_id="ev-car-1",
                                   lane_id="entry-1", member_id="M1")
    site["entry_sync"].notify()
    assert wait_until(lambda: _ingested(c, opened.session_id), timeout=20), \
        site["log"].read_text()[-2000:]
    # the exit lane knows the member (the roster of members central publishes)
    assert wait_until(lambda: exit_.get_member("M1") is not None, timeout=20)

    ctx = browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844},
                              is_mobile=True)
    page = ctx.new_page()
    page.goto(site["url"] + "/m/login")
    page.get_by_label("手机号").fill("13800000001")
    page.get_by_label("密码或一次性验证码").fill(PW)
    page.get_by_role("button", name="登录").click()
    page.wait_for_selector("#stays")
    stay = page.locator("#stays li").first
    assert PLATE in stay.inner_text() and "粤B99999" not in page.inner_text("main")
    fee = stay.locator(".fee").inner_text()

    # (a) a parking coupon in two taps: the exit lane's store has it within seconds
    item = page.locator("#rewards li").filter(has_text="2小时停车券")
    item.locator("summary").click()
    t0 = time.monotonic()
    item.locator("form.confirm button").click()
    page.wait_for_selector("#redeemed")
    assert wait_until(lambda: len(exit_.member_view("M1", datetime.now(UTC), tz).coupons)
                      == 1, timeout=15), site["log"].read_text()[-2000:]
    coupon_s = time.monotonic() - t0

    # (b) the stay prepaid in two taps: the confirmation shows the amount
    stay = page.locator("#stays li").first
    stay.locator("summary").click()
    confirm = stay.locator("form.confirm button")
    assert fee in confirm.inner_text()
    t0 = time.monotonic()
    confirm.click()
    page.wait_for_selector("#prepaid")
    assert "暂无应付" in page.locator("#stays li").first.inner_text()  # nothing due now
    assert wait_until(lambda: len(prepayments.list_all(exit_)) == 1, timeout=15), \
        site["log"].read_text()[-2000:]
    prepaid_s = time.monotonic() - t0
    held = prepayments.list_all(exit_)[0]
    assert (held["plate"], held["member_id"], f"¥{held['amount']}") == (PLATE, "M1", fee)
    assert held["entry_event_id"] == "ev-car-1" and held["used_at"] is None
    page.wait_for_timeout(300)
    shot(page, "portal-prepay")
    ctx.close()

    # the car leaves a minute later: the exit lane's pricing with what its store holds
    out = datetime.now(UTC) + timedelta(minutes=1)
    q = quote_exit(SessionInput(entered=entered, exited=out, plate=PLATE,
                                paid_at=datetime.fromisoformat(str(held["paid_at"])),
                                paid_amount=Decimal(str(held["amount"]))), None, c.rules, out)
    assert q.fee > 0 and q.payable == Decimal("0.00"), q
    print(f"coupon at the lane {coupon_s:.2f} s, prepayment {prepaid_s:.2f} s after the tap")
