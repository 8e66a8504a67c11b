"""Exit matching: exact first, a unique look-alike flagged, ambiguity never spends points."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.lpr.grammar import CN_ALNUM, cn_grammar, latin_grammar
from edge.lpr.matching import match_exit, one_confusable_apart
from edge.lpr.source import PlateRead

CN = cn_grammar()
AT = datetime(2026, 11, 23, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


def read(plate: str, *, uncertain: bool = False, candidates: tuple[str, ...] = ()) -> PlateRead:
    return PlateRead(plate, 0.9, AT, "lpr:X1", "e1", uncertain=uncertain, candidates=candidates)


@pytest.mark.parametrize(
    ("plate", "uncertain", "cands", "open_", "kind", "want", "flagged", "spend"),
    [
        ("沪A12345", False, (), ["沪A12345", "沪A12346"], "exact", "沪A12345", False, True),
        ("沪A·12345", False, (), ["沪a12345 "], "exact", "沪A12345", False, True),
        ("沪A12345", True, (), ["沪A12345"], "exact", "沪A12345", True, False),
        ("沪A1234S", False, (), ["沪A12345"], "fuzzy", "沪A12345", True, False),  # S/5
        ("沪AB2345", False, (), ["沪A82345"], "fuzzy", "沪A82345", True, False),  # B/8
        ("沪A12345", False, (), ["沪A1234S", "沪AI2345"], "ambiguous", None, True, False),
        ("沪A12345", False, (), ["沪A12346"], "none", None, False, False),  # 5/6 not listed
        ("沪A12345", False, (), ["沪A1Z3S5"], "none", None, False, False),  # two substitutions
        ("沪A12345", False, ("沪A12845",), ["沪A12845"], "fuzzy", "沪A12845", True, False),
        ("沪A12345", True, (), ["沪A1234S"], "fuzzy", "沪A1234S", True, False),
        ("", False, (), ["沪A12345"], "none", None, False, False),
        ("沪A12345", False, (), [], "none", None, False, False),
        ("沪A02345", False, (), ["沪AD2345", "沪AO2345"], "ambiguous", None, True, False),
    ],
)
def test_match_table(
    plate: str,
    uncertain: bool,
    cands: tuple[str, ...],
    open_: list[str],
    kind: str,
    want: str | None,
    flagged: bool,
    spend: bool,
) -> None:
    m = match_exit(read(plate, uncertain=uncertain, candidates=cands), open_, CN)
    assert (m.kind, m.plate, m.flagged, m.spend_points_ok) == (kind, want, flagged, spend)


def test_ambiguous_lists_candidates_read_alternatives_first() -> None:
    m = match_exit(read("沪A12345", candidates=("沪AI2345",)), ["沪A1234S", "沪AI2345"], CN)
    assert m.candidates == ("沪AI2345", "沪A1234S")


def test_grammar_forced_reading_is_fuzzy_not_exact() -> None:
    m = match_exit(read("沪A1234O"), ["沪A12340"], CN)
    assert (m.kind, m.plate, m.spend_points_ok) == ("fuzzy", "沪A12340", False)


def test_latin_grammar_works_the_same() -> None:
    m = match_exit(read("AYO9O34"), ["AYO9034"], latin_grammar())
    assert m.kind == "fuzzy"


def test_one_confusable_apart() -> None:
    assert one_confusable_apart("A0", "AO")
    assert one_confusable_apart("A0", "AD")
    assert not one_confusable_apart("AO", "AD")
    assert not one_confusable_apart("A0", "A0")
    assert not one_confusable_apart("A0", "A00")


serials = st.text(alphabet=sorted(CN_ALNUM), min_size=5, max_size=5).map(lambda s: "沪A" + s)


@given(serials, st.lists(serials, max_size=8), st.booleans())
def test_points_only_on_exact_certain(plate: str, others: list[str], uncertain: bool) -> None:
    m = match_exit(read(plate, uncertain=uncertain), others, CN)
    assert m.spend_points_ok == (m.kind == "exact" and not uncertain)
    if m.kind == "exact":
        assert m.plate == plate
    if m.kind in ("ambiguous", "none"):
        assert m.plate is None
    if m.kind == "ambiguous":
        assert len(m.candidates) >= 2
    if m.plate is not None:
        assert m.plate in others
