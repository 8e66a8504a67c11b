"""Marks inside a plate that the OCR reads as a character: a Czech registration sticker (two
coloured dots, read as "8") between the plate's groups. The grammar finds the plate by dropping
the character the OCR was least sure it saw, not by cutting the read's last character."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from parkedge_sim.render import render_plate

from edge.lpr.grammar import grammar_by_name
from edge.lpr.ocr import CharRead, OcrResult
from edge.lpr.pipeline import Recogniser

SK_CZ = "latin:LLDDDLL,DLDDDDD,DLLDDDD"


@pytest.fixture(scope="module")
def rec() -> Recogniser:
    return Recogniser(grammar_by_name(SK_CZ), detector=False)


def _czech_plate_with_sticker(gap: str, size: float) -> np.ndarray:
    """1B2·5790 on a white plate: the sticker's red and green dots in the gap."""
    img = render_plate(f"1B2{gap}5790", colour="white", height=70)
    h, w = img.shape[:2]
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    ink = (gray[h // 5 : 4 * h // 5] < 128).any(axis=0)
    best, run = (0, 0), 0
    for x in range(w // 5, 4 * w // 5):  # the widest blank run of columns: the gap
        run = 0 if ink[x] else run + 1
        if run > best[0]:
            best = (run, x)
    gx, r = best[1] - best[0] // 2, int(h / size / 2 + 0.5) + 3
    cv2.circle(img, (gx, h // 2 - r), r, (60, 60, 200), -1)
    cv2.circle(img, (gx, h // 2 + r), r, (80, 160, 40), -1)
    return img


@pytest.mark.parametrize(("gap", "size"), [("  ", 6), ("  ", 5), ("   ", 6), ("   ", 5)])
def test_a_registration_sticker_read_as_8_is_dropped(
    rec: Recogniser, gap: str, size: float
) -> None:
    crop = _czech_plate_with_sticker(gap, size)
    raw = rec.engine.read([crop])[0]
    assert raw.text == "1B285790"  # the OCR sees the sticker as an "8", as on the photos
    cand = rec.read_crop(crop)
    assert cand.valid and cand.plate == "1B25790"  # not "1B28579"


def test_the_least_character_like_character_is_dropped(rec: Recogniser) -> None:
    def read(text: str, probs: list[float], blanks: list[float]) -> OcrResult:
        return OcrResult(
            text,
            tuple(
                CharRead(c, p, "", 0.0, {c: p}, i / len(text), b)
                for i, (c, p, b) in enumerate(zip(text, probs, blanks, strict=True))
            ),
        )

    sticker = read("1B285790", [1, 1, 1, 0.75, 1, 1, 1, 1], [0, 0, 0, 0.13, 0, 0, 0, 0])
    assert rec._plate_span(sticker)[0] == "1B25790"
    # a sure character inside and an unsure one at the end: the end goes (a neighbour's text)
    loose = read("1B257909", [1, 1, 1, 1, 1, 1, 1, 0.6], [0, 0, 0, 0, 0, 0, 0, 0.2])
    assert rec._plate_span(loose)[0] == "1B25790"


@pytest.mark.parametrize(("gap", "size"), [("  ", 6), ("  ", 5), ("   ", 6), ("   ", 5)])
def test_generic_latin_drops_a_sticker_by_its_short_ink(gap: str, size: float) -> None:
    """Under the generic layout "1B285790" is a valid plate: the picture decides."""
    rec = Recogniser(grammar_by_name("latin"), detector=False)
    crop = _czech_plate_with_sticker(gap, size)
    assert rec.engine.read([crop])[0].text == "1B285790"
    assert rec.read_crop(crop).plate == "1B25790"


def test_generic_latin_keeps_real_characters() -> None:
    rec = Recogniser(grammar_by_name("latin"), detector=False)
    for text in ("1B2 5790", "WOB VW 84", "KC4AZ3X"):
        crop = render_plate(text, colour="white", height=70)
        assert rec.read_crop(crop).plate == text.replace(" ", "")
