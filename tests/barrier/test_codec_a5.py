"""A5 display codec (CRC-16/MODBUS): vectors, round trips, and fuzzing of the decoder."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.barrier.codecs import a5_display as a5
from edge.barrier.codecs._xor import crc16_modbus
from edge.barrier.codecs.display_model import AckStatus, DisplayCommand, Effect, Kind, get_codec
from edge.barrier.interfaces import Colour


def crc_bitwise(data: bytes) -> int:
    """An independent, table-free CRC-16/MODBUS to check the codec's table version against."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def test_crc_known_values() -> None:
    assert crc16_modbus(b"123456789") == 0x4B37  # the catalogue check value
    # a textbook Modbus RTU request "01 03 00 00 00 0A" carries CRC bytes C5 CD (low first)
    assert crc16_modbus(bytes.fromhex("01 03 00 00 00 0a")) == 0xCDC5
    assert crc_bitwise(b"123456789") == 0x4B37


def _frame(body_hex: str) -> bytes:
    body = bytes.fromhex(body_hex)
    crc = crc_bitwise(body)
    return b"\xa5\xa5" + body + bytes([crc & 0xFF, crc >> 8])


# addr 1, SHOW, len 5: line 1, green, static, "OK"
SHOW_OK = _frame("01 10 00 05 01 02 00 4f 4b")
IDLE_SHOW = _frame("02 14 00 00")
ACK_CLEAR = _frame("01 92 00 02 03 00")  # ACK of CLEAR on line 3, OK


def test_known_frames() -> None:
    codec = get_codec("a5")
    assert codec.encode(DisplayCommand(Kind.SHOW, 1, 1, text="OK")) == SHOW_OK
    assert codec.encode(DisplayCommand(Kind.IDLE_SHOW, 2)) == IDLE_SHOW
    assert codec.encode(DisplayCommand(Kind.ACK, 1, 3, acked=Kind.CLEAR)) == ACK_CLEAR
    got = codec.decoder().feed(ACK_CLEAR + SHOW_OK)
    assert got[0].acked is Kind.CLEAR and got[0].line == 3 and got[0].status == AckStatus.OK
    assert got[1].text == "OK" and got[1].line == 1


@pytest.mark.parametrize(
    "cmd",
    [
        DisplayCommand(Kind.SHOW, 9, 2, Colour.RED, Effect.SCROLL, "京A·D12345 一路顺风"),
        DisplayCommand(Kind.IDLE_SET, 1, 4, Colour.YELLOW, Effect.STATIC, "剩余车位 0"),
        DisplayCommand(Kind.IDLE_SHOW, 1),
        DisplayCommand(Kind.CLEAR, 1, 0),
        DisplayCommand(Kind.SPEAK, 1, tts=bytes.fromhex("fd 00 04 01 00 4f 4b")),
        DisplayCommand(Kind.ACK, 1, 2, acked=Kind.IDLE_SET, status=AckStatus.BAD_LINE),
    ],
)
def test_round_trip(cmd: DisplayCommand) -> None:
    codec = get_codec("a5")
    assert codec.decoder().feed(codec.encode(cmd)) == [cmd]


def test_bad_crc_counted_and_resync() -> None:
    bad = SHOW_OK[:-2] + bytes([SHOW_OK[-2] ^ 0x10]) + SHOW_OK[-1:]
    dec = a5.Decoder()
    assert dec.feed(b"\xa5" + bad + b"\xa5\x00" + IDLE_SHOW) == [a5.A5Frame(2, 0x14)]
    assert dec.bad_frames == 1


def test_header_split_across_feeds() -> None:
    dec = a5.Decoder()
    assert dec.feed(b"zz\xa5") == []
    assert dec.feed(IDLE_SHOW[1:]) == [a5.A5Frame(2, 0x14)]


def test_get_codec_names_unknown() -> None:
    with pytest.raises(ValueError, match="'b7'"):
        get_codec("b7")
    with pytest.raises(ValueError, match="'latin-1'"):
        get_codec("a5", "latin-1")


def test_utf16be_board() -> None:
    codec = get_codec("a5", "utf-16-be")
    # 粤 U+7CA4, A U+0041: line 1, green, static
    assert codec.encode(DisplayCommand(Kind.SHOW, 1, 1, text="粤A")) == _frame(
        "01 10 00 07 01 02 00 7c a4 00 41"
    )
    cmd = DisplayCommand(Kind.SHOW, 1, 2, text="粤B·12345 🚗")  # UTF-16 carries the emoji
    assert codec.decoder().feed(codec.encode(cmd)) == [cmd]


frames = st.builds(a5.A5Frame, st.integers(0, 255), st.integers(0, 255), st.binary(max_size=64))


def _accepted_are_genuine(stream: bytes, got: list[a5.A5Frame]) -> None:
    for f in got:
        raw = a5.encode(f)
        assert raw in stream
        crc = crc_bitwise(raw[2:-2])
        assert raw[-2:] == bytes([crc & 0xFF, crc >> 8])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(1, 60))
def test_fuzz_random_bytes(data: bytes, chunk: int) -> None:
    dec, got = a5.Decoder(), []
    for i in range(0, len(data), chunk):
        got += dec.feed(data[i : i + chunk])
    _accepted_are_genuine(data, got)
    a5.CommandDecoder().feed(data)


@settings(max_examples=300, deadline=None)
@given(frames, st.data())
def test_fuzz_one_bit_flipped(frame: a5.A5Frame, data: st.DataObject) -> None:
    raw = a5.encode(frame)
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    flipped = bytearray(raw)
    flipped[bit // 8] ^= 1 << (bit % 8)
    dec = a5.Decoder()
    got = dec.feed(bytes(flipped))
    assert frame not in got
    _accepted_are_genuine(bytes(flipped), got)
    if bit // 8 in (2, 3) or bit // 8 >= 6:  # length unchanged: the frame completes and fails
        assert dec.bad_frames >= 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(frames, min_size=1, max_size=5),
    st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\xa5", b"")), min_size=6, max_size=6),
    st.lists(st.integers(0, 400), max_size=10),
)
def test_fuzz_frames_split_anywhere(
    fs: list[a5.A5Frame], garbage: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(g + a5.encode(f) for g, f in zip(garbage, fs, strict=False)) + garbage[-1]
    dec, got, prev = a5.Decoder(), [], 0
    for p in [*sorted({min(c, len(stream)) for c in cuts}), len(stream)]:
        got += dec.feed(stream[prev:p])
        prev = p
    assert got == fs
    assert dec.bad_frames == 0
