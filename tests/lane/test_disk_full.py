"""A full disk under the ledger (#12 item 3): a real 2 MB tmpfs holds the ledger and is filled
with a file, against a real lane on the simulator (Modbus barrier and loops, LED board on a
pty, real drivers, real SQLite)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from parkedge_sim.display_sim import DisplaySim
from parkedge_sim.modbus_lane import ModbusLaneSim
from rig import REPO, TZ, Rig

from edge import metrics
from edge.barrier.display import SerialDisplay
from edge.barrier.loops import ModbusLoops
from edge.barrier.modbus_barrier import ModbusCoilBarrier
from edge.barrier.modbus_hub import ModbusHub
from edge.barrier.serial_bus import SerialBus
from edge.lane import machine as m
from edge.lane.decide import Decider, LanePolicy
from edge.lane.runner import EventClock, LaneRunner, StorageWatch
from edge.lpr.manual import ManualPlateSource
from edge.pricing import load_bundle
from edge.rules_holder import RulesHolder
from edge.store import EntryKind, Store
from edge.store.pending import PendingRecords

T0 = datetime(2026, 11, 17, 10, 0, tzinfo=TZ)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MB tmpfs (the test runs as root); unmounted afterwards."""
    d = tmp_path / "disk"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def fill(disk: Path) -> Path:
    """Fill the filesystem with one file until ENOSPC, down to the last 512 bytes."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096, 512):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


async def disk_rig(disk: Path, pending_dir: Path, direction: str = "entry", *,
                   min_free: int = 0) -> Rig:
    """rig.make_rig with the ledger on ``disk`` and the runner's storage watch set."""
    sim = ModbusLaneSim(rise_s=0.05, fall_s=0.05, hold_s=0.2)
    url = await sim.start()
    board = DisplaySim("a0")
    path = await board.start()
    hub = ModbusHub(url, "tcp", timeout_s=0.3, retries=1)
    barrier = ModbusCoilBarrier(hub, pulse_ms=60)
    loops = ModbusLoops(hub, poll_ms=10, debounce_ms=5)
    bus = SerialBus(path, timeout_s=0.3, retries=1, gap_ms=1)
    display = SerialDisplay(bus, "a0", 1, lines=4, columns=16)
    lid = "E1" if direction == "entry" else "X1"
    store = Store.open(disk / "ledger.db", lid)
    clock = EventClock(TZ, use_events=True)
    holder = RulesHolder(load_bundle(REPO / "config" / "rules.example.toml"), clock.now)
    decider = Decider(store, holder.current, LanePolicy(lid, direction, TZ))  # type: ignore[arg-type]
    plates = ManualPlateSource(lid)
    runner = LaneRunner(
        lane=m.Lane(direction=direction, timeouts=m.Timeouts(arm_s=2.0)),  # type: ignore[arg-type]
        decider=decider, store=store, barrier=barrier, loops=loops, display=display,
        plates=plates, clock=clock, idle_lines=["欢迎光临", "Welcome"],
        pending=PendingRecords(pending_dir, lid),
        storage=StorageWatch(min_free_bytes=min_free, probe_s=0.2),
    )
    await loops.start()
    await runner.start()
    return Rig(sim, board, runner, store, plates, hub, bus, loops)


def screen(rig: Rig) -> str:
    return " | ".join(rig.board.screen)


def events(store: Store) -> list[str]:
    return [str(e.payload.get("event")) for e in store.entries(0, 10_000)
            if e.kind == EntryKind.LANE_EVENT]


def gauge(name: str) -> float:
    v = metrics.REGISTRY.get_sample_value(name)
    assert v is not None, name
    return v


def test_full_disk_out_of_service_manual_open_and_back_by_itself(
        small_disk: Path, tmp_path: Path) -> None:
    async def go() -> None:
        rig = await disk_rig(small_disk, tmp_path / "run")
        try:
            await rig.arrive("沪A00001", T0)  # a normal car first
            assert await rig.drive_through(), screen(rig)
            assert await rig.until(lambda: not rig.sim.arm_up, 3.0)
            filler = fill(small_disk)
            failures = gauge("parkedge_storage_write_failures_total")

            # the next car: no decision can be written
            await rig.arrive("沪A00002", T0 + timedelta(minutes=1))
            assert await rig.until(lambda: rig.state is m.State.HOLD, 3.0), rig.state
            assert await rig.until(lambda: "暂停服务" in screen(rig)), screen(rig)
            assert "Welcome" not in screen(rig)
            assert await rig.until(lambda: any("暂停服务" in x for x in rig.board.spoken)), \
                rig.board.spoken
            await asyncio.sleep(0.3)
            assert rig.sim.stats.opens == 1 and not rig.sim.arm_up  # stayed shut
            st = rig.runner.status()
            assert st["out_of_service"] and st["storage"]["writable"] is False
            assert "full" in st["storage"]["error"]
            assert any("out of service" in a for a in st["alerts"])
            assert gauge("parkedge_storage_writable") == 0
            assert gauge("parkedge_storage_write_failures_total") > failures
            assert rig.runner.alive()  # not stuck: the loop serves the operator

            # the operator's manual open still works; its record waits in the pending file
            rig.runner.operator_open("out of service, intercom", "g7")
            assert await rig.until(lambda: rig.sim.arm_up, 3.0)
            pending = tmp_path / "run" / "E1.pending.jsonl"
            assert pending.exists() and "intercom" in pending.read_text()
            assert rig.runner.status()["storage"]["pending_records"] >= 1
            assert gauge("parkedge_pending_records") >= 1
            assert await rig.drive_through(), screen(rig)
            assert rig.sim.stats.latched == []
            # idle, still out of service: the board says so instead of "Welcome"
            await asyncio.sleep(0.3)
            assert "暂停服务" in screen(rig), screen(rig)

            filler.unlink()  # space comes back: the probe puts the lane back by itself
            assert await rig.until(lambda: rig.runner.out_of_service is None, 3.0)
            assert not pending.exists()
            assert gauge("parkedge_storage_writable") == 1
            assert gauge("parkedge_pending_records") == 0
            assert await rig.until(lambda: "Welcome" in screen(rig)), screen(rig)
            manual = [e for e in rig.store.entries(0, 1000) if e.kind == EntryKind.MANUAL_OPEN]
            assert len(manual) == 1 and manual[0].payload["deferred"] is True
            assert manual[0].payload["operator"] == "g7"
            assert manual[0].recorded > manual[0].at  # written late, dated when it happened
            assert "storage_recovered" in events(rig.store)

            # and the next car is served without anyone
            await rig.arrive("沪A00003", T0 + timedelta(minutes=3))
            assert await rig.drive_through(), screen(rig)
            assert rig.store.find_open_session("沪A00003") is not None
            assert rig.store.verify().ok
        finally:
            await rig.close()

    asyncio.run(go())


def test_car_held_out_of_service_is_served_when_space_returns(
        small_disk: Path, tmp_path: Path) -> None:
    async def go() -> None:
        rig = await disk_rig(small_disk, tmp_path / "run")
        try:
            filler = fill(small_disk)
            await rig.arrive("沪B00001", T0)
            assert await rig.until(lambda: "暂停服务" in screen(rig), 3.0), screen(rig)
            assert rig.state is m.State.HOLD and not rig.sim.arm_up
            filler.unlink()
            # the car still waits on the loop: decided again, barrier opens, no operator
            assert await rig.drive_through(), f"{rig.state} {screen(rig)}"
            s = rig.store.find_open_session("沪B00001")
            assert s is not None and s.entered_at == T0
            assert rig.store.verify().ok
        finally:
            await rig.close()

    asyncio.run(go())


def test_low_free_space_warns_before_the_disk_is_full(
        small_disk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        rig = await disk_rig(small_disk, tmp_path / "run", min_free=1_000_000)
        try:
            assert await rig.until(lambda: rig.runner.free_bytes is not None, 2.0)
            assert rig.runner.storage_low is False
            ballast = small_disk / "ballast"
            ballast.write_bytes(b"\0" * 1_300_000)
            assert await rig.until(lambda: rig.runner.storage_low, 2.0)
            assert gauge("parkedge_storage_low") == 1
            assert 0 < gauge("parkedge_storage_free_bytes") < 1_000_000
            assert any("low disk space" in a for a in rig.runner.status()["alerts"])
            assert any("low disk space" in r.getMessage() for r in caplog.records)
            # still in service: a car goes through
            await rig.arrive("沪C00001", T0)
            assert await rig.drive_through(), screen(rig)
            os.unlink(ballast)
            assert await rig.until(lambda: not rig.runner.storage_low, 2.0)
        finally:
            await rig.close()

    caplog.set_level(logging.WARNING)
    asyncio.run(go())


def test_records_left_pending_by_a_previous_run_are_written_at_start(tmp_path: Path) -> None:
    """The daemon died while the disk was full (watchdog, operator restart): the manual open
    it could not record is in the pending file and reaches the ledger at the next start."""
    disk = tmp_path / "lib"
    disk.mkdir()
    left = PendingRecords(tmp_path / "run", "E1")
    left.add(EntryKind.MANUAL_OPEN, T0, {"reason": "ambulance", "operator": "g7"})
    assert (tmp_path / "run" / "E1.pending.jsonl").exists()

    async def go() -> None:
        rig = await disk_rig(disk, tmp_path / "run")
        try:
            manual = [e for e in rig.store.entries(0, 100) if e.kind == EntryKind.MANUAL_OPEN]
            assert [(e.at, e.payload["reason"], e.payload["deferred"]) for e in manual] == [
                (T0, "ambulance", True)]
            assert not (tmp_path / "run" / "E1.pending.jsonl").exists()
            assert rig.runner.out_of_service is None
        finally:
            await rig.close()

    asyncio.run(go())


def test_the_daemon_reports_out_of_service_on_its_socket_and_metrics(
        small_disk: Path, tmp_path: Path) -> None:
    """The real daemon with its ledger on the full tmpfs: the control socket's status and
    the /metrics page carry the alert; the operator's open works and is recorded later."""
    import urllib.request

    from parkedge_sim.display_sim import DisplaySim as Board
    from test_crash import Daemon, config, free_port

    async def go() -> None:
        sim = ModbusLaneSim(rise_s=0.05, fall_s=0.05)
        url = await sim.start()
        board = Board("a0")
        path = await board.start()
        cfg = config(tmp_path, url, path, free_port())
        mport = free_port()
        text = cfg.read_text().replace(
            f'path = "{tmp_path / "ledger.db"}"',
            f'path = "{small_disk / "ledger.db"}"\nprobe_s = 0.2\n'
            f'pending_dir = "{tmp_path / "run"}"\nmin_free_bytes = 100000')
        cfg.write_text(text + f'\n[metrics]\nlisten = "127.0.0.1:{mport}"\n')
        daemon = Daemon(cfg, tmp_path / "x1.sock", tmp_path / "x1.log")

        def metric(name: str) -> float:
            body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read()
            for line in body.decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
            raise AssertionError(f"{name} not in /metrics")

        def status() -> dict[str, object]:
            from edge.control import request
            return request(tmp_path / "x1.sock", {"cmd": "status"}, 5.0)

        try:
            daemon.start()
            await daemon.ready()
            filler = fill(small_disk)
            assert await until(lambda: metric("parkedge_storage_low") == 1)
            from edge.control import request
            r = request(tmp_path / "x1.sock", {"cmd": "open", "reason": "intercom",
                                               "operator": "g7"}, 5.0)
            assert r["ok"], r
            assert await sim.wait_for_arm("up", 5.0)  # the open went ahead
            st = status()
            assert st["out_of_service"] is True, st
            assert any("out of service" in str(a) for a in st["alerts"])  # type: ignore[attr-defined]
            assert metric("parkedge_storage_writable") == 0
            assert metric("parkedge_pending_records") == 1
            assert "OUT OF SERVICE" in (tmp_path / "x1.log").read_text()
            filler.unlink()
            assert await until(lambda: status()["out_of_service"] is False)
            assert metric("parkedge_storage_writable") == 1
        finally:
            daemon.stop()
            await board.stop()
            await sim.stop()
        with Store.open(small_disk / "ledger.db", "X1") as store:
            manual = [e for e in store.entries(0, 100) if e.kind == EntryKind.MANUAL_OPEN]
            assert [(e.payload["reason"], e.payload["deferred"]) for e in manual] == [
                ("intercom", True)]
            assert store.verify().ok
        assert sim.stats.latched == []

    asyncio.run(go())


async def until(pred: object, timeout: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return bool(pred())  # type: ignore[operator]
