"""EB barrier protocol codec: vectors, status byte, and fuzzing of the decoder."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.barrier.codecs import eb_barrier as eb
from edge.barrier.codecs.eb_barrier import EbCommand, EbFrame, EbStatus
from edge.barrier.interfaces import ArmState, LoopInputs


@pytest.mark.parametrize(
    ("cmd", "data", "hexframe"),
    [
        (EbCommand.OPEN, 0, "eb 01 40 00 41"),  # 01^40^00
        (EbCommand.OPEN_N, 3, "eb 01 41 03 43"),  # 01^41^03
        (EbCommand.DOWN, 0, "eb 02 42 00 40"),  # 02^42^00
        (EbCommand.UP, 0, "eb 01 43 00 42"),
        (EbCommand.FORBID, 0, "eb 01 4a 00 4b"),
        (EbCommand.RESTORE, 0, "eb 10 4b 00 5b"),  # 10^4B
        (EbCommand.STATUS, 0, "eb 01 50 00 51"),
    ],
)
def test_known_commands(cmd: EbCommand, data: int, hexframe: str) -> None:
    address = bytes.fromhex(hexframe)[1]
    assert eb.command(address, cmd, data) == bytes.fromhex(hexframe)


def test_known_reply_and_status_bits() -> None:
    # arm up (2) + closing loop (0x20) = 0x22; XOR 01^D0^22 = F3
    status = EbStatus(arm=ArmState.UP, closing=True)
    assert eb.reply(1, EbCommand.STATUS, status) == bytes.fromhex("eb 01 d0 22 f3")
    (frame,) = eb.Decoder().feed(bytes.fromhex("00 eb 01 d0 22 f3"))
    assert frame.is_reply and frame.cmd == 0xD0
    assert frame.status == status
    assert frame.status.loops == LoopInputs(closing=True)
    # falling (3) + fault (4) + photocell (0x40) = 0x47
    s = EbStatus.from_byte(0x47)
    assert s.arm is ArmState.FALLING and s.fault and s.photocell and s.state is ArmState.FAULT


@given(st.integers(0, 255))
def test_status_byte_round_trip(b: int) -> None:
    assert EbStatus.from_byte(b).to_byte() == b


def test_encode_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="data"):
        eb.encode(EbFrame(1, 0x40, 300))


def test_bad_xor_never_accepted_and_resyncs() -> None:
    dec = eb.Decoder()
    got = dec.feed(bytes.fromhex("eb 01 40 00 40 eb 01 40 00 41"))
    assert got == [EbFrame(1, 0x40, 0)]
    assert dec.bad_frames == 1


frames = st.builds(EbFrame, st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))


def _genuine(stream: bytes, got: list[EbFrame]) -> None:
    for f in got:
        raw = eb.encode(f)
        assert raw in stream and raw[1] ^ raw[2] ^ raw[3] == raw[4]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 7))
def test_fuzz_random_bytes(data: bytes, chunk: int) -> None:
    dec, got = eb.Decoder(), []
    for i in range(0, len(data), chunk):
        got += dec.feed(data[i : i + chunk])
    _genuine(data, got)


@settings(max_examples=300, deadline=None)
@given(frames, st.integers(8, 39))
def test_fuzz_one_bit_flipped(frame: EbFrame, bit: int) -> None:
    raw = bytearray(eb.encode(frame))
    raw[bit // 8] ^= 1 << (bit % 8)
    dec = eb.Decoder()
    got = dec.feed(bytes(raw))
    assert frame not in got and got == []  # 5 bytes: nothing else fits in there
    assert dec.bad_frames >= 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(frames, min_size=1, max_size=6),
    st.lists(st.binary(max_size=9).map(lambda b: b.replace(b"\xeb", b"")), min_size=7, max_size=7),
    st.lists(st.integers(0, 80), max_size=10),
)
def test_fuzz_frames_split_anywhere(
    fs: list[EbFrame], garbage: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(g + eb.encode(f) for g, f in zip(garbage, fs, strict=False)) + garbage[-1]
    dec, got, prev = eb.Decoder(), [], 0
    for p in [*sorted({min(c, len(stream)) for c in cuts}), len(stream)]:
        got += dec.feed(stream[prev:p])
        prev = p
    assert got == fs
