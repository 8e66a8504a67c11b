"""A simulated lane behind a Modbus relay/IO module: a real pymodbus server plus arm physics.

Why: technicians and tests need the barrier, its limit switches, the loops and the photocell
without hardware, behaving like the field does: the arm takes time, auto-closes after the
closing loop clears, rises again when something is under it (anti-crush), powers on down, and
a bus that has lost a device stays *silent* (pymodbus answers exception 4, so the datastore
raises ``NoSuchIdException`` with ``ignore_missing_devices`` on).

Address map of the module (device id ``unit``; protocol addresses, as in the request PDU:
``mbpoll`` needs ``-0``, or one more with its default 1-based references):

- coils 1..8: relay channels (FC01/05/15). Channel ``open_channel`` is wired to the barrier's
  OPEN contact, ``close_channel`` to CLOSE.
- holding registers 1..8: the same relays as a cheap FC06 board sees them: write 0x0100 = on,
  0x0200 = off; register 0 takes 0x0700 (all on) / 0x0800 (all off).
- discrete inputs (FC02): 1 arm-up limit, 2 arm-down limit, 3 barrier fault,
  4 arming loop, 5 closing loop, 6 photocell; 7..16 spare (always 0).
- input registers (FC04) 1..16: the module's input counters, register n counting the rising
  edges of discrete input n (16 bits, wrapping; 0 at power-on), as the DI counter mode of IO
  modules does. The loop inputs 4..6 count; the others stay 0. A poll that comes late still
  finds a pulse there that came and went between two reads.

Writes are checked whole (address, then value) and applied all or nothing, as a device does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

log = logging.getLogger(__name__)

CHANNELS = 8
REG_ON = 0x0100
REG_OFF = 0x0200
REG_ALL_ON = 0x0700
REG_ALL_OFF = 0x0800

DI_ARM_UP = 1
DI_ARM_DOWN = 2
DI_FAULT = 3
DI_ARMING = 4
DI_CLOSING = 5
DI_PHOTOCELL = 6
DI_COUNT = 16
COUNTED = {"arming": DI_ARMING, "closing": DI_CLOSING, "photocell": DI_PHOTOCELL}

FAULTS = (
    "no_answer",
    "bad_crc",
    "slow_reply",
    "stuck_arm",
    "never_up",
    "power_loss",
    "flapping_loop",
    "barrier_fault",
)


@dataclass
class LaneFaults:
    no_answer: bool = False
    bad_crc: bool = False
    slow_reply_s: float = 0.0
    stuck_arm: bool = False
    never_up: bool = False
    power_loss: bool = False
    flapping_loop: bool = False
    barrier_fault: bool = False


@dataclass
class ArmModel:
    """Arm position 0.0 (down) .. 1.0 (up) and where it is heading."""

    position: float = 0.0
    motion: str = "down"  # down | rising | up | falling


@dataclass
class LatchViolation:
    channel: int
    on_for_s: float


@dataclass
class SimStats:
    requests: int = 0
    writes: int = 0
    silent: int = 0
    opens: int = 0
    anti_crush: int = 0
    auto_closes: int = 0
    max_in_flight: int = 0  # requests being answered at once (a correct master keeps it 1)
    latched: list[LatchViolation] = field(default_factory=list)


class _LaneContext(ModbusServerContext):
    """Datastore that answers from the lane model (the server's legacy duck-typed context).

    ``old_simulator`` makes pymodbus' server use this object directly.
    """

    def __init__(self, lane: ModbusLaneSim) -> None:  # no super(): it only warns and wraps
        self.lane = lane
        self.old_simulator = True
        self.simdevices = []

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> Any:
        return await self.lane._get(device_id, func_code, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int] | Sequence[bool]
    ) -> Any:
        return await self.lane._set(device_id, func_code, address, list(values))

    def device_ids(self) -> list[int]:
        return [self.lane.unit]


class ModbusLaneSim:
    """Relay module + barrier + loops + photocell, served over Modbus TCP or RTU-over-socket."""

    def __init__(
        self,
        *,
        unit: int = 1,
        framing: str = "tcp",
        host: str = "127.0.0.1",
        port: int = 0,
        rise_s: float = 1.0,
        fall_s: float = 1.0,
        hold_s: float = 1.0,
        latch_limit_s: float = 3.0,
        open_channel: int = 1,
        close_channel: int = 2,
        tick_s: float = 0.005,
        flap_period_s: float = 0.004,
    ) -> None:
        if framing not in ("tcp", "rtu"):
            raise ValueError(f"framing {framing!r} must be 'tcp' or 'rtu'")
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the simulator binds loopback only, not {host!r}")
        self.unit = unit
        self.framing = framing
        self.host = host
        self.port = port
        self.rise_s = rise_s
        self.fall_s = fall_s
        self.hold_s = hold_s
        self.latch_limit_s = latch_limit_s
        self.open_channel = open_channel
        self.close_channel = close_channel
        self.tick_s = tick_s
        self.flap_period_s = flap_period_s
        self.faults = LaneFaults()
        self.arm = ArmModel()
        self.relays = [False] * (CHANNELS + 1)  # index 0 unused
        self._relay_on_at: dict[int, float] = {}
        self._latch_reported: set[int] = set()
        self.arming = False
        self.closing = False
        self.photocell = False
        self.counters = [0] * (DI_COUNT + 1)  # rising edges per discrete input (index 1..)
        self._hold_until: float | None = None
        self._was_closing = False
        self._flap_next = 0.0
        self.stats = SimStats()
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._physics: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._echo: tuple[int, int] | None = None  # (address, value) of the FC05/06 just applied
        self._reclose = False
        self._in_flight = 0

    # -- lifecycle ----------------------------------------------------------------
    @property
    def url(self) -> str:
        scheme = "tcp" if self.framing == "tcp" else "socket"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> str:
        """Start the server and the physics; returns the URL a hub connects to."""
        if self.port == 0:
            self.port = _free_port(self.host)
        context = _LaneContext(self)
        if self.framing == "tcp":
            self._server = ModbusTcpServer(
                context,
                framer=FramerType.SOCKET,
                address=(self.host, self.port),
                ignore_missing_devices=True,
                trace_packet=self._trace_packet,
            )
        else:
            self._server = ModbusSerialServer(
                context,
                framer=FramerType.RTU,
                port=f"socket://{self.host}:{self.port}",
                ignore_missing_devices=True,
                trace_packet=self._trace_packet,
            )
        await self._server.serve_forever(background=True)
        self._physics = asyncio.create_task(self._run_physics(), name=f"lane-physics-{self.port}")
        return self.url

    async def stop(self) -> None:
        if self._physics is not None:
            self._physics.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._physics
            self._physics = None
        if self._server is not None:
            with contextlib.suppress(TimeoutError):  # never hang a test or a bench on exit
                await asyncio.wait_for(self._server.shutdown(), 5.0)
            self._server = None

    # -- inputs the world drives ----------------------------------------------------------------
    def set_loop(self, name: str, on: bool) -> None:
        """Set the arming loop, closing loop or photocell (what a car or a person does)."""
        if name not in ("arming", "closing", "photocell"):
            raise ValueError(f"unknown detector {name!r}: arming, closing or photocell")
        if name == "closing" and self.closing and not on and self.arm.motion == "up":
            self._hold_until = time.monotonic() + self.hold_s  # the vehicle cleared the loop
        self._count(name, on)
        setattr(self, name, on)
        self._changed.set()

    def _count(self, name: str, on: bool) -> None:
        if on and not getattr(self, name):
            di = COUNTED[name]
            self.counters[di] = (self.counters[di] + 1) & 0xFFFF

    def set_fault(self, name: str, on: bool = True, value: float = 0.0) -> None:
        """Inject (``on``) or clear a fault by name; ``slow_reply`` takes seconds in ``value``."""
        if name not in FAULTS and name != "power_return":
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        if name == "slow_reply":
            self.faults.slow_reply_s = value if on else 0.0
        elif name == "power_loss" and on:
            self._power_off()
        elif name in ("power_return",) or (name == "power_loss" and not on):
            self._power_on()
        else:
            setattr(self.faults, name, on)
        log.info("fault %s %s", name, "on" if on else "off")

    def clear_faults(self) -> None:
        if self.faults.power_loss:
            self._power_on()
        self.faults = LaneFaults()

    def _power_off(self) -> None:
        self.faults.power_loss = True
        self.relays = [False] * (CHANNELS + 1)
        self._relay_on_at.clear()
        # this model holds with a brake; it does not drop the arm onto anything
        self.arm = ArmModel(
            position=self.arm.position, motion="down" if self.arm.position <= 0 else "stopped"
        )

    def _power_on(self) -> None:
        self.faults.power_loss = False
        self.relays = [False] * (CHANNELS + 1)
        self._relay_on_at.clear()
        self.counters = [0] * (DI_COUNT + 1)  # counters start again from 0 at power-on
        self.arm = ArmModel()  # powers on down (its own controller lowers it on boot)
        self._hold_until = None

    # -- what the IO module reports ---------------------------------------------------------------
    @property
    def arm_up(self) -> bool:
        return self.arm.motion == "up" and self.arm.position >= 1.0

    @property
    def arm_down(self) -> bool:
        return self.arm.position <= 0.0

    def discrete_inputs(self) -> list[bool]:
        """Index 1..DI_COUNT."""
        di = [False] * (DI_COUNT + 1)
        di[DI_ARM_UP] = self.arm_up
        di[DI_ARM_DOWN] = self.arm_down
        di[DI_FAULT] = self.faults.barrier_fault
        di[DI_ARMING] = self.arming
        di[DI_CLOSING] = self.closing
        di[DI_PHOTOCELL] = self.photocell
        return di

    def snapshot(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "unit": self.unit,
            "arm": {"position": round(self.arm.position, 3), "motion": self.arm.motion},
            "relays": {str(i): self.relays[i] for i in range(1, CHANNELS + 1)},
            "loops": {
                "arming": self.arming,
                "closing": self.closing,
                "photocell": self.photocell,
            },
            "faults": {k: v for k, v in vars(self.faults).items() if v},
            "stats": {
                "requests": self.stats.requests,
                "writes": self.stats.writes,
                "silent": self.stats.silent,
                "opens": self.stats.opens,
                "anti_crush": self.stats.anti_crush,
                "auto_closes": self.stats.auto_closes,
                "latched": [vars(v) for v in self.stats.latched],
            },
        }

    async def wait_for_arm(self, motion: str, timeout: float) -> bool:
        """Wait until the arm reaches ``motion`` ("up", "down", ...); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.arm.motion != motion:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))
        return True

    # -- datastore ----------------------------------------------------------------
    async def _gate(self, device_id: int) -> None:
        self.stats.requests += 1
        if device_id != self.unit or self.faults.no_answer or self.faults.power_loss:
            self.stats.silent += 1
            raise NoSuchIdException(f"device {device_id} silent")  # server stays silent
        self._in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
        try:
            if self.faults.slow_reply_s > 0:
                await asyncio.sleep(self.faults.slow_reply_s)
        finally:
            self._in_flight -= 1

    async def _get(self, device_id: int, fc: int, address: int, count: int) -> Any:
        if fc in (5, 6):
            # pymodbus reads back after an FC05/06 write it *accepted*, inside the same request:
            # answer the echo of what was written. No gate: _set already checked the device id,
            # injected the faults and counted the request. (A state flag set by _set leaked
            # into the next request when the write was refused and no read-back came.)
            echo = self._echo
            self._echo = None
            if echo is None or echo[0] != address:
                return ExcCodes.DEVICE_FAILURE
            return [echo[1]] if fc == 6 else [bool(echo[1])]
        await self._gate(device_id)
        if fc in (1, 15):
            return self._slice([False, *self.relays[1:]], address, count, CHANNELS)
        if fc == 2:
            return self._slice(self.discrete_inputs(), address, count, DI_COUNT)
        if fc == 4:
            return self._slice(list(self.counters), address, count, DI_COUNT)
        if fc in (3, 16):
            regs = [0] + [REG_ON if r else REG_OFF for r in self.relays[1:]]
            return self._slice(regs, address, count, CHANNELS, first=0)
        return ExcCodes.ILLEGAL_FUNCTION

    @staticmethod
    def _slice(values: list[Any], address: int, count: int, last: int, first: int = 1) -> Any:
        if address < first or count < 1 or address + count - 1 > last:
            return ExcCodes.ILLEGAL_ADDRESS
        return values[address : address + count]

    async def _set(self, device_id: int, fc: int, address: int, values: list[Any]) -> Any:
        """Check the whole request first, then apply all of it or nothing, as a device does.

        Exception 2 (ILLEGAL DATA ADDRESS) for any address the module does not have, then
        exception 3 (ILLEGAL DATA VALUE) for any value a register does not take; only a request
        with neither changes a relay. (FC16 used to switch the channels before the bad one.)
        """
        await self._gate(device_id)
        self.stats.writes += 1
        self._echo = None
        last = address + len(values) - 1
        if fc in (5, 15):
            if address < 1 or last > CHANNELS:
                return ExcCodes.ILLEGAL_ADDRESS
            for i, value in enumerate(values):
                self._set_relay(address + i, bool(value))
            if fc == 5:
                self._echo = (address, int(bool(values[0])))
            return None
        if fc in (6, 16):
            if address < 0 or last > CHANNELS:
                return ExcCodes.ILLEGAL_ADDRESS
            for i, value in enumerate(values):
                allowed = (REG_ALL_ON, REG_ALL_OFF) if address + i == 0 else (REG_ON, REG_OFF)
                if value not in allowed:
                    return ExcCodes.ILLEGAL_VALUE
            for i, value in enumerate(values):
                reg = address + i
                if reg == 0:
                    for ch in range(1, CHANNELS + 1):
                        self._set_relay(ch, value == REG_ALL_ON)
                else:
                    self._set_relay(reg, value == REG_ON)
            if fc == 6:
                self._echo = (address, int(values[0]))
            return None
        return ExcCodes.ILLEGAL_FUNCTION

    def _set_relay(self, channel: int, on: bool) -> None:
        was = self.relays[channel]
        self.relays[channel] = on
        now = time.monotonic()
        if on and not was:
            self._relay_on_at[channel] = now
            self._latch_reported.discard(channel)
            if channel == self.open_channel:
                self._command_open()
            elif channel == self.close_channel:
                self._command_close()
        elif not on:
            self._relay_on_at.pop(channel, None)
        self._changed.set()

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending and self.faults.bad_crc and len(data) > 4:
            if self.framing == "rtu":
                return data[:-1] + bytes([data[-1] ^ 0xFF])  # wrong CRC
            # Modbus TCP has no checksum: garble the MBAP protocol id, as line noise would
            return data[:2] + bytes([data[2] ^ 0x5A]) + data[3:]
        return data

    # -- physics ----------------------------------------------------------------
    def _command_open(self) -> None:
        self.stats.opens += 1
        if self.faults.stuck_arm or self.faults.power_loss:
            return
        if self.arm.motion != "up":
            self.arm.motion = "rising"
        self._hold_until = None
        self._reclose = False

    def _command_close(self) -> None:
        if self.arm.motion in ("up", "rising") and not self._under_arm():
            self.arm.motion = "falling"

    def _under_arm(self) -> bool:
        return self.closing or self.photocell

    async def _run_physics(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.tick_s)
            now = time.monotonic()
            try:
                self.step(now - last, now)
            except Exception:  # the sim must keep running for the bench
                log.exception("lane physics step failed")
            last = now

    def step(self, dt: float, now: float) -> None:
        """Advance the lane by ``dt`` seconds."""
        if self.faults.flapping_loop and now >= self._flap_next:
            self._count("arming", not self.arming)
            self.arming = not self.arming
            self._flap_next = now + self.flap_period_s
        for ch, since in self._relay_on_at.items():
            if now - since > self.latch_limit_s and ch not in self._latch_reported:
                self._latch_reported.add(ch)
                self.stats.latched.append(LatchViolation(ch, round(now - since, 3)))
                log.error("SAFETY: relay %d latched for %.2fs", ch, now - since)
        if self.faults.power_loss:
            return
        arm = self.arm
        before = (arm.motion, arm.position)
        if arm.motion == "rising":
            top = 0.9 if self.faults.never_up else 1.0
            arm.position = min(top, arm.position + dt / max(self.rise_s, 1e-6))
            if arm.position >= 1.0:
                arm.motion = "up"
                if self._reclose:  # back up after anti-crush: close again once clear
                    self._reclose = False
                    self._hold_until = now + self.hold_s
        elif arm.motion == "falling":
            if self._under_arm():
                self.stats.anti_crush += 1
                self._reclose = True
                arm.motion = "rising"  # anti-crush
            else:
                arm.position = max(0.0, arm.position - dt / max(self.fall_s, 1e-6))
                if arm.position <= 0.0:
                    arm.motion = "down"
        elif arm.motion == "up":
            if self._was_closing and not self.closing:
                self._hold_until = now + self.hold_s  # vehicle cleared the closing loop
            if self._hold_until is not None and now >= self._hold_until:
                if self._under_arm():
                    self._hold_until = now + self.hold_s
                else:
                    self._hold_until = None
                    self.stats.auto_closes += 1
                    arm.motion = "falling"
        self._was_closing = self.closing
        if (arm.motion, arm.position) != before:
            self._changed.set()


def _free_port(host: str) -> int:
    """A free loopback port (pymodbus' listener does not report an ephemeral port)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
