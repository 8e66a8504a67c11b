"""The second look: an unsure best read is read again from its crop trimmed and widened, and
the three reads vote per character (``confidence.fused``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from parkedge_sim.render import Scene, render_frame

from edge.lpr import pipeline
from edge.lpr.confidence import fused
from edge.lpr.grammar import cn_grammar
from edge.lpr.ocr import CharRead, OcrResult
from edge.lpr.pipeline import Recogniser

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


def test_a_coin_flip_stays_as_first_read() -> None:
    # F 0.52 / E 0.48, then E 0.51 and 0.61: E's share is ahead but not twice F's
    first = read("湘F8ZS83", {1: {"F": 0.52, "E": 0.48}})
    trimmed = read("湘E8ZS83", {1: {"E": 0.51, "F": 0.49}})
    wider = read("湘E8ZS83", {1: {"E": 0.61, "F": 0.39}})
    out = fused("湘F8ZS83", [first, trimmed, wider], CN)
    assert out is not None
    assert out[0] == "湘F8ZS83"
    assert out[1][1].prob < 0.5 and out[1][1].runner_up == "E"


def test_reads_of_another_length_do_not_vote_and_an_invalid_plate_is_none() -> None:
    first = read("皖A12345", {2: {"1": 0.6, "7": 0.4}})
    longer = read("皖A712345", {})
    out = fused("皖A12345", [first, longer], CN)
    assert out is not None and out[0] == "皖A12345"
    assert fused("皖A1234", [read("皖A1234", {})], CN) is None


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
