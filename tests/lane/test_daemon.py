"""The real daemon process: systemd notification, operator commands through the CLI."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from parkedge_sim.display_sim import DisplaySim
from parkedge_sim.modbus_lane import ModbusLaneSim
from test_crash import Daemon, config, free_port

from edge.store import EntryKind, Store


def parkedge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args], capture_output=True, text=True, timeout=60
    )


def test_ready_and_watchdog_over_a_real_notify_socket(tmp_path: Path) -> None:
    async def go() -> None:
        sim = ModbusLaneSim(rise_s=0.05, fall_s=0.05)
        url = await sim.start()
        board = DisplaySim("a0")
        path = await board.start()
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify_path = tmp_path / "notify.sock"
        notify.bind(str(notify_path))
        notify.setblocking(False)
        cfg = config(tmp_path, url, path, free_port())
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(cfg)], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        got: list[str] = []
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and got.count("WATCHDOG=1") < 3:
                try:
                    got += notify.recv(4096).decode().split("\n")
                except BlockingIOError:
                    await asyncio.sleep(0.05)
            assert "READY=1" in got
            assert got.index("READY=1") < got.index("WATCHDOG=1")
            assert got.count("WATCHDOG=1") >= 3
            proc.terminate()
            proc.wait(15)
            got += notify.recv(4096).decode().split("\n")
            assert "STOPPING=1" in got
            assert proc.returncode == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            notify.close()
            await board.stop()
            await sim.stop()

    asyncio.run(go())


def test_lane_open_from_the_cli_is_recorded_then_pulsed(tmp_path: Path) -> None:
    async def go() -> None:
        sim = ModbusLaneSim(rise_s=0.05, fall_s=0.05)
        url = await sim.start()
        board = DisplaySim("a0")
        path = await board.start()
        cfg = config(tmp_path, url, path, free_port())
        daemon = Daemon(cfg, tmp_path / "x1.sock", tmp_path / "x1.log")
        try:
            # no daemon yet: the operator is told, nothing happens
            r = await asyncio.to_thread(parkedge, "lane", "open", "-c", str(cfg), "-r", "test")
            assert r.returncode == 1 and "nothing was done" in r.stderr
            daemon.start()
            await daemon.ready()
            r = await asyncio.to_thread(parkedge, "lane", "open", "-c", str(cfg), "-r", " ")
            assert r.returncode == 2
            r = await asyncio.to_thread(
                parkedge, "lane", "open", "-c", str(cfg), "-r", "ambulance", "--operator", "g7"
            )
            assert r.returncode == 0, r.stderr
            assert await sim.wait_for_arm("up", 5.0)
            r = await asyncio.to_thread(parkedge, "lane", "status", "-c", str(cfg))
            assert r.returncode == 0 and '"state"' in r.stdout
            # a lane on the system clock never lets anyone set its clock
            r = await asyncio.to_thread(parkedge, "lane", "clock", "-c", str(cfg),
                                        "--at", "2026-11-17T10:05:00+08:00")
            assert r.returncode == 1 and "not set" in r.stderr, r.stderr
        finally:
            daemon.stop()
            await board.stop()
            await sim.stop()
        with Store.open(tmp_path / "ledger.db", "X1") as store:
            manual = [e for e in store.entries(0, 100) if e.kind == EntryKind.MANUAL_OPEN]
        assert len(manual) == 1
        assert manual[0].payload.get("reason") == "ambulance"
        assert manual[0].payload.get("operator") == "g7"
        assert sim.stats.latched == []

    asyncio.run(go())
