"""Plates the finder's rotated rectangle alone does not straighten: a plate tilted by 40-45
degrees (a camera rolled, a plate screwed on askew) and a plate seen from the side, whose
characters lean. Real OCR on the simulator's rendered plates, placed in a plain frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from parkedge_sim.render import PLATE_COLOURS, render_plate

from edge.lpr.finder import _plate_angle, _slant, _tilt, find_plates
from edge.lpr.grammar import cn_grammar, latin_grammar
from edge.lpr.pipeline import Recogniser

PLATE = "川A019W2"


@pytest.fixture(scope="module")
def rec() -> Recogniser:
    return Recogniser(cn_grammar(), detector=False)


def _frame(plate_img: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The plate warped by ``matrix`` (2x3) into a 640x480 grey frame."""
    frame = np.full((480, 640, 3), 128, np.uint8)
    warped = cv2.warpAffine(plate_img, matrix, (640, 480), borderValue=(0, 0, 0))
    mask = cv2.warpAffine(np.full(plate_img.shape[:2], 255, np.uint8), matrix, (640, 480))
    frame[mask > 0] = warped[mask > 0]
    return frame


def _rect(deg: float) -> tuple:
    """minAreaRect of a 120x40 box whose long side rises ``deg`` degrees to the right."""
    t = np.deg2rad(deg)
    u, v = np.array([np.cos(t), -np.sin(t)]), np.array([np.sin(t), np.cos(t)])
    c = np.array([200.0, 200.0])
    pts = [c + 60 * u + 20 * v, c - 60 * u + 20 * v, c - 60 * u - 20 * v, c + 60 * u - 20 * v]
    return cv2.minAreaRect(np.array(pts, np.float32))


@pytest.mark.parametrize("deg", [0, 20, 40, 45, 50, -40, -45])
def test_tilt_is_the_long_sides(deg: float) -> None:
    assert _tilt(_rect(deg)) == pytest.approx(-deg, abs=0.5)  # OpenCV: clockwise positive
    if abs(deg) < 45:
        assert _plate_angle(_rect(deg)) == pytest.approx(-deg, abs=0.5)


@pytest.mark.parametrize("deg", [38.0, 44.0, -44.0])
def test_a_plate_tilted_up_to_45_degrees_is_found_and_read(rec: Recogniser, deg: float) -> None:
    img = render_plate(PLATE, height=40)
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
    m[:, 2] += (320 - w / 2, 240 - h / 2)
    frame = _frame(img, m)
    assert any(b.colour == "blue" for b in find_plates(frame))
    got = rec.read_frame(frame)
    assert got and got[0].plate == PLATE, [c.raw for c in got]


@pytest.mark.parametrize("lean", [0.35, 0.5, -0.5])
def test_a_leaning_plate_is_straightened(rec: Recogniser, lean: float) -> None:
    plate = "沪A12345"  # read as 苏A12345 / FA12345 when left leaning
    img = render_plate(plate, height=40)
    h, w = img.shape[:2]
    m = np.array([[1.0, lean, 320 - w / 2 - lean * h / 2], [0.0, 1.0, 240 - h / 2]])
    got = rec.read_frame(_frame(img, m))
    assert got and got[0].plate == plate, [c.raw for c in got]


def test_a_level_plate_is_left_as_it_is() -> None:
    assert _slant(render_plate(PLATE, height=40)) == 0.0


def _borderless_white_plate(plate: str) -> np.ndarray:
    """A white plate on a white car, its border painted over: the only edges are the
    characters', so the texture blob is their row alone (64 % of the plate's height)."""
    bg = PLATE_COLOURS["white"][0]
    frame = np.full((480, 640, 3), bg, np.uint8)
    frame[:100] = (60, 60, 60)  # something else in view: a dark band above the car
    img = render_plate(plate, colour="white", height=40)
    b = 4
    img[:b], img[-b:], img[:, :b], img[:, -b:] = bg, bg, bg, bg
    frame[220 : 220 + img.shape[0], 250 : 250 + img.shape[1]] = img
    return frame


def test_a_crop_of_the_characters_row_alone_is_cropped_plate_tall() -> None:
    frame = _borderless_white_plate("沪AQ1234")
    thin = find_plates(frame)[0].crop
    assert thin.shape[0] < 0.25 * thin.shape[1]  # the premise: the row of characters
    full = find_plates(frame, min_aspect=140 / 480)[0].crop
    assert full.shape[1] == thin.shape[1]
    assert full.shape[0] >= 0.28 * full.shape[1]


def test_the_grammar_says_how_thin_a_plate_can_be(rec: Recogniser) -> None:
    frame = _borderless_white_plate("沪AQ1234")
    best = rec.read_frame(frame)[0]  # cn: plates are at least 140 / 480 as tall as wide
    assert best.plate == "沪AQ1234"
    assert best.crop.shape[0] >= 0.28 * best.crop.shape[1]
    latin = Recogniser(latin_grammar(), engine=rec.engine, detector=False)
    crop = latin.read_frame(frame)[0].crop  # EU plates are 110 x 520: no such rule
    assert crop.shape[0] < 0.25 * crop.shape[1]
