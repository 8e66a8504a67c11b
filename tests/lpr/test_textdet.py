"""The text detector as the fallback finder: a plate the colour/edge finder does not propose
(decoys outrank it) is still read, and a frame the finder reads well never runs it."""

from __future__ import annotations

import numpy as np
import pytest
from parkedge_sim.render import Scene, render_frame, render_plate

from edge.lpr.finder import PlateBox
from edge.lpr.grammar import cn_grammar
from edge.lpr.pipeline import Recogniser
from edge.lpr.textdet import TextDetector


@pytest.fixture(scope="module")
def rec() -> Recogniser:
    return Recogniser(cn_grammar())


def decoy_frame(
    colour: str = "white", height: int = 34, gain: float = 0.5, offset: int = 50
) -> np.ndarray:
    """Six blue, striped, plate-sized blocks (the finder's favourite shapes, no text) and one
    small, dim plate (its pixels x ``gain`` + ``offset``)."""
    frame = np.full((720, 1280, 3), 70, np.uint8)
    for i in range(6):
        x0, y0 = 60 + (i % 3) * 400, 80 + (i // 3) * 200
        frame[y0 : y0 + 60, x0 : x0 + 220] = (160, 60, 10)
        for x in range(x0 + 10, x0 + 210, 14):
            frame[y0 + 10 : y0 + 50, x : x + 6] = (255, 255, 255)
    plate = render_plate("沪A12345", colour=colour, height=height).astype(np.float32)
    plate = (plate * gain + offset).astype(np.uint8)
    frame[560 : 560 + plate.shape[0], 700 : 700 + plate.shape[1]] = plate
    return frame


def test_detector_reads_what_the_finder_misses(rec: Recogniser) -> None:
    frame = decoy_frame()
    finder_only = Recogniser(cn_grammar(), engine=rec.engine, detector=False)
    assert not any(c.valid for c in finder_only.read_frame(frame))  # the premise
    best = rec.read_frame(frame)[0]
    assert best.valid and best.plate == "沪A12345"
    x, y, w, h = best.box
    assert 680 <= x <= 720 and 540 <= y <= 580 and 90 <= w <= 140 and 25 <= h <= 60


def test_detector_boxes_are_plate_shaped_and_skip_known_boxes() -> None:
    det = TextDetector()
    frame = render_frame("苏E372XN", Scene(width=1280, height=720, plate_width=220, seed=4))
    boxes = det.find(frame)
    assert boxes and all(1.3 <= b.w / b.h <= 9 for b in boxes)
    first = boxes[0]
    again = det.find(frame, skip=((first.x, first.y, first.w, first.h),))
    assert all((b.x, b.y) != (first.x, first.y) for b in again)


def test_confident_finder_read_skips_the_detector(rec: Recogniser) -> None:
    class Boom:
        def find(self, *_a: object, **_k: object) -> list:
            raise AssertionError("detector ran on a frame the finder read")

    quick = Recogniser(cn_grammar(), engine=rec.engine, detector=Boom())  # type: ignore[arg-type]
    frame = render_frame("沪A12345", Scene(width=1920, height=1080, plate_width=300, seed=1))
    assert quick.read_frame(frame)[0].plate == "沪A12345"


class Looks(TextDetector):
    """The real detector, recording each look (``closer`` or not); ``closer_off`` refuses the
    second look, as the code before it had none."""

    def __init__(self, closer_off: bool = False) -> None:
        super().__init__()
        self.looks: list[bool] = []
        self.closer_off = closer_off

    def find(
        self,
        bgr: np.ndarray,
        *,
        max_candidates: int = 4,
        skip: tuple[tuple[int, int, int, int], ...] = (),
        closer: bool = False,
    ) -> list[PlateBox]:
        self.looks.append(closer)
        if closer and self.closer_off:
            return []
        return super().find(bgr, max_candidates=max_candidates, skip=skip, closer=closer)


def test_a_closer_look_reads_a_dim_plate_the_first_misses(rec: Recogniser) -> None:
    frame = decoy_frame("blue", height=20, gain=0.3, offset=60)  # a night-time blue plate
    without = Recogniser(cn_grammar(), engine=rec.engine, detector=Looks(closer_off=True))
    assert not any(c.valid for c in without.read_frame(frame))  # the premise
    det = Looks()
    best = Recogniser(cn_grammar(), engine=rec.engine, detector=det).read_frame(frame)[0]
    assert det.looks == [False, True]
    assert best.valid and best.plate == "沪A12345"


def test_no_closer_look_once_a_plate_is_read(rec: Recogniser) -> None:
    det = Looks()
    best = Recogniser(cn_grammar(), engine=rec.engine, detector=det).read_frame(decoy_frame())[0]
    assert best.plate == "沪A12345" and det.looks == [False]
