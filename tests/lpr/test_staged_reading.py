"""Staged reading of a frame's boxes: which read ends the search, and which one wins.

The plate of the car at the barrier is the largest one in view and not cut by the frame's edge;
a sure read of a parked car's plate at the edge, or of a small plate up the frame, must not end
the search before it. Real OCR on rendered plates; the boxes' order is set by the test so that
the far plate is always read first.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import pytest
from parkedge_sim.render import Scene, render_frame, render_plate

from edge.lpr.finder import PlateBox
from edge.lpr.grammar import cn_grammar
from edge.lpr.ocr import OcrResult, RapidOcrEngine
from edge.lpr.pipeline import Recogniser, _is_cut

SHAPE = (720, 1280)
NEAR, FAR = "沪A12345", "鄂CA9622"


class CountingEngine(RapidOcrEngine):
    """The real engine, counting the crops it reads."""

    crops = 0

    def read(self, crops: Sequence[np.ndarray]) -> list[OcrResult]:
        self.crops += len(crops)
        return super().read(crops)


@pytest.fixture(scope="module")
def rec() -> Recogniser:
    g = cn_grammar()
    return Recogniser(g, CountingEngine(g.alphabet), detector=False)


def _box(plate: str, x: int, y: int, height: int) -> PlateBox:
    crop = render_plate(plate, height=height)
    h, w = crop.shape[:2]
    return PlateBox(x, y, w, h, 0.0, "blue", 1.0, crop)


def _reads(rec: Recogniser, boxes: list[PlateBox]) -> tuple[list[str], int]:
    assert isinstance(rec.engine, CountingEngine)
    before = rec.engine.crops
    out = rec._read_boxes(boxes, SHAPE, staged=True)
    return [c.plate for c in out], rec.engine.crops - before


def test_a_sure_read_at_the_frame_edge_does_not_end_the_search(rec: Recogniser) -> None:
    edge = _box(FAR, 0, 300, 44)  # a parked car's plate, cut by the frame's left edge
    near = _box(NEAR, 520, 560, 44)  # the same size, in view
    assert _is_cut(edge, SHAPE) and not _is_cut(near, SHAPE)
    plates, crops = _reads(rec, [edge, near])
    assert crops == 2
    assert plates[0] == NEAR, plates


def test_a_sure_small_plate_up_the_frame_does_not_end_the_search(rec: Recogniser) -> None:
    far = _box(FAR, 700, 120, 26)  # ~82 x 26 px, far up the frame
    near = _box(NEAR, 500, 520, 70)  # ~220 x 70 px, more than 4x its area, lower
    plates, crops = _reads(rec, [far, near])
    assert crops == 2
    assert plates[0] == NEAR, plates


def test_a_sure_read_of_the_near_plate_stops_at_once(rec: Recogniser) -> None:
    near = _box(NEAR, 500, 520, 70)
    far = _box(FAR, 700, 120, 26)
    plates, crops = _reads(rec, [near, far])
    assert crops == 1  # the far plate could not outrank it even read with certainty
    assert plates == [NEAR]


def test_full_frame_with_a_parked_cars_plate_at_the_edge(rec: Recogniser) -> None:
    frame = render_frame(NEAR, Scene(width=1280, height=720, plate_width=200, seed=1))
    parked = render_plate(FAR, height=48)
    ph, pw = parked.shape[:2]
    frame[250 : 250 + ph, 0:pw] = parked  # flush with the left edge
    frame = cv2.GaussianBlur(frame, (3, 3), 0)
    cands = rec.read_frame(frame)
    assert cands and cands[0].plate == NEAR, [(c.plate, c.box, c.cut) for c in cands]
    assert all(c.cut for c in cands if c.plate == FAR)
