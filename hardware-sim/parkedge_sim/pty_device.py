"""Serial endpoints for simulated RS-485 devices, and the fault switches they all share.

``PtyDevice`` opens a real pty pair: the simulator keeps the master (served on the asyncio loop
with ``add_reader``), the daemon opens ``slave_path`` with pyserial exactly as it would open
``/dev/ttyUSB0``. ``TcpSerialDevice`` serves the same byte stream on ``socket://127.0.0.1:PORT``
(pyserial's URL handler), which survives a restart on the same port, so a "port vanished, then
came back" can be tested. ``SerialDeviceSim`` is the base of the display and EB barrier
simulators: it routes bytes, and applies the faults (no answer, corrupt replies, slow replies,
power loss) to every reply the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pty
import tty
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

log = logging.getLogger(__name__)

DataHandler = Callable[[bytes], None]
Transport = Literal["pty", "tcp"]


class SerialEndpoint(Protocol):
    async def start(self) -> str: ...

    def write(self, data: bytes) -> None: ...

    async def stop(self) -> None: ...


class PtyDevice:
    """The device side of a pty pair; ``await start()`` returns the slave path to open."""

    def __init__(self, on_data: DataHandler) -> None:
        self._on_data = on_data
        self._master: int | None = None
        self._slave: int | None = None
        self._out = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.slave_path: str | None = None

    async def start(self) -> str:
        if self.slave_path is not None:
            return self.slave_path
        master, slave = pty.openpty()
        # Raw mode: no echo, no CR/LF translation, no signal characters; binary-safe both ways.
        tty.setraw(slave)
        tty.setraw(master)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave  # the sim keeps the slave open: no EIO
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(master, self._readable)
        self.slave_path = os.ttyname(slave)
        return self.slave_path

    def _readable(self) -> None:
        if self._master is None:
            return
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # EIO: nobody holds the slave; wait for the next opener
            log.debug("pty read: %s", exc)
            return
        if data:
            self._on_data(data)

    def write(self, data: bytes) -> None:
        if self._master is None or self._loop is None:
            return
        if self._out:
            self._out += data
            return
        try:
            n = os.write(self._master, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            log.debug("pty write: %s", exc)
            return
        if n < len(data):
            self._out += data[n:]
            self._loop.add_writer(self._master, self._flush)

    def _flush(self) -> None:
        if self._master is None or self._loop is None:
            return
        try:
            n = os.write(self._master, self._out)
        except BlockingIOError:
            return
        except OSError:
            n = len(self._out)
        del self._out[:n]
        if not self._out:
            self._loop.remove_writer(self._master)

    async def stop(self) -> None:
        if self._loop is not None and self._master is not None:
            self._loop.remove_reader(self._master)
            self._loop.remove_writer(self._master)
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self._out.clear()
        self.slave_path = None


class TcpSerialDevice:
    """The device side of ``socket://127.0.0.1:PORT``: every client shares one simulated bus."""

    def __init__(self, on_data: DataHandler, port: int = 0) -> None:
        self._on_data = on_data
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        if self._server is None:
            self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]
        return f"socket://127.0.0.1:{self.port}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while data := await reader.read(4096):
                self._on_data(data)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def write(self, data: bytes) -> None:
        for w in list(self._writers):
            if not w.is_closing():
                w.write(data)

    async def stop(self) -> None:
        for w in list(self._writers):
            w.close()
        self._writers.clear()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None


@dataclass
class SimFaults:
    """Faults on demand, common to every serial simulator."""

    no_answer: bool = False  # the device is deaf and mute (wrong address, dead transceiver)
    bad_checksum: bool = False  # replies leave with their last byte corrupted
    slow_reply_s: float = 0.0  # replies leave this late
    powered: bool = True


class SerialDeviceSim:
    """Base of the serial simulators: transport, inter-frame timeout and fault handling.

    Subclasses implement ``handle(data) -> list[reply bytes]`` and ``on_power_return()``.
    Every method except ``start``/``stop`` is synchronous and runs on the simulator's loop.
    """

    #: a partial frame older than this is dropped, like a board's inter-frame timeout (a
    #: frame arrives in one burst on a pty; on a shared line another device's frame can look
    #: like the start of one of ours, and silence is what ends it)
    frame_timeout_s = 0.015

    def __init__(
        self,
        name: str,
        *,
        transport: Transport = "pty",
        port: int = 0,
        bus: SimBus | None = None,
    ) -> None:
        self.name = name
        self.faults = SimFaults()
        self.replies_sent = 0
        self._last_rx = 0.0
        self._bus = bus
        self._endpoint: SerialEndpoint
        if bus is not None:
            self._endpoint = bus
            bus.attach(self)
            transport = bus.transport
        elif transport == "pty":
            self._endpoint = PtyDevice(self._receive)
        elif transport == "tcp":
            self._endpoint = TcpSerialDevice(self._receive, port)
        else:
            raise ValueError(f"transport must be 'pty' or 'tcp', got {transport!r}")
        self.transport = transport
        self.url: str | None = None
        self._pending: set[asyncio.TimerHandle] = set()

    @property
    def slave_path(self) -> str | None:
        """What the daemon opens: a pty path, or a ``socket://`` URL."""
        return self.url

    async def start(self) -> str:
        """Start serving; returns the path/URL for the daemon's ``SerialBus``."""
        self.url = await self._endpoint.start()
        await self._started()
        return self.url

    async def stop(self) -> None:
        for h in self._pending:
            h.cancel()
        self._pending.clear()
        await self._stopping()
        if self._bus is None:  # a shared line is closed by its SimBus
            await self._endpoint.stop()
        self.url = None

    async def _started(self) -> None:
        """Hook for subclasses that run a task (physics)."""

    async def _stopping(self) -> None:
        """Hook for subclasses that run a task (physics)."""

    # -- faults -----------------------------------------------------------------------------
    def no_answer(self, on: bool = True) -> None:
        self.faults.no_answer = on

    def bad_checksum(self, on: bool = True) -> None:
        self.faults.bad_checksum = on

    def slow_reply(self, seconds: float) -> None:
        """Delay every reply by ``seconds`` (0 clears the fault)."""
        if seconds < 0:
            raise ValueError(f"slow_reply seconds must be >= 0, got {seconds}")
        self.faults.slow_reply_s = seconds

    def power_loss(self) -> None:
        self.faults.powered = False

    def power_return(self) -> None:
        if not self.faults.powered:
            self.faults.powered = True
            self.reset_decoder()
            self.on_power_return()

    #: fault names ``set_fault`` takes (the same names as the Modbus lane simulator's)
    fault_names: tuple[str, ...] = (
        "no_answer",
        "bad_checksum",
        "bad_crc",
        "slow_reply",
        "power_loss",
        "power_return",
    )

    def set_fault(self, name: str, on: bool = True, value: float = 0.0) -> None:
        """Inject (``on``) or clear a fault by name; ``slow_reply`` takes seconds in ``value``."""
        if name == "no_answer":
            self.no_answer(on)
        elif name in ("bad_checksum", "bad_crc"):
            self.bad_checksum(on)
        elif name == "slow_reply":
            self.slow_reply(value if on else 0.0)
        elif name == "power_loss":
            if on:
                self.power_loss()
            else:
                self.power_return()
        elif name == "power_return":
            self.power_return()
        elif not self._set_device_fault(name, on, value):
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(self.fault_names)}")
        log.info("%s: fault %s %s", self.name, name, "on" if on else "off")

    def _set_device_fault(self, name: str, on: bool, value: float) -> bool:
        """Device-specific faults; True when ``name`` was one of them."""
        return False

    def active_faults(self) -> dict[str, object]:
        return {
            "no_answer": self.faults.no_answer,
            "bad_checksum": self.faults.bad_checksum,
            "slow_reply_s": self.faults.slow_reply_s,
            "power_loss": not self.faults.powered,
        }

    def clear_faults(self) -> None:
        """Clear every fault; power returns if it was lost."""
        self.faults.no_answer = False
        self.faults.bad_checksum = False
        self.faults.slow_reply_s = 0.0
        self.power_return()

    # -- subclass contract ------------------------------------------------------------------
    def handle(self, data: bytes) -> list[bytes]:
        raise NotImplementedError

    def reset_decoder(self) -> None:
        raise NotImplementedError

    def decoder_pending(self) -> int:
        return 0

    def on_power_return(self) -> None:
        """Power-on state of the device."""

    # -- plumbing ---------------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        """Bytes from the line (called by the endpoint or the shared ``SimBus``)."""
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        if not self.faults.powered or self.faults.no_answer:
            return
        now = asyncio.get_running_loop().time()
        if self.decoder_pending() and now - self._last_rx > self.frame_timeout_s:
            self.reset_decoder()
        self._last_rx = now
        try:
            replies = self.handle(data)
        except Exception:  # a simulator bug must not kill the bench
            log.exception("%s: handling %r failed", self.name, data.hex(" "))
            return
        for reply in replies:
            self._send(reply)

    def _send(self, reply: bytes) -> None:
        if self.faults.bad_checksum and reply:
            reply = reply[:-1] + bytes([reply[-1] ^ 0x5A])
        delay = self.faults.slow_reply_s
        if delay > 0:
            loop = asyncio.get_running_loop()
            handle: asyncio.TimerHandle | None = None

            def fire() -> None:
                if handle is not None:
                    self._pending.discard(handle)
                if self.faults.powered:
                    self._write(reply)

            handle = loop.call_later(delay, fire)
            self._pending.add(handle)
        else:
            self._write(reply)

    def _write(self, data: bytes) -> None:
        self.replies_sent += 1
        self._endpoint.write(data)


class SimBus:
    """One simulated RS-485 pair shared by several devices, as on a real lane.

    Every attached device sees every byte and answers only its own frames; replies go out on
    the same pty/socket. ``await bus.start()`` starts the line and every attached device.
    """

    def __init__(self, transport: Transport = "pty", port: int = 0) -> None:
        self.transport: Transport = transport
        self.devices: list[SerialDeviceSim] = []
        self._line: SerialEndpoint
        if transport == "pty":
            self._line = PtyDevice(self._fan_out)
        elif transport == "tcp":
            self._line = TcpSerialDevice(self._fan_out, port)
        else:
            raise ValueError(f"transport must be 'pty' or 'tcp', got {transport!r}")
        self.url: str | None = None

    def attach(self, device: SerialDeviceSim) -> None:
        if device not in self.devices:
            self.devices.append(device)

    def _fan_out(self, data: bytes) -> None:
        for device in list(self.devices):
            device.receive(data)

    # SerialEndpoint, as seen by an attached device
    async def start(self) -> str:
        """Open the line (idempotent); returns its path/URL."""
        if self.url is None:
            self.url = await self._line.start()
        return self.url

    def write(self, data: bytes) -> None:
        self._line.write(data)

    async def stop(self) -> None:
        """Stop every attached device and close the line."""
        for device in list(self.devices):
            await device.stop()
        await self._line.stop()
        self.url = None

    async def start_all(self) -> str:
        """Open the line and start every attached device (their physics tasks)."""
        for device in list(self.devices):
            await device.start()
        return await self.start()
