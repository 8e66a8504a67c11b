"""Text for Chinese LED boards and TTS chips: GB2312 first, GBK for the rest, '?' otherwise.

GBK is a byte-compatible superset of GB2312, so a board that decodes GBK shows both; a character
neither can encode becomes '?' and is counted, so the driver can report it instead of failing.
Some boards take UTF-16BE instead (``encoding="utf-16-be"``); only lone surrogates are replaced.
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


TEXT_ENCODINGS = ("gb2312", "gbk", "utf-16-be")


def check_encoding(encoding: str) -> str:
    """The canonical encoding name; ValueError names an unsupported one."""
    name = encoding.lower().replace("_", "-")
    if name not in TEXT_ENCODINGS:
        raise ValueError(f"text encoding must be one of {list(TEXT_ENCODINGS)}, got {encoding!r}")
    return name


def encode_text(text: str, encoding: str = "gb2312") -> EncodedText:
    """Encode for a board: "gb2312"/"gbk" (GB2312 then GBK) or "utf-16-be"; never raises
    for text, ValueError only for an unknown encoding name."""
    if check_encoding(encoding) != "utf-16-be":
        return encode_gb(text)
    out = bytearray()
    replaced = 0
    for ch in text:
        try:
            out += ch.encode("utf-16-be")
        except UnicodeEncodeError:  # a lone surrogate
            out += "?".encode("utf-16-be")
            replaced += 1
    return EncodedText(bytes(out), replaced)


def decode_text(data: bytes, encoding: str = "gb2312") -> str:
    if check_encoding(encoding) != "utf-16-be":
        return decode_gb(data)
    return data.decode("utf-16-be", errors="replace")


def display_width(text: str) -> int:
    """Columns a line takes on a board: one per single-byte character, two per CJK character."""
    return len(encode_gb(text).data)
