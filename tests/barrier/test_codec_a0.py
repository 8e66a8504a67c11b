"""A0 display codec: hand-computed frames, round trips, and fuzzing of the decoder."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.barrier.codecs import a0_display as a0
from edge.barrier.codecs.display_model import AckStatus, DisplayCommand, Effect, Kind, get_codec
from edge.barrier.interfaces import Colour

# XOR worked by hand: A0^01^01^52^00^00 = F2
CLEAR_LINE1 = bytes.fromhex("a0 01 01 52 00 00 f2")
# show "OK" green static, addr 1 line 1: ...F6 ^4F = B9, ^4B = F2
SHOW_OK = bytes.fromhex("a0 01 01 50 00 04 02 00 4f 4b f2")
# show 欢迎 (GB2312 BBB6 D3AD) green static: F4 ^BB ^B6 ^D3 ^AD = 87
SHOW_WELCOME = bytes.fromhex("a0 01 01 50 00 06 02 00 bb b6 d3 ad 87")
# ACK of SHOW on line 2 from board 3, status OK: A0^03^02^D0^00^01^00 = 70
ACK_SHOW = bytes.fromhex("a0 03 02 d0 00 01 00 70")


def test_known_frames_encode() -> None:
    assert a0.encode(a0.A0Frame(1, 1, a0.CMD_CLEAR)) == CLEAR_LINE1
    codec = get_codec("a0")
    assert codec.encode(DisplayCommand(Kind.SHOW, 1, 1, text="OK")) == SHOW_OK
    assert codec.encode(DisplayCommand(Kind.SHOW, 1, 1, text="欢迎")) == SHOW_WELCOME
    ack = DisplayCommand(Kind.ACK, 3, 2, acked=Kind.SHOW, status=AckStatus.OK)
    assert codec.encode(ack) == ACK_SHOW


def test_known_frames_decode() -> None:
    dec = get_codec("a0").decoder()
    got = dec.feed(SHOW_WELCOME + ACK_SHOW + CLEAR_LINE1)
    assert [c.kind for c in got] == [Kind.SHOW, Kind.ACK, Kind.CLEAR]
    assert got[0].text == "欢迎" and got[0].colour is Colour.GREEN and got[0].line == 1
    assert got[1].acked is Kind.SHOW and got[1].address == 3 and got[1].line == 2
    assert dec.bad_frames == 0


@pytest.mark.parametrize(
    "cmd",
    [
        DisplayCommand(Kind.SHOW, 7, 3, Colour.RED, Effect.FLASH, "粤B·12345 请缴费"),
        DisplayCommand(Kind.IDLE_SET, 255, 1, Colour.YELLOW, Effect.SCROLL, "余位 123"),
        DisplayCommand(Kind.IDLE_SHOW, 0),
        DisplayCommand(Kind.CLEAR, 1, 0),
        DisplayCommand(Kind.SPEAK, 2, tts=bytes.fromhex("fd 00 04 01 00 4f 4b")),
        DisplayCommand(Kind.ACK, 2, 4, acked=Kind.SPEAK, status=AckStatus.BAD_DATA),
    ],
)
def test_round_trip(cmd: DisplayCommand) -> None:
    codec = get_codec("a0")
    assert codec.decoder().feed(codec.encode(cmd)) == [cmd]


def test_bad_checksum_counted_and_dropped_then_resync() -> None:
    bad = SHOW_OK[:-1] + bytes([SHOW_OK[-1] ^ 1])
    dec = a0.Decoder()
    assert dec.feed(b"\x00\xff" + bad + b"junk" + CLEAR_LINE1) == [a0.A0Frame(1, 1, 0x52)]
    assert dec.bad_frames == 1


def test_oversize_length_is_garbage_not_a_wait() -> None:
    dec = a0.Decoder()
    # declares 0xFFFF data bytes: must not swallow the good frame that follows
    assert dec.feed(bytes.fromhex("a0 01 01 50 ff ff") + CLEAR_LINE1) == [a0.A0Frame(1, 1, 0x52)]


def test_encode_rejects_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="address"):
        a0.encode(a0.A0Frame(256, 1, 0x50))
    with pytest.raises(ValueError, match="at most"):
        a0.encode(a0.A0Frame(1, 1, 0x50, b"x" * (a0.MAX_DATA + 1)))


def test_unknown_command_with_good_checksum_is_malformed_not_returned() -> None:
    dec = a0.CommandDecoder()
    assert dec.feed(a0.encode(a0.A0Frame(1, 1, 0x33, b"zz"))) == []
    assert dec.malformed == 1


# -- fuzzing ---------------------------------------------------------------------------------
frames = st.builds(
    a0.A0Frame,
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=64),
)


def _accepted_are_genuine(stream: bytes, got: list[a0.A0Frame]) -> None:
    for f in got:
        raw = a0.encode(f)
        assert raw in stream  # a contiguous run of the input ...
        assert raw[-1] == _xor(raw[:-1])  # ... whose checksum holds


def _xor(b: bytes) -> int:
    x = 0
    for c in b:
        x ^= c
    return x


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(1, 50), max_size=8))
def test_fuzz_random_bytes(data: bytes, cuts: list[int]) -> None:
    dec, got, i = a0.Decoder(), [], 0
    for c in [*cuts, len(data)]:
        got += dec.feed(data[i : i + c])
        i += c
    got += dec.feed(data[i:])
    _accepted_are_genuine(data, got)
    cmd_dec = a0.CommandDecoder()
    cmd_dec.feed(data)  # never raises either


@settings(max_examples=300, deadline=None)
@given(frames, st.data())
def test_fuzz_one_bit_flipped(frame: a0.A0Frame, data: st.DataObject) -> None:
    raw = a0.encode(frame)
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    flipped = bytearray(raw)
    flipped[bit // 8] ^= 1 << (bit % 8)
    dec = a0.Decoder()
    got = dec.feed(bytes(flipped))
    assert frame not in got
    _accepted_are_genuine(bytes(flipped), got)
    if bit // 8 >= 6 or bit // 8 in (1, 2, 3):  # data, checksum, id, line, cmd: same length
        assert dec.bad_frames >= 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(frames, min_size=1, max_size=5),
    st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\xa0", b"")), min_size=6, max_size=6),
    st.lists(st.integers(0, 400), max_size=10),
)
def test_fuzz_frames_split_anywhere(
    fs: list[a0.A0Frame], garbage: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(g + a0.encode(f) for g, f in zip(garbage, fs, strict=False)) + garbage[-1]
    points = sorted({min(c, len(stream)) for c in cuts})
    dec, got, prev = a0.Decoder(), [], 0
    for p in [*points, len(stream)]:
        got += dec.feed(stream[prev:p])
        prev = p
    assert got == fs
    assert dec.bad_frames == 0
