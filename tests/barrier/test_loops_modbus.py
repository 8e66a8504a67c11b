"""ModbusLoops against the real lane simulator: debounce, pulse mode, tailgating, faults."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest
from parkedge_sim.modbus_lane import ModbusLaneSim

from edge.barrier.interfaces import DeviceError, Health, LoopInputs
from edge.barrier.loops import LoopEvent, ModbusLoops
from edge.barrier.modbus_hub import ModbusHub

Body = Callable[[ModbusLaneSim, ModbusLoops, list[LoopEvent]], Awaitable[None]]


def run_loops(body: Body, *, mode: str = "presence", framing: str = "tcp",
              counter_closing: int | None = None, late_after_s: float | None = None) -> None:
    async def main() -> None:
        sim = ModbusLaneSim(framing=framing, rise_s=0.05, fall_s=0.05)
        url = await sim.start()
        hub = ModbusHub(url, framing, timeout_s=0.1, retries=0, reconnect_max_s=0.2)
        loops = ModbusLoops(hub, 1, 4, 5, 6, mode, debounce_ms=20, poll_ms=10,
                            counter_closing=counter_closing, late_after_s=late_after_s)
        events: list[LoopEvent] = []
        loops.subscribe(events.append)
        await loops.start()
        try:
            await body(sim, loops, events)
        finally:
            await loops.stop()
            await hub.close()
            await sim.stop()

    asyncio.run(main())


async def until(predicate: Callable[[], bool], timeout: float = 1.0) -> None:
    async def wait() -> None:
        while not predicate():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(wait(), timeout)


def test_short_glitches_are_ignored_and_real_presence_is_seen() -> None:
    async def body(sim: ModbusLaneSim, loops: ModbusLoops, events: list[LoopEvent]) -> None:
        for _ in range(15):
            sim.set_loop("arming", True)
            await asyncio.sleep(0.005)
            sim.set_loop("arming", False)
            await asyncio.sleep(0.03)
        assert events == []
        sim.set_loop("arming", True)
        await asyncio.sleep(0.05)
        await until(lambda: len(events) == 1)
        assert (events[0].detector, events[0].on) == ("arming", True)
        assert await loops.read() == LoopInputs(arming=True)
        sim.set_loop("arming", False)
        await until(lambda: len(events) == 2)
        assert (events[1].detector, events[1].on) == ("arming", False)

    run_loops(body)


def test_event_stream_delivers_edges_in_order() -> None:
    async def body(sim: ModbusLaneSim, loops: ModbusLoops, events: list[LoopEvent]) -> None:
        stream = loops.events()
        got: list[tuple[str, bool]] = []

        async def consume() -> None:
            async for event in stream:
                got.append((event.detector, event.on))
                if len(got) == 4:
                    return

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0.01)
        for name, on in [
            ("closing", True),
            ("photocell", True),
            ("photocell", False),
            ("closing", False),
        ]:
            sim.set_loop(name, on)
            await asyncio.sleep(0.06)
        await asyncio.wait_for(consumer, 1.0)
        assert got == [
            ("closing", True),
            ("photocell", True),
            ("photocell", False),
            ("closing", False),
        ]

    run_loops(body)


def test_pulse_mode_turns_pulses_into_presence() -> None:
    async def body(sim: ModbusLaneSim, loops: ModbusLoops, events: list[LoopEvent]) -> None:
        for expected in (True, False):
            sim.set_loop("arming", True)  # enter (then leave) pulse
            await asyncio.sleep(0.06)
            sim.set_loop("arming", False)
            await asyncio.sleep(0.06)
            assert (await loops.read()).arming is expected
        assert [(e.detector, e.on) for e in events] == [("arming", True), ("arming", False)]

    run_loops(body, mode="pulse")


def test_passages_beyond_plates_flag_tailgating() -> None:
    async def body(sim: ModbusLaneSim, loops: ModbusLoops, events: list[LoopEvent]) -> None:
        loops.note_plate()
        for _ in range(2):  # two cars over the closing loop on one plate
            sim.set_loop("closing", True)
            await asyncio.sleep(0.06)
            sim.set_loop("closing", False)
            await asyncio.sleep(0.06)
        assert loops.passages == 2
        assert loops.plates == 1
        assert loops.tailgate_suspected
        loops.note_plate()
        assert not loops.tailgate_suspected

    run_loops(body)


@pytest.mark.parametrize(
    ("framing", "fault"), [("tcp", "no_answer"), ("rtu", "bad_crc"), ("tcp", "power_loss")]
)
def test_poll_survives_a_dead_module_and_recovers(
    framing: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(sim: ModbusLaneSim, loops: ModbusLoops, events: list[LoopEvent]) -> None:
        caplog.set_level(logging.DEBUG, logger="edge.barrier.loops")
        sim.set_fault(fault)
        await until(lambda: loops.health is Health.DOWN, 3.0)
        with pytest.raises(DeviceError, match="inputs unreadable"):
            await loops.read()
        await asyncio.sleep(0.3)  # many failed polls
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        sim.set_fault("power_return" if fault == "power_loss" else fault, False)
        sim.set_loop("arming", True)
        await until(lambda: loops.health is Health.OK, 3.0)
        await until(lambda: any(e.detector == "arming" and e.on for e in events), 2.0)
        assert (await loops.read()).arming

    run_loops(body, framing=framing)


def test_flapping_loop_is_mostly_filtered_and_poll_stays_healthy() -> None:
    async def body(sim: ModbusLaneSim, loops: ModbusLoops, events: list[LoopEvent]) -> None:
        sim.set_fault("flapping_loop")
        await asyncio.sleep(0.5)  # ~125 toggles
        sim.set_fault("flapping_loop", False)
        assert loops.health is Health.OK
        assert len(events) < 20
        assert loops.polls_total > 10

    run_loops(body)


def test_bad_mode_is_named() -> None:
    with pytest.raises(ValueError, match="mode"):
        ModbusLoops(ModbusHub("tcp://127.0.0.1:1"), mode="toggle")


# ---------------------------------------------------------------- late polls, the counter


def _stall(seconds: float) -> None:
    """The poller's event loop does not run (a starved box): the simulated module keeps its
    levels and counters, nobody reads them."""
    time.sleep(seconds)


def test_changes_after_a_stall_are_marked_late_and_on_time_ones_are_not() -> None:
    async def body(sim: ModbusLaneSim, loops: ModbusLoops, events: list[LoopEvent]) -> None:
        await asyncio.sleep(0.05)
        sim.set_loop("arming", True)
        await until(lambda: len(events) == 1, 3.0)
        _stall(0.6)
        sim.set_loop("arming", False)
        await until(lambda: len(events) == 2, 3.0)
        assert [(e.on, e.late) for e in events] == [(True, False), (False, True)]
        assert events[1].blind_s >= 0.6
        assert events[0].blind_s < loops.late_after_s
        assert loops.late_polls == 1

    run_loops(body, late_after_s=0.3)  # a loaded test machine: only 0.3 s is late here


def test_counter_puts_back_a_pulse_the_reads_missed_in_its_place() -> None:
    """Arming on; during a stall the car goes over the closing loop and the arming loop clears
    behind it: published as closing on, arming off, closing off (a passage)."""

    async def body(sim: ModbusLaneSim, loops: ModbusLoops, events: list[LoopEvent]) -> None:
        sim.set_loop("arming", True)
        await until(lambda: len(events) == 1, 3.0)
        sim.set_loop("closing", True)
        _stall(0.1)
        sim.set_loop("arming", False)
        _stall(0.1)
        sim.set_loop("closing", False)
        await until(lambda: len(events) == 4, 3.0)
        assert [(e.detector, e.on) for e in events] == [
            ("arming", True), ("closing", True), ("arming", False), ("closing", False)]
        assert loops.missed_pulses == 1 and loops.passages == 1
        await asyncio.sleep(0.1)
        assert len(events) == 4  # nothing twice

    run_loops(body, counter_closing=5)


def test_counter_two_cars_between_two_reads_are_two_passages() -> None:
    async def body(sim: ModbusLaneSim, loops: ModbusLoops, events: list[LoopEvent]) -> None:
        await asyncio.sleep(0.05)
        for _ in range(2):
            sim.set_loop("closing", True)
            sim.set_loop("closing", False)
        await until(lambda: len(events) == 4, 3.0)
        assert [(e.detector, e.on) for e in events] == [("closing", True), ("closing", False)] * 2
        assert loops.passages == 2
        loops.note_plate()
        assert loops.tailgate_suspected  # two over the loop, one plate

    run_loops(body, counter_closing=5)


def test_counter_a_gap_between_two_cars_on_the_loop_is_seen() -> None:
    """On the loop at both reads, but the counter rose: one car left and the next came on."""

    async def body(sim: ModbusLaneSim, loops: ModbusLoops, events: list[LoopEvent]) -> None:
        sim.set_loop("closing", True)
        await until(lambda: len(events) == 1, 3.0)
        sim.set_loop("closing", False)
        sim.set_loop("closing", True)
        await until(lambda: len(events) == 3, 3.0)
        assert [(e.detector, e.on) for e in events] == [
            ("closing", True), ("closing", False), ("closing", True)]
        assert loops.passages == 1

    run_loops(body, counter_closing=5)


def test_counter_seen_pulses_are_not_counted_twice() -> None:
    async def body(sim: ModbusLaneSim, loops: ModbusLoops, events: list[LoopEvent]) -> None:
        for _ in range(3):
            sim.set_loop("closing", True)
            await asyncio.sleep(0.08)
            sim.set_loop("closing", False)
            await asyncio.sleep(0.08)
        await asyncio.sleep(0.05)
        assert [(e.detector, e.on) for e in events] == [("closing", True), ("closing", False)] * 3
        assert loops.missed_pulses == 0 and loops.passages == 3

    run_loops(body, counter_closing=5)


def test_counter_reset_by_a_power_loss_invents_no_passages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body(sim: ModbusLaneSim, loops: ModbusLoops, events: list[LoopEvent]) -> None:
        for _ in range(6):
            sim.set_loop("closing", True)
            await asyncio.sleep(0.06)
            sim.set_loop("closing", False)
            await asyncio.sleep(0.06)
        assert loops.passages == 6
        sim.set_fault("power_loss")
        await until(lambda: loops.health is Health.DOWN, 3.0)
        sim.set_fault("power_return")  # the module's counters start from 0 again
        await until(lambda: loops.health is Health.OK, 3.0)
        await asyncio.sleep(0.1)
        assert loops.passages == 6 and loops.missed_pulses == 0
        sim.set_loop("closing", True)
        sim.set_loop("closing", False)  # unseen by the reads: the counter has it
        await until(lambda: loops.passages == 7, 3.0)
        assert loops.missed_pulses == 1

    run_loops(body, counter_closing=5)


def test_counter_needs_presence_mode() -> None:
    with pytest.raises(ValueError, match="presence"):
        ModbusLoops(ModbusHub("tcp://127.0.0.1:1"), mode="pulse", counter_closing=5)


class ScriptedModule(ModbusLaneSim):
    """The lane simulator's Modbus server answering scripted levels (one per FC02 read) and
    closing-loop counts (one per FC04 read), the last repeated: the exact interleaving of
    reads and a car that a loaded box produces now and then, made to happen every time."""

    def __init__(self, levels: list[tuple[bool, bool]], counts: list[int]) -> None:
        super().__init__(rise_s=0.05, fall_s=0.05)
        self.levels, self.counts = levels, counts

    def discrete_inputs(self) -> list[bool]:
        arming, closing = self.levels.pop(0) if len(self.levels) > 1 else self.levels[0]
        self.arming, self.closing = arming, closing
        return super().discrete_inputs()

    async def _get(self, device_id: int, fc: int, address: int, count: int) -> object:
        if fc == 4:
            self.counters[5] = self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]
        return await super()._get(device_id, fc, address, count)


def test_counter_a_pulse_cut_short_by_late_re_reads_is_placed_before_the_arming_clears() -> None:
    """Poll 2 reads the car on the closing loop with the arming loop still on, its re-reads
    come after the car left both: the closing change is not confirmed. The counter has the
    pulse; it is published by poll 3 with the arming loop clearing inside it (closing on,
    arming off, closing off), not before it (closing on/off with the arming loop still on
    made the lane take the arming loop for a next car waiting: `left_before_read`, seen in
    the full cut)."""
    A, C = True, True
    levels = [(A, not C)] * 3 + [(A, C), (not A, not C), (not A, not C)] + [(not A, not C)]
    counts = [0, 1]

    async def main() -> None:
        sim = ScriptedModule(levels, counts)
        url = await sim.start()
        hub = ModbusHub(url, "tcp", timeout_s=0.3, retries=0)
        loops = ModbusLoops(hub, poll_ms=10, debounce_ms=10, counter_closing=5)
        events: list[LoopEvent] = []
        loops.subscribe(events.append)
        try:
            for _ in range(4):
                await loops.poll_once()
        finally:
            await hub.close()
            await sim.stop()
        assert [(e.detector, e.on) for e in events] == [
            ("arming", True), ("closing", True), ("arming", False), ("closing", False)]
        assert loops.missed_pulses == 1 and loops.passages == 1

    asyncio.run(main())
