"""Embedded TTS-chip frame (SYN6288 / XFS5152 class): ``FD | len16(BE) | cmd | enc | text``.

``len`` counts the bytes after it (cmd + enc + text). This frame travels inside a display
board's SPEAK command, whose own checksum protects it, so (as on the XFS5152) it carries none.
Text is GB2312 when every character fits, GBK otherwise; unencodable characters become '?'.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from edge.barrier.codecs.text import decode_gb, encode_gb

HEADER = 0xFD
MAX_TEXT = 200  # bytes of text per frame (SYN6288 limit)

CMD_SYNTHESISE = 0x01
CMD_STOP = 0x02


class TtsEncoding(IntEnum):
    GB2312 = 0x00
    GBK = 0x01
    BIG5 = 0x02
    UTF16LE = 0x03


@dataclass(frozen=True)
class TtsFrame:
    cmd: int
    encoding: TtsEncoding
    text: str


@dataclass(frozen=True)
class EncodedSpeech:
    frame: bytes
    replaced: int


def encode_speech(text: str) -> EncodedSpeech:
    """A synthesise frame for ``text``; ValueError if it is longer than the chip accepts."""
    enc = encode_gb(text)
    if len(enc.data) > MAX_TEXT:
        raise ValueError(f"speech text is {len(enc.data)} bytes, the TTS chip takes {MAX_TEXT}")
    try:
        text.encode("gb2312")
        encoding = TtsEncoding.GB2312
    except UnicodeEncodeError:
        encoding = TtsEncoding.GBK
    n = 2 + len(enc.data)
    frame = bytes([HEADER, n >> 8, n & 0xFF, CMD_SYNTHESISE, encoding]) + enc.data
    return EncodedSpeech(frame, enc.replaced)


def parse(frame: bytes) -> TtsFrame | None:
    """The TTS frame in ``frame``, or None if it is not a well-formed one (never raises)."""
    if len(frame) < 5 or frame[0] != HEADER:
        return None
    n = (frame[1] << 8) | frame[2]
    if n != len(frame) - 3 or n - 2 > MAX_TEXT:
        return None
    try:
        encoding = TtsEncoding(frame[4])
    except ValueError:
        return None
    body = frame[5:]
    if encoding is TtsEncoding.UTF16LE:
        text = body.decode("utf-16-le", errors="replace")
    elif encoding is TtsEncoding.BIG5:
        text = body.decode("big5", errors="replace")
    else:
        text = decode_gb(body)
    return TtsFrame(frame[3], encoding, text)
