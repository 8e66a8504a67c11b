"""European site grammars ("sk", "cz", "eu:sk,cz"): the layouts and letters each country
issues, and the look-alike corrections they force; a 0 in a Slovak letter slot read as O or D
by the OCR's own alternatives."""

from __future__ import annotations

import pytest

from edge.lpr.eu_plates import eu_grammar
from edge.lpr.grammar import grammar_by_name
from edge.lpr.ocr import CharRead
from edge.lpr.pipeline import Recogniser

SK_CZ = grammar_by_name("eu:sk,cz")


@pytest.mark.parametrize(
    ("plate", "kind"),
    [
        ("RK099AN", "sk"),  # district RK, 099, series AN
        ("BA302OZ", "sk"),  # O issued in the series letters
        ("AA001AA", "sk"),  # 2023 state-wide numbering
        ("1B25790", "cz"),
        ("1AA0000", "cz-two-letter"),
        ("BSE5579", "cz-pre-2001"),
        ("0B25790", None),  # Czech series start at 1
        ("1G25790", None),  # G is no region
        ("1AO0000", None),  # no O on Czech plates
        ("IBZ5790", None),  # no old district code starts with I
        ("RKO99AN", None),  # no letter among Slovak digits
        ("BS47040", None),  # Norwegian: no layout here
        ("KMBORAK", None),  # personalised: read as read, never corrected
    ],
)
def test_layouts(plate: str, kind: str | None) -> None:
    assert SK_CZ.kind(plate) == kind


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("RKO99AN", "RK099AN"),  # a letter O among the digits is the digit
        ("RK6O5AB", "RK605AB"),
        ("1B4579O", "1B45790"),  # O is never a Czech letter, so the digit
        ("1B25790", "1B25790"),  # valid as read: 1BZ5790 (also valid) is not considered
        ("IB25790", None),  # 1B25790 or 1BZ5790: the OCR's alternatives decide
        ("BSE5S79", None),  # BSE5579 (old) or 8SE5579 (new)
        ("PP587A0", None),  # O or D: the text alone cannot tell
    ],
)
def test_forced_corrections(raw: str, want: str | None) -> None:
    assert SK_CZ.correct(raw) == want


def test_names_and_errors() -> None:
    assert grammar_by_name("sk").layout_names == ("sk",)
    assert grammar_by_name("cz").kind("1B25790") == "cz"
    assert grammar_by_name("EU:cz, sk").layout_names[0] == "cz"  # order kept: cz first
    assert grammar_by_name("latin").is_valid("BS47040")  # the generic grammar is unchanged
    with pytest.raises(ValueError, match="countries must be some of"):
        eu_grammar(["de"])
    with pytest.raises(ValueError, match="unknown plate grammar"):
        grammar_by_name("sk:LLDDDLL")


@pytest.fixture(scope="module")
def rec() -> Recogniser:
    return Recogniser(SK_CZ, detector=False)


def _read(text: str, alts_at: dict[int, dict[str, float]]) -> tuple[CharRead, ...]:
    return tuple(
        CharRead(
            c,
            alts_at.get(i, {c: 0.99})[c],
            "",
            0.0,
            alts_at.get(i, {c: 0.99}),
            (i + 0.5) / len(text),
            0.0,
        )
        for i, c in enumerate(text)
    )


@pytest.mark.parametrize(
    ("alts", "want"),
    [
        ({"0": 0.989, "O": 0.008, "D": 0.0003}, "PP587AO"),  # the OCR's weak O beats D
        ({"0": 0.989, "D": 0.006, "O": 0.0002}, "PP587AD"),
        ({"0": 0.99, "O": 0.0002, "D": 0.0001}, "PP587A0"),  # no evidence either way: unread
    ],
)
def test_a_zero_in_a_letter_slot_takes_the_look_alike_the_ocr_saw(
    rec: Recogniser, alts: dict[str, float], want: str
) -> None:
    text, chars = rec._constrained("PP587A0", _read("PP587A0", {6: alts}))
    assert text == want
    assert len(chars) == 7
