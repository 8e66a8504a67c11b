"""Voting across frames: per-character majority weighted by probability."""

from __future__ import annotations

from edge.lpr.grammar import cn_grammar
from edge.lpr.ocr import CharRead
from edge.lpr.voting import FrameRead, vote

CN = cn_grammar()


def fr(
    plate: str, probs: list[float] | None = None, runner: dict[int, str] | None = None
) -> FrameRead:
    probs = probs or [0.95] * len(plate)
    runner = runner or {}
    chars = tuple(
        CharRead(c, p, runner.get(i, ""), 1 - p if i in runner else 0.0)
        for i, (c, p) in enumerate(zip(plate, probs, strict=True))
    )
    return FrameRead(plate, chars, CN.is_valid(plate), "blue")


def test_majority_fixes_one_bad_character() -> None:
    v = vote([fr("沪A12345"), fr("沪A12346", [0.95] * 6 + [0.6]), fr("沪A12345")], CN)
    assert v is not None
    assert v.plate == "沪A12345"
    assert v.frames == 3
    assert "沪A12346" in v.candidates
    assert v.confidence < 0.95  # the disputed position lowers it


def test_per_character_vote_can_beat_every_single_frame() -> None:
    # each frame is wrong somewhere different; the per-position vote is right
    reads = [fr("沪B12345"), fr("沪A18345"), fr("沪A12395")]
    v = vote(reads, CN)
    assert v is not None and v.plate == "沪A12345"
    assert all(r.plate != "沪A12345" for r in reads)


def test_confidence_is_weakest_position() -> None:
    v = vote([fr("沪A12345", [0.99, 0.99, 0.99, 0.4, 0.99, 0.99, 0.99])], CN)
    assert v is not None
    assert abs(v.confidence - 0.4) < 1e-9


def test_runner_up_at_weakest_position_is_first_candidate() -> None:
    v = vote([fr("沪A12345", [0.99] * 6 + [0.55], runner={6: "6"})], CN)
    assert v is not None
    assert v.candidates[0] == "沪A12346"


def test_invalid_vote_is_halved_and_nothing_read_is_none() -> None:
    v = vote([fr("XYZ")], CN)
    assert v is not None and v.confidence < 0.5
    assert vote([], CN) is None
    assert vote([FrameRead("", (), False)], CN) is None


def test_grammar_correction_applies_to_the_vote() -> None:
    v = vote([fr("沪A1234O"), fr("沪A1234O")], CN)
    assert v is not None and v.plate == "沪A12340"


def test_colour_is_majority() -> None:
    a = FrameRead("沪A12345", fr("沪A12345").chars, True, "green")
    v = vote([a, a, fr("沪A12345")], CN)
    assert v is not None and v.colour == "green"
