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


def test_a_tie_goes_to_the_character_more_frames_read_then_the_first() -> None:
    from edge.lpr.ocr import CharRead

    def fr(plate: str, p: float) -> FrameRead:
        chars = [CharRead(c, 0.99, "", 0.0) for c in plate]
        chars[4] = CharRead(plate[4], p, "", 0.0)
        return FrameRead(plate, tuple(chars), True)

    # 3: 0.8 from one frame; 8: 0.5 + 0.3 from two: a tie, which the two frames win
    a, b, c = fr("皖A12345", 0.8), fr("皖A12845", 0.5), fr("皖A12845", 0.3)
    for order in ((a, b, c), (b, a, c), (c, b, a)):
        v = vote(list(order), CN)
        assert v is not None and v.plate == "皖A12845", [f.plate for f in order]
    # one frame each: the first frame's read, whichever it is
    d = fr("皖A12845", 0.8)
    assert vote([a, d], CN).plate == "皖A12345"  # type: ignore[union-attr]
    assert vote([d, a], CN).plate == "皖A12845"  # type: ignore[union-attr]


def test_a_frame_never_outvotes_its_own_read() -> None:
    from edge.lpr.ocr import CharRead

    # the frame kept F with E a little likelier (the second look's coin flip): on its own it
    # stays F, as unsure as it was
    chars = [CharRead(c, 0.99, "", 0.0) for c in "湘F8ZS83"]
    chars[1] = CharRead("F", 0.467, "E", 0.533)
    v = vote([FrameRead("湘F8ZS83", tuple(chars), True)], CN)
    assert v is not None and v.plate == "湘F8ZS83" and v.confidence < 0.5
    # a second frame that read E surely carries the position
    other = [CharRead(c, 0.99, "", 0.0) for c in "湘E8ZS83"]
    v2 = vote([FrameRead("湘F8ZS83", tuple(chars), True),
               FrameRead("湘E8ZS83", tuple(other), True)], CN)
    assert v2 is not None and v2.plate == "湘E8ZS83"
