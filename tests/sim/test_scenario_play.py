"""`parkedge-sim run` end to end: a real `parkedge-sim serve`, a real `parkedge run` entry daemon
(Modbus over TCP, the LED board on a pty, the camera pushing plates over HTTP), scenarios played
through the control API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from parkedge_sim.broker import free_port
from parkedge_sim.lane_config import seed_members, write_lane_config
from parkedge_sim.lane_daemon import LaneProcess

ROOT = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Shanghai")
SMOKE = ROOT / "config" / "scenarios" / "entry_smoke.toml"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The simulator with an entry and an exit lane, each with its own real daemon."""
    tmp = tmp_path_factory.mktemp("scenario-site")
    cams = {"entry": free_port(), "exit": free_port()}
    sim = subprocess.Popen(
        [sys.executable, "-m", "parkedge_sim.cli", "serve", "--lanes", "entry,exit",
         "--rise-s", "0.2", "--fall-s", "0.2", "--hold-s", "0.2",
         *(f"--lane-target={lane}=http://127.0.0.1:{port}/ISAPI/Event"
           for lane, port in cams.items())],
        stdout=subprocess.PIPE, stderr=(tmp / "sim.log").open("wb"), text=True, cwd=ROOT,
        env=ENV,
    )
    daemons: list[LaneProcess] = []
    try:
        assert sim.stdout is not None
        info = json.loads(sim.stdout.readline())
        seed_members(tmp / "site.db", datetime(2026, 11, 17, tzinfo=TZ))
        for lane_id, direction in (("E1", "entry"), ("X1", "exit")):
            lane = info["lanes"][direction]
            cfg = write_lane_config(tmp, lane_id, direction, lane, storage=tmp / "site.db",
                                    listen=f"127.0.0.1:{cams[direction]}")
            daemons.append(LaneProcess(lane_id, cfg, tmp / f"{lane_id}.log"))
            daemons[-1].start()
        for lane in daemons:
            lane.wait_ready(30, until=lambda st: st.get("state") == "idle")
        yield {"control": info["control"], "socket": str(tmp / "E1.sock"),
               "exit_socket": str(tmp / "X1.sock"), "tmp": tmp}
    finally:
        for lane in daemons:
            lane.stop()
        if sim.poll() is None:
            sim.send_signal(signal.SIGTERM)
            try:
                sim.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sim.kill()


def play(site: dict[str, Any], scenario: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parkedge_sim.cli", "run", str(scenario),
         "--control", site["control"], "--lane-socket", f"entry={site['socket']}",
         "--lane-socket", f"exit={site['exit_socket']}", *extra],
        capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120,
    )


def test_smoke_scenario_every_expectation_holds(site: dict[str, Any]) -> None:
    done = play(site, SMOKE, "--json")
    outcomes = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0, json.dumps(outcomes, ensure_ascii=False, indent=1) + done.stderr
    assert [o["result"] for o in outcomes] == [
        "passed", "passed", "reversed", "on", "blocked", "off", "tailgated", "blocked",
    ]
    assert all(o["ok"] for o in outcomes)
    assert "stuck_arm" in outcomes[3]["detail"]["active_faults"]
    assert "stuck_arm" not in outcomes[5]["detail"]["active_faults"]
    assert any("禁止通行" in x for x in outcomes[7]["display"])
    # the daemon really saw the cars: open sessions for those that drove in, none for the
    # car that backed away (its entry undone) nor for the blacklisted one
    from edge.store import Store

    with Store.open(site["tmp"] / "site.db", "TEST-READER") as store:
        plates = {s.plate for s in store.list_sessions(open_only=True, limit=1000)}
    assert {"沪A12345", "浙B5T6Q8", "鲁Q08F99"} <= plates
    assert "粤B66666" not in plates and "豫RM6396" not in plates


def test_site_day_payment_operator_open_camera_and_board_faults(site: dict[str, Any]) -> None:
    done = play(site, ROOT / "config" / "scenarios" / "site_day.toml", "--json")
    outcomes = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0, json.dumps(outcomes, ensure_ascii=False, indent=1) + done.stderr
    assert [o["result"] for o in outcomes] == [
        "passed", "on", "blocked", "off", "passed", "passed", "on", "off",
    ]
    assert outcomes[2]["detail"]["camera_statuses"] == []  # the camera sent nothing
    assert outcomes[4]["detail"]["paid"] == {"amount": "42.50", "method": "qr", "ok": True,
                                             "error": None}
    assert outcomes[5]["detail"]["operator_open"]["ok"] is True
    assert "display_power_loss" in outcomes[6]["detail"]["active_faults"]
    from edge.store import Store

    with Store.open(site["tmp"] / "site.db", "TEST-READER") as store:
        paid = [s for s in store.list_sessions(limit=1000) if s.plate == "浙B5T6Q8"]
        kinds = [str(e["kind"]) for e in store.export("entries")]
    assert paid and paid[0].paid is not None and paid[0].paid >= Decimal("42.50")
    assert "manual_open" in kinds


def test_a_wrong_expectation_exits_1_and_says_which(site: dict[str, Any], tmp_path: Path) -> None:
    sc = tmp_path / "wrong.toml"
    sc.write_text(
        '[scenario]\nstart = 2026-11-18T09:00:00+08:00\n[lanes.entry]\n'
        '[[step]]\nlane = "entry"\nvehicle = "闽D5K233"\nat = "+1m"\ndwell_s = 0.2\n'
        'expect = "blocked"\n'
        '[[step]]\nlane = "entry"\nfault = "camera_down"\n'
        '[[step]]\nlane = "entry"\nfault = "camera_down"\non = false\n',
        encoding="utf-8",
    )
    done = play(site, sc, "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    outcomes = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(outcomes) == 3
    assert outcomes[0]["result"] == "passed" and not outcomes[0]["ok"]
    assert "expected blocked" in outcomes[0]["failures"][0]
    assert outcomes[1]["ok"] and outcomes[2]["ok"]


def test_a_malformed_scenario_exits_2_with_the_key_path(tmp_path: Path) -> None:
    sc = tmp_path / "bad.toml"
    sc.write_text(
        '[lanes.entry]\n[[step]]\nlane = "entry"\nvehicle = "沪A1"\n'
        '[[step]]\nlane = "entry"\nvehicle = "沪A2"\nexpect = "flew"\n',
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "parkedge_sim.cli", "run", str(sc), "--control",
         "http://127.0.0.1:9"],
        capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=60,
    )
    assert done.returncode == 2
    assert "step[2].expect" in done.stderr and "flew" in done.stderr


def test_an_unreachable_simulator_exits_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "parkedge_sim.cli", "run", str(SMOKE), "--control",
         f"http://127.0.0.1:{free_port()}", "--lane-socket", f"entry={tmp_path / 'E1.sock'}"],
        capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=60,
    )
    assert done.returncode == 2
    assert "cannot play" in done.stderr
