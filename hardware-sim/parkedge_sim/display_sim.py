"""A lane LED board with a TTS chip, on a pty (or ``socket://``), for either codec.

It behaves like the boards in the field: frames with a bad checksum are ignored (counted in
``frames_bad``, never acknowledged), frames for another address are ignored, every good frame
gets an ACK frame, and power returns with the screen blank. Tests and the bench read
``screen``/``colours``/``spoken``/``idle_screen`` directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from edge.barrier.codecs import tts
from edge.barrier.codecs.display_model import (
    AckStatus,
    DisplayCommand,
    Kind,
    get_codec,
)
from edge.barrier.interfaces import Colour
from parkedge_sim.pty_device import SerialDeviceSim, SimBus, Transport


class DisplaySim(SerialDeviceSim):
    def __init__(
        self,
        codec: str = "a0",
        address: int = 1,
        *,
        lines: int = 4,
        encoding: str = "gb2312",
        transport: Transport = "pty",
        port: int = 0,
        bus: SimBus | None = None,
    ) -> None:
        super().__init__(f"display-sim {codec}@{address}", transport=transport, port=port, bus=bus)
        if lines < 1:
            raise ValueError(f"lines must be >= 1, got {lines}")
        self.codec = get_codec(codec, encoding)
        self.address = address
        self.lines = lines
        self._decoder = self.codec.decoder()
        self.screen: list[str] = [""] * lines
        self.colours: list[Colour | None] = [None] * lines
        self.idle_screen: list[str] = [""] * lines  # kept in the board's flash
        self.idle_colours: list[Colour | None] = [None] * lines
        self.showing_idle = False
        self.spoken: list[str] = []
        self.frames_ok = 0
        self.history: list[DisplayCommand] = []

    @property
    def frames_bad(self) -> int:
        """Frames ignored because their checksum did not match."""
        return self._decoder.bad_frames

    def reset_decoder(self) -> None:
        self._decoder.reset()

    def decoder_pending(self) -> int:
        return self._decoder.pending

    def on_power_return(self) -> None:
        self.screen = [""] * self.lines
        self.colours = [None] * self.lines
        self.showing_idle = False

    def snapshot(self) -> dict[str, object]:
        """A JSON-able view for the bench page."""
        return {
            "screen": list(self.screen),
            "colours": [c.value if c else None for c in self.colours],
            "idle_screen": list(self.idle_screen),
            "showing_idle": self.showing_idle,
            "spoken": list(self.spoken[-10:]),
            "frames_ok": self.frames_ok,
            "frames_bad": self.frames_bad,
            "powered": self.faults.powered,
            "faults": self.active_faults(),
        }

    async def wait_for(self, predicate: Callable[[DisplaySim], bool], timeout: float = 2.0) -> None:
        """Wait until ``predicate(self)`` holds (tests); TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await asyncio.sleep(0.005)

    # -- protocol ---------------------------------------------------------------------------
    def handle(self, data: bytes) -> list[bytes]:
        replies = []
        for cmd in self._decoder.feed(data):
            if cmd.address != self.address or cmd.kind is Kind.ACK:
                continue  # another board on the bus, or another board's reply
            self.frames_ok += 1
            self.history.append(cmd)
            status = self._apply(cmd)
            ack = DisplayCommand(Kind.ACK, self.address, cmd.line, acked=cmd.kind, status=status)
            replies.append(self.codec.encode(ack))
        return replies

    def _line_index(self, line: int) -> int | None:
        return line - 1 if 1 <= line <= self.lines else None

    def _apply(self, cmd: DisplayCommand) -> int:
        if cmd.kind in (Kind.SHOW, Kind.IDLE_SET):
            i = self._line_index(cmd.line)
            if i is None:
                return AckStatus.BAD_LINE
            if cmd.kind is Kind.SHOW:
                self.screen[i] = cmd.text
                self.colours[i] = cmd.colour
                self.showing_idle = False
            else:
                self.idle_screen[i] = cmd.text
                self.idle_colours[i] = cmd.colour
            return AckStatus.OK
        if cmd.kind is Kind.CLEAR:
            if cmd.line == 0:
                self.screen = [""] * self.lines
                self.colours = [None] * self.lines
                return AckStatus.OK
            i = self._line_index(cmd.line)
            if i is None:
                return AckStatus.BAD_LINE
            self.screen[i] = ""
            self.colours[i] = None
            return AckStatus.OK
        if cmd.kind is Kind.IDLE_SHOW:
            self.screen = list(self.idle_screen)
            self.colours = list(self.idle_colours)
            self.showing_idle = True
            return AckStatus.OK
        if cmd.kind is Kind.SPEAK:
            frame = tts.parse(cmd.tts)
            if frame is None:
                return AckStatus.BAD_DATA
            if frame.cmd == tts.CMD_SYNTHESISE:
                self.spoken.append(frame.text)
            return AckStatus.OK
        return AckStatus.BAD_COMMAND
