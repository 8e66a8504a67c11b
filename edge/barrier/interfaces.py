"""Device interfaces the lane talks to. Drivers implement them; the lane never sees a protocol.

Safety contract for every Barrier implementation:
- ``pulse_open``/``pulse_close`` energise a relay (or send a command) for a bounded time and
  always release it, even when the write of "off" has to be retried; nothing is ever latched.
- The barrier's own loops and photocell own anti-crush. Software never forces an arm down onto
  a vehicle: the lane only asks for ``pulse_close`` when its closing loop and photocell are clear,
  and most lanes rely on the controller's auto-close instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable


class ArmState(StrEnum):
    DOWN = "down"
    RISING = "rising"
    UP = "up"
    FALLING = "falling"
    FAULT = "fault"
    UNKNOWN = "unknown"


class Health(StrEnum):
    """Health of one device as seen by its driver (exposed to the lane and to metrics)."""

    OK = "ok"
    DEGRADED = "degraded"  # answering, but with errors or retries
    DOWN = "down"  # not answering


class Colour(StrEnum):
    RED = "red"
    GREEN = "green"
    YELLOW = "yellow"


class DeviceError(Exception):
    """A device did not answer or answered wrongly after the driver's retries."""


@dataclass(frozen=True)
class LoopInputs:
    """Debounced presence of the lane's detectors."""

    arming: bool = False
    closing: bool = False
    photocell: bool = False

    @property
    def any(self) -> bool:
        return self.arming or self.closing or self.photocell


@dataclass(frozen=True)
class DisplayLine:
    text: str
    colour: Colour = Colour.GREEN


@runtime_checkable
class Barrier(Protocol):
    @property
    def health(self) -> Health: ...

    async def pulse_open(self, on_answered: Callable[[], None] | None = None) -> None:
        """Pulse the OPEN input; raises DeviceError if the device did not take it.

        ``on_answered`` is called once the device answered the open command (or it failed),
        before any relay hold: the lane writes its screen only then, so the board's serial
        traffic never delays the barrier."""

    async def pulse_close(self) -> None:
        """Pulse the CLOSE input (the barrier's own anti-crush still decides)."""

    async def read_state(self) -> ArmState:
        """Arm position from the limit switches / controller status."""


@runtime_checkable
class Loops(Protocol):
    @property
    def health(self) -> Health: ...

    async def read(self) -> LoopInputs:
        """Debounced detector states; raises DeviceError when the inputs cannot be read."""


@runtime_checkable
class Display(Protocol):
    @property
    def health(self) -> Health: ...

    async def show(self, lines: list[DisplayLine]) -> None:
        """Replace what the screen shows, one DisplayLine per physical line."""

    async def speak(self, text: str) -> None:
        """Voice announcement through the board's TTS chip."""

    async def idle(self, lines: list[DisplayLine]) -> None:
        """Set the idle screen the board falls back to."""
