"""``A5 A5`` LED board framing with CRC16: ``A5 A5 | addr | cmd | len16(BE) | data | CRC16``.

- CRC is CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF) over ``addr .. data`` (the two
  header bytes excluded), sent low byte first as in Modbus RTU.
- ``data`` is at most ``MAX_DATA`` bytes; a header declaring more is treated as garbage.

Commands (the line number travels in the data, 1..N, 0 = all lines):

====  =========  ==========================================================
cmd   name       data
====  =========  ==========================================================
0x10  SHOW       line(1) colour(1) effect(1) text(GB2312/GBK)
0x11  SPEAK      embedded TTS frame ``FD len16 cmd enc text`` (codecs.tts)
0x12  CLEAR      line(1)
0x13  IDLE_SET   line(1) colour(1) effect(1) text
0x14  IDLE_SHOW  empty
0x90+ ACK        reply: ``cmd | 0x80`` with data = line(1) status(1), 0 = OK
====  =========  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.barrier.codecs._framing import FrameDecoder, FrameScanner
from edge.barrier.codecs._xor import crc16_modbus
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

HEADER = b"\xa5\xa5"
MAX_DATA = 1024
ACK_BIT = 0x80

CMD_SHOW = 0x10
CMD_SPEAK = 0x11
CMD_CLEAR = 0x12
CMD_IDLE_SET = 0x13
CMD_IDLE_SHOW = 0x14

_KIND_CMD = {
    Kind.SHOW: CMD_SHOW,
    Kind.SPEAK: CMD_SPEAK,
    Kind.CLEAR: CMD_CLEAR,
    Kind.IDLE_SET: CMD_IDLE_SET,
    Kind.IDLE_SHOW: CMD_IDLE_SHOW,
}
_CMD_KIND = {v: k for k, v in _KIND_CMD.items()}


@dataclass(frozen=True)
class A5Frame:
    address: int
    cmd: int
    data: bytes = b""


def encode(frame: A5Frame) -> bytes:
    """Frame bytes; ValueError if a field does not fit."""
    check_byte("address", frame.address)
    check_byte("cmd", frame.cmd)
    if len(frame.data) > MAX_DATA:
        raise ValueError(f"data is {len(frame.data)} bytes, the A5 board takes at most {MAX_DATA}")
    n = len(frame.data)
    body = bytes([frame.address, frame.cmd, n >> 8, n & 0xFF]) + frame.data
    crc = crc16_modbus(body)
    return HEADER + body + bytes([crc & 0xFF, crc >> 8])


def _verify(frame: bytes) -> bool:
    crc = crc16_modbus(frame[2:-2])
    return frame[-2] == crc & 0xFF and frame[-1] == crc >> 8


class Decoder(FrameDecoder[A5Frame]):
    """Incremental A5 decoder: ``feed(bytes) -> [A5Frame]``; bad CRCs are counted."""

    def __init__(self) -> None:
        super().__init__(FrameScanner(
            header=HEADER,
            prefix_len=6,
            body_len=lambda p: (p[4] << 8) | p[5],
            trailer_len=2,
            verify=_verify,
            max_body=MAX_DATA,
        ), lambda f: A5Frame(address=f[2], cmd=f[3], data=f[6:-2]))


def _styled(cmd: DisplayCommand, encoding: str) -> bytes:
    line = check_byte("line", cmd.line)
    return (
        bytes([line, COLOUR_CODES[cmd.colour], int(cmd.effect)])
        + encode_text(cmd.text, encoding).data
    )


def to_frame(cmd: DisplayCommand, encoding: str = "gb2312") -> A5Frame:
    if cmd.kind is Kind.ACK:
        if cmd.acked is None:
            raise ValueError("an ACK needs the acknowledged command kind")
        data = bytes([check_byte("line", cmd.line), check_byte("status", cmd.status)])
        return A5Frame(cmd.address, _KIND_CMD[cmd.acked] | ACK_BIT, data)
    code = _KIND_CMD[cmd.kind]
    if cmd.kind in (Kind.SHOW, Kind.IDLE_SET):
        return A5Frame(cmd.address, code, _styled(cmd, encoding))
    if cmd.kind is Kind.SPEAK:
        return A5Frame(cmd.address, code, cmd.tts)
    if cmd.kind is Kind.CLEAR:
        return A5Frame(cmd.address, code, bytes([check_byte("line", cmd.line)]))
    return A5Frame(cmd.address, code)


def from_frame(frame: A5Frame, encoding: str = "gb2312") -> DisplayCommand | None:
    """The command a verified frame carries, or None if its content is malformed."""
    d = frame.data
    if frame.cmd & ACK_BIT:
        kind = _CMD_KIND.get(frame.cmd & ~ACK_BIT)
        if kind is None or len(d) != 2:
            return None
        return DisplayCommand(Kind.ACK, frame.address, d[0], acked=kind, status=d[1])
    kind = _CMD_KIND.get(frame.cmd)
    if kind is None:
        return None
    if kind in (Kind.SHOW, Kind.IDLE_SET):
        if len(d) < 3 or d[1] not in CODE_COLOURS:
            return None
        try:
            effect = Effect(d[2])
        except ValueError:
            return None
        return DisplayCommand(
            kind,
            frame.address,
            d[0],
            colour=CODE_COLOURS[d[1]],
            effect=effect,
            text=decode_text(d[3:], encoding),
        )
    if kind is Kind.SPEAK:
        return DisplayCommand(kind, frame.address, 0, tts=d)
    if kind is Kind.CLEAR:
        return DisplayCommand(kind, frame.address, d[0]) if len(d) == 1 else None
    return DisplayCommand(kind, frame.address) if not d else None


def CommandDecoder(encoding: str = "gb2312") -> FramedCommandDecoder[A5Frame]:
    """Command-level decoder for this framing (the class name older callers use)."""
    return FramedCommandDecoder(Decoder(), from_frame, encoding)


class A5Codec:
    name = "a5"

    def __init__(self, encoding: str = "gb2312") -> None:
        self.encoding = check_encoding(encoding)

    def encode(self, cmd: DisplayCommand) -> bytes:
        return encode(to_frame(cmd, self.encoding))

    def decoder(self) -> FramedCommandDecoder[A5Frame]:
        return CommandDecoder(self.encoding)


CODEC = A5Codec()
