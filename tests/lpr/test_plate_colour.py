"""A measured blue plate is decoded with the blue layouts only: it is never a new-energy
plate (green, 8 characters) nor a suffixed one, so an 8th character read off its edge is
dropped rather than making the read a new-energy plate."""

from __future__ import annotations

import pytest
from parkedge_sim.render import render_plate

from edge.lpr.finder import PlateBox, is_blue_plate
from edge.lpr.grammar import cn_grammar, latin_grammar
from edge.lpr.ocr import CharRead, OcrResult
from edge.lpr.pipeline import Recogniser

CN = cn_grammar()


class NoEngine:
    """The decoding under test needs no OCR: the reads are given."""

    def read(self, crops: object) -> list[OcrResult]:
        raise AssertionError("no OCR expected")


def _read(text: str, unsure_last: bool) -> OcrResult:
    chars = [CharRead(ch, 0.99, "", 0.0, {ch: 0.99}) for ch in text]
    if unsure_last:  # half blank, read at the crop's right edge: a frame screw, not a glyph
        chars[-1] = CharRead(text[-1], 0.63, "", 0.0, {text[-1]: 0.63}, 0.96, 0.37)
    return OcrResult(text, tuple(chars))


@pytest.mark.parametrize(
    ("plate", "blue"),
    [("皖A12345", True), ("沪AD12345", False), ("粤B1234学", False), ("京A1234警", False)],
)
def test_blue_is_measured_on_rendered_plates(plate: str, blue: bool) -> None:
    assert is_blue_plate(render_plate(plate, height=40)) is blue


def test_blue_layouts_are_the_ordinary_ones() -> None:
    blue = CN.in_colour("blue")
    assert blue.is_valid("皖DFX886")
    assert CN.is_valid("皖DFX8861") and not blue.is_valid("皖DFX8861")
    assert not blue.is_valid("粤B1234学")
    assert latin_grammar().in_colour("blue") == latin_grammar()  # no colours known: unchanged


@pytest.mark.parametrize(
    ("colour_of", "want"),
    [("皖DFX886", "皖DFX886"), ("皖DFX8861", "皖DFX8861")],  # blue plate; green (new-energy)
)
def test_an_edge_character_on_a_blue_plate_is_dropped(colour_of: str, want: str) -> None:
    rec = Recogniser(CN, NoEngine(), detector=False)
    crop = render_plate(colour_of, height=40)
    box = PlateBox(0, 0, crop.shape[1], crop.shape[0], 0.0, None, 1.0, crop)
    got = rec._candidate(box, _read("皖DFX8861", unsure_last=True))
    assert got.valid and got.plate == want
