"""Plate grammar: table tests for layouts and forced corrections, properties for normalisation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.lpr.grammar import (
    CN_ALNUM,
    CN_CITY_LETTERS,
    CN_PROVINCES,
    cn_grammar,
    grammar_by_name,
    latin_grammar,
    normalise_plate,
)

CN = cn_grammar()


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("沪A·12345 ", "沪A12345"),
        ("粤b-8z2s5", "粤B8Z2S5"),
        ("京Ａ１２３４５", "京A12345"),  # full-width
        (" 苏 E 372XN ", "苏E372XN"),
        ("", ""),
        ("··", ""),
    ],
)
def test_normalise(raw: str, want: str) -> None:
    assert normalise_plate(raw) == want


def test_normalise_rejects_non_str() -> None:
    with pytest.raises(TypeError, match="plate text must be str"):
        normalise_plate(123)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("plate", "valid", "kind"),
    [
        ("沪A12345", True, "ordinary"),
        ("粤OA9112", True, "ordinary"),  # O allowed as the city letter (public security)
        ("粤IA9112", False, None),  # never I as the city letter
        ("沪AI2345", False, None),  # no I in serials
        ("沪A1234O", False, None),  # no O in serials
        ("粤B1234学", True, "suffixed"),
        ("京A1234警", True, "suffixed"),
        ("粤Z1234港", True, "suffixed"),
        ("沪AD12345", True, "new-energy-small"),
        ("沪AFA1345", True, "new-energy-small"),
        ("沪A12345D", True, "new-energy-large"),
        ("沪AA12345", False, None),  # 8 chars but no D/F mark
        ("沪A123456", False, None),
        ("XA12345", False, None),  # not a province
        ("沪A1234", False, None),
        ("沪A12345学", False, None),
    ],
)
def test_cn_layouts(plate: str, valid: bool, kind: str | None) -> None:
    assert CN.is_valid(plate) is valid
    assert CN.kind(plate) == kind


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("沪A1234O", "沪A12340"),  # O illegal in a serial, 0 its only legal look-alike
        ("沪AI2345", "沪A12345"),
        ("沪AB1Z34", "沪AB1Z34"),  # every character legal: nothing changes
        ("沪8B1Z34", "沪BB1Z34"),  # 8 illegal as city letter → B
        ("沪2A1234", "沪ZA1234"),
        ("沪5A1234", "沪SA1234"),
        ("沪A012345", "沪AD12345"),  # 0 as NEV mark: D (F is no look-alike)
        ("沪AO12345", None),  # O is no look-alike of D or F
        ("沪A1234SD", "沪A12345D"),  # large NEV: S in a digits slot → 5
        ("沪A1OI1O", "沪A10110"),  # several forced positions
        ("沪A1OI1", None),  # wrong length for every layout
        ("沪0A1234", None),  # 0 as city letter: O or D → ambiguous, no correction
    ],
)
def test_cn_forced_correction(raw: str, want: str | None) -> None:
    assert CN.correct(raw) == want


@pytest.mark.parametrize(
    ("plate", "valid"),
    [
        ("浙L12345", True),  # 丽水, Zhejiang's last letter
        ("浙Q12345", False),  # Zhejiang issues A..L
        ("皖Q12345", True),  # 巢湖: prefecture abolished in 2011, its plates are still on cars
        ("闽R12345", False),  # Fujian issues A..K
        ("宁E12345", True),
        ("宁F12345", False),  # Ningxia issues A..E
        ("宁OA1234", True),  # O: public-security organs, allowed in every province
        ("粤Z1234港", True),  # Guangdong issues every letter
        ("京Y12345", True),
        ("浙QD12345", False),  # the table holds for new-energy plates too
        ("浙LD12345", True),
    ],
)
def test_city_letter_must_be_one_the_province_issues(plate: str, valid: bool) -> None:
    assert CN.is_valid(plate) is valid


def test_city_letter_table_decides_the_province() -> None:
    # 浙 never issues Q, so a look-alike correction may not keep it; the grammar still never
    # changes a province by itself (no confusables), so it is left unread
    assert CN.correct("浙Q06417") is None
    assert CN.correct("皖Q06417") == "皖Q06417"
    assert CN.allowed_at("皖Q06417")[0] >= {"皖", "新", "豫"}
    assert "浙" not in CN.allowed_at("皖Q06417")[0]


def test_ambiguous_city_letter_lists_both_readings() -> None:
    assert set(CN.readings("沪0A1234")) == {"沪OA1234", "沪DA1234"}


def test_colours_follow_layout() -> None:
    assert CN.colours("沪AD12345") == ("green",)
    assert "blue" in CN.colours("沪A12345")
    assert CN.colours("nonsense") == ()


def test_latin_generic_never_corrects() -> None:
    g = latin_grammar()
    assert g.is_valid("BS47040")
    assert g.correct("B5O") == "B5O"
    assert not g.is_valid("A")
    assert not g.is_valid("ABCDEFGHI")


def test_latin_patterns_correct_by_position() -> None:
    old = latin_grammar(("LLLDDDD",))
    assert old.correct("AYO9O34") == "AYO9034"  # letter slot keeps O, digit slot forces 0
    assert old.correct("8YO9034") == "BYO9034"
    br = latin_grammar(("LLLDDDD", "LLLDLDD"))  # old + Mercosul
    assert br.is_valid("ABC1D23")
    assert br.correct("AYO9O34") == "AYO9O34"  # valid Mercosul as read: never changed
    assert set(br.readings("AYO9O34")) == {"AYO9034", "AYO9O34"}  # exit matching sees both
    assert br.correct("AY09O34") is None  # 0 in a letter slot: O or D, ambiguous as text
    assert br.correct("OKL0817") == "OKL0817"  # valid old plate; Mercosul would need B for 8


def test_bad_config_is_named() -> None:
    with pytest.raises(ValueError, match="unknown plate grammar 'xx'"):
        grammar_by_name("xx")
    with pytest.raises(ValueError, match="use only L, D, A"):
        latin_grammar(("LLX",))
    assert grammar_by_name(" CN ").name == "cn"
    br = grammar_by_name("latin:LLLDDDD, LLLDLDD")
    assert br.is_valid("ABC1D23") and not br.is_valid("AB12345")
    with pytest.raises(ValueError, match="use only L, D, A"):
        grammar_by_name("latin:LL-DD")


@given(st.text(max_size=20))
def test_normalise_idempotent(text: str) -> None:
    once = normalise_plate(text)
    assert normalise_plate(once) == once
    assert " " not in once


serial = st.text(alphabet=sorted(CN_ALNUM), min_size=5, max_size=5)


# a province and one of the city letters it issues
prefix = st.sampled_from(sorted(CN_PROVINCES)).flatmap(
    lambda p: st.sampled_from(sorted(CN_CITY_LETTERS[p])).map(lambda c: p + c)
)


@given(prefix, serial)
def test_valid_plates_are_their_own_unique_reading(pc: str, s: str) -> None:
    plate = pc + s
    assert CN.is_valid(plate)
    assert CN.readings(plate) == (plate,)


@given(
    st.sampled_from(sorted(CN_PROVINCES)),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=6, max_size=6),
)
def test_readings_are_valid_and_change_only_illegal_chars(p: str, rest: str) -> None:
    raw = p + rest
    for reading in CN.readings(raw):
        assert CN.is_valid(reading)
        layout = CN.layouts[CN.layout_of(reading) or 0]
        for ch, new, allowed in zip(raw, reading, layout, strict=True):
            if ch in allowed:
                assert new == ch
