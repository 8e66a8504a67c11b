"""Every counter in edge/metrics.py counts its event (#12 item 9).

``parkedge_bad_input_total`` and ``parkedge_ledger_entries_total`` were declared and never
incremented (``parkedge_device_errors_total`` neither): a dashboard showed 0 while bad input
was refused and entries written. Each test reads the counter from prometheus_client's
registry (deltas: the registry lives as long as the test process), or from the real daemon's
/metrics endpoint. The sync source of bad input is in tests/sync/test_bad_input_counted.py.
"""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from parkedge_sim.display_sim import DisplaySim
from parkedge_sim.modbus_lane import ModbusLaneSim
from rig import make_rig
from test_crash import TZ, Daemon, config, free_port, seed

from edge.barrier.interfaces import DeviceError, Health
from edge.barrier.modbus_barrier import ModbusCoilBarrier
from edge.barrier.modbus_hub import ModbusHub
from edge.control import ControlServer, request
from edge.lane import machine as m
from edge.lpr.source import PlateRead
from edge.metrics import REGISTRY
from edge.store import ExitRecord, Store, StoreError


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_ledger_entries_counts_every_committed_entry_and_nothing_refused(
        tmp_path: Path) -> None:
    at = datetime(2026, 11, 23, 10, 0, tzinfo=TZ)
    with Store.open(tmp_path / "l.db", "X1") as store:
        n0 = value("parkedge_ledger_entries_total")
        s, _ = store.record_entry(plate="沪A12345", entered_at=at, event_id="in-1")
        assert value("parkedge_ledger_entries_total") == n0 + 1
        store.record_entry(plate="沪A12345", entered_at=at, event_id="in-1")  # idempotent
        assert value("parkedge_ledger_entries_total") == n0 + 1
        with pytest.raises(StoreError):  # refused: an open session takes no payment
            store.record_payment(s.session_id, Decimal("5"), "cash", at, "p1")
        assert value("parkedge_ledger_entries_total") == n0 + 1
        result = store.record_exit(ExitRecord(
            exit_event_id="x-1", session_id=s.session_id, plate="沪A12345",
            exited_at=at + timedelta(hours=1), member_id=None, rules_version="v1",
            fee=Decimal("5.00"), payable=Decimal("5.00"), points_deducted=0, lots_used=(),
            coupons_used=(), points_earned=0, earned_expires_at=None, quote={}))
        assert len(result.entries) >= 2
        assert value("parkedge_ledger_entries_total") == n0 + 1 + len(result.entries)
        assert value("parkedge_ledger_entries_total") == n0 + len(store.entries(0, 100))


def test_device_errors_count_failed_requests_and_health_follows(tmp_path: Path) -> None:
    async def go() -> None:
        sim = ModbusLaneSim(rise_s=0.05, fall_s=0.05)
        url = await sim.start()
        hub = ModbusHub(url, "tcp", timeout_s=0.2, retries=0)
        barrier = ModbusCoilBarrier(hub, pulse_ms=60, name="barrier-x9", down_after=2)
        try:
            await barrier.pulse_open()
            assert value("parkedge_device_errors_total", device="barrier-x9") == 0
            await sim.stop()  # the I/O module dies
            with pytest.raises(DeviceError):
                await barrier.pulse_open()
            await asyncio.sleep(0.3)  # the driver also retries the relay's OFF meanwhile
            # every failed request is counted, exactly as the driver counts it
            c1 = value("parkedge_device_errors_total", device="barrier-x9")
            failures = barrier.tracker.failures_total
            c2 = value("parkedge_device_errors_total", device="barrier-x9")
            assert 0 < c1 <= failures <= c2
            assert barrier.health is Health.DOWN
            assert REGISTRY.get_sample_value("parkedge_device_health",
                                             {"device": "barrier-x9"}) == 0.0
        finally:
            await hub.close()
            await sim.stop()

    asyncio.run(go())


def test_bad_control_requests_are_counted(tmp_path: Path) -> None:
    sock = tmp_path / "c.sock"

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        if "cmd" not in req:
            raise KeyError("cmd")
        return {"ok": True}

    def raw(line: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(sock))
            s.sendall(line)
            return s.recv(65536)

    async def go() -> None:
        server = ControlServer(sock, handler)
        await server.start()
        try:
            n0 = value("parkedge_bad_input_total", source="control")
            assert (await asyncio.to_thread(request, sock, {"cmd": "x"}))["ok"]
            assert value("parkedge_bad_input_total", source="control") == n0
            for bad in (b"not json\n", b"[1, 2]\n", b"{}\n", b"{" + b" " * 5000 + b"}\n"):
                reply = await asyncio.to_thread(raw, bad)
                assert b'"ok": false' in reply
            assert value("parkedge_bad_input_total", source="control") == n0 + 4
        finally:
            await server.stop()

    asyncio.run(go())


def test_plates_read_counts_each_accepted_read_decided_or_not(tmp_path: Path) -> None:
    """A read is counted when the lane accepts it from its source: a duplicate push (same
    event id) is not, a read with no vehicle on the loop (kept, then dropped) is."""

    async def go() -> None:
        rig = await make_rig(tmp_path, "entry",
                             timeouts=m.Timeouts(arm_s=2.0, stale_read_s=0.2))
        try:
            n0 = value("parkedge_plates_read_total")
            read = PlateRead(plate="沪A12345", confidence=0.97, at=datetime.now(TZ),
                             source="camera", event_id="cam-1")
            for _ in range(3):  # the camera pushes the same event three times
                rig.plates._queue.put_nowait(read)
            await rig.until(lambda: rig.runner.stats.duplicates == 2)
            assert value("parkedge_plates_read_total") == n0 + 1
            assert rig.store.entries(0, 10) == []  # no vehicle: nothing decided
            assert await rig.until(lambda: rig.store.entries(0, 10) != [])  # dropped, noted
            assert rig.store.entries(0, 10)[0].payload["event"] == "read_without_vehicle"
            await rig.arrive("沪A12345", datetime.now(TZ))
            assert await rig.until(lambda: rig.sim.stats.opens == 1)
            assert value("parkedge_plates_read_total") == n0 + 2
        finally:
            await rig.close()

    asyncio.run(go())


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("parkedge_") and " " in line:
            name, _, v = line.rpartition(" ")
            out[name] = float(v)
    return out


def test_the_daemon_counts_plates_sessions_exits_and_entries_on_metrics(
        tmp_path: Path) -> None:
    async def one(direction: str, tmp: Path, sim: ModbusLaneSim, url: str,
                  display: str) -> dict[str, float]:
        tmp.mkdir()
        cfg = config(tmp, url, display, free_port())
        port = free_port()
        text = cfg.read_text(encoding="utf-8").replace('direction = "exit"',
                                                       f'direction = "{direction}"')
        cfg.write_text(text + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n', encoding="utf-8")
        if direction == "exit":
            seed(tmp / "ledger.db", ["沪A12345"], datetime.now(TZ) - timedelta(minutes=95))
        daemon = Daemon(cfg, tmp / "x1.sock", tmp / "x1.log")
        try:
            daemon.start()
            await daemon.ready()
            before = await asyncio.to_thread(_scrape, port)
            sim.set_loop("arming", True)
            await asyncio.sleep(0.1)
            request(daemon.sock, {"cmd": "plate", "plate": "沪A12345"})
            deadline = time.monotonic() + 10
            while not sim.arm_up and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert sim.arm_up, daemon.state()
            sim.set_loop("closing", True)
            await asyncio.sleep(0.05)
            sim.set_loop("arming", False)
            await asyncio.sleep(0.05)
            sim.set_loop("closing", False)
            after = await asyncio.to_thread(_scrape, port)
        finally:
            daemon.stop()
        with Store.open(tmp / "ledger.db", "X1") as store:
            written = len(store.entries(0, 1000))
        names = ("parkedge_plates_read_total", "parkedge_sessions_opened_total",
                 "parkedge_exits_total", "parkedge_ledger_entries_total")
        delta = {n: after.get(n, 0.0) - before.get(n, 0.0) for n in names}
        delta["written"] = written
        return delta

    async def go() -> None:
        sim = ModbusLaneSim(rise_s=0.05, fall_s=0.05)
        url = await sim.start()
        board = DisplaySim("a0")
        display = await board.start()
        try:
            entry = await one("entry", tmp_path / "entry", sim, url, display)
            await asyncio.sleep(0.5)  # the arm comes down
            exit_ = await one("exit", tmp_path / "exit", sim, url, display)
        finally:
            await board.stop()
            await sim.stop()
        assert entry["parkedge_plates_read_total"] == 1
        assert entry["parkedge_sessions_opened_total"] == 1
        assert entry["parkedge_exits_total"] == 0
        assert entry["parkedge_ledger_entries_total"] == entry["written"] == 1
        assert exit_["parkedge_plates_read_total"] == 1
        assert exit_["parkedge_sessions_opened_total"] == 0
        assert exit_["parkedge_exits_total"] == 1
        # session_closed, fee_charged, points_deducted (+ any lane event), all of them written
        assert 3 <= exit_["parkedge_ledger_entries_total"] <= exit_["written"]

    asyncio.run(go())

