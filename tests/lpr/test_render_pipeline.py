"""Full-frame recognition of simulator-rendered lanes (real pixels: font, perspective, noise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from parkedge_sim import render
from parkedge_sim.render import Scene, render_frame, render_plate

from edge.lpr.grammar import cn_grammar
from edge.lpr.pipeline import Recogniser, load_image

CASES = [
    ("沪A12345", Scene(width=1920, height=1080, plate_width=300, seed=1)),
    ("粤BD12345", Scene(width=1920, height=1080, plate_width=260, yaw=0.4, tilt_deg=4, seed=2)),
    ("京N7K2P9", Scene(width=1280, height=720, plate_width=200, brightness=0.6, seed=3)),
    ("苏E372XN", Scene(width=1280, height=720, plate_width=220, yaw=-0.4, blur=1, seed=4)),
    ("浙A8M6T1", Scene(width=1280, height=720, plate_width=240, brightness=1.3, noise=8, seed=5)),
    ("皖A5G895", Scene(width=1280, height=720, plate_width=200, tilt_deg=-5, seed=6)),
    ("湘A3MA06", Scene(width=1920, height=1080, plate_width=280, yaw=0.3, blur=1, seed=7)),
    ("鲁B1234学", Scene(width=1280, height=720, plate_width=240, seed=8)),
]


@pytest.fixture(scope="module")
def rec() -> Recogniser:
    return Recogniser(cn_grammar())


def test_reads_rendered_lanes(rec: Recogniser) -> None:
    got = []
    for plate, scene in CASES:
        cands = rec.read_frame(render_frame(plate, scene))
        got.append(cands[0].plate if cands else "")
    exact = sum(g == p for g, (p, _) in zip(got, CASES, strict=True))
    assert exact >= len(CASES) - 1, list(zip(got, [p for p, _ in CASES], strict=True))


def test_right_reads_clear_the_lanes_default_min_confidence(rec: Recogniser) -> None:
    # conditioned on the grammar, a read no legal character disputes is sure: the lane's
    # default min_confidence (0.8) spends points on it (the raw softmax gave 沪 0.65 here)
    for plate, scene in CASES:
        cands = rec.read_frame(render_frame(plate, scene))
        assert cands, plate
        best = cands[0]
        if best.plate == plate:
            assert best.confidence >= 0.8, (plate, best.confidence, best.chars)
        else:
            assert best.confidence < 0.8, (plate, best.plate, best.confidence)


def test_best_candidate_is_valid_and_boxed_in_frame(rec: Recogniser) -> None:
    plate, scene = CASES[0]
    frame = render_frame(plate, scene)
    best = rec.read_frame(frame)[0]
    assert best.valid and best.plate == plate
    x, y, w, h = best.box
    assert 0 <= x < scene.width and 0 <= y < scene.height
    assert 2.0 < w / h < 6.0
    assert best.colour == "blue"


def test_empty_lane_yields_no_valid_plate(rec: Recogniser) -> None:
    cands = rec.read_frame(render_frame(None, Scene(width=1280, height=720, seed=9)))
    assert not any(c.valid for c in cands)


def test_read_crop_skips_finding(rec: Recogniser) -> None:
    assert rec.read_crop(render_plate("京A88731", height=40)).plate == "京A88731"


def test_frames_are_reproducible_and_varied() -> None:
    s = Scene(width=320, height=180, plate_width=80, seed=3)
    a, b = render_frame("沪A12345", s), render_frame("沪A12345", s)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render_frame(None, s))


def test_bad_inputs_are_named(rec: Recogniser, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="plate text is empty"):
        render_plate("")
    with pytest.raises(ValueError, match="unknown plate colour"):
        render_plate("沪A12345", colour="pink")
    with pytest.raises(ValueError, match="frame must be an HxWx3"):
        rec.read_frame(np.zeros((100, 100), np.uint8))
    junk = tmp_path / "x.jpg"
    junk.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        load_image(junk)
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(tmp_path / "missing.jpg")


def test_missing_font_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(render, "FONT_CANDIDATES", (tmp_path / "none.ttc",))
    render._font.cache_clear()
    try:
        with pytest.raises(render.FontMissingError, match="fonts-noto-cjk"):
            render_plate("沪A12345", height=77)
    finally:
        render._font.cache_clear()


def test_runner_up_repairs_an_invalid_read(rec: Recogniser) -> None:
    from edge.lpr.ocr import CharRead

    text = "皖429C52"  # 4 is no city letter; the OCR's second choice there was A
    chars = tuple(
        CharRead(c, 0.4 if i == 1 else 0.95, "A" if i == 1 else "", 0.3 if i == 1 else 0.0)
        for i, c in enumerate(text)
    )
    fixed, new_chars = rec._runner_up_repair(text, chars)
    assert fixed == "皖A29C52"
    assert new_chars[1].char == "A" and abs(new_chars[1].prob - 0.3) < 1e-9
    valid = "皖A29C52"
    assert rec._runner_up_repair(valid[:-1], chars[:-1]) == (valid[:-1], chars[:-1])


def test_finder_never_crashes_on_odd_frames() -> None:
    from edge.lpr.finder import find_plates

    rng = np.random.default_rng(5)
    shapes = [(16, 32), (17, 1001), (999, 33), (240, 320), (1080, 1920)]
    for h, w in shapes:
        for frame in (
            rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
            np.zeros((h, w, 3), np.uint8),
            np.full((h, w, 3), (160, 60, 10), np.uint8),  # all plate-blue
        ):
            for b in find_plates(frame):
                assert 0 <= b.x <= w and 0 <= b.y <= h
                assert b.crop.ndim == 3 and b.crop.shape[0] >= 4 and b.crop.shape[1] >= 8
    with pytest.raises(ValueError, match="too small"):
        find_plates(np.zeros((10, 10, 3), np.uint8))


def test_constrained_decoding_picks_the_likelier_legal_character() -> None:
    from edge.lpr.grammar import latin_grammar
    from edge.lpr.ocr import CharRead

    br = Recogniser(latin_grammar(("LLLDDDD", "LLLDLDD")))
    text = "AY09034"  # 0 in a letter slot: as text O and D are both look-alikes
    chars = tuple(
        CharRead(c, 0.6, "O", 0.3, {"0": 0.6, "O": 0.3, "D": 0.05})
        if i == 2
        else CharRead(c, 0.95, "", 0.0, {c: 0.95})
        for i, c in enumerate(text)
    )
    assert br.grammar.correct(text) is None
    fixed, new_chars = br._constrained(text, chars)
    assert fixed == "AYO9034" and abs(new_chars[2].prob - 0.3) < 1e-9
    # O and D equally likely: left unread rather than guessed
    even = tuple(
        CharRead(c.char, c.prob, c.runner_up, c.runner_up_prob, {"0": 0.5, "O": 0.2, "D": 0.2})
        if i == 2
        else c
        for i, c in enumerate(chars)
    )
    assert br._constrained(text, even)[0] == text


def test_truncated_jpeg_still_loads(rec: Recogniser, tmp_path: Path) -> None:
    import cv2

    frame = render_frame("沪A12345", Scene(width=1280, height=720, plate_width=240, seed=1))
    ok, jpg = cv2.imencode(".jpg", frame)
    assert ok
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpg.tobytes()[: int(jpg.size * 0.9)])  # the last rows are missing
    assert cv2.imdecode(np.fromfile(cut, np.uint8), cv2.IMREAD_COLOR) is None  # the premise
    img = load_image(cut)
    assert img.shape == frame.shape
    assert rec.read_frame(img)[0].plate == "沪A12345"


def test_detector_box_over_a_fragment_is_read(rec: Recogniser) -> None:
    # a blue plate on a blue car: the finder's texture blob holds "ADUA7M" (no province; its
    # wider crop reads the same), the text detector's box over it holds the whole plate. It
    # was skipped as "already read" (IoU 0.62 with the fragment's box).
    frame = render_frame(
        "渝ADUA7M",
        Scene(plate_width=333, yaw=-0.45, tilt_deg=-5.0, brightness=0.66, noise=7.69, seed=10),
    )
    best = rec.read_frame(frame)[0]
    assert best.valid and best.plate == "渝ADUA7M"
