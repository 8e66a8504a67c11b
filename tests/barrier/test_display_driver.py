"""SerialDisplay against DisplaySim over real ptys (and socket://), for both codecs and faults."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest
import serial
from parkedge_sim.display_sim import DisplaySim
from parkedge_sim.pty_device import Transport

from edge.barrier.codecs.display_model import DisplayCommand, Effect, Kind, get_codec
from edge.barrier.display import DisplayInputError, SerialDisplay
from edge.barrier.interfaces import Colour, DeviceError, Display, DisplayLine, Health
from edge.barrier.serial_bus import SerialBus

T = TypeVar("T")
LOGGER = "test.display"


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro, 20)

    return asyncio.run(main())


@asynccontextmanager
async def lane_display(
    codec: str = "a0",
    *,
    transport: Transport = "pty",
    address: int = 1,
    sim_address: int | None = None,
) -> AsyncIterator[tuple[DisplaySim, SerialDisplay]]:
    sim = DisplaySim(
        codec, address if sim_address is None else sim_address, lines=3, transport=transport
    )
    url = await sim.start()
    bus = SerialBus(url, gap_ms=0, timeout_s=0.05, retries=1)
    display = SerialDisplay(
        bus, codec, address, lines=3, columns=16, logger=logging.getLogger(LOGGER)
    )
    try:
        yield sim, display
    finally:
        await bus.close()
        await sim.stop()


CODECS = ["a0", "a5"]


@pytest.mark.parametrize("codec", CODECS)
def test_show_speak_idle_reach_the_board(codec: str) -> None:
    async def main() -> None:
        async with lane_display(codec) as (sim, display):
            d: Display = display  # the driver satisfies the lane's interface
            await d.show([DisplayLine("粤B12345", Colour.RED), DisplayLine("请缴费 12.50元")])
            assert sim.screen == ["粤B12345", "请缴费 12.50元", ""]
            assert sim.colours == [Colour.RED, Colour.GREEN, None]
            await d.speak("粤B12345 一路顺风")
            assert sim.spoken == ["粤B12345 一路顺风"]
            await d.idle([DisplayLine("余位 88", Colour.GREEN), DisplayLine("欢迎光临")])
            assert sim.showing_idle and sim.screen == ["余位 88", "欢迎光临", ""]
            assert sim.idle_screen == ["余位 88", "欢迎光临", ""]
            await d.show([DisplayLine("only one")])  # the rest of the screen is cleared
            assert sim.screen == ["only one", "", ""] and not sim.showing_idle
            assert d.health is Health.OK and sim.frames_bad == 0

    run(main())


def test_wide_text_scrolls_and_unencodable_is_counted() -> None:
    async def main() -> None:
        async with lane_display("a0") as (sim, display):
            await display.show([DisplayLine("欢迎光临本停车场请减速慢行"), DisplayLine("车🚗")])
            shows = [c for c in sim.history if c.kind is Kind.SHOW]
            assert shows[0].effect is Effect.SCROLL  # 26 columns on a 16-column board
            assert shows[1].effect is Effect.STATIC
            assert sim.screen[1] == "车?" and display.replaced_chars == 1

    run(main())


def test_bad_input_is_a_named_error_not_a_health_failure() -> None:
    async def main() -> None:
        async with lane_display("a0") as (sim, display):
            with pytest.raises(DisplayInputError, match="4 lines given, the board has 3"):
                await display.show([DisplayLine("x")] * 4)
            with pytest.raises(DisplayInputError, match="200"):
                await display.speak("请" * 150)
            assert isinstance(DisplayInputError("x"), DeviceError)
            assert display.health is Health.OK and sim.frames_ok == 0

    run(main())


def test_board_ignores_bad_checksum_and_other_addresses() -> None:
    async def main() -> None:
        async with lane_display("a5") as (sim, _display):
            codec = get_codec("a5")
            good = codec.encode(DisplayCommand(Kind.SHOW, 1, 1, text="OK"))
            corrupt = good[:-1] + bytes([good[-1] ^ 0x01])
            other = codec.encode(DisplayCommand(Kind.SHOW, 2, 1, text="not me"))
            port = serial.serial_for_url(sim.slave_path, timeout=0.2)
            try:
                port.write(corrupt + other)
                await asyncio.sleep(0.05)
                assert await asyncio.to_thread(port.read, 64) == b""  # no ack for either
                assert sim.frames_bad == 1 and sim.screen[0] == ""
                port.write(good)
                await sim.wait_for(lambda s: s.screen[0] == "OK")
                ack = codec.decoder().feed(await asyncio.to_thread(port.read, 10))
                assert [a.acked for a in ack] == [Kind.SHOW]
            finally:
                port.close()

    run(main())


FAULTS: dict[str, tuple[Callable[[DisplaySim], None], Callable[[DisplaySim], None]]] = {
    "no_answer": (lambda s: s.no_answer(), lambda s: s.no_answer(False)),
    "bad_checksum": (lambda s: s.bad_checksum(), lambda s: s.bad_checksum(False)),
    "slow_reply": (lambda s: s.slow_reply(0.2), lambda s: s.slow_reply(0)),
    "power_loss": (lambda s: s.power_loss(), lambda s: s.power_return()),
}


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_reports_down_logs_once_and_recovers(
    codec: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    inject, clear = FAULTS[fault]

    async def main() -> None:
        async with lane_display(codec) as (sim, display):
            await display.show([DisplayLine("before")])
            inject(sim)
            for _ in range(3):
                with pytest.raises(DeviceError):
                    await display.show([DisplayLine("during")])
            assert display.health is Health.DOWN
            assert display.tracker.failures_total == 3
            clear(sim)
            await asyncio.sleep(0.25)  # let a slow board's late acks drain
            await display.show([DisplayLine("after", Colour.YELLOW)])
            assert display.health is Health.OK
            assert sim.screen[0] == "after" and sim.colours[0] is Colour.YELLOW

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        run(main())
    mine = [r for r in caplog.records if r.name == LOGGER]
    assert [r.levelno for r in mine if r.levelno >= logging.WARNING] == [
        logging.ERROR,
        logging.WARNING,  # "recovered after 3 failed attempts"
    ]
    assert "recovered" in mine[-1].getMessage()


def test_slow_reply_within_timeout_is_fine() -> None:
    async def main() -> None:
        async with lane_display("a0") as (sim, display):
            sim.slow_reply(0.02)
            await display.show([DisplayLine("slow but fine")])
            assert display.health is Health.OK and display.bus.retries_total == 0

    run(main())


def test_power_returns_with_a_blank_screen() -> None:
    async def main() -> None:
        async with lane_display("a0") as (sim, display):
            await display.idle([DisplayLine("余位 5")])
            await display.show([DisplayLine("粤B12345")])
            sim.power_loss()
            sim.power_return()
            assert sim.screen == ["", "", ""] and sim.idle_screen[0] == "余位 5"

    run(main())


def test_utf16be_board_configuration() -> None:
    async def main() -> None:
        sim = DisplaySim("a0", 1, lines=1, encoding="utf-16-be")
        bus = SerialBus(await sim.start(), gap_ms=0, timeout_s=0.2)
        display = SerialDisplay(bus, "a0", 1, lines=1, encoding="utf-16-be")
        await display.show([DisplayLine("粤B12345 🚗")])
        assert sim.screen == ["粤B12345 🚗"] and display.replaced_chars == 0
        await bus.close()
        await sim.stop()

    run(main())


def test_wrong_address_is_no_answer() -> None:
    async def main() -> None:
        async with lane_display("a0", address=1, sim_address=2) as (sim, display):
            with pytest.raises(DeviceError, match="no valid reply"):
                await display.show([DisplayLine("x")])
            assert sim.frames_ok == 0

    run(main())


def test_over_socket_url() -> None:
    async def main() -> None:
        async with lane_display("a5", transport="tcp") as (sim, display):
            assert sim.slave_path is not None and sim.slave_path.startswith("socket://127.0.0.1:")
            await display.show([DisplayLine("TCP")])
            await display.speak("请通行")
            assert sim.screen[0] == "TCP" and sim.spoken == ["请通行"]

    run(main())


def test_unchanged_lines_are_not_resent_until_repaint_or_failure() -> None:
    async def main() -> None:
        now = [0.0]
        sim = DisplaySim("a0", 1, lines=3)
        bus = SerialBus(await sim.start(), gap_ms=0, timeout_s=0.05, retries=0)
        display = SerialDisplay(bus, "a0", 1, lines=3, repaint_s=10, clock=lambda: now[0])
        screen = [DisplayLine("粤B12345"), DisplayLine("请缴费 5元"), DisplayLine("谢谢")]
        await display.show(screen)
        assert sim.frames_ok == 3
        await display.show(screen)  # nothing changed: no frame at all
        assert sim.frames_ok == 3 and display.lines_skipped == 3
        await display.show([screen[0], DisplayLine("请缴费 8元"), screen[2]])
        assert sim.frames_ok == 4 and sim.screen[1] == "请缴费 8元"
        now[0] = 10.5  # the board may have blinked: repaint everything
        await display.show([screen[0], DisplayLine("请缴费 8元"), screen[2]])
        assert sim.frames_ok == 7
        sim.no_answer()
        with pytest.raises(DeviceError):
            await display.show([DisplayLine("x")])
        sim.no_answer(False)
        sim.power_loss()
        sim.power_return()  # blank board
        await display.show([screen[0], DisplayLine("请缴费 8元"), screen[2]])
        assert sim.screen == ["粤B12345", "请缴费 8元", "谢谢"]  # all repainted after the failure
        await bus.close()
        await sim.stop()

    run(main())


def test_concurrent_shows_never_leave_a_mixed_screen() -> None:
    async def main() -> None:
        async with lane_display("a0") as (sim, display):
            a = [DisplayLine("A1"), DisplayLine("A2"), DisplayLine("A3")]
            b = [DisplayLine("B1"), DisplayLine("B2"), DisplayLine("B3")]
            await asyncio.gather(display.show(a), display.show(b))
            assert sim.screen == ["B1", "B2", "B3"]
            kinds = [c.text[0] for c in sim.history if c.kind is Kind.SHOW]
            assert kinds == ["A", "A", "A", "B", "B", "B"]  # whole operations, in call order

    run(main())
