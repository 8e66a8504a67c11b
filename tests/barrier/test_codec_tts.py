"""Embedded TTS frame and the GB2312/GBK text rules shared by the display codecs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.barrier.codecs import tts
from edge.barrier.codecs.text import decode_gb, display_width, encode_gb


def test_known_speech_frame() -> None:
    # 欢迎光临 in GB2312: BBB6 D3AD B9E2 C1D9; len = cmd + enc + 8 = 10
    speech = tts.encode_speech("欢迎光临")
    assert speech.frame == bytes.fromhex("fd 00 0a 01 00 bb b6 d3 ad b9 e2 c1 d9")
    assert speech.replaced == 0
    parsed = tts.parse(speech.frame)
    assert parsed == tts.TtsFrame(tts.CMD_SYNTHESISE, tts.TtsEncoding.GB2312, "欢迎光临")


def test_gbk_only_character_switches_encoding_byte() -> None:
    with pytest.raises(UnicodeEncodeError):
        "喆".encode("gb2312")  # precondition: not in GB2312, but in GBK
    speech = tts.encode_speech("喆")
    assert speech.frame[4] == tts.TtsEncoding.GBK
    assert speech.frame[5:] == "喆".encode("gbk")


def test_unencodable_replaced_and_counted() -> None:
    enc = encode_gb("车🚗位")
    assert enc.data == "车".encode("gb2312") + b"?" + "位".encode("gb2312")
    assert enc.replaced == 1
    assert tts.encode_speech("🚗🚗").replaced == 2


def test_too_long_speech_names_the_limit() -> None:
    with pytest.raises(ValueError, match="200"):
        tts.encode_speech("请" * 101)  # 202 bytes


@pytest.mark.parametrize(
    "frame",
    [b"", b"\xfd", bytes.fromhex("fd 00 09 01 00 41"), bytes.fromhex("fd 00 03 01 07 41")],
)
def test_parse_rejects_malformed(frame: bytes) -> None:
    assert tts.parse(frame) is None


@given(st.binary(max_size=300))
def test_parse_never_raises(data: bytes) -> None:
    tts.parse(data)
    tts.parse(b"\xfd" + data)


@given(st.text(max_size=40))
def test_text_round_trip_or_counted(text: str) -> None:
    enc = encode_gb(text)
    if enc.replaced == 0:
        assert decode_gb(enc.data) == text
    assert enc.replaced <= len(text)


def test_display_width_counts_cjk_double() -> None:
    assert display_width("粤B12345") == 8
    assert display_width("OK") == 2
