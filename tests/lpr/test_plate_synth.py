"""The synthetic plates the recogniser is trained on (#15): every plate type the grammars know,
drawn to the standards' geometry, deterministic with a seed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge.lpr.eu_plates import eu_grammar
from edge.lpr.grammar import cn_grammar, latin_grammar
from edge.lpr.plate_rec import ALPHABET, INPUT_H, INPUT_W
from lpr_train import synth

GRAMMARS = {
    "cn": cn_grammar(),
    "sk": eu_grammar(["sk"]),
    "cz": eu_grammar(["cz"]),
    "br_old": latin_grammar(["LLLDDDD"]),
    "br_mercosul": latin_grammar(["LLLDLDD"]),
}


def _grammar(kind: str) -> str:
    if kind.startswith("cn_"):
        return "cn"
    return {"eu_sk": "sk", "eu_cz": "cz"}.get(kind, kind)


@pytest.mark.parametrize("kind", list(synth.KINDS))
def test_every_kind_gives_plates_its_grammar_accepts(kind: str) -> None:
    rng = np.random.default_rng(1)
    texts = [synth.plate_text(kind, rng) for _ in range(200)]
    g = GRAMMARS[_grammar(kind)]
    bad = [t for t in texts if not g.is_valid(t)]
    assert not bad, bad[:5]
    assert all(c in ALPHABET for t in texts for c in t)


def test_the_chinese_plate_types_have_their_lengths_and_suffixes() -> None:
    rng = np.random.default_rng(2)
    assert {len(synth.plate_text("cn_green", rng)) for _ in range(50)} == {8}
    assert {len(synth.plate_text("cn_green_large", rng)) for _ in range(50)} == {8}
    assert {synth.plate_text("cn_white", rng)[-1] for _ in range(20)} == {"警"}
    assert {synth.plate_text("cn_black", rng)[-1] for _ in range(50)} == {"港", "澳"}


@pytest.mark.parametrize(
    ("kind", "text", "size_mm"),
    [
        ("cn_blue", "皖A12345", (440, 140)),
        ("cn_green", "粤BD12345", (480, 140)),
        ("cn_yellow_two_row", "粤AB2893", (440, 220)),
        ("eu_sk", "BA123AB", (520, 110)),
        ("br_mercosul", "ABC1D23", (400, 130)),
    ],
)
def test_plates_have_the_standard_size(kind: str, text: str, size_mm: tuple[int, int]) -> None:
    flat = synth.draw_plate(kind, text, np.random.default_rng(0), scale=1.0)
    assert flat.image.shape[:2] == (size_mm[1], size_mm[0])


def test_the_chinese_plate_has_its_dot_between_the_city_letter_and_the_serials() -> None:
    flat = synth.draw_plate("cn_blue", "皖A12345", np.random.default_rng(0), scale=1.0)
    img = flat.image
    # GA 36: 15.5 mm margin, two 45 mm glyphs and a 12 mm gap, then the 34 mm gap with the dot
    dot_x = round(15.5 + 45 + 12 + 45 + 17)
    white = img[70, dot_x].mean()
    blue_gap = img[70, dot_x - 12].mean()
    assert white > 200 > blue_gap + 60


def test_two_row_plates_give_their_rows_apart() -> None:
    flat = synth.draw_plate("cn_yellow_two_row", "粤AB2893", np.random.default_rng(0), 1.0)
    assert [r[0] for r in flat.rows] == ["粤A", "B2893"]


def test_samples_are_deterministic_with_a_seed() -> None:
    a = [synth.sample(np.random.default_rng(7)) for _ in range(3)]
    b = [synth.sample(np.random.default_rng(7)) for _ in range(3)]
    for (xa, la), (xb, lb) in zip(a, b, strict=True):
        assert la == lb
        assert np.array_equal(xa, xb)
    other, _ = synth.sample(np.random.default_rng(8))
    assert not np.array_equal(a[0][0], other)


def test_a_sample_is_a_crop_of_the_recognisers_input_size() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        crop, label = synth.sample(rng)
        assert crop.shape == (INPUT_H, INPUT_W, 3) and crop.dtype == np.uint8
        assert 2 <= len(label) <= 8
