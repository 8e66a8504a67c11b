"""SerialBus over real ptys and real sockets: serialisation, gap, timeouts, retries, reopen."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import serial
from parkedge_sim.pty_device import PtyDevice, TcpSerialDevice

from edge.barrier.codecs import eb_barrier as eb
from edge.barrier.codecs.eb_barrier import EbFrame
from edge.barrier.serial_bus import BusError, BusTimeout, SerialBus

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro, 20)

    return asyncio.run(main())


class EchoDevice:
    """A device on a pty that answers EB frames with ``cmd | 0x80`` and the same data byte.

    ``skip`` frames are ignored first (to exercise retries); ``delay_s`` delays every reply.
    """

    def __init__(self, *, skip: int = 0, delay_s: float = 0.0, tcp_port: int | None = None):
        self.skip = skip
        self.delay_s = delay_s
        self.arrivals: list[float] = []
        self.received: list[EbFrame] = []
        self._dec = eb.Decoder()
        self.dev: PtyDevice | TcpSerialDevice = (
            PtyDevice(self._on) if tcp_port is None else TcpSerialDevice(self._on, tcp_port)
        )

    def _on(self, data: bytes) -> None:
        for f in self._dec.feed(data):
            self.arrivals.append(time.monotonic())
            self.received.append(f)
            if self.skip:
                self.skip -= 1
                continue
            reply = eb.encode(EbFrame(f.address, f.cmd | 0x80, f.data))
            if self.delay_s:
                asyncio.get_running_loop().call_later(self.delay_s, self.dev.write, reply)
            else:
                self.dev.write(reply)


def _is_reply_to(data: int) -> Callable[[EbFrame], bool]:
    return lambda f: f.is_reply and f.data == data


def test_concurrent_requests_never_overlap_and_keep_the_gap() -> None:
    async def main() -> None:
        dev = EchoDevice(delay_s=0.005)
        bus = SerialBus(await dev.dev.start(), gap_ms=20, timeout_s=0.5, retries=0)

        async def one(i: int) -> int:
            f = await bus.exchange(
                eb.command(1, eb.EbCommand.OPEN_N, i), eb.Decoder, _is_reply_to(i)
            )
            return f.data

        results = await asyncio.gather(*(one(i) for i in range(8)))
        assert results == list(range(8))  # every task got its own reply, none crossed
        assert bus.max_in_flight == 1
        gaps = [b - a for a, b in zip(dev.arrivals, dev.arrivals[1:], strict=False)]
        # each request waits for the previous reply (5 ms) plus the 20 ms gap
        assert min(gaps) >= 0.024, gaps
        await bus.close()
        await dev.dev.stop()

    run(main())


def test_timeout_then_retries_then_bus_timeout() -> None:
    async def main() -> None:
        dev = EchoDevice(skip=100)
        bus = SerialBus(await dev.dev.start(), gap_ms=0, timeout_s=0.05, retries=2)
        t0 = time.monotonic()
        with pytest.raises(BusTimeout, match="3 of 3 attempts"):
            await bus.exchange(eb.command(1, eb.EbCommand.STATUS), eb.Decoder, _is_reply_to(0))
        elapsed = time.monotonic() - t0
        assert 0.15 <= elapsed < 1.5  # generous upper bound: a loaded 2-core box
        assert len(dev.received) == 3  # the request was resent twice
        assert bus.timeouts_total == 3 and bus.retries_total == 2
        await bus.close()
        await dev.dev.stop()

    run(main())


def test_retry_succeeds_when_the_device_missed_the_first_frame() -> None:
    async def main() -> None:
        dev = EchoDevice(skip=1)
        # the config's "serial:///dev/..." spelling names the same port
        bus = SerialBus("serial://" + await dev.dev.start(), gap_ms=0, timeout_s=0.05, retries=1)
        f = await bus.exchange(eb.command(1, eb.EbCommand.OPEN_N, 7), eb.Decoder, _is_reply_to(7))
        assert f.data == 7 and bus.retries_total == 1
        await bus.close()
        await dev.dev.stop()

    run(main())


def test_missing_port_is_a_bus_error_with_back_off_and_one_error_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        bus = SerialBus("/dev/does-not-exist-parkedge", reconnect_min_s=0.2, reconnect_max_s=1)
        with pytest.raises(BusError, match="cannot open"):
            await bus.exchange(b"x", eb.Decoder, lambda f: True)
        with pytest.raises(BusError, match="next reopen attempt in"):
            await bus.exchange(b"x", eb.Decoder, lambda f: True)
        await asyncio.sleep(0.25)
        with pytest.raises(BusError, match="cannot open"):  # tried again after the back-off
            await bus.exchange(b"x", eb.Decoder, lambda f: True)
        assert bus.health.failures_total == 2

    with caplog.at_level(logging.DEBUG, logger="edge.barrier.serial_bus"):
        run(main())
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "does-not-exist" in errors[0].getMessage()


def test_socket_port_vanishes_and_comes_back_without_a_new_bus() -> None:
    async def main() -> None:
        dev = EchoDevice(tcp_port=0)
        url = await dev.dev.start()
        port = int(url.rsplit(":", 1)[1])
        bus = SerialBus(url, gap_ms=0, timeout_s=0.1, retries=0, reconnect_min_s=0.05)
        await bus.exchange(eb.command(1, eb.EbCommand.OPEN_N, 1), eb.Decoder, _is_reply_to(1))
        await dev.dev.stop()
        with pytest.raises(BusError):
            for _ in range(3):  # the closed socket shows up as an I/O error or refused reopen
                await bus.exchange(
                    eb.command(1, eb.EbCommand.OPEN_N, 2), eb.Decoder, _is_reply_to(2)
                )
        assert bus.health.state.value == "down"
        dev2 = EchoDevice(tcp_port=port)
        await dev2.dev.start()
        f = None
        for _ in range(40):
            try:
                f = await bus.exchange(
                    eb.command(1, eb.EbCommand.OPEN_N, 3), eb.Decoder, _is_reply_to(3)
                )
                break
            except BusError:
                await asyncio.sleep(0.05)
        assert f is not None and f.data == 3
        assert bus.health.state.value == "ok" and bus.opens_total == 2
        await bus.close()
        await dev2.dev.stop()

    run(main())


def test_loop_url_handler() -> None:
    async def main() -> None:
        bus = SerialBus("loop://", gap_ms=0, timeout_s=0.1)
        # loop:// hands our own bytes back: the decoder finds the request frame itself
        f = await bus.exchange(eb.command(5, eb.EbCommand.UP), eb.Decoder, lambda f: True)
        assert f == EbFrame(5, eb.EbCommand.UP, 0)
        await bus.close()

    run(main())


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"timeout_s": 0}, "timeout_s"), ({"retries": -1}, "retries"), ({"gap_ms": -5}, "gap_ms")],
)
def test_bad_settings_named(kwargs: dict[str, float], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        SerialBus("loop://", **kwargs)  # type: ignore[arg-type]


class CountingPort:
    """Wraps a real pyserial port and records how many threads use it at once."""

    def __init__(self, port: serial.SerialBase) -> None:
        self._port = port
        self._guard = threading.Lock()
        self.active = 0
        self.max_active = 0

    def _enter(self) -> None:
        with self._guard:
            self.active += 1
            self.max_active = max(self.max_active, self.active)

    def _leave(self) -> None:
        with self._guard:
            self.active -= 1

    def read(self, n: int) -> bytes:
        self._enter()
        try:
            return bytes(self._port.read(n))
        finally:
            self._leave()

    def write(self, data: bytes) -> int | None:
        self._enter()
        try:
            return self._port.write(data)
        finally:
            self._leave()

    def reset_input_buffer(self) -> None:
        self._enter()
        try:
            self._port.reset_input_buffer()
        finally:
            self._leave()

    @property
    def in_waiting(self) -> int:
        return int(self._port.in_waiting)

    def close(self) -> None:
        self._port.close()


def test_cancelled_request_keeps_the_port_until_its_thread_is_done() -> None:
    async def main() -> None:
        dev = EchoDevice(skip=1)  # the first request gets no answer
        ports: list[CountingPort] = []

        def opener(url: str, **kw: object) -> CountingPort:
            ports.append(CountingPort(serial.serial_for_url(url, **kw)))
            return ports[-1]

        bus = SerialBus(await dev.dev.start(), gap_ms=0, timeout_s=1.0, retries=0, opener=opener)
        silent = asyncio.create_task(
            bus.exchange(eb.command(1, eb.EbCommand.STATUS), eb.Decoder, _is_reply_to(0))
        )
        await asyncio.sleep(0.03)  # the worker thread is blocked in read()
        silent.cancel()
        f = await bus.exchange(eb.command(1, eb.EbCommand.OPEN_N, 4), eb.Decoder, _is_reply_to(4))
        assert silent.cancelled() and f.data == 4
        assert ports[0].max_active == 1  # never two threads on the port
        await bus.close()
        await dev.dev.stop()

    run(main())
