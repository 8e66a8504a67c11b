"""``EbBarrier``: a barrier controller on RS-485 speaking the ``EB addr cmd data XOR`` protocol.

Each command is one request on the ``SerialBus``; the reply must come from the same address
and echo the command with bit 7 set (``cmd | 0x80``), and its XOR is verified by the decoder,
so a corrupt or foreign reply is never taken for an acknowledgement. The status byte in every
reply is kept in ``last_status``; ``EbStatusLoops`` reads the lane's loops from it for lanes
whose detectors are wired into the barrier controller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from edge.barrier.codecs import eb_barrier as eb
from edge.barrier.codecs.eb_barrier import EbCommand, EbFrame, EbStatus
from edge.barrier.health import HealthTracker
from edge.barrier.interfaces import ArmState, DeviceError, Health, LoopInputs
from edge.barrier.serial_bus import SerialBus

log = logging.getLogger(__name__)


class BarrierRefused(DeviceError):
    """The controller answered but will not move (forbid mode)."""


class EbBarrier:
    """Implements ``Barrier`` for one EB controller on a ``SerialBus``."""

    def __init__(
        self,
        bus: SerialBus,
        address: int = 1,
        *,
        name: str | None = None,
        timeout_s: float | None = None,
        retries: int | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if not 0 <= address <= 255:
            raise ValueError(f"barrier address must be 0..255, got {address}")
        self.bus = bus
        self.address = address
        self.name = name or f"eb barrier @{address} on {bus.url}"
        self._timeout_s = timeout_s
        self._retries = retries
        self.tracker = HealthTracker(self.name, logger or log, down_after=1)
        self.health: Health = self.tracker.state
        self.tracker.subscribe(self._on_health)
        self.last_status: EbStatus | None = None

    def _on_health(self, _name: str, _old: Health, new: Health) -> None:
        self.health = new

    # -- Barrier ----------------------------------------------------------------------------
    async def pulse_open(self, on_answered: Callable[[], None] | None = None) -> None:
        """Open for one vehicle; the controller auto-closes after it crossed the closing loop."""
        try:
            status = await self.command(EbCommand.OPEN)
        finally:
            if on_answered is not None:
                on_answered()
        if status.forbidden:
            raise BarrierRefused(f"{self.name} is in forbid mode and did not open")

    async def pulse_close(self) -> None:
        await self.command(EbCommand.DOWN)

    async def read_state(self) -> ArmState:
        return (await self.read_status()).state

    # -- extras -----------------------------------------------------------------------------
    async def read_status(self) -> EbStatus:
        return await self.command(EbCommand.STATUS)

    async def open_for(self, vehicles: int) -> None:
        """Open for a convoy of ``vehicles`` (1..255)."""
        if not 1 <= vehicles <= 255:
            raise ValueError(f"vehicles must be 1..255, got {vehicles}")
        status = await self.command(EbCommand.OPEN_N, vehicles)
        if status.forbidden:
            raise BarrierRefused(f"{self.name} is in forbid mode and did not open")

    async def command(self, cmd: EbCommand, data: int = 0) -> EbStatus:
        """Send one command; returns the status the controller echoed. Raises DeviceError."""
        want = (int(cmd) | eb.REPLY_BIT) & 0xFF

        def is_reply(frame: EbFrame) -> bool:
            return frame.address == self.address and frame.cmd == want

        try:
            reply = await self.bus.exchange(
                eb.command(self.address, cmd, data),
                eb.Decoder,
                is_reply,
                timeout_s=self._timeout_s,
                retries=self._retries,
            )
        except DeviceError as exc:
            self.tracker.failure(exc)
            raise
        self.tracker.success()
        self.last_status = reply.status
        return reply.status


class EbStatusLoops:
    """``Loops`` read from the barrier controller's status byte (it debounces its inputs)."""

    def __init__(self, barrier: EbBarrier) -> None:
        self.barrier = barrier
        self.health: Health = barrier.health
        barrier.tracker.subscribe(self._on_health)

    def _on_health(self, _name: str, _old: Health, new: Health) -> None:
        self.health = new

    async def read(self) -> LoopInputs:
        return (await self.barrier.read_status()).loops
