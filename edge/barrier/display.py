"""``SerialDisplay``: the lane's LED board and voice over RS-485, for the A0 and A5 codecs.

Every frame waits for the board's ACK (checksum verified by the codec's decoder); a missing or
corrupt ACK is retried by the bus, and when the retries are exhausted the operation raises
``DeviceError`` and health goes DOWN (logged once at ERROR). The next successful operation
brings health back to OK by itself. Input the board cannot take (too many lines, speech too
long) raises ``DisplayInputError``, which is a ``DeviceError`` too, so a lane that catches
device errors is never crashed by a message, and health is not touched.

Each line frame costs one round trip plus the bus gap, so ``show`` skips lines the board already
shows (acknowledged earlier) unless ``repaint_s`` has passed since the last full paint; any failure
forgets what the board shows, so the next ``show`` repaints everything. ``repaint_s=0`` always
sends every line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from edge.barrier.codecs import tts
from edge.barrier.codecs.display_model import (
    AckStatus,
    DisplayCommand,
    Effect,
    Kind,
    get_codec,
)
from edge.barrier.codecs.text import display_width, encode_text
from edge.barrier.health import HealthTracker
from edge.barrier.interfaces import DeviceError, DisplayLine, Health
from edge.barrier.serial_bus import SerialBus

log = logging.getLogger(__name__)


class DisplayInputError(DeviceError, ValueError):
    """The text given cannot be put on this board (names what and why)."""


class SerialDisplay:
    """Implements ``Display`` for one board on a ``SerialBus``."""

    def __init__(
        self,
        bus: SerialBus,
        codec: str = "a0",
        address: int = 1,
        lines: int = 2,
        columns: int = 16,
        voice: bool = True,
        *,
        encoding: str = "gb2312",
        name: str | None = None,
        timeout_s: float | None = None,
        retries: int | None = None,
        repaint_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        if repaint_s < 0:
            raise ValueError(f"repaint_s must be >= 0, got {repaint_s}")
        if not 0 <= address <= 255:
            raise ValueError(f"display address must be 0..255, got {address}")
        if lines < 1 or columns < 1:
            raise ValueError(f"display needs lines >= 1 and columns >= 1, got {lines}x{columns}")
        self.bus = bus
        self.codec = get_codec(codec, encoding)
        self.address = address
        self.lines = lines
        self.columns = columns
        self.voice = voice
        self.name = name or f"display {self.codec.name}@{address} on {bus.url}"
        self._timeout_s = timeout_s
        self._retries = retries
        self.tracker = HealthTracker(self.name, logger or log, down_after=1)
        self.health: Health = self.tracker.state
        self.tracker.subscribe(self._on_health)
        self.replaced_chars = 0  # characters sent as '?' (not in GB2312/GBK)
        self.naks_total = 0
        self.repaint_s = repaint_s
        self._clock = clock
        self._painted: list[DisplayLine | None] = [None] * lines  # None: unknown
        self._painted_at = float("-inf")  # last time every line was written
        self.lines_skipped = 0
        # one screen operation at a time: two interleaved shows would leave a mixed screen
        self._op_lock = asyncio.Lock()

    def _on_health(self, _name: str, _old: Health, new: Health) -> None:
        self.health = new

    # -- Display ----------------------------------------------------------------------------
    async def show(self, lines: list[DisplayLine]) -> None:
        """Replace the whole screen; lines not given are cleared."""
        wanted = self._padded(lines)
        async with self._op_lock:
            await self._show(wanted)

    async def _show(self, wanted: list[DisplayLine]) -> None:
        now = self._clock()
        fresh = self.repaint_s > 0 and now - self._painted_at < self.repaint_s
        todo = [
            (n, line)
            for n, (line, painted) in enumerate(zip(wanted, self._painted, strict=True), start=1)
            if not (fresh and line == painted)
        ]
        cmds = self._line_commands(Kind.SHOW, todo)
        self.lines_skipped += self.lines - len(cmds)
        if not cmds:
            return
        await self._run(cmds)
        self._painted = list(wanted)
        if len(cmds) == self.lines:
            self._painted_at = now

    async def idle(self, lines: list[DisplayLine]) -> None:
        """Store the idle screen in the board and switch to it."""
        wanted = self._padded(lines)
        cmds = self._line_commands(Kind.IDLE_SET, list(enumerate(wanted, start=1)))
        cmds.append(DisplayCommand(Kind.IDLE_SHOW, self.address))
        async with self._op_lock:
            now = self._clock()
            await self._run(cmds)
            self._painted = list(wanted)
            self._painted_at = now

    async def speak(self, text: str) -> None:
        if not self.voice:
            log.debug("%s has no voice; not speaking %r", self.name, text)
            return
        try:
            speech = tts.encode_speech(text)
        except ValueError as exc:
            raise DisplayInputError(f"{self.name}: {exc}") from None
        self.replaced_chars += speech.replaced
        async with self._op_lock:
            await self._run([DisplayCommand(Kind.SPEAK, self.address, tts=speech.frame)])

    # -- internals --------------------------------------------------------------------------
    def _padded(self, lines: list[DisplayLine]) -> list[DisplayLine]:
        """Exactly one line per physical line; an empty text is a blank line whatever its colour."""
        if len(lines) > self.lines:
            raise DisplayInputError(
                f"{self.name}: {len(lines)} lines given, the board has {self.lines}"
            )
        padded = [line if line.text else DisplayLine("") for line in lines]
        return padded + [DisplayLine("")] * (self.lines - len(lines))

    def _line_commands(
        self, kind: Kind, lines: list[tuple[int, DisplayLine]]
    ) -> list[DisplayCommand]:
        cmds = []
        for n, line in lines:
            if kind is Kind.SHOW and not line.text:
                cmds.append(DisplayCommand(Kind.CLEAR, self.address, n))
                continue
            self.replaced_chars += encode_text(line.text, self.codec.encoding).replaced
            effect = Effect.SCROLL if display_width(line.text) > self.columns else Effect.STATIC
            cmds.append(
                DisplayCommand(
                    kind, self.address, n, colour=line.colour, effect=effect, text=line.text
                )
            )
        return cmds

    async def _run(self, cmds: list[DisplayCommand]) -> None:
        try:
            for cmd in cmds:
                await self._send(cmd)
        except DeviceError as exc:
            self._painted = [None] * self.lines  # what the board shows is unknown now
            self.tracker.failure(exc)
            raise
        self.tracker.success()

    async def _send(self, cmd: DisplayCommand) -> None:
        def is_ack(reply: DisplayCommand) -> bool:
            return (
                reply.kind is Kind.ACK
                and reply.address == self.address
                and reply.acked is cmd.kind
                and reply.line == cmd.line
            )

        ack = await self.bus.exchange(
            self.codec.encode(cmd),
            self.codec.decoder,
            is_ack,
            timeout_s=self._timeout_s,
            retries=self._retries,
        )
        if ack.status != AckStatus.OK:
            self.naks_total += 1
            try:
                why = AckStatus(ack.status).name
            except ValueError:
                why = f"status 0x{ack.status:02x}"
            raise DeviceError(f"{self.name} refused {cmd.kind.value} on line {cmd.line}: {why}")
