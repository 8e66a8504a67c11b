"""The systemd watchdog is fed only while the lane loop makes progress (#12 item 3).

The real daemon with a real notify socket and ``WATCHDOG_USEC``; its loop is blocked for real
by another process holding the ledger's write lock while the operator opens the barrier (the
manual-open record waits on SQLite's busy timeout inside the loop). The pings must stop while
the loop is blocked and resume afterwards.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from parkedge_sim.display_sim import DisplaySim
from parkedge_sim.modbus_lane import ModbusLaneSim
from test_crash import config, free_port

from edge.control import request
from edge.lane import machine as m
from edge.lane import runner as runner_mod
from edge.store import EntryKind, Store


def test_pings_stop_while_the_lane_loop_is_blocked(tmp_path: Path) -> None:
    async def go() -> None:
        sim = ModbusLaneSim(rise_s=0.05, fall_s=0.05)
        url = await sim.start()
        board = DisplaySim("a0")
        path = await board.start()
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(tmp_path / "notify.sock"))
        notify.setblocking(False)
        cfg = config(tmp_path, url, path, free_port())
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
               "WATCHDOG_USEC": "1000000"}
        proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(cfg)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pings: list[float] = []

        async def collect(until: float) -> None:
            while time.monotonic() < until:
                try:
                    if "WATCHDOG=1" in notify.recv(4096).decode().split("\n"):
                        pings.append(time.monotonic())
                except BlockingIOError:
                    await asyncio.sleep(0.02)

        lock: sqlite3.Connection | None = None
        try:
            deadline = time.monotonic() + 30
            while len(pings) < 3 and time.monotonic() < deadline:
                await collect(time.monotonic() + 0.2)
            assert len(pings) >= 3, "no watchdog pings before the test"
            # another process takes the ledger's write lock (a stuck backup tool, say)
            lock = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None, timeout=5)
            lock.execute("BEGIN IMMEDIATE")
            threading.Thread(target=lambda: request(
                tmp_path / "x1.sock", {"cmd": "open", "reason": "watchdog test"}, 20.0),
                daemon=True).start()
            t_block = time.monotonic()
            await collect(t_block + 6.0)
            lock.execute("ROLLBACK")
            lock.close()
            lock = None
            t_free = time.monotonic()
            await collect(t_free + 3.0)
            during = [t for t in pings if t_block + 2.0 < t < t_free]
            after = [t for t in pings if t > t_free]
            assert during == [], f"{len(during)} pings while the loop was blocked"
            assert len(after) >= 2, "pings did not resume"
            assert await sim.wait_for_arm("up", 5.0)  # the open went ahead once unblocked
        finally:
            if lock is not None:
                lock.close()
            proc.terminate()
            proc.wait(15)
            notify.close()
            await board.stop()
            await sim.stop()
        with Store.open(tmp_path / "ledger.db", "X1") as store:
            assert [e.payload["reason"] for e in store.entries(0, 100)
                    if e.kind == EntryKind.MANUAL_OPEN] == ["watchdog test"]

    asyncio.run(go())


def test_a_lane_stuck_in_deciding_is_not_alive(tmp_path: Path) -> None:
    """The loop turns, but a decision never came back: that is not progress."""
    from rig import make_rig

    async def go() -> None:
        rig = await make_rig(tmp_path, "entry")
        try:
            await asyncio.sleep(0.1)
            assert rig.runner.alive(2.0)
            rig.runner.lane = replace(rig.runner.lane, state=m.State.DECIDING)
            rig.runner._state_since = time.monotonic() - runner_mod.STUCK_DECIDING_S - 1
            assert not rig.runner.alive(2.0)
        finally:
            await rig.close()

    asyncio.run(go())
