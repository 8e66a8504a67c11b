"""The bench page end to end in headless Chromium: a real `parkedge-sim bench` process, a real
`parkedge run` entry daemon connected to it, and Debian's /usr/bin/chromium driven by
Playwright (no browser download). The page is used as a technician would: type a plate, click
"drive in", watch the LED board; inject a fault by its button."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from parkedge_sim.broker import free_port
from parkedge_sim.lane_config import seed_members, write_lane_config
from parkedge_sim.lane_daemon import LaneProcess

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
TZ = ZoneInfo("Asia/Shanghai")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="apt-get install chromium")


def stop(proc: subprocess.Popen[Any] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("bench-page")
    page_port = free_port()
    sock, db = tmp / "E1.sock", tmp / "site.db"
    seed_members(db, datetime(2026, 11, 17, tzinfo=TZ))
    sim = subprocess.Popen(
        [sys.executable, "-m", "parkedge_sim.cli", "bench", "--page", f"127.0.0.1:{page_port}",
         "--lanes", "entry", "--rise-s", "0.2", "--fall-s", "0.2", "--hold-s", "0.2",
         "--video",
         "--lane-socket", f"entry={sock}", "--ledger", str(db)],
        stdout=subprocess.PIPE, stderr=(tmp / "sim.log").open("wb"), text=True, cwd=ROOT,
        env=ENV,
    )
    daemon = None
    try:
        assert sim.stdout is not None
        info = json.loads(sim.stdout.readline())
        lane = info["lanes"]["entry"]
        # the daemon reads plates from the sim's MJPEG camera with its on-box pipeline
        cfg = write_lane_config(tmp, "E1", "entry", lane, storage=db)
        daemon = LaneProcess("E1", cfg, tmp / "E1.log")
        daemon.start()
        daemon.wait_ready(30, until=lambda st: st.get("state") == "idle")
        yield {"url": info["bench_page"], "tmp": tmp, "port": page_port}
    finally:
        if daemon is not None:
            daemon.stop()
        stop(sim)


def test_drive_in_shows_the_plate_on_the_board_and_a_fault_by_button(
    bench: dict[str, Any], browser: Any
) -> None:
    assert bench["url"].startswith("http://127.0.0.1:")
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(bench["url"])
    lane = page.locator("#lane-entry")
    lane.wait_for(timeout=5000)
    # the daemon's idle screen, read from the simulated board
    page.wait_for_function(
        "document.querySelector('#lane-entry .display').innerText.includes('欢迎光临')",
        timeout=10000,
    )
    lane.locator(".plate-input").fill("沪A12345")
    lane.get_by_role("button", name="drive in").click()
    page.wait_for_function(
        "document.querySelector('#lane-entry .display').innerText.includes('沪A12345')",
        timeout=10000,
    )
    board = [x.strip() for x in lane.locator(".display li").all_inner_texts()]
    assert "沪A12345" in board and any("积分余额" in x for x in board), board
    shot = bench["tmp"] / "bench-page.png"
    page.screenshot(path=str(shot), full_page=True)
    Path(os.environ.get("BENCH_SHOT_DIR", bench["tmp"])).joinpath("bench-page.png").write_bytes(
        shot.read_bytes()
    )
    assert shot.stat().st_size > 10_000
    # the car passes; the page shows the outcome, the daemon's state and its ledger
    page.wait_for_function(
        "document.querySelector('#lane-entry .outcomes').innerText.includes('沪A12345 passed')",
        timeout=10000,
    )
    assert "idle" in lane.locator(".daemon").inner_text() or "wait" in lane.locator(
        ".daemon").inner_text()
    page.wait_for_function(
        "document.querySelector('#ledger tbody').innerText.includes('沪A12345')", timeout=5000
    )
    # a fault by its button, listed as active, then cleared
    lane.locator("details summary").click()
    lane.get_by_role("button", name="inject stuck_arm", exact=True).click()
    page.wait_for_function(
        "document.querySelector('#lane-entry .active-faults').innerText.includes('stuck_arm')",
        timeout=5000,
    )
    page.screenshot(path=str(bench["tmp"] / "bench-page-fault.png"), full_page=True)
    lane.get_by_role("button", name="clear stuck_arm", exact=True).click()
    page.wait_for_function(
        "!document.querySelector('#lane-entry .active-faults').innerText.includes('stuck_arm')",
        timeout=5000,
    )
    page.close()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_page_api_refuses_foreign_hosts_and_form_posts(bench: dict[str, Any]) -> None:
    status, body = _get(bench["url"] + "api/state", {"Host": "evil.example:80"})
    assert status == 400 and b"loopback only" in body
    req = urllib.request.Request(
        bench["url"] + "api/lanes/entry/fault", data=b"name=stuck_arm", method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 400
    status, jpeg = _get(bench["url"] + "api/lanes/entry/frame.jpg")
    assert status == 200 and jpeg[:2] == b"\xff\xd8"


def test_bench_refuses_a_non_loopback_page() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "parkedge_sim.cli", "bench", "--page", "0.0.0.0:8091"],
        capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=30,
    )
    assert done.returncode == 2 and "loopback" in done.stderr


def test_serve_with_bench_page_prints_its_url_and_serves_the_page() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "parkedge_sim.cli", "serve", "--lanes", "x1", "--no-display",
         "--bench-page", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["bench_page"] == f"http://127.0.0.1:{port}/"
        status, html = _get(info["bench_page"])
        assert status == 200 and b'src="/app.js"' in html
        status, body = _get(info["bench_page"] + "api/state")
        state = json.loads(body)
        lane = state["lanes"]["x1"]
        assert lane["direction"] == "exit" and lane["daemon"] is None
        assert "stuck_arm" in state["faults"] and state["ledger"] is None
    finally:
        stop(proc)
