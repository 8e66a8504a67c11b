"""Text for Chinese LED boards and TTS chips: GB2312 first, GBK for the rest, '?' otherwise.

GBK is a byte-compatible superset of GB2312, so a board that decodes GBK shows both; a character
neither can encode becomes '?' and is counted, so the driver can report it instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EncodedText:
    data: bytes
    replaced: int  # characters that could not be encoded and were sent as '?'


def encode_gb(text: str) -> EncodedText:
    """Encode ``text`` for a GB2312/GBK board; never raises."""
    out = bytearray()
    replaced = 0
    for ch in text:
        for codec in ("gb2312", "gbk"):
            try:
                out += ch.encode(codec)
                break
            except UnicodeEncodeError:
                continue
        else:
            out += b"?"
            replaced += 1
    return EncodedText(bytes(out), replaced)


def decode_gb(data: bytes) -> str:
    """Decode board text; undecodable bytes become U+FFFD rather than raising."""
    return data.decode("gbk", errors="replace")


def display_width(text: str) -> int:
    """Columns a line takes on a board: one per single-byte character, two per CJK character."""
    return len(encode_gb(text).data)
