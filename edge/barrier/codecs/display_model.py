"""Codec-neutral display commands, so the driver and the simulator speak to any board codec.

Each board codec (``a0_display``, ``a5_display``) maps these commands onto its own frames;
``get_codec(name)`` returns it. Line numbers are 1-based; line 0 means "all lines".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Generic, Protocol, TypeVar

from edge.barrier.codecs.text import check_encoding
from edge.barrier.interfaces import Colour

# Colour byte on the wire (first byte of a show/idle payload).
COLOUR_CODES: dict[Colour, int] = {Colour.RED: 0x01, Colour.GREEN: 0x02, Colour.YELLOW: 0x03}
CODE_COLOURS: dict[int, Colour] = {v: k for k, v in COLOUR_CODES.items()}


class Effect(IntEnum):
    """Second byte of a show/idle payload."""

    STATIC = 0x00
    SCROLL = 0x01  # scroll left, for a line wider than the board
    FLASH = 0x02


class Kind(StrEnum):
    SHOW = "show"
    SPEAK = "speak"
    CLEAR = "clear"
    IDLE_SET = "idle_set"
    IDLE_SHOW = "idle_show"
    ACK = "ack"


class AckStatus(IntEnum):
    OK = 0x00
    BAD_COMMAND = 0x01
    BAD_LINE = 0x02
    BAD_DATA = 0x03


@dataclass(frozen=True)
class DisplayCommand:
    kind: Kind
    address: int
    line: int = 0
    colour: Colour = Colour.GREEN
    effect: Effect = Effect.STATIC
    text: str = ""
    tts: bytes = b""  # SPEAK: the embedded TTS-chip frame (see codecs.tts)
    acked: Kind | None = None  # ACK: which command is acknowledged
    status: int = AckStatus.OK  # ACK: board's verdict


class CommandDecoder(Protocol):
    @property
    def bad_frames(self) -> int: ...

    @property
    def pending(self) -> int: ...

    def feed(self, data: bytes) -> list[DisplayCommand]: ...

    def reset(self) -> None: ...


class DisplayCodec(Protocol):
    name: str
    encoding: str

    def __init__(self, encoding: str = "gb2312") -> None: ...

    def encode(self, cmd: DisplayCommand) -> bytes:
        """Frame one command; ValueError names the field that does not fit the wire format."""
        ...

    def decoder(self) -> CommandDecoder: ...


F = TypeVar("F")


class FrameDecoder(Protocol[F]):
    """A vendor's incremental frame decoder (checksums verified there)."""

    @property
    def bad_frames(self) -> int: ...

    @property
    def pending(self) -> int: ...

    def feed(self, data: bytes) -> list[F]: ...

    def reset(self) -> None: ...


class FramedCommandDecoder(Generic[F]):
    """Frames from a vendor decoder turned into commands; well-framed but meaningless frames
    count as ``malformed`` (the same for every board framing)."""

    def __init__(
        self,
        frames: FrameDecoder[F],
        from_frame: Callable[[F, str], DisplayCommand | None],
        encoding: str = "gb2312",
    ) -> None:
        self._dec = frames
        self._from_frame = from_frame
        self._encoding = check_encoding(encoding)
        self.malformed = 0

    @property
    def bad_frames(self) -> int:
        return self._dec.bad_frames

    @property
    def pending(self) -> int:
        return self._dec.pending

    def reset(self) -> None:
        self._dec.reset()

    def feed(self, data: bytes) -> list[DisplayCommand]:
        out = []
        for frame in self._dec.feed(data):
            cmd = self._from_frame(frame, self._encoding)
            if cmd is None:
                self.malformed += 1
            else:
                out.append(cmd)
        return out


def check_byte(name: str, value: int) -> int:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must be 0..255, got {value}")
    return value


def get_codec(name: str, encoding: str = "gb2312") -> DisplayCodec:
    """``"a0"`` or ``"a5"``, with the board's text encoding; ValueError names what is unknown."""
    from edge.barrier.codecs import a0_display, a5_display

    codecs: dict[str, type[DisplayCodec]] = {"a0": a0_display.A0Codec, "a5": a5_display.A5Codec}
    try:
        return codecs[name.lower()](encoding)
    except KeyError:
        known = sorted(codecs)
        raise ValueError(f"unknown display codec {name!r}; expected one of {known}") from None
