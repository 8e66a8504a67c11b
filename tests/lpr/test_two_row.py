"""Two-row plates (GA 36 large vehicles and trailers: province and city letter over the five
serials, 440 x 220 mm): read row by row and joined. Real OCR on a plate composed of the
simulator's rendered rows."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from parkedge_sim.render import PLATE_COLOURS, render_plate

from edge.lpr.grammar import cn_grammar
from edge.lpr.pipeline import Recogniser


def two_row_plate(prefix: str, serials: str, width: int = 320) -> np.ndarray:
    """A yellow two-row plate, ``width`` px wide: the rendered rows (their own borders cut
    off) on one plate, the top row narrower and shorter, as GA 36 lays it out."""
    h = width // 2
    bg = PLATE_COLOURS["yellow"][0]
    plate = np.full((h, width, 3), bg, np.uint8)

    def row(text: str, height: int) -> np.ndarray:
        img = render_plate(text, "yellow", height=height)
        b = 3 * max(2, height // 30)
        return img[b:-b, b:-b]

    top = cv2.resize(row(prefix, 120), (width // 2, round(h * 0.3)))
    bottom = cv2.resize(row(serials, 120), (width - width // 10, round(h * 0.55)))
    y0, x0 = round(h * 0.05), (width - top.shape[1]) // 2
    plate[y0 : y0 + top.shape[0], x0 : x0 + top.shape[1]] = top
    y1, x1 = round(h * 0.4), (width - bottom.shape[1]) // 2
    plate[y1 : y1 + bottom.shape[0], x1 : x1 + bottom.shape[1]] = bottom
    cv2.rectangle(plate, (2, 2), (width - 3, h - 3), PLATE_COLOURS["yellow"][1], 2)
    return plate


@pytest.fixture(scope="module")
def rec() -> Recogniser:
    return Recogniser(cn_grammar(), detector=False)


@pytest.mark.parametrize(
    ("prefix", "serials"), [("粤A", "B2893"), ("川A", "0Z19W"), ("皖Q", "06417")]
)
def test_two_row_plate_reads_both_rows(rec: Recogniser, prefix: str, serials: str) -> None:
    got = rec.read_crop(two_row_plate(prefix, serials))
    assert got.valid and got.plate == prefix + serials, got.raw


def test_one_row_plate_is_not_split(rec: Recogniser) -> None:
    # a one-row plate (440 x 140) is too wide for its height to be taken for two rows
    crop = render_plate("粤AB2893", height=60)
    assert crop.shape[0] < 0.4 * crop.shape[1]
    assert rec.read_crop(crop).plate == "粤AB2893"
