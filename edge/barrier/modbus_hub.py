"""One Modbus connection, one owner: every request of every device on it goes through here.

Why: two tasks sharing a pymodbus client produce mismatched replies, an RS-485 bus must never
carry two requests at once, and an exception that escapes a poll kills the lane's eyes. So the
hub holds one ``asyncio.Lock`` (Home Assistant style), leaves ``gap_ms`` after each request,
retries, reconnects with back-off, and turns every failure into ``DeviceError``.

URLs: ``tcp://host:port`` (Modbus TCP, or RTU framing with ``framing="rtu"``),
``socket://host:port`` (RTU over a TCP socket, as pyserial understands it), or a serial device
path such as ``/dev/ttyUSB0`` (RTU).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

from edge.barrier.interfaces import DeviceError

log = logging.getLogger(__name__)

# pymodbus logs every timeout at ERROR with hex dumps; the hub reports failures itself, once,
# through each device's HealthTracker. An operator who sets a level on "pymodbus" keeps it.
if logging.getLogger("pymodbus").level == logging.NOTSET:
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

FRAMINGS = ("tcp", "rtu")
Client = AsyncModbusTcpClient | AsyncModbusSerialClient


def _parse_url(url: str, framing: str) -> tuple[str, str, int]:
    """Return (kind, host-or-port, tcp port); raise ValueError naming what is wrong."""
    if framing not in FRAMINGS:
        raise ValueError(f"modbus framing {framing!r} is not one of {FRAMINGS}")
    if url.startswith("tcp://"):
        parts = urlsplit(url)
        if not parts.hostname or parts.port is None:
            raise ValueError(f"modbus url {url!r} needs tcp://host:port")
        return "tcp", parts.hostname, parts.port
    if url.startswith("socket://"):
        if framing != "rtu":
            raise ValueError(f"modbus url {url!r}: socket:// carries RTU framing only")
        parts = urlsplit(url)
        if not parts.hostname or parts.port is None:
            raise ValueError(f"modbus url {url!r} needs socket://host:port")
        return "serial", url, 0
    url = url.removeprefix("serial://")  # the config's spelling of a serial port
    if url.startswith("/") or url.startswith("rfc2217://"):
        if framing != "rtu":
            raise ValueError(f"modbus url {url!r}: a serial line carries RTU framing only")
        return "serial", url, 0
    raise ValueError(f"modbus url {url!r} must start with tcp://, socket:// or /dev/")


class ModbusHub:
    """Serialises, paces and guards every request on one Modbus connection."""

    def __init__(
        self,
        url: str,
        framing: str = "tcp",
        timeout_s: float = 0.5,
        retries: int = 1,
        gap_ms: float = 0.0,
        reconnect_max_s: float = 10.0,
        *,
        baudrate: int = 9600,
        parity: str = "N",
        bytesize: int = 8,
        stopbits: int = 1,
        name: str | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"modbus timeout_s must be > 0, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"modbus retries must be >= 0, got {retries}")
        if gap_ms < 0:
            raise ValueError(f"modbus gap_ms must be >= 0, got {gap_ms}")
        self.url = url
        self.framing = framing
        self.name = name or url
        self.timeout_s = timeout_s
        self.retries = retries
        self.gap_s = gap_ms / 1000.0
        self.reconnect_max_s = max(0.05, reconnect_max_s)
        self._kind, self._host, self._port = _parse_url(url, framing)
        self._serial = {
            "baudrate": baudrate,
            "parity": parity,
            "bytesize": bytesize,
            "stopbits": stopbits,
        }
        self._lock = asyncio.Lock()
        self._client: Client | None = None
        self._connect_failures = 0
        self._next_connect_at = 0.0
        self.requests_total = 0
        self.errors_total = 0
        self.reconnects_total = 0

    # -- connection ----------------------------------------------------------------
    def _make_client(self) -> Client:
        framer = FramerType.RTU if self.framing == "rtu" else FramerType.SOCKET
        # pymodbus' own retries and reconnect are off: the hub owns both, so that health,
        # logging and back-off are in one place.
        if self._kind == "tcp":
            return AsyncModbusTcpClient(
                self._host,
                port=self._port,
                framer=framer,
                timeout=self.timeout_s,
                retries=0,
                reconnect_delay=0,
                name=self.name,
            )
        return AsyncModbusSerialClient(
            self._host,
            framer=FramerType.RTU,
            timeout=self.timeout_s,
            retries=0,
            reconnect_delay=0,
            name=self.name,
            **self._serial,  # type: ignore[arg-type]
        )

    async def _ensure_connected(self) -> Client:
        client = self._client
        if client is not None and client.connected:
            return client
        now = time.monotonic()
        if now < self._next_connect_at:
            raise DeviceError(
                f"{self.name}: not connected, next attempt in {self._next_connect_at - now:.2f}s"
            )
        if client is None:
            client = self._client = self._make_client()
        else:
            self.reconnects_total += 1
        try:
            async with asyncio.timeout(self.timeout_s * 2):  # never swallows a cancel
                ok = await client.connect()
        except (TimeoutError, OSError, ModbusException) as exc:
            ok = False
            reason = str(exc) or type(exc).__name__
        else:
            reason = "connect refused"
        if not ok:
            client.close()
            self._connect_failures += 1
            delay = min(self.reconnect_max_s, 0.05 * 2 ** min(self._connect_failures, 16))
            self._next_connect_at = time.monotonic() + delay
            raise DeviceError(f"{self.name}: cannot connect ({reason})")
        self._connect_failures = 0
        self._next_connect_at = 0.0
        return client

    def _drop(self) -> None:
        """Close after a timeout or garbage, so a late reply can't answer the next request."""
        if self._client is not None:
            self._client.close()

    async def close(self) -> None:
        """Close the connection; waits for a request in flight, but never for ever."""
        try:
            async with asyncio.timeout(self.timeout_s * (self.retries + 2)):
                await self._lock.acquire()
        except TimeoutError:
            log.warning("%s: closing with a request still in flight", self.name)
        else:
            self._lock.release()
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- the one guarded path -------------------------------------------------------------------
    async def call(self, what: str, request: Callable[[Client], Awaitable[Any]]) -> Any:
        """Run one request under the lock, with retries and the gap; DeviceError on failure."""
        last = "no attempt"
        async with self._lock:
            try:
                for _attempt in range(self.retries + 1):
                    self.requests_total += 1
                    try:
                        client = await self._ensure_connected()
                        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel
                        async with asyncio.timeout(self.timeout_s * 1.5):
                            reply = await request(client)
                    except asyncio.CancelledError:
                        self._drop()  # a reply may still be on its way: never let it pair up
                        raise
                    except DeviceError as exc:
                        last = str(exc)
                        if not (self._client and self._client.connected):
                            break  # no connection: retrying now would only hit the back-off
                        continue
                    except (TimeoutError, ModbusException, OSError) as exc:
                        last = f"{type(exc).__name__}: {exc}"
                        self._drop()
                        continue
                    except (ValueError, TypeError, KeyError, AttributeError) as exc:
                        # garbage that pymodbus' decoder could not digest
                        last = f"bad reply: {type(exc).__name__}: {exc}"
                        self._drop()
                        continue
                    if reply.isError():
                        last = f"exception response {getattr(reply, 'exception_code', '?')}"
                        continue
                    return reply
            finally:
                if self.gap_s:
                    await asyncio.sleep(self.gap_s)
        self.errors_total += 1
        raise DeviceError(f"{self.name}: {what} failed: {last}")

    # -- function codes -------------------------------------------------------------------------
    async def write_coil(self, unit: int, addr: int, value: bool) -> None:
        await self.call(
            f"write_coil(unit={unit}, addr={addr}, {value})",
            lambda c: c.write_coil(addr, value, device_id=unit),
        )

    async def write_register(self, unit: int, addr: int, value: int) -> None:
        await self.call(
            f"write_register(unit={unit}, addr={addr:#06x}, {value:#06x})",
            lambda c: c.write_register(addr, value, device_id=unit),
        )

    async def read_coils(self, unit: int, addr: int, count: int = 1) -> list[bool]:
        reply = await self.call(
            f"read_coils(unit={unit}, addr={addr}, count={count})",
            lambda c: c.read_coils(addr, count=count, device_id=unit),
        )
        return list(reply.bits[:count])

    async def read_discrete_inputs(self, unit: int, addr: int, count: int = 1) -> list[bool]:
        reply = await self.call(
            f"read_discrete_inputs(unit={unit}, addr={addr}, count={count})",
            lambda c: c.read_discrete_inputs(addr, count=count, device_id=unit),
        )
        return list(reply.bits[:count])

    async def read_input_registers(self, unit: int, addr: int, count: int = 1) -> list[int]:
        reply = await self.call(
            f"read_input_registers(unit={unit}, addr={addr}, count={count})",
            lambda c: c.read_input_registers(addr, count=count, device_id=unit),
        )
        return list(reply.registers[:count])

    async def read_holding_registers(self, unit: int, addr: int, count: int = 1) -> list[int]:
        reply = await self.call(
            f"read_holding_registers(unit={unit}, addr={addr}, count={count})",
            lambda c: c.read_holding_registers(addr, count=count, device_id=unit),
        )
        return list(reply.registers[:count])
