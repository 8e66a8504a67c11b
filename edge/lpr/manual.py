"""Plates typed by the operator, and a source that merges several plate sources.

When the camera cannot read a plate (mud, a missing plate, a dead camera), the operator
types it at the console (``parkedge lane plate``); the lane then treats it exactly like a
camera read, with full confidence and ``source="manual"``. ``MergedPlateSource`` lets the lane
listen to the camera and the operator at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import datetime

from edge.barrier.interfaces import Health
from edge.logs import LogLimiter
from edge.lpr.plate_input import FieldError, accept_plate
from edge.lpr.source import PlateRead, PlateSource

log = logging.getLogger(__name__)
_logs = LogLimiter(log)


class ManualPlateSource:
    """Operator-entered plates, queued for the lane."""

    def __init__(self, lane_id: str, maxsize: int = 16) -> None:
        self.lane_id = lane_id
        self._queue: asyncio.Queue[PlateRead] = asyncio.Queue(maxsize)

    @property
    def health(self) -> Health:
        return Health.OK

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def trigger(self) -> None:
        return None

    def submit(self, plate: str, at: datetime, operator: str = "operator") -> PlateRead:
        """Queue a typed plate; FieldError (a ValueError, counted) if it is not a plate."""
        text = accept_plate(plate, "manual")
        if at.tzinfo is None:
            raise ValueError("the time of a manual read must be timezone-aware")
        read = PlateRead(
            plate=text,
            confidence=1.0,
            at=at,
            source=f"manual:{self.lane_id}:{operator}",
            event_id=f"manual-{uuid.uuid4().hex}",
        )
        self._queue.put_nowait(read)
        return read

    async def get(self) -> PlateRead:
        return await self._queue.get()


class MergedPlateSource:
    """The first read from any of several sources; health is the primary source's."""

    def __init__(self, primary: PlateSource, *others: PlateSource) -> None:
        self.sources = (primary, *others)
        self._queue: asyncio.Queue[PlateRead] = asyncio.Queue(64)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def health(self) -> Health:
        return self.sources[0].health

    async def start(self) -> None:
        for src in self.sources:
            await src.start()
        self._tasks = [asyncio.create_task(self._pump(s)) for s in self.sources]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for src in self.sources:
            with contextlib.suppress(Exception):
                await src.stop()

    def trigger(self) -> None:
        for src in self.sources:
            src.trigger()

    async def get(self) -> PlateRead:
        return await self._queue.get()

    async def _pump(self, src: PlateSource) -> None:
        while True:
            try:
                read = await src.get()
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.5)
                continue
            try:  # a backstop: every source checks its plates, a new one might forget
                accept_plate(read.plate, "plate_source")
            except FieldError as exc:
                _logs.log(read.source, logging.WARNING, "plate from %s refused: %s",
                          read.source, exc)
                continue
            if self._queue.full():  # the lane is not keeping up: keep the newest reads
                self._queue.get_nowait()
            self._queue.put_nowait(read)
