"""The operations page end to end in headless Chromium (Debian's, driven by Playwright):
a real ``parkedge-central serve`` with its ingest worker on a fresh PostgreSQL database, the
tests' own Mosquitto on a free loopback port, and two real lane processes (SQLite stores,
``LaneSync``) whose ledgers central ingests. Operations staff sign in with the keyboard and
see the lanes online, the plates read with their confidence, the manual open, the unknown
and blacklisted plates, the camera down, the money and a drawn chart; the exit lane is then
killed (SIGKILL: no goodbye, the broker sends its will) and the page, refreshing itself,
shows it offline, in red and in words, within 30 s. Marketing is refused.

Screenshots go to the test's temporary folder, or to docs/screenshots/ with
PARKEDGE_SCREENSHOTS=1. Run as a script (``lane`` ...) this file is the lane process."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.central.helpers import serving

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "screenshots" if os.environ.get("PARKEDGE_SCREENSHOTS") == "1" \
    else Path(tempfile.gettempdir()) / f"central-ops-{os.getpid()}"
CHROMIUM = Path("/usr/bin/chromium")
KEYS = {"entry-1": "k-entry-1-secret", "exit-1": "k-exit-1-secret"}
PW = "correct horse battery"


# ------------------------------------------------------------------ the lane process
def lane_main(db: str, lane: str, port: int, key: str, pub: str, peer_sid: str = "") -> int:
    """One lane: a morning's entries on its store, synced; then it lives until killed."""
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    from edge.store import ExitRecord, Store
    from edge.sync.link import LinkSettings
    from edge.sync.service import LaneSync

    store = Store.open(db, lane)
    sync = LaneSync(store, site="mall-1", settings=LinkSettings(
        host="127.0.0.1", port=port, client_id=lane, keepalive_s=5),
        hmac_key=key.encode(), public_key_hex=pub, ack_timeout_s=1.0, status_interval_s=0.5)
    sync.start()
    now = datetime.now(UTC).replace(microsecond=0)
    first = ""
    if lane == "entry-1":
        for i, (plate, conf) in enumerate([("粤B10001", 0.934), ("粤B10002", 0.871),
                                           ("粤B10003", 0.652)]):
            opened, _ = store.record_entry(plate=plate, entered_at=now - timedelta(minutes=40 - i),
                               event_id=f"ev-{plate}", lane_id=lane,
                               detail={"confidence": conf, "source": "camera"})
            first = first or opened.session_id
        store.record_lane_event("blacklisted", now - timedelta(minutes=20), plate="粤B66666",
                                detail={"direction": "entry"})
        store.record_lane_event("device_down", now - timedelta(minutes=15),
                                detail={"device": "camera"})
        store.record_manual_open("fire drill", "guard-7", now - timedelta(minutes=10))
    else:
        # the entry lane's stay, as the lanes' session sharing would hand it over
        s, _ = store.cache_session(session_id=peer_sid, plate="粤B10001",
                                   entered_at=now - timedelta(minutes=40),
                                   event_id="ev-粤B10001", entry_lane="entry-1")
        store.record_exit(ExitRecord(
            exit_event_id="x-1", session_id=s.session_id, plate="粤B10001",
            exited_at=now - timedelta(minutes=5), member_id=None, rules_version="t",
            fee=Decimal("12.50"), payable=Decimal("12.50"), points_deducted=0, lots_used=(),
            coupons_used=(), points_earned=0, earned_expires_at=None, quote={}))
        store.record_payment(s.session_id, Decimal("12.50"), "cash",
                             now - timedelta(minutes=4), "pay-1")
        store.record_lane_event("unknown_plate", now - timedelta(minutes=3), plate="粤B77777")
    sync.notify()
    end = time.monotonic() + 60
    while sync.backlog() > 0 and time.monotonic() < end:
        time.sleep(0.05)
    print(f"synced {first}" if sync.backlog() == 0 else "timeout", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__" and sys.argv[1:2] == ["lane"]:
    a = sys.argv[2:]
    raise SystemExit(lane_main(a[0], a[1], int(a[2]), a[3], a[4], *a[5:]))


# ------------------------------------------------------------------ the site
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="apt-get install chromium")


def _secret(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


@pytest.fixture
def site(tmp_path: Path, db_url: str) -> Iterator[dict[str, Any]]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from parkedge_sim.broker import MosquittoBroker, free_port

    from central.app import Central
    from central.config import parse_config
    from central.services import staff

    broker = MosquittoBroker(tmp_path)
    broker.start()
    key = Ed25519PrivateKey.generate()
    _secret(tmp_path / "site.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    pub = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw).hex()
    kd = tmp_path / "lane-keys"
    kd.mkdir()
    for lane, k in KEYS.items():
        _secret(kd / f"{lane}.key", k.encode() + b"\n")
    port = free_port()
    cfg_path = tmp_path / "central.toml"
    cfg_path.write_text(f"""
[site]
site_id = "mall-1"
timezone = "Asia/Shanghai"
[database]
url = "{db_url}"
[rules]
bundle = "{ROOT / 'tests/central/data/rules.central.toml'}"
[web]
listen = "127.0.0.1"
port = {port}
[jobs]
enabled = false
[mqtt]
broker = "127.0.0.1:{broker.port}"
keepalive_s = 5
[ingest]
enabled = true
signing_key = {{file = "{tmp_path / 'site.key'}"}}
keys_dir = "{kd}"
publish_interval_s = 0.2
[[ingest.lanes]]
id = "entry-1"
kind = "entry"
name = "North in"
[[ingest.lanes]]
id = "exit-1"
kind = "exit"
name = "North out"
""", encoding="utf-8")
    c = Central.from_config(parse_config(__import__("tomllib").loads(cfg_path.read_text())),
                            migrate=True)
    with c.tx() as s:
        for name, role in [("ops", "operations"), ("mkt", "marketing")]:
            staff.add_user(s, name, role, PW, c.clock())
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "hardware-sim")])}
    log = tmp_path / "serve.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with serving(cfg_path, port, log, env=env) as (url, _):
            lanes: dict[str, subprocess.Popen[bytes]] = {}
            sid = ""
            for lane, k in KEYS.items():  # the entry lane first: the exit closes one of its stays
                p = subprocess.Popen([sys.executable, __file__, "lane",
                                      str(tmp_path / f"{lane}.db"), lane, str(broker.port), k,
                                      pub, sid], stdout=subprocess.PIPE,
                                     stderr=(tmp_path / f"{lane}.log").open("wb"), cwd=ROOT,
                                     env=env)
                procs.append(p)
                lanes[lane] = p
                assert p.stdout is not None
                line = p.stdout.readline().decode().strip()
                assert line.startswith("synced"), (
                    lane, line, log.read_text()[-2000:],
                    (tmp_path / f"{lane}.log").read_text()[-2000:])
                sid = line.split(" ")[1] if lane == "entry-1" else sid
            yield {"url": url, "lanes": lanes, "central": c, "tmp": tmp_path}
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        c.close()
        broker.stop()


def shot(page: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def keyboard_login(page: Any, url: str, user: str) -> None:
    page.goto(url + "/login")
    page.get_by_label("用户名").fill(user)
    page.get_by_label("密码").fill(PW)
    with page.expect_navigation():
        page.keyboard.press("Enter")


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_operations_see_the_car_park_and_a_killed_lane_goes_offline(
        site: dict[str, Any], browser: Any) -> None:
    ctx = browser.new_context(locale="zh-CN", viewport={"width": 1366, "height": 1000})
    page = ctx.new_page()
    keyboard_login(page, site["url"], "ops")
    assert page.url.endswith("/ops")  # operations land on their page
    assert page.locator("header nav a[aria-current='page']").inner_text().strip() == "现场运营"
    # both lanes report online (their retained statuses reached central's ingest)
    page.wait_for_selector("#lanes tr[data-lane='entry-1'][data-state='online']",
                           timeout=15000)
    page.wait_for_selector("#lanes tr[data-lane='exit-1'][data-state='online']", timeout=15000)
    page.wait_for_function(
        "document.querySelector('#ops-summary').innerText.includes('2 条车道在线')",
        timeout=15000)
    main = page.inner_text("main")
    for want in ("粤B10001", "0.934", "guard-7", "fire drill", "粤B66666", "黑名单车辆",
                 "粤B77777", "未知车牌", "摄像机: 故障", "场内车辆"):
        assert want in main, want
    # two of three cars inside (粤B10001 left through exit-1), the entry lane red (camera)
    assert page.inner_text("#occ-mall-1").strip() == "2"
    entry_row = page.locator("#lanes tr[data-lane='entry-1']")
    assert entry_row.get_attribute("class") == "red" and "在线" in entry_row.inner_text()
    assert page.locator("#lanes tr[data-lane='exit-1']").get_attribute("class") is None
    page.locator("#money").evaluate("t => t.closest('details').open = true")
    assert "¥12.50" in page.inner_text("#money")
    # the chart drew: Chart.js holds the series, and the canvas has pixels of the line
    assert page.evaluate("Chart.getChart('ch-occupancy').data.datasets[0].data.at(-1)") == 2
    assert page.evaluate("Chart.getChart('ch-money').data.datasets[0].data.at(-1)") == 12.5
    # keyboard: the skip link first, then on to the refresh button, Enter works
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    for _ in range(15):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "ops-refresh":
            break
    assert page.evaluate("document.activeElement.id") == "ops-refresh"
    page.keyboard.press("Enter")
    shot(page, "ops")
    _chart_has_ink(page)

    # kill the exit lane: no clean disconnect; the page says offline, in red, within 30 s
    t0 = time.monotonic()
    os.kill(site["lanes"]["exit-1"].pid, signal.SIGKILL)
    site["lanes"]["exit-1"].wait(5)
    page.wait_for_selector("#lanes tr[data-lane='exit-1'][data-state='offline']",
                           timeout=30000)
    took = time.monotonic() - t0
    assert took < 30, took
    row = page.locator("#lanes tr[data-lane='exit-1']")
    assert row.get_attribute("class") == "red" and "离线" in row.inner_text()
    assert "1 条车道在线,1 条离线" in page.inner_text("#ops-summary")
    # a screen reader hears the change (once), not every refresh
    assert page.inner_text("#ops-announce").startswith("1 条车道在线,1 条离线")
    assert page.locator("#lanes tr[data-lane='entry-1'][data-state='online']").count() == 1
    print(f"exit-1 killed: offline on the page after {took:.1f} s")
    shot(page, "ops-lane-offline")
    # the same in English
    page.get_by_role("link", name="English").click()
    page.wait_for_selector("#lanes tr[data-lane='exit-1'][data-state='offline']")
    assert "Offline" in page.locator("#lanes tr[data-lane='exit-1']").inner_text()
    assert "1 lanes online, 1 offline" in page.inner_text("#ops-summary")
    ctx.close()

    # marketing may not look
    ctx = browser.new_context(locale="zh-CN")
    page = ctx.new_page()
    keyboard_login(page, site["url"], "mkt")
    r = page.goto(site["url"] + "/ops")
    assert r is not None and r.status == 403 and "无权" in page.inner_text("main")
    assert "现场运营" not in page.inner_text("header nav")
    ctx.close()


def _chart_has_ink(page: Any) -> None:
    from PIL import Image

    png = page.locator("#ch-occupancy").screenshot()
    img = Image.open(io.BytesIO(png)).convert("RGB")
    colours = img.getcolors(1 << 20) or []
    assert len(colours) > 20, len(colours)  # axes, labels and the line: not a blank box
