"""A Slovak coat of arms read as a character: as tall as the glyphs (the ink-height cue of
``marks.mark_index`` misses it) but coloured, a red shield on a blue base, where the plate's
characters are black on white. Under the generic Latin grammar the 8-character read is a valid
plate, so only the picture can drop the mark."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
from parkedge_sim.render import render_plate

from edge.lpr.finder import PlateBox
from edge.lpr.grammar import grammar_by_name
from edge.lpr.marks import coloured_marks
from edge.lpr.ocr import CharRead, OcrResult
from edge.lpr.pipeline import Recogniser

RED, BLUE, BLACK, WHITE = (40, 40, 210), (200, 80, 20), (30, 30, 30), (255, 255, 255)


@pytest.fixture(scope="module")
def rec() -> Recogniser:
    return Recogniser(grammar_by_name("latin"), detector=False)


def _widest_gap(img: np.ndarray, lo: float, hi: float) -> int:
    """Centre column of the widest run of ink-free columns between ``lo`` and ``hi``."""
    h, w = img.shape[:2]
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    ink = np.asarray((gray[h // 5 : 4 * h // 5] < 128).any(axis=0), dtype=bool)
    best, run = (0, 0), 0
    for x in range(int(lo * w), int(hi * w)):
        run = 0 if ink[x] else run + 1
        if run > best[0]:
            best = (run, x)
    return best[1] - best[0] // 2


def _shield(img: np.ndarray, cx: int, colours: tuple[tuple[int, int, int], ...]) -> None:
    """A shield as tall as the glyphs at column ``cx``: top colour, base colour, white cross."""
    h = img.shape[0]
    sh = round(h * 0.64)
    sw, top = int(sh * 0.6), (h - sh) // 2
    x0, x1, mid = cx - int(sh * 0.3), cx + int(sh * 0.3), top + sh * 2 // 3
    body = np.array([[x0, top], [x1, top], [x1, mid], [cx, top + sh], [x0, mid]], np.int32)
    cv2.fillPoly(img, [body], colours[0])
    cv2.fillPoly(img, [np.array([[x0, mid], [x1, mid], [cx, top + sh]], np.int32)], colours[1])
    cv2.line(img, (cx, top + sh // 8), (cx, mid), WHITE, max(1, sw // 6))
    cv2.line(img, (cx - sw // 4, top + sh // 4), (cx + sw // 4, top + sh // 4), WHITE, sw // 7)


def _photo(img: np.ndarray) -> np.ndarray:
    """As the lane camera sees a plate: 36 px high, a little blurred."""
    h, w = img.shape[:2]
    small = cv2.resize(img, (round(w * 36 / h), 36), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small, (3, 3), 0)


def _read_with_mark(rec: Recogniser, img: np.ndarray, mark_x: float, blank: float) -> OcrResult:
    """The OCR's read of the plate, with the mark read as a "0" at ``mark_x`` (as on the
    photos: unsure, half blank)."""
    chars = list(rec.engine.read([img])[0].chars)
    mark = CharRead("0", 0.64, "8", 0.2, {"0": 0.64, "8": 0.2}, mark_x, blank)
    chars.append(mark)
    chars.sort(key=lambda c: c.x)
    return OcrResult("".join(c.char for c in chars), tuple(chars))


def _box(img: np.ndarray) -> PlateBox:
    return PlateBox(0, 0, img.shape[1], img.shape[0], 0.0, None, 1.0, img)


def _plate_with_shield(colours: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """NO[shield]626AT, the 2006- Slovak layout."""
    img = render_plate("NO  626AT", colour="white", height=100)
    _shield(img, _widest_gap(img, 0.2, 0.6), colours)
    return _photo(img)


def test_a_coat_of_arms_between_the_groups_is_dropped(rec: Recogniser) -> None:
    img = _plate_with_shield((RED, BLUE))
    read = rec.engine.read([img])[0]
    assert read.text == "NOF626AT"  # the OCR reads the shield as a character, unsure
    assert coloured_marks(img, read.chars) == [2]
    assert rec.read_crop(img).plate == "NO626AT"


def test_a_black_mark_as_tall_as_the_glyphs_stays(rec: Recogniser) -> None:
    """The colour is the cue: the same shape in ink is a character to the picture."""
    img = _plate_with_shield((BLACK, BLACK))
    read = rec.engine.read([img])[0]
    assert read.text == "NOF626AT"
    assert coloured_marks(img, read.chars) == []
    assert rec.read_crop(img).plate == "NOF626AT"


def test_a_coloured_character_read_sure_stays(rec: Recogniser) -> None:
    """No blank there: the OCR saw a character, whatever its colour."""
    img = _plate_with_shield((RED, BLUE))
    read = rec.engine.read([img])[0]
    chars = tuple(replace(c, blank=0.0) for c in read.chars)
    assert coloured_marks(img, chars) == []
    assert rec._candidate(_box(img), OcrResult(read.text, chars)).plate == "NOF626AT"


def test_the_old_coat_of_arms_left_of_the_district_code_is_dropped(rec: Recogniser) -> None:
    """1997-2004 plates: the coat of arms at the left end, read as an "R" or "E" before "RK"
    on the photos (here added to the OCR's read by hand: the rendered one is not read)."""
    img = render_plate("  RK959AD", colour="white", height=100)
    x = _widest_gap(img, 0.02, 0.2) / img.shape[1]
    _shield(img, round(x * img.shape[1]), (RED, BLUE))
    img = _photo(img)
    read = _read_with_mark(rec, img, x, blank=0.25)
    assert read.text == "0RK959AD"
    assert rec._candidate(_box(img), read).plate == "RK959AD"
    sure = _read_with_mark(rec, img, x, blank=0.04)  # an end read nearly sure: a character
    assert rec._candidate(_box(img), sure).plate == "0RK959AD"
