"""Modbus relay barriers against the real pymodbus lane simulator over TCP and RTU-over-socket."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest
from parkedge_sim.modbus_lane import ModbusLaneSim

from edge.barrier.interfaces import ArmState, DeviceError, Health
from edge.barrier.modbus_barrier import (
    ModbusCoilBarrier,
    ModbusRegisterBarrier,
    arm_state,
)
from edge.barrier.modbus_hub import ModbusHub

BarrierCls = type[ModbusCoilBarrier] | type[ModbusRegisterBarrier]
Body = Callable[[ModbusLaneSim, ModbusCoilBarrier], Awaitable[None]]


def run_lane(
    framing: str, body: Body, cls: BarrierCls = ModbusCoilBarrier, **sim_kw: float
) -> None:
    async def main() -> None:
        sim = ModbusLaneSim(framing=framing, rise_s=0.05, fall_s=0.05, hold_s=0.05, **sim_kw)
        url = await sim.start()
        hub = ModbusHub(url, framing, timeout_s=0.1, retries=1, gap_ms=0, reconnect_max_s=0.2)
        barrier = cls(hub, 1, 1, 2, 60, name=f"barrier-{framing}")
        barrier.release_deadline_s = 0.3
        try:
            await body(sim, barrier)
        finally:
            sim.clear_faults()
            await asyncio.wait_for(barrier.drain(), 5.0)
            await hub.close()
            await sim.stop()
        assert sim.stats.latched == [], "a relay was left latched"

    asyncio.run(main())


FRAMINGS = ["tcp", "rtu"]


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("cls", [ModbusCoilBarrier, ModbusRegisterBarrier])
def test_pulse_open_raises_arm_and_releases_relay(framing: str, cls: BarrierCls) -> None:
    async def body(sim: ModbusLaneSim, barrier: ModbusCoilBarrier) -> None:
        assert await barrier.read_state() is ArmState.DOWN
        t0 = time.monotonic()
        await barrier.pulse_open()
        elapsed = time.monotonic() - t0
        assert 0.06 <= elapsed < 0.5
        assert sim.relays[1] is False  # released
        assert sim.stats.opens == 1
        assert await barrier.confirm_open(1.0)
        assert await barrier.read_state() is ArmState.UP
        assert barrier.health is Health.OK

    run_lane(framing, body, cls)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_state_between_limits_follows_last_command(framing: str) -> None:
    async def body(sim: ModbusLaneSim, barrier: ModbusCoilBarrier) -> None:
        sim.rise_s = 5.0  # slow arm: it is between the limits after the pulse
        await barrier.pulse_open()
        assert await barrier.read_state() is ArmState.RISING
        sim.set_fault("barrier_fault")
        assert await barrier.read_state() is ArmState.FAULT

    run_lane(framing, body)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_on_answered_is_called_when_the_on_is_answered_not_after_the_pulse(framing: str) -> None:
    async def body(sim: ModbusLaneSim, barrier: ModbusCoilBarrier) -> None:
        barrier.pulse_s = 1.0
        answered = asyncio.Event()
        task = asyncio.create_task(barrier.pulse_open(on_answered=answered.set))
        await asyncio.wait_for(answered.wait(), 0.5)
        assert sim.relays[1] is True and not task.done()  # answered, still holding
        await task
        assert sim.relays[1] is False

    run_lane(framing, body)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_on_answered_is_called_when_the_on_fails(framing: str) -> None:
    async def body(sim: ModbusLaneSim, barrier: ModbusCoilBarrier) -> None:
        sim.set_fault("no_answer", True)
        answered = asyncio.Event()
        with pytest.raises(DeviceError):
            await barrier.pulse_open(on_answered=answered.set)
        assert answered.is_set()  # a screen waiting on it is not kept blank

    run_lane(framing, body)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_cancel_during_pulse_still_releases(framing: str) -> None:
    async def body(sim: ModbusLaneSim, barrier: ModbusCoilBarrier) -> None:
        barrier.pulse_s = 1.0
        task = asyncio.create_task(barrier.pulse_open())
        for _ in range(100):
            await asyncio.sleep(0.01)
            if sim.relays[1]:
                break
        assert sim.relays[1] is True
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sim.relays[1] is False

    run_lane(framing, body)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_double_cancel_during_release_still_releases(framing: str) -> None:
    async def body(sim: ModbusLaneSim, barrier: ModbusCoilBarrier) -> None:
        barrier.pulse_s = 1.0
        task = asyncio.create_task(barrier.pulse_open())
        while not sim.relays[1]:
            await asyncio.sleep(0.005)
        sim.set_fault("slow_reply", True, 0.05)  # the OFF write takes a while
        task.cancel()
        await asyncio.sleep(0.01)
        task.cancel()  # cancelled again while releasing
        with pytest.raises(asyncio.CancelledError):
            await task
        await barrier.drain()
        assert sim.relays[1] is False

    run_lane(framing, body)


@pytest.mark.parametrize(
    ("framing", "fault"),
    [
        ("tcp", "no_answer"),
        ("rtu", "no_answer"),
        ("rtu", "bad_crc"),
        ("tcp", "bad_crc"),
        ("tcp", "slow_reply"),
        ("rtu", "slow_reply"),
        ("tcp", "power_loss"),
    ],
)
def test_fault_goes_down_logs_once_and_recovers(
    framing: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(sim: ModbusLaneSim, barrier: ModbusCoilBarrier) -> None:
        caplog.set_level(logging.DEBUG, logger="edge.barrier.modbus_barrier")
        sim.set_fault(fault, True, 0.5)
        for _ in range(3):
            with pytest.raises(DeviceError):
                await barrier.read_state()
        with pytest.raises(DeviceError):
            await barrier.pulse_open()
        assert barrier.health is Health.DOWN
        errors = [
            r
            for r in caplog.records
            if r.name == "edge.barrier.modbus_barrier" and r.levelno >= logging.ERROR
        ]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        if fault == "power_loss":
            sim.set_fault("power_return")
        else:
            sim.set_fault(fault, False)
        await asyncio.sleep(0.3)  # past the hub's reconnect back-off
        state = await barrier.read_state()
        if fault in ("bad_crc", "slow_reply"):
            # the device did act on the ON; only its reply was lost: the arm rose
            assert sim.stats.opens >= 1
            assert state in (ArmState.UP, ArmState.RISING)
        else:
            assert sim.stats.opens == 0
            assert state is ArmState.DOWN
        assert barrier.health is Health.OK
        await barrier.pulse_open()
        assert await barrier.confirm_open(1.0)

    run_lane(framing, body)


@pytest.mark.parametrize("fault", ["stuck_arm", "never_up"])
def test_confirm_open_detects_arm_that_does_not_rise(fault: str) -> None:
    async def body(sim: ModbusLaneSim, barrier: ModbusCoilBarrier) -> None:
        sim.set_fault(fault)
        await barrier.pulse_open()
        t0 = time.monotonic()
        assert await barrier.confirm_open(0.3) is False
        assert 0.25 <= time.monotonic() - t0 < 0.6
        expected = ArmState.DOWN if fault == "stuck_arm" else ArmState.RISING
        assert await barrier.read_state() is expected

    run_lane("tcp", body)


def test_off_that_fails_is_retried_until_it_sticks() -> None:
    async def body(sim: ModbusLaneSim, barrier: ModbusCoilBarrier) -> None:
        barrier.release_deadline_s = 0.2
        task = asyncio.create_task(barrier.pulse_open())
        while not sim.relays[1]:
            await asyncio.sleep(0.005)
        sim.set_fault("no_answer")  # the OFF cannot get through
        with pytest.raises(DeviceError, match="OFF not confirmed"):
            await task
        assert sim.relays[1] is True
        assert barrier.release_failures == 1
        sim.set_fault("no_answer", False)
        await asyncio.wait_for(barrier.drain(), 3.0)
        assert sim.relays[1] is False

    run_lane("tcp", body)


def test_unknown_unit_is_silent_like_a_real_bus() -> None:
    async def body(sim: ModbusLaneSim, barrier: ModbusCoilBarrier) -> None:
        barrier.unit = 7
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match=r"No response|TimeoutError"):
            await barrier.read_state()
        assert time.monotonic() - t0 >= 0.1  # waited for the timeout, no exception reply
        assert sim.stats.silent >= 1

    run_lane("rtu", body)


@pytest.mark.parametrize(
    ("up", "down", "fault", "last", "expected"),
    [
        (True, False, False, None, ArmState.UP),
        (False, True, False, "open", ArmState.DOWN),
        (False, False, False, "open", ArmState.RISING),
        (False, False, False, "close", ArmState.FALLING),
        (False, False, False, None, ArmState.UNKNOWN),
        (True, True, False, None, ArmState.FAULT),
        (True, False, True, "open", ArmState.FAULT),
    ],
)
def test_arm_state_table(
    up: bool, down: bool, fault: bool, last: str | None, expected: ArmState
) -> None:
    assert arm_state(up=up, down=down, fault=fault, last_command=last) is expected


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="pulse_ms"):
        ModbusCoilBarrier(ModbusHub("tcp://127.0.0.1:1"), 1, 1, 2, 5)
    with pytest.raises(ValueError, match=r"channels 1\.\.8"):
        ModbusRegisterBarrier(ModbusHub("tcp://127.0.0.1:1"), 1, 9, 2, 300)
    with pytest.raises(ValueError, match="socket://"):
        ModbusHub("socket://127.0.0.1:5020", "tcp")
    with pytest.raises(ValueError, match="must start with"):
        ModbusHub("http://127.0.0.1:5020")


@pytest.mark.parametrize("framing", FRAMINGS)
def test_hub_serialises_concurrent_callers_and_keeps_the_gap(framing: str) -> None:
    async def main() -> None:
        sim = ModbusLaneSim(framing=framing)
        url = await sim.start()
        hub = ModbusHub(url, framing, timeout_s=0.5, retries=0, gap_ms=5)
        try:
            sim.set_fault("slow_reply", True, 0.005)  # replies overlap if two are in flight
            t0 = time.monotonic()
            results = await asyncio.gather(
                *(hub.read_discrete_inputs(1, 1, 6) for _ in range(10)),
                *(hub.write_coil(1, 4, bool(i % 2)) for i in range(10)),
            )
            elapsed = time.monotonic() - t0
            assert len(results) == 20
            assert sim.stats.max_in_flight == 1
            assert elapsed >= 20 * (0.005 + 0.005) * 0.9  # reply time + gap, one at a time
            await hub.write_coil(1, 4, False)
        finally:
            await hub.close()
            await sim.stop()

    asyncio.run(main())
