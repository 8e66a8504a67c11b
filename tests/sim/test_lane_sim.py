"""LaneSim end to end with the daemon's real drivers and listener (no lane logic needed)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from parkedge_sim.lane_sim import LaneSim, SiteSim
from parkedge_sim.modbus_lane import ModbusLaneSim

from edge.barrier.interfaces import ArmState
from edge.barrier.loops import ModbusLoops
from edge.barrier.modbus_barrier import ModbusCoilBarrier
from edge.barrier.modbus_hub import ModbusHub
from edge.lpr.camera_push import CameraPushSource
from edge.lpr.push_trust import Allowlist, parse_allow

TZ = ZoneInfo("Asia/Shanghai")
Body = Callable[[LaneSim, CameraPushSource, ModbusCoilBarrier, ModbusLoops], Awaitable[None]]


def run(body: Body, *, opener: bool = True) -> None:
    """A lane sim, plus a minimal controller: every plate pushed opens the barrier."""

    async def main() -> None:
        source = CameraPushSource("127.0.0.1", 0, "E1", tz=TZ,
                                  allow=Allowlist(parse_allow(["127.0.0.1"])))
        await source.start()
        sim = LaneSim(
            "entry",
            camera_target=f"http://127.0.0.1:{source.port}/anpr",
            rise_s=0.05,
            fall_s=0.05,
            hold_s=0.05,
            open_timeout_s=0.6,
            display=False,
        )
        info = await sim.start()
        hub = ModbusHub(info["modbus_url"], "tcp", timeout_s=0.2)
        barrier = ModbusCoilBarrier(hub, 1, 1, 2, 50)
        loops = ModbusLoops(hub, poll_ms=10, debounce_ms=10)
        await loops.start()

        async def controller() -> None:
            while True:
                await source.get()
                loops.note_plate()
                await barrier.pulse_open()

        task = asyncio.create_task(controller()) if opener else None
        try:
            await body(sim, source, barrier, loops)
        finally:
            if task:
                task.cancel()
            await loops.stop()
            await hub.close()
            await sim.stop()
            await source.stop()
        assert sim.modbus.stats.latched == []

    asyncio.run(main())


def test_car_is_read_let_through_and_arm_auto_closes() -> None:
    async def body(
        sim: LaneSim, source: CameraPushSource, barrier: ModbusCoilBarrier, loops: ModbusLoops
    ) -> None:
        at = datetime(2026, 11, 23, 9, 0, tzinfo=TZ)
        outcome = await sim.vehicle_arrives("沪A12345", at, dwell_s=0.1)
        assert outcome.result == "passed"
        assert outcome.camera_statuses == [200, 200]
        assert outcome.wait_s is not None and outcome.wait_s < 0.5
        assert source.events_total == 1 and source.duplicates_total == 1
        assert await sim.modbus.wait_for_arm("down", 1.0)  # auto-close after the loop cleared
        assert sim.modbus.stats.auto_closes == 1
        assert await barrier.read_state() is ArmState.DOWN
        await asyncio.sleep(0.05)
        assert loops.passages == 1 and not loops.tailgate_suspected

    run(body)


def test_unread_car_is_blocked_and_reversing_car_never_passes() -> None:
    async def body(
        sim: LaneSim, source: CameraPushSource, barrier: ModbusCoilBarrier, loops: ModbusLoops
    ) -> None:
        blocked = await sim.vehicle_arrives("沪B1", read_plate=False, open_timeout_s=0.2)
        assert blocked.result == "blocked" and blocked.wait_s is None
        assert sim.modbus.stats.opens == 0
        reversed_ = await sim.vehicle_arrives("沪B2", dwell_s=0.05, reverse=True)
        assert reversed_.result == "reversed"
        await asyncio.sleep(0.1)
        assert loops.passages == 0

    run(body)


def test_tailgater_is_counted_against_plates() -> None:
    async def body(
        sim: LaneSim, source: CameraPushSource, barrier: ModbusCoilBarrier, loops: ModbusLoops
    ) -> None:
        outcome = await sim.vehicle_arrives("沪C1", dwell_s=0.08, tailgate_plate="沪C2")
        assert outcome.result == "tailgated"
        await asyncio.sleep(0.1)
        assert loops.passages == 2 and loops.plates == 1
        assert loops.tailgate_suspected

    run(body)


def test_stuck_arm_blocks_the_car() -> None:
    async def body(
        sim: LaneSim, source: CameraPushSource, barrier: ModbusCoilBarrier, loops: ModbusLoops
    ) -> None:
        sim.set_fault("stuck_arm")
        outcome = await sim.vehicle_arrives("沪D1", dwell_s=0.05)
        assert outcome.result == "blocked"
        assert sim.modbus.stats.opens == 1  # the daemon did try

    run(body)


def test_anti_crush_power_on_and_latch_detection() -> None:
    async def main() -> None:
        lane = ModbusLaneSim(rise_s=0.05, fall_s=0.3, hold_s=0.02, latch_limit_s=0.1)
        await lane.start()
        try:
            assert lane.arm.motion == "down" and lane.arm_down  # powers on down
            lane._set_relay(1, True)
            lane._set_relay(1, False)
            assert await lane.wait_for_arm("up", 1.0)
            lane.set_loop("closing", True)
            lane.set_loop("closing", False)
            assert await lane.wait_for_arm("falling", 1.0)
            lane.set_loop("photocell", True)  # a pedestrian under the falling arm
            assert await lane.wait_for_arm("up", 1.0)
            assert lane.stats.anti_crush >= 1
            lane.set_loop("photocell", False)
            assert await lane.wait_for_arm("down", 2.0)
            lane.set_fault("power_loss")
            lane.set_fault("power_return")
            assert lane.arm.motion == "down"
            lane._set_relay(3, True)  # a relay someone forgot to release
            await asyncio.sleep(0.2)
            assert [v.channel for v in lane.stats.latched] == [3]
        finally:
            await lane.stop()

    asyncio.run(main())


def test_site_with_two_lanes_and_unknown_names() -> None:
    async def main() -> None:
        site = SiteSim(
            {
                "entry": LaneSim("entry", display=False),
                "exit": LaneSim("exit", display=False, modbus_framing="rtu"),
            }
        )
        info = await site.start()
        try:
            assert info["entry"]["modbus_url"].startswith("tcp://127.0.0.1:")
            assert info["exit"]["modbus_url"].startswith("socket://127.0.0.1:")
            assert info["entry"]["modbus_url"] != info["exit"]["modbus_url"]
            with pytest.raises(KeyError, match="lanes: entry, exit"):
                site.lane("side")
            with pytest.raises(ValueError, match="unknown fault"):
                site.lane("entry").set_fault("gremlins")
            with pytest.raises(ValueError, match="timezone-aware"):
                await site.lane("entry").vehicle_arrives("X", datetime(2026, 1, 1))
        finally:
            await site.stop()

    asyncio.run(main())


def test_lane_with_display_exposes_a_pty_and_display_faults() -> None:
    async def main() -> None:
        lane = LaneSim("entry")
        info = await lane.start()
        try:
            assert info["display_path"].startswith("/dev/pts/")
            lane.set_fault("display_no_answer")
            assert lane.display is not None and lane.display.faults.no_answer
            lane.set_fault("display_no_answer", False)
            assert lane.snapshot()["display"]["screen"] == ["", "", "", ""]
        finally:
            await lane.stop()

    asyncio.run(main())
