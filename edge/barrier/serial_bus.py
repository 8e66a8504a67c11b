"""The one owner of one RS-485 port: requests strictly one at a time, with a gap between them.

Two tasks writing to the same RS-485 pair produce collisions and mismatched replies, so every
device on a port goes through one ``SerialBus``: an ``asyncio.Lock`` serialises requests, the
bus waits ``gap_ms`` after the previous request before the next one starts (slow boards need the
line quiet before they listen again), each request has a timeout and a number of retries, and a
port that vanishes (USB adapter unplugged, simulator restarted) is reopened with exponential
back-off without anybody restarting the daemon.

Blocking pyserial calls run in a worker thread (``asyncio.to_thread``) rather than on the fd with
``loop.add_reader``: pyserial's URL handlers (``socket://``, ``loop://``, ``rfc2217://``) do not
all expose a selectable fd, and one code path for every URL is worth a thread hop (~0.1 ms).
Only one thread touches the port at a time, because only the lock holder does I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import serial

from edge.barrier.health import HealthTracker
from edge.barrier.interfaces import DeviceError

F = TypeVar("F")

log = logging.getLogger(__name__)

READ_SLICE_S = 0.02  # longest a worker thread blocks in one read; bounds timeout overshoot


class BusError(DeviceError):
    """The port could not be opened or failed during I/O."""


class BusTimeout(DeviceError):
    """No acceptable reply arrived within the timeout, after every retry."""


class FrameDecoder(Protocol[F]):
    def feed(self, data: bytes) -> list[F]: ...


Opener = Callable[..., Any]


class BusIO:
    """What the lock holder may do with the port; valid only inside ``bus.request()``."""

    def __init__(self, bus: SerialBus, port: Any) -> None:
        self._bus = bus
        self._port = port

    async def write(self, data: bytes) -> None:
        await self._bus._io(self._port.write, data)

    async def discard_input(self) -> None:
        """Drop stale bytes (a late reply to an earlier attempt)."""
        await self._bus._io(self._port.reset_input_buffer)

    async def read_frame(
        self, decoder: FrameDecoder[F], accept: Callable[[F], bool], timeout_s: float
    ) -> F | None:
        """Feed bytes to ``decoder`` until a frame passes ``accept``; None on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            data = await self._bus._io(_read_some, self._port)
            if data:
                self._bus.bytes_in += len(data)
                for frame in decoder.feed(data):
                    if accept(frame):
                        return frame


def _read_some(port: Any) -> bytes:
    first: bytes = port.read(1)  # blocks at most READ_SLICE_S
    if not first:
        return b""
    waiting = port.in_waiting
    return first + (port.read(waiting) if waiting else b"")


class SerialBus:
    """One RS-485 port (``url`` as ``serial.serial_for_url`` takes it) shared by its devices."""

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: float = 1,
        timeout_s: float = 0.3,
        retries: int = 2,
        gap_ms: float = 30.0,
        reconnect_min_s: float = 0.1,
        reconnect_max_s: float = 10.0,
        name: str | None = None,
        logger: logging.Logger | None = None,
        opener: Opener = serial.serial_for_url,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if gap_ms < 0:
            raise ValueError(f"gap_ms must be >= 0, got {gap_ms}")
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise ValueError(
                f"need 0 < reconnect_min_s <= reconnect_max_s, got {reconnect_min_s}, "
                f"{reconnect_max_s}"
            )
        self.url = url
        # the config accepts "serial:///dev/ttyUSB0"; pyserial wants the bare path
        self._port_url = url.removeprefix("serial://")
        self.name = name or f"serial bus {url}"
        self.timeout_s = timeout_s
        self.retries = retries
        self.gap_s = gap_ms / 1000.0
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self._settings = {
            "baudrate": baudrate,
            "bytesize": bytesize,
            "parity": parity,
            "stopbits": stopbits,
        }
        self._opener = opener
        self._log = logger or log
        self.health = HealthTracker(self.name, self._log, down_after=1)
        self._lock = asyncio.Lock()
        self._port: Any = None
        self._backoff = reconnect_min_s
        self._next_open = 0.0
        self._last_end = 0.0
        self._in_flight = 0
        self.max_in_flight = 0  # stays 1: the proof that requests never overlapped
        self.requests_total = 0
        self.retries_total = 0
        self.timeouts_total = 0
        self.opens_total = 0
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def is_open(self) -> bool:
        return self._port is not None

    async def _io(self, fn: Callable[..., Any], *args: Any) -> Any:
        fut = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            # The worker thread still uses the port and a thread cannot be cancelled: keep the
            # lock until it returns (at most READ_SLICE_S), or the next request would overlap.
            await asyncio.wait({fut})
            if not fut.cancelled():
                fut.exception()  # retrieved: the caller was cancelled, the outcome is moot
            raise
        except (serial.SerialException, OSError) as exc:
            self._drop_port(exc)
            raise BusError(f"{self.name}: I/O failed: {exc}") from exc

    def _drop_port(self, exc: BaseException) -> None:
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(Exception):  # the port is already gone: best effort
                port.close()
        self._next_open = 0.0  # first reopen attempt right away, then back off
        self.health.failure(exc)

    async def _ensure_open(self) -> Any:
        if self._port is not None:
            return self._port
        now = time.monotonic()
        if now < self._next_open:
            raise BusError(
                f"{self.name} unavailable ({self.health.last_error}); "
                f"next reopen attempt in {self._next_open - now:.1f}s"
            )
        try:
            port = await asyncio.to_thread(
                self._opener,
                self._port_url,
                timeout=READ_SLICE_S,
                write_timeout=1.0,
                **self._settings,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            self._next_open = time.monotonic() + self._backoff
            self._backoff = min(self.reconnect_max_s, self._backoff * 2)
            self.health.failure(exc)
            raise BusError(f"{self.name}: cannot open: {exc}") from exc
        self._port = port
        self._backoff = self.reconnect_min_s
        self.opens_total += 1
        self.health.success()
        return port

    async def open(self) -> None:
        """Open now (optional: the first request opens the port). Raises BusError."""
        async with self._lock:
            await self._ensure_open()

    async def close(self) -> None:
        async with self._lock:
            port, self._port = self._port, None
            if port is not None:
                await asyncio.to_thread(port.close)

    @asynccontextmanager
    async def request(self) -> AsyncIterator[BusIO]:
        """Exclusive use of the port for one request (plus the gap before it)."""
        async with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            try:
                wait = self._last_end + self.gap_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                port = await self._ensure_open()
                yield BusIO(self, port)
            finally:
                self._in_flight -= 1
                self._last_end = time.monotonic()

    async def send(self, payload: bytes) -> None:
        """Write without waiting for a reply (broadcasts)."""
        async with self.request() as io:
            self.requests_total += 1
            self.bytes_out += len(payload)
            await io.write(payload)

    async def exchange(
        self,
        payload: bytes,
        decoder_factory: Callable[[], FrameDecoder[F]],
        accept: Callable[[F], bool],
        *,
        timeout_s: float | None = None,
        retries: int | None = None,
    ) -> F:
        """Write ``payload`` and return the first reply frame ``accept`` takes.

        Retries (resending the payload) on timeout and on an I/O error that a reopen fixes;
        raises BusTimeout when every attempt timed out, BusError when the port is unusable.
        """
        timeout = self.timeout_s if timeout_s is None else timeout_s
        attempts = 1 + (self.retries if retries is None else retries)
        async with self.request() as first_io:
            self.requests_total += 1
            io = first_io
            last_error: DeviceError | None = None
            for attempt in range(attempts):
                if attempt:
                    self.retries_total += 1
                try:
                    if attempt:
                        io = BusIO(self, await self._ensure_open())
                    await io.discard_input()
                    await io.write(payload)
                    self.bytes_out += len(payload)
                    frame = await io.read_frame(decoder_factory(), accept, timeout)
                except BusError as exc:
                    last_error = exc
                    continue
                if frame is not None:
                    return frame
                self.timeouts_total += 1
                last_error = BusTimeout(
                    f"{self.name}: no valid reply within {timeout * 1000:.0f} ms "
                    f"({attempt + 1} of {attempts} attempts)"
                )
            assert last_error is not None
            raise last_error
