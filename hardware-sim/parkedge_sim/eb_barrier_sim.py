"""A barrier controller speaking the ``EB`` RS-485 protocol, with the physics of a real arm.

The arm takes ``rise_s``/``fall_s`` to move, powers on down, auto-closes once the vehicles it
was opened for have crossed (and cleared) the closing loop, and rises again if the closing loop
or the photocell is occupied while it falls (anti-crush). Tests set the inputs with
``set_loops`` and inject faults: the serial ones of ``SerialDeviceSim`` plus ``stuck`` (the arm
never moves, no fault reported), ``never_up`` (the arm stalls half way and reports a fault) and
``flap(loop, period_s)`` (a detector toggling on its own). On power loss the arm holds (brake) or,
with ``on_power_loss="open"``, rises on its capacitor; power always returns with the arm down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Literal

from edge.barrier.codecs import eb_barrier as eb
from edge.barrier.codecs.eb_barrier import EbCommand, EbStatus
from edge.barrier.interfaces import ArmState
from parkedge_sim.pty_device import SerialDeviceSim, SimBus, Transport

STALL_AT = 0.6  # where a ``never_up`` arm stops
LoopName = Literal["arming", "closing", "photocell"]


class EbBarrierSim(SerialDeviceSim):
    def __init__(
        self,
        address: int = 1,
        *,
        rise_s: float = 1.0,
        fall_s: float = 1.0,
        auto_close_s: float | None = None,
        on_power_loss: Literal["hold", "open"] = "hold",
        tick_s: float = 0.01,
        transport: Transport = "pty",
        port: int = 0,
        bus: SimBus | None = None,
    ) -> None:
        super().__init__(f"eb-barrier-sim@{address}", transport=transport, port=port, bus=bus)
        if rise_s <= 0 or fall_s <= 0:
            raise ValueError(f"rise_s and fall_s must be > 0, got {rise_s}, {fall_s}")
        self.address = address
        self.rise_s = rise_s
        self.fall_s = fall_s
        self.auto_close_s = auto_close_s  # close an opened arm nobody drove through
        if on_power_loss not in ("hold", "open"):
            raise ValueError(f"on_power_loss must be 'hold' or 'open', got {on_power_loss!r}")
        self.on_power_loss = on_power_loss
        self._flap: LoopName | None = None
        self._flap_period = 0.0
        self._flap_elapsed = 0.0
        self.tick_s = tick_s
        self._decoder = eb.Decoder()
        self.position = 0.0  # 0 down .. 1 up
        self.motion = 0  # +1 rising, -1 falling, 0 still
        self.arming = False
        self.closing = False
        self.photocell = False
        self.forbidden = False
        self.held = False
        self.fault = False
        self.stuck = False
        self.never_up = False
        self.pending_vehicles = 0
        self.frames_ok = 0
        self.commands: list[EbCommand] = []
        self.anti_crush_rises = 0
        self.passages = 0
        self._up_for = 0.0
        self._task: asyncio.Task[None] | None = None

    # -- inspection -------------------------------------------------------------------------
    @property
    def frames_bad(self) -> int:
        return self._decoder.bad_frames

    @property
    def arm(self) -> ArmState:
        if self.motion > 0:
            return ArmState.RISING
        if self.motion < 0:
            return ArmState.FALLING
        if self.position >= 1.0:
            return ArmState.UP
        if self.position <= 0.0:
            return ArmState.DOWN
        return ArmState.RISING if self.fault else ArmState.FALLING  # stopped half way

    def status(self) -> EbStatus:
        return EbStatus(
            arm=self.arm,
            fault=self.fault,
            forbidden=self.forbidden,
            arming=self.arming,
            closing=self.closing,
            photocell=self.photocell,
            held=self.held,
        )

    def snapshot(self) -> dict[str, object]:
        """A JSON-able view for the bench page."""
        return {
            "arm": self.arm.value,
            "position": round(self.position, 3),
            "fault": self.fault,
            "forbidden": self.forbidden,
            "held": self.held,
            "arming": self.arming,
            "closing": self.closing,
            "photocell": self.photocell,
            "pending_vehicles": self.pending_vehicles,
            "powered": self.faults.powered,
            "faults": self.active_faults(),
        }

    async def wait_for(
        self, predicate: Callable[[EbBarrierSim], bool], timeout: float = 3.0
    ) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await asyncio.sleep(0.005)

    # -- inputs set by tests / scenarios ----------------------------------------------------
    def set_loops(
        self,
        *,
        arming: bool | None = None,
        closing: bool | None = None,
        photocell: bool | None = None,
    ) -> None:
        if arming is not None:
            self.arming = arming
        if photocell is not None:
            self.photocell = photocell
        if closing is not None:
            was = self.closing
            self.closing = closing
            if was and not closing:
                self._vehicle_crossed()
        self._anti_crush()

    fault_names = (
        *SerialDeviceSim.fault_names,
        "stuck_arm",
        "never_up",
        "flapping_loop",
        "barrier_fault",
    )

    def _set_device_fault(self, name: str, on: bool, value: float) -> bool:
        if name == "stuck_arm":
            self.stuck = on
        elif name == "never_up":
            self.never_up = on
        elif name == "flapping_loop":  # the arming loop, as in the Modbus lane simulator
            self.flap("arming" if on else None, value or 0.2)
        elif name == "barrier_fault":
            self.fault = on
        else:
            return False
        return True

    def active_faults(self) -> dict[str, object]:
        return {
            **super().active_faults(),
            "stuck_arm": self.stuck,
            "never_up": self.never_up,
            "flapping_loop": self._flap,
            "barrier_fault": self.fault,
        }

    def clear_faults(self) -> None:
        self.stuck = False
        self.never_up = False
        self.flap(None)
        super().clear_faults()

    def set_loop(self, name: str, on: bool) -> None:
        """Set one detector by name (the Modbus lane simulator's spelling)."""
        if name not in ("arming", "closing", "photocell"):
            raise ValueError(f"unknown detector {name!r}: arming, closing or photocell")
        self.set_loops(**{name: on})

    def flap(self, loop: LoopName | None, period_s: float = 0.2) -> None:
        """Make ``loop`` toggle every ``period_s`` by itself (None stops it, leaving it clear)."""
        if loop is not None and loop not in ("arming", "closing", "photocell"):
            raise ValueError(f"loop must be arming, closing or photocell, got {loop!r}")
        if period_s <= 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        if self._flap is not None and loop is None:
            self.set_loops(**{self._flap: False})
        self._flap, self._flap_period, self._flap_elapsed = loop, period_s, 0.0

    def power_loss(self) -> None:
        super().power_loss()
        self.motion = 0
        if self.on_power_loss == "open":
            self.position = 1.0  # the capacitor lifts the arm

    def _vehicle_crossed(self) -> None:
        self.passages += 1
        if self.pending_vehicles > 0:
            self.pending_vehicles -= 1
            if self.pending_vehicles == 0 and not self.held:
                self._lower()

    def _anti_crush(self) -> None:
        if self.motion < 0 and (self.closing or self.photocell):
            self.anti_crush_rises += 1
            self._raise()

    def _raise(self) -> None:
        if not self.faults.powered or self.stuck:
            return
        self.motion = +1 if self.position < 1.0 else 0

    def _lower(self) -> None:
        if not self.faults.powered or self.stuck:
            return
        if self.closing or self.photocell:
            return  # anti-crush: never start down onto something
        self.motion = -1 if self.position > 0.0 else 0

    # -- physics ----------------------------------------------------------------------------
    async def _started(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def _stopping(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            self.step(now - last)
            last = now

    def step(self, dt: float) -> None:
        """Advance the arm by ``dt`` seconds (public so a scenario can run faster than time)."""
        if not self.faults.powered:
            return
        if self._flap is not None:
            self._flap_elapsed += dt
            if self._flap_elapsed >= self._flap_period:
                self._flap_elapsed = 0.0
                self.set_loops(**{self._flap: not getattr(self, self._flap)})
        self._anti_crush()
        if self.motion > 0:
            self.position = min(1.0, self.position + dt / self.rise_s)
            if self.never_up and self.position >= STALL_AT:
                self.position = STALL_AT
                self.motion = 0
                self.fault = True
            elif self.position >= 1.0:
                self.motion = 0
                self._up_for = 0.0
        elif self.motion < 0:
            self.position = max(0.0, self.position - dt / self.fall_s)
            if self.position <= 0.0:
                self.motion = 0
        elif self.position >= 1.0 and not self.held and self.auto_close_s is not None:
            self._up_for += dt
            if self._up_for >= self.auto_close_s and not self.closing:
                self.pending_vehicles = 0
                self._lower()

    def on_power_return(self) -> None:
        self.position = 0.0
        self.motion = 0
        self.pending_vehicles = 0
        self.held = False
        self.forbidden = False
        self.fault = False

    # -- protocol ---------------------------------------------------------------------------
    def reset_decoder(self) -> None:
        self._decoder.reset()

    def decoder_pending(self) -> int:
        return self._decoder.pending

    def handle(self, data: bytes) -> list[bytes]:
        replies = []
        for frame in self._decoder.feed(data):
            if frame.address != self.address or frame.is_reply:
                continue
            try:
                cmd = EbCommand(frame.cmd)
            except ValueError:
                continue  # unknown command: a real controller stays silent
            self.frames_ok += 1
            self.commands.append(cmd)
            self._apply(cmd, frame.data)
            replies.append(eb.reply(self.address, frame.cmd, self.status()))
        return replies

    def _apply(self, cmd: EbCommand, data: int) -> None:
        if cmd in (EbCommand.OPEN, EbCommand.OPEN_N):
            if self.forbidden:
                return
            n = max(1, data) if cmd is EbCommand.OPEN_N else 1
            self.pending_vehicles = max(self.pending_vehicles, n)
            self._raise()
        elif cmd is EbCommand.UP:
            if self.forbidden:
                return
            self.held = True
            self._raise()
        elif cmd is EbCommand.DOWN:
            self.held = False
            self.pending_vehicles = 0
            self._lower()
        elif cmd is EbCommand.FORBID:
            self.forbidden = True
        elif cmd is EbCommand.RESTORE:
            self.forbidden = False
            self.held = False
            self.fault = False
