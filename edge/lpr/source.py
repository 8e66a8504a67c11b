"""The plate-source seam: where the lane gets plates from.

Implementations: the smart-camera push listener (Hikvision-style ANPR events) and the on-box
recognition pipeline (``edge.lpr``). The lane only ever sees ``PlateRead`` values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from edge.barrier.interfaces import Health


@dataclass(frozen=True)
class PlateRead:
    plate: str  # normalised: upper case, no spaces or separators, e.g. "沪A12345"
    confidence: float  # 0..1
    at: datetime  # timezone-aware, when the vehicle was seen
    source: str  # e.g. "camera-push:E1", "lpr:E1"
    event_id: str  # stable across repeats of the same event (dedup key)
    uncertain: bool = False  # below the site's confidence threshold
    colour: str | None = None  # plate colour: blue, green, yellow, white, black
    candidates: tuple[str, ...] = field(default_factory=tuple)  # alternatives, best first


@runtime_checkable
class PlateSource(Protocol):
    @property
    def health(self) -> Health: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def trigger(self) -> None:
        """The arming loop saw a vehicle: on-box recognition starts reading frames.

        Push cameras decide for themselves and ignore this."""

    async def get(self) -> PlateRead:
        """Wait for the next plate read (the caller applies its own timeout)."""
