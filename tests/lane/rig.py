"""A whole lane in one process, every part real: the Modbus lane simulator (relay module,
arm physics, loops), the LED board on a real pty, the real drivers, a real SQLite ledger and
the real pricing bundle. Plates come through the operator's manual source, which is the same
path a camera read takes into the lane."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from parkedge_sim.display_sim import DisplaySim
from parkedge_sim.modbus_lane import ModbusLaneSim

from edge.barrier.display import SerialDisplay
from edge.barrier.loops import LoopEvent, ModbusLoops
from edge.barrier.modbus_barrier import ModbusCoilBarrier
from edge.barrier.modbus_hub import ModbusHub
from edge.barrier.serial_bus import SerialBus
from edge.lane import machine as m
from edge.lane.decide import Decider, LanePolicy
from edge.lane.runner import EventClock, LaneRunner
from edge.lpr.manual import ManualPlateSource
from edge.pricing import load_bundle
from edge.rules_holder import RulesHolder
from edge.store import Store

REPO = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Shanghai")


@dataclass
class Rig:
    sim: ModbusLaneSim
    board: DisplaySim
    runner: LaneRunner
    store: Store
    plates: ManualPlateSource
    hub: ModbusHub
    bus: SerialBus
    loops: ModbusLoops
    events: list[LoopEvent] = field(default_factory=list)  # what the loops published (make_rig)

    @property
    def state(self) -> m.State:
        return self.runner.lane.state

    async def until(self, pred: Callable[[], bool], timeout: float = 3.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            await asyncio.sleep(0.01)
        return pred()

    async def arrive(self, plate: str | None, at: datetime) -> None:
        self.sim.set_loop("arming", True)
        await self.until(lambda: self.runner.lane.arming, 2.0)
        if plate:
            self.plates.submit(plate, at, "test")

    async def drive_through(self) -> bool:
        if not await self.until(lambda: self.sim.arm_up, 3.0):
            return False
        self.sim.set_loop("closing", True)
        await asyncio.sleep(0.08)
        self.sim.set_loop("arming", False)
        await asyncio.sleep(0.08)
        self.sim.set_loop("closing", False)
        return await self.until(lambda: self.state in (m.State.IDLE, m.State.WAIT_PLATE), 3.0)

    async def close(self) -> None:
        await self.runner.stop()
        await self.loops.stop()
        await self.hub.close()
        await self.bus.close()
        await self.board.stop()
        await self.sim.stop()
        self.store.close()


async def make_rig(
    tmp: Path,
    direction: str,
    *,
    rules: Path | None = None,
    timeouts: m.Timeouts | None = None,
    unknown_plate: str = "hold",
    lane_id: str | None = None,
    pulse_ms: int = 60,
    poll_ms: int = 10,
    debounce_ms: int = 5,
    late_after_s: float | None = None,
    counter_closing: int | None = None,
) -> Rig:
    """The lane, started. ``late_after_s`` and ``counter_closing`` reach ModbusLoops only when
    set (so a test of them fails on the behaviour, not on the keyword, against code without
    them); every event the loops publish is in ``Rig.events``."""
    sim = ModbusLaneSim(rise_s=0.05, fall_s=0.05, hold_s=0.2)
    url = await sim.start()
    board = DisplaySim("a0")
    path = await board.start()
    hub = ModbusHub(url, "tcp", timeout_s=0.3, retries=1)
    barrier = ModbusCoilBarrier(hub, pulse_ms=pulse_ms)
    extra = {k: v for k, v in (("counter_closing", counter_closing),
                               ("late_after_s", late_after_s)) if v is not None}
    loops = ModbusLoops(hub, poll_ms=poll_ms, debounce_ms=debounce_ms,
                        **extra)  # type: ignore[arg-type]
    events: list[LoopEvent] = []
    loops.subscribe(events.append)
    bus = SerialBus(path, timeout_s=0.3, retries=1, gap_ms=1)
    display = SerialDisplay(bus, "a0", 1, lines=4, columns=16)
    lid = lane_id or ("E1" if direction == "entry" else "X1")
    store = Store.open(tmp / "site.db", lid)
    bundle = load_bundle(rules or REPO / "config" / "rules.example.toml")
    clock = EventClock(TZ, use_events=True)
    holder = RulesHolder(bundle, clock.now)
    policy = LanePolicy(lid, direction, TZ, unknown_plate=unknown_plate)  # type: ignore[arg-type]
    decider = Decider(store, holder.current, policy)
    plates = ManualPlateSource(lid)
    runner = LaneRunner(
        lane=m.Lane(direction=direction, timeouts=timeouts or m.Timeouts(arm_s=2.0)),  # type: ignore[arg-type]
        decider=decider,
        store=store,
        barrier=barrier,
        loops=loops,
        display=display,
        plates=plates,
        clock=clock,
        idle_lines=["欢迎光临", "Welcome"],
    )
    await loops.start()
    await runner.start()
    return Rig(sim, board, runner, store, plates, hub, bus, loops, events)
