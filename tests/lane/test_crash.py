"""SIGKILL the real lane daemon at random points of the exit flow, many times.

After every restart the car is still on the loop and its plate is read again, as happens at
a real lane. Whatever the kill point (before the quote, inside the ledger transaction, after
the commit, during the barrier pulse), the ledger must end with exactly one exit per car,
at most one deduction, balances that match the entries, and a valid hash chain. The trials
are checked to have landed on both sides of the commit, so the test covers what it claims.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from parkedge_sim.display_sim import DisplaySim
from parkedge_sim.modbus_lane import ModbusLaneSim

from edge.control import request
from edge.store import EntryKind, Store

REPO = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Shanghai")
TRIALS = int(os.environ.get("PARKEDGE_CRASH_TRIALS", "50"))
POINTS = 200


def config(tmp: Path, modbus_url: str, display: str, port: int) -> Path:
    text = f"""
[lane]
id = "X1"
site = "crash"
direction = "exit"
timezone = "Asia/Shanghai"
plate_timeout_s = 30.0
arm_confirm_s = 3.0
control_socket = "{tmp / "x1.sock"}"

[buses.io]
url = "{modbus_url}"
protocol = "modbus"
timeout_s = 0.3
retries = 1
gap_ms = 1

[buses.led]
url = "{display}"
protocol = "raw"
gap_ms = 1

[devices.barrier]
driver = "modbus-coil"
bus = "io"
pulse_ms = 100

[devices.loops]
driver = "modbus-inputs"
bus = "io"
poll_ms = 10
debounce_ms = 5

[devices.display]
driver = "a0"
bus = "led"

[camera]
source = "push"
listen = "127.0.0.1:{port}"

[rules]
path = "{REPO / "config" / "rules.example.toml"}"

[storage]
path = "{tmp / "ledger.db"}"

[logging]
level = "WARNING"
"""
    path = tmp / "x1.toml"
    path.write_text(text, encoding="utf-8")
    return path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    def __init__(self, cfg: Path, sock: Path, log: Path) -> None:
        self.cfg, self.sock, self.log = cfg, sock, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(self.cfg)],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )

    async def ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if request(self.sock, {"cmd": "status"}, 1.0).get("ok"):
                    return
            except (ConnectionError, OSError, ValueError):
                pass
            await asyncio.sleep(0.05)
        raise AssertionError("daemon did not come up:\n" + self.log.read_text()[-3000:])

    def state(self) -> str:
        return str(request(self.sock, {"cmd": "status"}, 2.0).get("state"))

    def kill(self) -> None:
        assert self.proc
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def seed(db: Path, plates: list[str], entered: datetime) -> None:
    with Store.open(db, "E1") as store:
        for i, plate in enumerate(plates):
            mid = f"M{i:03d}"
            store.upsert_member(mid, tier="member")
            store.set_lots(mid, [(f"{mid}-lot", POINTS, None, entered - timedelta(days=1))])
            store.bind_plate(plate, mid)
            store.record_entry(plate=plate, entered_at=entered, event_id=f"in-{i}",
                               member_id=mid)


def committed(db: Path, plate: str) -> bool:
    """Did the killed daemon get as far as committing this car's exit?"""
    with Store.open(db, "X1") as store:  # entries() lists the named lane's own entries
        return store.find_open_session(plate) is None


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_anywhere_in_the_exit_flow(tmp_path: Path) -> None:
    asyncio.run(_crash_trials(tmp_path))


async def _crash_trials(tmp: Path) -> None:
    rng = random.Random(20261123)
    sim = ModbusLaneSim(rise_s=0.05, fall_s=0.05, hold_s=0.1, latch_limit_s=5.0)
    url = await sim.start()
    board = DisplaySim("a0")
    display_path = await board.start()
    plates = [f"沪A{10000 + i}" for i in range(TRIALS)]
    db = tmp / "ledger.db"
    entered = datetime.now(TZ) - timedelta(minutes=95)  # 95 min = ¥47.50 = 10 points
    seed(db, plates, entered)
    cfg = config(tmp, url, display_path, free_port())
    daemon = Daemon(cfg, tmp / "x1.sock", tmp / "x1.log")
    before = after = 0
    try:
        daemon.start()
        await daemon.ready()
        for plate in plates:
            sim.set_loop("arming", True)
            await asyncio.sleep(0.05)
            request(daemon.sock, {"cmd": "plate", "plate": plate})
            # half the kills in the first milliseconds (quote, inside the commit), half
            # later (after the commit, during the barrier pulse)
            await asyncio.sleep(rng.uniform(0.0, 0.012) if rng.random() < 0.5
                                else rng.uniform(0.012, 0.3))
            daemon.kill()
            if committed(db, plate):
                after += 1
            else:
                before += 1
            daemon.start()
            await daemon.ready()
            # the car is still there: the camera reads it again after the restart
            request(daemon.sock, {"cmd": "plate", "plate": plate})
            deadline = time.monotonic() + 10
            while not sim.arm_up and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert sim.arm_up, f"{plate}: barrier never opened, lane {daemon.state()}"
            sim.set_loop("closing", True)
            await asyncio.sleep(0.05)
            sim.set_loop("arming", False)
            await asyncio.sleep(0.05)
            sim.set_loop("closing", False)
            deadline = time.monotonic() + 5
            while daemon.state() != "idle" and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
    finally:
        daemon.stop()
        await board.stop()
        await sim.stop()

    print(f"kills before the commit: {before}, after: {after}")
    assert before > 0 and after > 0, f"kills all on one side of the commit ({before}/{after})"
    with Store.open(db, "X1") as store:
        entries = store.entries(0, 1_000_000)
        result = store.verify()
        assert result.ok, result.problems
        for i, plate in enumerate(plates):
            mine = [e for e in entries if e.plate == plate]
            closed = [e for e in mine if e.kind == EntryKind.SESSION_CLOSED]
            deducted = [e for e in mine if e.kind == EntryKind.POINTS_DEDUCTED]
            assert len(closed) == 1, f"{plate}: {len(closed)} exits"
            assert len(deducted) == 1, f"{plate}: {len(deducted)} deductions"
            spent = int(deducted[0].payload["points"])
            assert spent == 10
            assert store.balance(f"M{i:03d}", datetime.now(TZ)) == POINTS - spent
    assert sim.stats.latched == [], "a relay was left latched by a killed daemon"
