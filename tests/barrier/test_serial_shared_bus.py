"""A display and an EB barrier on ONE RS-485 line (SimBus), driven through ONE SerialBus."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from parkedge_sim.display_sim import DisplaySim
from parkedge_sim.eb_barrier_sim import EbBarrierSim
from parkedge_sim.pty_device import SimBus

from edge.barrier.display import SerialDisplay
from edge.barrier.eb_barrier import EbBarrier
from edge.barrier.interfaces import ArmState, DisplayLine, Health
from edge.barrier.serial_bus import SerialBus

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro, 20)

    return asyncio.run(main())


def test_two_devices_one_line_concurrent_callers() -> None:
    async def main() -> None:
        line = SimBus("pty")
        board = DisplaySim("a0", 1, lines=2, bus=line)
        gate = EbBarrierSim(2, rise_s=0.1, fall_s=0.1, bus=line)
        url = await line.start_all()
        assert board.slave_path == gate.slave_path == url
        bus = SerialBus(url, gap_ms=5, timeout_s=0.1, retries=1)
        display = SerialDisplay(bus, "a0", 1, lines=2)
        barrier = EbBarrier(bus, 2)

        async def shows() -> None:
            for i in range(10):
                # 请 is C7 EB in GB2312: the barrier sees an 0xEB "header" it must reject
                await display.show([DisplayLine(f"请通行 {i}"), DisplayLine("粤B12345")])

        async def polls() -> list[ArmState]:
            states = []
            for _ in range(10):
                states.append(await barrier.read_state())
            return states

        await barrier.pulse_open()
        _, states = await asyncio.gather(shows(), polls())
        assert set(states) <= {ArmState.RISING, ArmState.UP}
        assert board.screen == ["请通行 9", "粤B12345"]
        assert bus.max_in_flight == 1 and bus.retries_total == 0
        assert display.health is Health.OK and barrier.health is Health.OK
        # a dead display does not take the barrier down with it
        board.no_answer()
        await asyncio.gather(
            display.show([DisplayLine("x")]), barrier.read_state(), return_exceptions=True
        )
        assert display.health is Health.DOWN and barrier.health is Health.OK
        await bus.close()
        await line.stop()

    run(main())
