"""Confidence conditioned on the grammar: mass on characters a position cannot hold is not
doubt, two legal characters competing is."""

from __future__ import annotations

import pytest

from edge.lpr.confidence import conditioned
from edge.lpr.grammar import cn_grammar, latin_grammar
from edge.lpr.ocr import CharRead
from edge.lpr.voting import FrameRead, vote

CN = cn_grammar()


def read(
    plate: str, dists: dict[int, dict[str, float]], blanks: dict[int, float] | None = None
) -> tuple[CharRead, ...]:
    """CharReads of ``plate``: position i has distribution ``dists[i]`` (else sure)."""
    out = []
    for i, ch in enumerate(plate):
        alts = dists.get(i, {ch: 0.995})
        top = sorted(((q, k) for k, q in alts.items() if k != ch), reverse=True)
        q2, k2 = top[0] if top else (0.0, "")
        blank = (blanks or {}).get(i, 1.0 - sum(alts.values()))
        out.append(CharRead(ch, alts.get(ch, 0.0), k2, q2, alts, -1.0, blank))
    return tuple(out)


def weakest(chars: tuple[CharRead, ...]) -> float:
    return min(c.prob for c in chars)


def test_mass_on_illegal_characters_is_not_doubt() -> None:
    # the province step as the OCR gives it: letters and digits hold a third of the mass
    chars = read("豫A12345", {0: {"豫": 0.633, "A": 0.30, "8": 0.06, "浙": 3.5e-5}})
    assert weakest(chars) < 0.7
    out = conditioned("豫A12345", chars, CN)
    assert weakest(out) > 0.99
    assert out[0].runner_up == "浙" and out[0].runner_up_prob < 1e-3  # the legal rival
    assert [c.char for c in out] == list("豫A12345")


def test_two_legal_characters_competing_stay_unsure() -> None:
    chars = read("浙ELGS83", {0: {"浙": 0.59, "新": 0.40, "A": 0.005}})
    out = conditioned("浙ELGS83", chars, CN)
    assert 0.55 < weakest(out) < 0.65
    assert out[0].runner_up == "新"


def test_a_legal_character_from_residual_mass_is_no_evidence() -> None:
    # the OCR saw a letter; the province is a 0.4 % guess: conditioning must not make it sure
    chars = read("皖A12345", {0: {"A": 0.99, "皖": 0.004, "浙": 0.001}})
    assert weakest(conditioned("皖A12345", chars, CN)) < 0.01


def test_an_illegal_look_alike_counts_for_its_one_legal_reading() -> None:
    # O cannot stand in a serial slot; the grammar reads it as 0, with the O's evidence
    chars = read("粤FKDNB0", {6: {"O": 0.976, "0": 0.019, "Q": 0.003}})
    out = conditioned("粤FKDNB0", chars, CN)
    assert out[6].char == "0" and out[6].prob > 0.99
    # a 0 in the city letter's slot is an O or a D: its evidence is split, O stays a rival
    chars = read("沪D12345", {1: {"0": 0.9, "D": 0.06, "Q": 0.04}})
    d = conditioned("沪D12345", chars, CN)[1]
    assert d.prob == pytest.approx(0.51) and d.runner_up == "O"


def test_blank_is_a_rival_only_where_the_plate_without_the_character_is_valid() -> None:
    # an 8th character read off the frame's edge: 皖DFX886 is a valid plate too
    extra = read("皖DFX8861", {7: {"1": 0.627, "L": 0.002}}, {7: 0.368})
    assert 0.6 < weakest(conditioned("皖DFX8861", extra, CN)) < 0.65
    # a doubled letter's second half: 黑G5A81 is not a plate, so the blank is no rival
    double = read("黑G5AA81", {4: {"A": 0.547, "4": 0.001}}, {4: 0.45})
    assert weakest(conditioned("黑G5AA81", double, CN)) > 0.99


def test_idempotent_and_unchanged_without_evidence() -> None:
    chars = read("豫A12345", {0: {"豫": 0.633, "A": 0.30}})
    once = conditioned("豫A12345", chars, CN)
    assert conditioned("豫A12345", once, CN) == once
    bare = (CharRead("沪", 0.4, "", 0.0), *read("A12345", {}))
    assert conditioned("沪A12345", bare, CN)[0].prob == 0.4  # no distribution: as read
    assert conditioned("XYZ", read("XYZ", {}), CN) == read("XYZ", {})  # not a plate


def test_generic_latin_conditions_only_on_the_blank_it_rules_out() -> None:
    # any 2-8 alphanumerics: every character is legal, and dropping one leaves a valid plate
    chars = read("AB123CD", {3: {"2": 0.6, "Z": 0.3}}, {3: 0.1})
    assert conditioned("AB123CD", chars, latin_grammar())[3].prob == pytest.approx(0.6)


def test_allowed_at_follows_the_layouts_the_rest_fits() -> None:
    sets = CN.allowed_at("沪A1234学")
    assert "学" in sets[6] and "5" in sets[6] and "沪" in sets[0] and "A" not in sets[0]
    assert "学" not in CN.allowed_at("沪A12345")[2]


def test_vote_uses_the_conditioned_figure() -> None:
    chars = read("豫A12345", {0: {"豫": 0.633, "A": 0.30, "浙": 3.5e-5}})
    frames = [FrameRead("豫A12345", chars, True, "blue")] * 3
    v = vote(frames, CN)
    assert v is not None and v.plate == "豫A12345"
    assert v.confidence == pytest.approx(weakest(conditioned("豫A12345", chars, CN)))
    assert v.confidence > 0.99
    rival = read("浙A12345", {0: {"浙": 0.59, "豫": 0.40}})
    v = vote([FrameRead("浙A12345", rival, True, "blue")] * 2, CN)
    assert v is not None and v.confidence < 0.7 and v.candidates[0] == "豫A12345"
