"""`parkedge-sim serve` as a real subprocess, driven through its JSON control API."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from edge.barrier.interfaces import ArmState
from edge.barrier.modbus_barrier import ModbusCoilBarrier
from edge.barrier.modbus_hub import ModbusHub

ROOT = Path(__file__).resolve().parents[2]


def call(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def served() -> Any:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "parkedge_sim.cli",
            "serve",
            "--lanes",
            "entry,exit",
            "--rise-s",
            "0.05",
            "--fall-s",
            "0.05",
            "--hold-s",
            "0.05",
            "--no-display",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        yield json.loads(line)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_serve_prints_ports_and_control_api_drives_a_lane(served: dict[str, Any]) -> None:
    base = served["control"]
    assert base.startswith("http://127.0.0.1:")
    assert set(served["lanes"]) == {"entry", "exit"}
    status, lanes = call(base, "GET", "/lanes")
    assert status == 200 and lanes["exit"]["modbus_url"] == served["lanes"]["exit"]["modbus_url"]

    async def open_barrier() -> ArmState:
        hub = ModbusHub(served["lanes"]["entry"]["modbus_url"], "tcp", timeout_s=0.3)
        barrier = ModbusCoilBarrier(hub, 1, 1, 2, 50)
        await asyncio.sleep(0.1)
        await barrier.pulse_open()
        await barrier.confirm_open(2.0)
        state = await barrier.read_state()
        await hub.close()
        return state

    async def both() -> tuple[Any, ArmState]:
        car = asyncio.to_thread(
            call, base, "POST", "/lanes/entry/vehicle", {"plate": "沪A12345", "dwell_s": 0.1}
        )
        return await asyncio.gather(car, open_barrier())

    (status, outcome), state = asyncio.run(both())
    assert state is ArmState.UP
    assert status == 200 and outcome["result"] == "passed" and outcome["plate"] == "沪A12345"
    status, snap = call(base, "GET", "/lanes/entry")
    assert snap["modbus"]["stats"]["opens"] == 1 and snap["outcomes"][-1]["result"] == "passed"

    status, faults = call(base, "POST", "/lanes/exit/fault", {"name": "stuck_arm", "on": True})
    assert status == 200 and faults["faults"] == {"stuck_arm": True}
    assert call(base, "POST", "/lanes/exit/fault", {"name": "gremlins"})[0] == 400
    assert call(base, "GET", "/lanes/side")[0] == 404
    assert call(base, "POST", "/lanes/entry/vehicle", {"dwell_s": 1})[0] == 400
    assert (
        call(base, "POST", "/lanes/entry/vehicle", {"plate": "X", "at": "2026-01-01T08:00"})[0]
        == 400
    )


def test_non_loopback_control_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "parkedge_sim.cli", "serve", "--control", "0.0.0.0:9000"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "loopback" in done.stderr
