"""Barriers driven through a Modbus relay module, with the arm read back from its inputs.

Why: most barriers are opened by a dry contact, which a relay module closes for a moment. A
relay left on is a safety fault (the barrier would stay open or refuse to close), so the OFF
is retried hard and attempted from a ``finally`` that a cancellation cannot skip; if it still
cannot be written, a background task keeps trying until it is. The arm position comes back as
discrete inputs (FC02), which is also how the daemon confirms that an arm really rose.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from edge.barrier.health import HealthTracker
from edge.barrier.interfaces import ArmState, DeviceError, Health
from edge.barrier.modbus_hub import ModbusHub

log = logging.getLogger(__name__)

REG_ON = 0x0100
REG_OFF = 0x0200


class _ModbusRelayBarrier:
    """Shared logic; subclasses say how a relay channel is switched."""

    def __init__(
        self,
        hub: ModbusHub,
        unit: int = 1,
        open_channel: int = 1,
        close_channel: int = 2,
        pulse_ms: int = 400,
        input_arm_up: int = 1,
        input_arm_down: int = 2,
        input_fault: int = 3,
        *,
        name: str = "barrier",
        release_deadline_s: float = 2.0,
        down_after: int = 3,
    ) -> None:
        if not 20 <= pulse_ms <= 3000:
            raise ValueError(f"barrier pulse_ms must be 20..3000, got {pulse_ms}")
        if open_channel == close_channel:
            raise ValueError(f"barrier open_channel and close_channel are both {open_channel}")
        self.hub = hub
        self.unit = unit
        self.open_channel = open_channel
        self.close_channel = close_channel
        self.pulse_s = pulse_ms / 1000.0
        self.inputs = (input_arm_up, input_arm_down, input_fault)
        self.release_deadline_s = release_deadline_s
        self.tracker = HealthTracker(name, log, down_after=down_after)
        self._last_command: str | None = None  # "open" | "close"
        self._pulse_lock = asyncio.Lock()
        self._releasing: set[asyncio.Task[None]] = set()
        self.release_failures = 0
        self.pulses_total = 0

    @property
    def health(self) -> Health:
        return self.tracker.state

    async def _switch(self, channel: int, on: bool) -> None:
        raise NotImplementedError

    async def _guarded(self, channel: int, on: bool) -> None:
        try:
            await self._switch(channel, on)
        except DeviceError as exc:
            self.tracker.failure(exc)
            raise
        self.tracker.success()

    # -- pulses ----------------------------------------------------------------
    async def pulse_open(self, on_answered: Callable[[], None] | None = None) -> None:
        await self._pulse(self.open_channel, "open", on_answered)

    async def pulse_close(self) -> None:
        await self._pulse(self.close_channel, "close")

    async def _pulse(
        self, channel: int, command: str, on_answered: Callable[[], None] | None = None
    ) -> None:
        async with self._pulse_lock:
            self.pulses_total += 1
            self._last_command = command
            energised = False
            try:
                try:
                    await self._guarded(channel, True)
                finally:
                    if on_answered is not None:
                        on_answered()  # the ON is answered (or failed); the hold follows
                energised = True
                await asyncio.sleep(self.pulse_s)
            finally:
                # Even when ON failed: its reply may be lost while the relay did switch on.
                release = asyncio.ensure_future(self._release(channel, energised))
                self._releasing.add(release)
                release.add_done_callback(self._releasing.discard)
                await asyncio.shield(release)  # a second cancel leaves the release running

    async def _release(self, channel: int, energised: bool = True) -> None:
        """Write OFF until it sticks; past the deadline hand over to a background retrier."""
        deadline = time.monotonic() + self.release_deadline_s
        last: DeviceError | None = None
        while time.monotonic() < deadline:
            try:
                await self._guarded(channel, False)
                return
            except DeviceError as exc:
                last = exc
                await asyncio.sleep(0.05)
        self.release_failures += 1
        # ERROR when the relay is known to be on; if even ON failed, the device is already
        # reported DOWN by the tracker and this is only a precaution.
        log.log(
            logging.ERROR if energised else logging.WARNING,
            "%s: relay %d OFF not confirmed, retrying in background",
            self.tracker.name,
            channel,
        )
        task = asyncio.create_task(self._release_forever(channel))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)
        raise DeviceError(f"{self.tracker.name}: relay {channel} OFF not confirmed: {last}")

    async def _release_forever(self, channel: int) -> None:
        delay = 0.1
        while True:
            try:
                await self._guarded(channel, False)
                log.warning("%s: relay %d released", self.tracker.name, channel)
                return
            except DeviceError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def drain(self) -> None:
        """Wait for background releases (shutdown and tests)."""
        while self._releasing:
            await asyncio.gather(*list(self._releasing), return_exceptions=True)

    # -- feedback ----------------------------------------------------------------
    async def read_state(self) -> ArmState:
        first = min(self.inputs)
        count = max(self.inputs) - first + 1
        try:
            bits = await self.hub.read_discrete_inputs(self.unit, first, count)
        except DeviceError as exc:
            self.tracker.failure(exc)
            raise
        self.tracker.success()
        up, down, fault = (bits[i - first] for i in self.inputs)
        return arm_state(up=up, down=down, fault=fault, last_command=self._last_command)

    async def confirm_open(self, timeout_s: float = 3.0, poll_s: float = 0.05) -> bool:
        """True once the up limit is seen within ``timeout_s``; False means the arm did not rise."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if await self.read_state() is ArmState.UP:
                    return True
            except DeviceError:
                pass  # counted by read_state; keep watching until the deadline
            if time.monotonic() + poll_s > deadline:
                return False
            await asyncio.sleep(poll_s)


def arm_state(*, up: bool, down: bool, fault: bool, last_command: str | None) -> ArmState:
    """Map limit switches to an arm state (pure): between the limits the last command decides."""
    if fault or (up and down):
        return ArmState.FAULT
    if up:
        return ArmState.UP
    if down:
        return ArmState.DOWN
    if last_command == "open":
        return ArmState.RISING
    if last_command == "close":
        return ArmState.FALLING
    return ArmState.UNKNOWN


class ModbusCoilBarrier(_ModbusRelayBarrier):
    """Relay module switched by FC05 (write single coil); coil address = channel."""

    async def _switch(self, channel: int, on: bool) -> None:
        await self.hub.write_coil(self.unit, channel, on)


class ModbusRegisterBarrier(_ModbusRelayBarrier):
    """Cheap FC06 board: register = channel (1..8), 0x0100 on, 0x0200 off."""

    def __init__(self, hub: ModbusHub, *args: int, **kwargs: object) -> None:
        super().__init__(hub, *args, **kwargs)  # type: ignore[arg-type]
        for ch in (self.open_channel, self.close_channel):
            if not 1 <= ch <= 8:
                raise ValueError(f"FC06 relay boards have channels 1..8, got {ch}")

    async def _switch(self, channel: int, on: bool) -> None:
        await self.hub.write_register(self.unit, channel, REG_ON if on else REG_OFF)
