"""EbBarrier against EbBarrierSim over real ptys: arm physics, loops, forbid, every fault."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest
from parkedge_sim.eb_barrier_sim import EbBarrierSim
from parkedge_sim.pty_device import Transport

from edge.barrier.codecs.eb_barrier import EbCommand
from edge.barrier.eb_barrier import BarrierRefused, EbBarrier, EbStatusLoops
from edge.barrier.interfaces import ArmState, Barrier, DeviceError, Health, LoopInputs, Loops
from edge.barrier.serial_bus import SerialBus

T = TypeVar("T")
LOGGER = "test.eb"
RISE = 0.15


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro, 20)

    return asyncio.run(main())


@asynccontextmanager
async def lane_barrier(
    transport: Transport = "pty",
) -> AsyncIterator[tuple[EbBarrierSim, EbBarrier]]:
    sim = EbBarrierSim(3, rise_s=RISE, fall_s=RISE, transport=transport)
    bus = SerialBus(await sim.start(), gap_ms=0, timeout_s=0.05, retries=1)
    barrier = EbBarrier(bus, 3, logger=logging.getLogger(LOGGER))
    try:
        yield sim, barrier
    finally:
        await bus.close()
        await sim.stop()


async def wait_state(barrier: EbBarrier, want: ArmState, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while await barrier.read_state() is not want:
            await asyncio.sleep(0.01)


def test_open_rises_then_auto_closes_after_the_closing_loop_clears() -> None:
    async def main() -> None:
        async with lane_barrier() as (sim, barrier):
            b: Barrier = barrier
            assert await b.read_state() is ArmState.DOWN  # powers on down
            await b.pulse_open()
            assert await b.read_state() is ArmState.RISING
            await wait_state(barrier, ArmState.UP)
            sim.set_loops(closing=True)
            await asyncio.sleep(RISE)
            assert await b.read_state() is ArmState.UP  # stays up while the car is under it
            sim.set_loops(closing=False)
            assert await b.read_state() is ArmState.FALLING
            await wait_state(barrier, ArmState.DOWN)
            assert sim.commands.count(EbCommand.OPEN) == 1 and sim.passages == 1

    run(main())


def test_on_answered_follows_the_open_echo_and_a_failed_open() -> None:
    async def main() -> None:
        async with lane_barrier() as (sim, barrier):
            calls: list[int] = []
            await barrier.pulse_open(on_answered=lambda: calls.append(len(sim.commands)))
            assert calls == [sim.commands.count(EbCommand.OPEN)] == [1]  # after the echo
            sim.set_fault("no_answer", True)
            with pytest.raises(DeviceError):
                await barrier.pulse_open(on_answered=lambda: calls.append(-1))
            assert calls[-1] == -1  # a screen waiting on it is not kept blank

    run(main())


def test_anti_crush_rises_again_when_the_photocell_is_broken() -> None:
    async def main() -> None:
        async with lane_barrier() as (sim, barrier):
            await barrier.pulse_open()
            await wait_state(barrier, ArmState.UP)
            await barrier.pulse_close()
            assert await barrier.read_state() is ArmState.FALLING
            await asyncio.sleep(RISE / 3)  # part way down
            sim.set_loops(photocell=True)
            assert await barrier.read_state() is ArmState.RISING
            await wait_state(barrier, ArmState.UP)
            assert sim.anti_crush_rises == 1
            await barrier.pulse_close()  # refused by the controller while the beam is broken
            assert await barrier.read_state() is ArmState.UP

    run(main())


def test_convoy_and_hold_and_forbid() -> None:
    async def main() -> None:
        async with lane_barrier() as (sim, barrier):
            await barrier.open_for(2)
            await wait_state(barrier, ArmState.UP)
            sim.set_loops(closing=True)
            sim.set_loops(closing=False)
            assert sim.arm is ArmState.UP and sim.pending_vehicles == 1
            sim.set_loops(closing=True)
            sim.set_loops(closing=False)
            await wait_state(barrier, ArmState.DOWN)
            await barrier.command(EbCommand.FORBID)
            with pytest.raises(BarrierRefused, match="forbid"):
                await barrier.pulse_open()
            assert barrier.health is Health.OK  # it answered: refusing is not a link fault
            await barrier.command(EbCommand.RESTORE)
            await barrier.pulse_open()
            await wait_state(barrier, ArmState.UP)

    run(main())


def test_loops_read_from_the_barrier_status() -> None:
    async def main() -> None:
        async with lane_barrier() as (sim, barrier):
            loops: Loops = EbStatusLoops(barrier)
            assert await loops.read() == LoopInputs()
            sim.set_loops(arming=True, photocell=True)
            assert await loops.read() == LoopInputs(arming=True, photocell=True)
            sim.no_answer()
            with pytest.raises(DeviceError):
                await loops.read()
            assert loops.health is Health.DOWN

    run(main())


def test_arm_that_never_reaches_up_reports_fault_and_stuck_arm_stays_down() -> None:
    async def main() -> None:
        async with lane_barrier() as (sim, barrier):
            sim.never_up = True
            await barrier.pulse_open()
            await wait_state(barrier, ArmState.FAULT)
            assert barrier.last_status is not None and barrier.last_status.fault
            sim.never_up = False
            await barrier.command(EbCommand.RESTORE)  # clears the latched fault
            sim.power_loss()
            sim.power_return()
            sim.stuck = True
            await barrier.pulse_open()  # the controller takes the command ...
            await asyncio.sleep(RISE * 2)
            assert await barrier.read_state() is ArmState.DOWN  # ... but the arm never moves

    run(main())


FAULTS: dict[str, tuple[Callable[[EbBarrierSim], None], Callable[[EbBarrierSim], None]]] = {
    "no_answer": (lambda s: s.no_answer(), lambda s: s.no_answer(False)),
    "bad_checksum": (lambda s: s.bad_checksum(), lambda s: s.bad_checksum(False)),
    "slow_reply": (lambda s: s.slow_reply(1.0), lambda s: s.slow_reply(0)),
    "power_loss": (lambda s: s.power_loss(), lambda s: s.power_return()),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_reports_down_logs_once_and_recovers(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    inject, clear = FAULTS[fault]

    async def main() -> None:
        async with lane_barrier() as (sim, barrier):
            await barrier.pulse_open()
            await wait_state(barrier, ArmState.UP)
            inject(sim)
            for _ in range(3):
                with pytest.raises(DeviceError, match="no valid reply"):
                    await barrier.read_state()
            with pytest.raises(DeviceError):
                await barrier.pulse_open()
            assert barrier.health is Health.DOWN
            clear(sim)
            await asyncio.sleep(0.25)
            state = await barrier.read_state()
            assert barrier.health is Health.OK
            # power returns with the arm down; otherwise the arm stayed where it was
            assert state is (ArmState.DOWN if fault == "power_loss" else ArmState.UP)

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        run(main())
    mine = [r for r in caplog.records if r.name == LOGGER]
    assert [r.levelno for r in mine if r.levelno >= logging.WARNING] == [
        logging.ERROR,
        logging.WARNING,
    ]


def test_over_socket_url() -> None:
    async def main() -> None:
        async with lane_barrier("tcp") as (sim, barrier):
            await barrier.pulse_open()
            await wait_state(barrier, ArmState.UP)
            assert sim.slave_path is not None and sim.slave_path.startswith("socket://")

    run(main())


def test_bad_constructor_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="address"):
        EbBarrier(SerialBus("loop://"), 300)
    with pytest.raises(ValueError, match="rise_s"):
        EbBarrierSim(1, rise_s=0)


def test_power_loss_modes_and_flapping_loop() -> None:
    async def main() -> None:
        sim = EbBarrierSim(1, rise_s=RISE, fall_s=RISE, on_power_loss="open")
        bus = SerialBus(await sim.start(), gap_ms=0, timeout_s=0.05, retries=0)
        barrier = EbBarrier(bus, 1)
        sim.power_loss()
        assert sim.arm is ArmState.UP  # capacitor model opens on power loss
        with pytest.raises(DeviceError):
            await barrier.read_state()
        sim.power_return()
        assert await barrier.read_state() is ArmState.DOWN
        sim.flap("closing", 0.02)
        seen = set()
        for _ in range(20):
            seen.add((await barrier.read_status()).closing)
            await asyncio.sleep(0.01)
        assert seen == {True, False} and sim.passages >= 2
        sim.flap(None)
        assert (await barrier.read_status()).closing is False
        with pytest.raises(ValueError, match="loop must be"):
            sim.flap("rear")  # type: ignore[arg-type]
        await bus.close()
        await sim.stop()

    run(main())


def test_auto_close_when_nobody_drives_through() -> None:
    async def main() -> None:
        sim = EbBarrierSim(1, rise_s=RISE, fall_s=RISE, auto_close_s=0.1)
        bus = SerialBus(await sim.start(), gap_ms=0, timeout_s=0.05)
        barrier = EbBarrier(bus, 1)
        await barrier.pulse_open()
        await wait_state(barrier, ArmState.UP)
        await wait_state(barrier, ArmState.DOWN)  # closed by the timer, no vehicle crossed
        assert sim.passages == 0
        await bus.close()
        await sim.stop()

    run(main())


def test_faults_and_loops_by_name_as_the_lane_composer_uses_them() -> None:
    async def main() -> None:
        async with lane_barrier() as (sim, barrier):
            sim.set_loop("closing", True)
            assert (await barrier.read_status()).closing
            sim.set_fault("bad_crc")
            with pytest.raises(DeviceError):
                await barrier.read_state()
            sim.set_fault("bad_crc", on=False)
            sim.set_fault("barrier_fault")
            assert await barrier.read_state() is ArmState.FAULT
            sim.set_fault("stuck_arm")
            sim.set_fault("flapping_loop", value=0.05)
            assert sim.active_faults()["stuck_arm"] is True
            assert sim.snapshot()["faults"] == sim.active_faults()
            sim.clear_faults()
            assert not sim.stuck and sim.active_faults()["flapping_loop"] is None
            with pytest.raises(ValueError, match="unknown fault 'gremlins'"):
                sim.set_fault("gremlins")
            with pytest.raises(ValueError, match="unknown detector"):
                sim.set_loop("rear", True)

    run(main())
