"""The second look: an unsure best read is read again from its crop trimmed and widened, and
the three reads vote per character (``confidence.fused``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from parkedge_sim.render import Scene, render_frame

from edge.lpr import pipeline
from edge.lpr.confidence import conditioned, fused
from edge.lpr.grammar import cn_grammar
from edge.lpr.ocr import CharRead, OcrResult
from edge.lpr.pipeline import Recogniser
from edge.lpr.voting import FrameRead, vote

CN = cn_grammar()


def read(plate: str, dists: dict[int, dict[str, float]]) -> tuple[CharRead, ...]:
    """CharReads of ``plate``: position i has distribution ``dists[i]`` (else sure)."""
    out = []
    for i, ch in enumerate(plate):
        alts = dists.get(i, {ch: 0.995})
        top = sorted(((q, k) for k, q in alts.items() if k != ch), reverse=True)
        q2, k2 = top[0] if top else (0.0, "")
        out.append(CharRead(ch, alts.get(ch, 0.0), k2, q2, alts))
    return tuple(out)


def test_a_clear_vote_overturns_the_first_read() -> None:
    first = read("皖BL8Y3V", {0: {"皖": 0.41, "宁": 0.40, "G": 0.13}})
    trimmed = read("宁BL8Y3V", {0: {"宁": 0.99, "皖": 0.005}})
    wider = read("宁BL8Y3V", {0: {"宁": 0.95, "沪": 0.01}})
    out = fused("皖BL8Y3V", [first, trimmed, wider], CN)
    assert out is not None
    plate, chars = out
    assert plate == "宁BL8Y3V"
    assert chars[0].runner_up == "皖"
    assert 0.75 < chars[0].prob < 0.9  # the mean share: the first read's doubt is kept


def _coin_flip() -> list[tuple[CharRead, ...]]:
    """F 0.52 / E 0.48 as first read, then E 0.51 and 0.61 (trimmed, wider): E's share is
    ahead but not twice F's."""
    return [read("湘F8ZS83", {1: {"F": 0.52, "E": 0.48}}),
            read("湘E8ZS83", {1: {"E": 0.51, "F": 0.49}}),
            read("湘E8ZS83", {1: {"E": 0.61, "F": 0.39}})]


def test_a_coin_flip_stays_as_first_read() -> None:
    out = fused("湘F8ZS83", _coin_flip(), CN)
    assert out is not None
    assert out[0] == "湘F8ZS83"
    assert out[1][1].prob < 0.5 and out[1][1].runner_up == "E"


def test_the_frames_vote_does_not_undo_a_coin_flip_kept_as_read() -> None:
    # the second look kept F (E's lead is not OVERTURN x F's); the frames' vote conditions the
    # read again and used to hand the position to E, the runner-up, on a single frame
    out = fused("湘F8ZS83", _coin_flip(), CN)
    assert out is not None and out[0] == "湘F8ZS83"
    for frames in (1, 3):
        voted = vote([FrameRead(out[0], out[1], True)] * frames, CN)
        assert voted is not None and voted.plate == "湘F8ZS83", frames
        assert voted.confidence < 0.5  # and as unsure as the read
        assert "湘E8ZS83" in voted.candidates


def test_reads_of_another_length_do_not_vote_and_an_invalid_plate_is_none() -> None:
    first = read("皖A12345", {2: {"1": 0.6, "7": 0.4}})
    longer = read("皖A712345", {})
    out = fused("皖A12345", [first, longer], CN)
    assert out is not None and out[0] == "皖A12345"
    assert fused("皖A1234", [read("皖A1234", {})], CN) is None


def test_the_readers_disagreement_survives_being_figured_again() -> None:
    # the first and the widened read are sure of 皖, the trimmed one as sure of 宁: 皖 stands,
    # but with two thirds of the votes, not the first reader's 0.99
    first = read("皖A12345", {0: {"皖": 0.99, "宁": 0.005}})
    trimmed = read("宁A12345", {0: {"宁": 0.99, "皖": 0.005}})
    wider = read("皖A12345", {0: {"皖": 0.98, "宁": 0.01}})
    out = fused("皖A12345", [first, trimmed, wider], CN)
    assert out is not None
    plate, chars = out
    assert plate == "皖A12345"
    assert 0.6 < chars[0].prob < 0.7 and chars[0].runner_up == "宁"
    assert 0.3 < chars[0].alts["宁"] < 0.4  # the combined distribution, not the first read's
    # the frames' vote conditions each frame's characters again: the doubt is still there
    again = conditioned(plate, chars, CN)
    assert again[0].prob == pytest.approx(chars[0].prob)
    voted = vote([FrameRead(plate, chars, True)] * 3, CN)
    assert voted is not None and voted.plate == plate
    assert voted.confidence == pytest.approx(chars[0].prob)
    assert voted.confidence < 0.8  # the lane's min_confidence: not a certain read


@pytest.mark.parametrize("primary_order", [("8", "B", "3"), ("8", "3", "B")])
def test_a_tie_keeps_the_read_as_kept_whatever_the_dict_order(
    primary_order: tuple[str, str, str]
) -> None:
    # B and 3 tie (1.3 each) ahead of the kept 8 (0.4): no single winner, so the 8 stays,
    # whichever order the first read's distribution lists them in
    primary = dict(zip(primary_order, (0.4, 0.3, 0.3), strict=True))
    first = read("皖A12845", {4: primary})
    second = read("皖A12B45", {4: {"B": 0.55, "3": 0.45}})
    third = read("皖A12345", {4: {"3": 0.55, "B": 0.45}})
    for reads in ([first, second, third], [first, third, second]):
        out = fused("皖A12845", reads, CN)
        assert out is not None
        assert out[0] == "皖A12845"
        assert out[1][4].char == "8" and out[1][4].prob < 0.2


def test_an_exact_tie_with_the_kept_character_keeps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.lpr import confidence

    monkeypatch.setattr(confidence, "OVERTURN", 1.0)  # any lead overturns: only the tie is left
    for a, b in (("F", "E"), ("E", "F")):
        first = read(f"湘{a}8ZS83", {1: {b: 0.5, a: 0.5}})  # the rival listed first
        other = read(f"湘{b}8ZS83", {1: {b: 0.5, a: 0.5}})
        out = fused(f"湘{a}8ZS83", [first, other], CN)
        assert out is not None and out[0] == f"湘{a}8ZS83", (a, b)


# a simulator frame whose first read gets a character wrong (the Y as V at an angle; before the
# renderer's true perspective (#15) these were 宁 read as 皖 and 冀 as 赣, frames that the new
# renderer no longer gets wrong): the trimmed crop holds larger characters
FRAMES = [
    (
        "宁BL8Y3V",
        Scene(plate_width=354, yaw=-0.49, tilt_deg=-1.08, brightness=0.85, noise=4.89, seed=9),
    ),
]


@pytest.fixture(scope="module")
def rec() -> Recogniser:
    return Recogniser(CN)


@pytest.mark.parametrize(("plate", "scene"), FRAMES)
def test_a_second_look_read_votes_with_its_own_figure(rec: Recogniser, plate: str,
                                                      scene: Scene) -> None:
    """The real pipeline: the candidate's confidence after its second look is what the frames'
    vote makes of it (before, the vote refigured it from the first read's distribution)."""
    best = rec.read_frame(render_frame(plate, scene))[0]
    assert best.plate == plate and best.confidence < pipeline.SECOND_LOOK_BELOW
    voted = vote([FrameRead(best.plate, best.chars, best.valid)], CN)
    assert voted is not None and voted.plate == plate
    assert voted.confidence == pytest.approx(best.confidence, abs=1e-6)


@pytest.mark.parametrize(("plate", "scene"), FRAMES)
def test_second_look_reads_the_province_right(
    rec: Recogniser, plate: str, scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = render_frame(plate, scene)
    assert rec.read_frame(frame)[0].plate == plate
    monkeypatch.setattr(pipeline, "SECOND_LOOK_BELOW", 0.0)  # no second look
    assert rec.read_frame(frame)[0].plate != plate


def test_a_sure_read_gets_no_second_look(rec: Recogniser) -> None:
    calls: list[int] = []
    engine = rec.engine
    frame = render_frame("沪A12345", Scene(plate_width=300, seed=1))

    class Counting:
        def read(self, crops: Sequence[np.ndarray]) -> list[OcrResult]:
            calls.append(len(crops))
            return engine.read(crops)

    counted = Recogniser(CN, Counting(), detector=False)
    best = counted.read_frame(frame)[0]
    assert best.plate == "沪A12345" and best.confidence >= pipeline.SECOND_LOOK_BELOW
    assert calls == [1]
