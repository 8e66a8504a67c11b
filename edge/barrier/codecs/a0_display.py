"""``0xA0`` LED board framing: ``A0 | id | line | cmd | len16(BE) | data | XOR``.

- XOR is the XOR of every byte before it, header included.
- ``id`` is the board address (0..255), ``line`` is 1..N, 0 = all lines.
- ``data`` is at most ``MAX_DATA`` bytes; a header declaring more is treated as garbage.

Commands (data layout):

====  =========  ==========================================================
cmd   name       data
====  =========  ==========================================================
0x50  SHOW       colour(1) effect(1) text(GB2312/GBK)  -> show on ``line``
0x51  SPEAK      embedded TTS frame ``FD len16 cmd enc text`` (codecs.tts)
0x52  CLEAR      empty; blanks ``line`` (0 = every line)
0x53  IDLE_SET   colour(1) effect(1) text; stores the idle text of ``line``
0x54  IDLE_SHOW  empty; the board shows its idle screen now
0xD0+ ACK        reply: ``cmd | 0x80`` with data = status(1), 0 = OK
====  =========  ==========================================================

Colour: 1 red, 2 green, 3 yellow. Effect: 0 static, 1 scroll left, 2 flash.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.barrier.codecs._framing import FrameDecoder, FrameScanner
from edge.barrier.codecs._xor import xor8
from edge.barrier.codecs.display_model import (
    CODE_COLOURS,
    COLOUR_CODES,
    DisplayCommand,
    Effect,
    FramedCommandDecoder,
    Kind,
    check_byte,
)
from edge.barrier.codecs.text import check_encoding, decode_text, encode_text

HEADER = 0xA0
MAX_DATA = 1024
ACK_BIT = 0x80

CMD_SHOW = 0x50
CMD_SPEAK = 0x51
CMD_CLEAR = 0x52
CMD_IDLE_SET = 0x53
CMD_IDLE_SHOW = 0x54

_KIND_CMD = {
    Kind.SHOW: CMD_SHOW,
    Kind.SPEAK: CMD_SPEAK,
    Kind.CLEAR: CMD_CLEAR,
    Kind.IDLE_SET: CMD_IDLE_SET,
    Kind.IDLE_SHOW: CMD_IDLE_SHOW,
}
_CMD_KIND = {v: k for k, v in _KIND_CMD.items()}


@dataclass(frozen=True)
class A0Frame:
    address: int
    line: int
    cmd: int
    data: bytes = b""


def encode(frame: A0Frame) -> bytes:
    """Frame bytes; ValueError if a field does not fit."""
    check_byte("address", frame.address)
    check_byte("line", frame.line)
    check_byte("cmd", frame.cmd)
    if len(frame.data) > MAX_DATA:
        raise ValueError(f"data is {len(frame.data)} bytes, the A0 board takes at most {MAX_DATA}")
    n = len(frame.data)
    body = bytes([HEADER, frame.address, frame.line, frame.cmd, n >> 8, n & 0xFF]) + frame.data
    return body + bytes([xor8(body)])


def _verify(frame: bytes) -> bool:
    return xor8(frame[:-1]) == frame[-1]


class Decoder(FrameDecoder[A0Frame]):
    """Incremental A0 decoder: ``feed(bytes) -> [A0Frame]``; bad checksums are counted."""

    def __init__(self) -> None:
        super().__init__(FrameScanner(
            header=bytes([HEADER]),
            prefix_len=6,
            body_len=lambda p: (p[4] << 8) | p[5],
            trailer_len=1,
            verify=_verify,
            max_body=MAX_DATA,
        ), lambda f: A0Frame(address=f[1], line=f[2], cmd=f[3], data=f[6:-1]))


def _styled(cmd: DisplayCommand, encoding: str) -> bytes:
    return bytes([COLOUR_CODES[cmd.colour], int(cmd.effect)]) + encode_text(cmd.text, encoding).data


def to_frame(cmd: DisplayCommand, encoding: str = "gb2312") -> A0Frame:
    if cmd.kind is Kind.ACK:
        if cmd.acked is None:
            raise ValueError("an ACK needs the acknowledged command kind")
        status = check_byte("status", cmd.status)
        return A0Frame(cmd.address, cmd.line, _KIND_CMD[cmd.acked] | ACK_BIT, bytes([status]))
    code = _KIND_CMD[cmd.kind]
    if cmd.kind in (Kind.SHOW, Kind.IDLE_SET):
        return A0Frame(cmd.address, cmd.line, code, _styled(cmd, encoding))
    if cmd.kind is Kind.SPEAK:
        return A0Frame(cmd.address, cmd.line, code, cmd.tts)
    return A0Frame(cmd.address, cmd.line, code)


def from_frame(frame: A0Frame, encoding: str = "gb2312") -> DisplayCommand | None:
    """The command a verified frame carries, or None if its content is malformed."""
    if frame.cmd & ACK_BIT:
        kind = _CMD_KIND.get(frame.cmd & ~ACK_BIT)
        if kind is None or len(frame.data) != 1:
            return None
        return DisplayCommand(Kind.ACK, frame.address, frame.line, acked=kind, status=frame.data[0])
    kind = _CMD_KIND.get(frame.cmd)
    if kind is None:
        return None
    if kind in (Kind.SHOW, Kind.IDLE_SET):
        if len(frame.data) < 2 or frame.data[0] not in CODE_COLOURS:
            return None
        try:
            effect = Effect(frame.data[1])
        except ValueError:
            return None
        return DisplayCommand(
            kind,
            frame.address,
            frame.line,
            colour=CODE_COLOURS[frame.data[0]],
            effect=effect,
            text=decode_text(frame.data[2:], encoding),
        )
    if kind is Kind.SPEAK:
        return DisplayCommand(kind, frame.address, frame.line, tts=frame.data)
    if frame.data:
        return None
    return DisplayCommand(kind, frame.address, frame.line)


def CommandDecoder(encoding: str = "gb2312") -> FramedCommandDecoder[A0Frame]:
    """Command-level decoder for this framing (the class name older callers use)."""
    return FramedCommandDecoder(Decoder(), from_frame, encoding)


class A0Codec:
    name = "a0"

    def __init__(self, encoding: str = "gb2312") -> None:
        self.encoding = check_encoding(encoding)

    def encode(self, cmd: DisplayCommand) -> bytes:
        return encode(to_frame(cmd, self.encoding))

    def decoder(self) -> FramedCommandDecoder[A0Frame]:
        return CommandDecoder(self.encoding)


CODEC = A0Codec()
