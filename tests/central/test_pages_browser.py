"""Central's pages end to end in headless Chromium (Debian's /usr/bin/chromium driven by
Playwright) against a real `parkedge-central serve` on a free loopback port with SQLite:
each role signs in through the form and sees only its pages, the overview's charts carry
data, the language switch, the member portal's live balance and two-tap redeem, two members
who cannot see each other. Screenshots go to the test's temporary folder, or to
docs/screenshots/ with PARKEDGE_SCREENSHOTS=1 (so a test run leaves the tree clean)."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

import edge.cli.pricing  # noqa: F401
from central.app import Central
from central.config import parse_config
from central.services import points
from edge.cli import app as cli
from tests.central.helpers import RULES, serving
from tests.central.pages_seed import PW, seed

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "screenshots" if os.environ.get("PARKEDGE_SCREENSHOTS") == "1" \
    else Path(tempfile.gettempdir()) / f"central-pages-{os.getpid()}"
CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="apt-get install chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("central-pages")
    port = free_port()
    db = tmp / "central.db"
    cfg_path = tmp / "central.toml"
    key = tmp / "site.key"  # campaigns are published signed (nothing listens here)
    key.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    key.chmod(0o600)
    cfg_path.write_text(f"""
[site]
site_id = "mall-1"
timezone = "Asia/Shanghai"
[database]
url = "sqlite:///{db}"
migrate_on_start = true
[rules]
bundle = "{RULES}"
[web]
listen = "127.0.0.1"
port = {port}
[jobs]
enabled = false
[ingest]
signing_key = {{ file = "{key}" }}
[logging]
json_lines = true
""")
    cfg = parse_config(__import__("tomllib").loads(cfg_path.read_text()))
    c = Central.from_config(cfg, migrate=True)
    c.now = datetime.now(UTC)  # type: ignore[attr-defined]
    c.clock = lambda: c.now  # type: ignore[attr-defined]
    seed(c, n_members=40)
    try:
        with serving(cfg_path, port, tmp / "serve.log") as (url, _):
            yield {"url": url, "central": c, "tmp": tmp}
    finally:
        c.close()


def staff_login(page: Any, url: str, user: str) -> None:
    page.goto(url + "/login")
    page.get_by_label("用户名").fill(user)
    page.get_by_label("密码").fill(PW)
    with page.expect_navigation():
        page.keyboard.press("Enter")  # keyboard only: the form submits from the field


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


ROLE_NAV = {"mkt": ["概览", "活动", "奖励", "会员"], "ops": ["现场运营", "奖励", "会员"],
            "aud": ["概览", "现场运营", "活动", "奖励", "会员"],
            "adm": ["概览", "现场运营", "奖励", "会员"]}


@pytest.mark.parametrize("user", ["mkt", "ops", "aud", "adm"])
def test_each_role_sees_only_its_pages(site: dict[str, Any], browser: Any, user: str) -> None:
    ctx = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    staff_login(page, site["url"], user)
    nav = [t.strip() for t in page.locator("header nav a").all_inner_texts()]
    assert nav == ROLE_NAV[user]
    r = page.goto(site["url"] + "/overview")
    assert r is not None
    if user == "ops":
        assert r.status == 403
        assert "无权" in page.inner_text("main")
    else:
        assert r.status == 200
    r = page.goto(site["url"] + "/members/M001")
    assert r is not None and r.status == 200
    adjust = page.locator("#adjust")
    assert adjust.count() == (1 if user == "ops" else 0)  # only operations adjust points
    ctx.close()


def test_overview_charts_have_data_and_the_language_switches(site: dict[str, Any],
                                                              browser: Any) -> None:
    ctx = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    staff_login(page, site["url"], "mkt")
    assert page.url.endswith("/overview")
    page.wait_for_selector("body[data-charts=ready]")
    sums = page.evaluate("""() => [...document.querySelectorAll('canvas')].map(c => {
        const ch = Chart.getChart(c);
        const sum = (xs) => xs.reduce((x, y) => x + Number(y), 0);
        return [c.id, ch.data.datasets.reduce((a, d) => a + sum(d.data), 0)];
    })""")
    assert len(sums) == 5
    for cid, total in sums:
        assert total > 0, cid
    assert page.inner_text("h1") == "概览"
    page.locator("details.def summary").first.click()  # a definition is one click away
    assert "兑换" in page.inner_text("details.def[open]") or "积分" in page.inner_text(
        "details.def[open]")
    shot(page, "overview-zh")
    page.get_by_role("link", name="English").click()
    page.wait_for_selector("body[data-charts=ready]")
    assert page.inner_text("h1") == "Overview"
    assert "Redemption rate" in page.inner_text("main")
    shot(page, "overview-en")
    page.get_by_role("link", name="中文").click()
    assert page.inner_text("h1") == "概览"
    ctx.close()


def test_members_search_member_page_and_adjustment(site: dict[str, Any], browser: Any) -> None:
    ctx = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    staff_login(page, site["url"], "ops")
    page.goto(site["url"] + "/members")
    page.get_by_label("搜索").fill("13800000002")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    rows = page.locator("#members tbody tr")
    assert rows.count() == 1 and "M002" in rows.first.inner_text()
    with page.expect_navigation():
        rows.first.get_by_role("link").click()
    before = int(page.inner_text("#balance").replace(",", ""))
    first = page.locator("#history tbody tr").first.inner_text()
    assert "+08:00" not in first and "." not in first.split("\t")[0]  # site time, seconds
    page.get_by_label("调整积分(负数为扣减)").fill("25")
    with page.expect_navigation():
        page.locator("#adjust button").click()
    assert "⚠" in page.inner_text("#adjust")  # no reason: refused beside the field
    page.get_by_label("原因(必填,记入审计日志)").fill("goodwill: barrier fault 12-01")
    with page.expect_navigation():
        page.locator("#adjust button").click()
    assert int(page.inner_text("#balance").replace(",", "")) == before + 25
    shot(page, "member")
    page.goto(site["url"] + "/members")
    shot(page, "members")
    with site["central"].tx() as s:
        from central.services import audit

        last = audit.entries(s, 5)
    assert any(e["action"] == "points.adjust" and e["actor"] == "staff:ops"
               and e["after"]["reason"] == "goodwill: barrier fault 12-01" for e in last)
    ctx.close()


def test_rewards_page_shows_the_cap(site: dict[str, Any], browser: Any) -> None:
    ctx = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    staff_login(page, site["url"], "mkt")
    page.goto(site["url"] + "/rewards")
    assert page.locator("#catalogue tbody tr").count() == 7
    assert "¥200" in page.inner_text("main")
    shot(page, "rewards")
    page.goto(site["url"] + "/campaigns")
    assert page.locator("#campaigns tbody tr").count() >= 1
    # the form: workdays x1.2 (the seed's 100-a-day cap leaves room there), forecast
    # over the past months
    page.get_by_label("名称").fill("workday_x1.2")
    page.get_by_label("工作日").check()
    page.get_by_label("积分倍数").fill("abc")
    with page.expect_navigation():
        page.get_by_role("button", name="预测").click()
    assert page.locator("#cf-multiplier-err").is_visible()  # the schema's error, beside it
    page.get_by_label("积分倍数").fill("1.2")
    page.get_by_label("预算(元)").fill("300")
    page.locator("#fc_start").fill(page.locator("#fc_start").input_value())
    with page.expect_navigation():
        page.get_by_role("button", name="预测").click()
    page.wait_for_selector("body[data-charts=ready]")
    total = page.evaluate("""() => Chart.getChart(document.getElementById('ch-forecast'))
        .data.datasets[0].data.reduce((a, b) => a + b, 0)""")
    assert total > 0
    extra = int(page.inner_text("#fc-extra").replace(",", "").replace("+", ""))
    assert extra > 0
    shot(page, "campaign-forecast")
    # check it yourself: the three downloads through `rules simulate` give the same figure
    page.locator("#fc-check summary").click()
    files = {}
    for sel, name in [("#fc-dl-data", "d.jsonl"), ("#fc-dl-base", "base.json"),
                      ("#fc-dl-candidate", "candidate.json")]:
        with page.expect_download() as dl:
            page.locator(sel).click()
        files[name] = Path(tempfile.mkdtemp()) / name
        dl.value.save_as(files[name])
    assert files["d.jsonl"].read_text("utf-8").strip()
    out = CliRunner().invoke(cli, ["rules", "simulate", "--sessions", str(files["d.jsonl"]),
                                   "--rules", str(files["candidate.json"]), "--baseline",
                                   str(files["base.json"]), "--workers", "1", "--json"])
    assert out.exit_code == 0, out.stdout + out.stderr
    rep = json.loads(out.stdout)
    assert rep["candidate"]["points_issued"] - rep["baseline"]["points_issued"] == extra
    assert "parkedge rules simulate" in page.inner_text("#fc-cmd")
    with page.expect_navigation():
        page.get_by_role("button", name="发布").click()
    assert "workday_x1.2" in page.inner_text("#published")
    shot(page, "campaigns")
    ctx.close()


def test_member_portal_live_balance_two_tap_redeem_and_privacy(site: dict[str, Any],
                                                              browser: Any) -> None:
    c = site["central"]
    ctx = browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844},
                              is_mobile=True)
    page = ctx.new_page()
    page.goto(site["url"] + "/m")
    assert "/m/login" in page.url
    page.get_by_label("手机号").fill("13800000001")
    page.get_by_label("密码或一次性验证码").fill(PW)
    page.get_by_role("button", name="登录").click()
    page.wait_for_selector("#live:not([hidden])")
    bal = int(page.inner_text("#balance").replace(",", ""))
    # a change made elsewhere (another worker, the lanes' ingest) shows within a second
    with c.tx() as s:
        points.adjust(s, c.rules, "M001", 7, datetime.now(UTC), reason="test", ref="live-1")
    t0 = time.monotonic()
    page.wait_for_function(f"document.getElementById('balance').dataset.balance == '{bal + 7}'",
                           timeout=3000)
    assert time.monotonic() - t0 < 1.5
    text = page.inner_text("main")
    assert "M002" not in text
    page.wait_for_timeout(1100)  # the balance's highlight fades
    shot(page, "portal")
    # two taps: the reward's button, then its confirmation
    item = page.locator("#rewards li").filter(has=page.locator("details")).first
    item.locator("summary").click()
    item.locator("form.confirm button").click()
    page.wait_for_selector("#redeemed")
    assert int(page.inner_text("#balance").replace(",", "")) < bal + 7
    assert page.locator("#history li").first.inner_text().startswith(
        datetime.now(c.cfg.site.tz).strftime("%m-%d"))
    page.wait_for_timeout(1100)
    shot(page, "portal-redeemed")
    # the member's cookie opens no staff page and no other member's data
    r = page.goto(site["url"] + "/members/M002")
    assert r is not None and "/login" in page.url and "M002" not in page.inner_text("main")
    r = page.goto(site["url"] + "/api/members/M002")
    assert r is not None and r.status == 401
    ctx.close()
    # the second member sees their own balance, not the first's
    ctx2 = browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844})
    p2 = ctx2.new_page()
    p2.goto(site["url"] + "/m/login")
    p2.get_by_label("手机号").fill("13800000002")
    p2.get_by_label("密码或一次性验证码").fill(PW)
    p2.get_by_role("button", name="登录").click()
    p2.wait_for_selector("#balance")
    with c.tx() as s:
        from central.db.models import Member

        m2 = s.get(Member, "M002")
        assert m2 is not None
        assert int(p2.inner_text("#balance").replace(",", "")) == m2.balance
    ctx2.close()
