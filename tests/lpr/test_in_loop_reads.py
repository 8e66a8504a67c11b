"""A car's frames read as one frame of many (#15, the read's tail): the fallback text detector
only when it can help, a fragment read wide before the lesser boxes, and the single-image
read unchanged.

Real OCR and the real detector on rendered frames; the source end to end through the
simulated MJPEG camera, as in test_onbox_source.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import cv2
import numpy as np
import pytest
from parkedge_sim.mjpeg_stream import MjpegCamera
from parkedge_sim.render import render_plate

from edge.lpr.finder import PlateBox, _warp
from edge.lpr.grammar import cn_grammar
from edge.lpr.ocr import OcrResult, RapidOcrEngine
from edge.lpr.onbox_source import OnBoxPlateSource
from edge.lpr.pipeline import PlateCandidate, Recogniser
from edge.lpr.textdet import TextDetector
from tests.lpr.test_onbox_source import SCENE, TZ
from tests.lpr.test_textdet import decoy_frame

SHAPE = (720, 1280)
PLATE = "沪A12345"


class CountingEngine(RapidOcrEngine):
    """The real engine, counting the crops it reads."""

    crops = 0

    def read(self, crops: Sequence[np.ndarray]) -> list[OcrResult]:
        self.crops += len(crops)
        return super().read(crops)


class Looks(TextDetector):
    """The real detector, recording each look (``closer`` or not)."""

    def __init__(self) -> None:
        super().__init__()
        self.looks: list[bool] = []

    def find(self, bgr: np.ndarray, **kw: object) -> list[PlateBox]:
        self.looks.append(bool(kw.get("closer", False)))
        return super().find(bgr, **kw)  # type: ignore[arg-type]


class Boom:
    def find(self, *_a: object, **_k: object) -> list[PlateBox]:
        raise AssertionError("the fallback detector ran")


@pytest.fixture(scope="module")
def engine() -> CountingEngine:
    return CountingEngine(cn_grammar().alphabet)


def fragment_frame() -> tuple[np.ndarray, list[PlateBox]]:
    """A plate whose first box misses the province character (a tight box: the fragment
    "A12345", its wide crop the whole plate), then three small, blank boxes up the frame."""
    frame = np.full((*SHAPE, 3), 90, np.uint8)
    plate = render_plate(PLATE, height=70)
    ph, pw = plate.shape[:2]
    frame[500 : 500 + ph, 500 : 500 + pw] = plate
    cut = pw // 7 + 6  # the province character and its gap left outside the box
    rr = ((500 + (cut + pw) / 2, 500 + ph / 2), (float(pw - cut), float(ph)), 0.0)
    tight = PlateBox(500 + cut, 500, pw - cut, ph, 0.0, "blue", 1.0, _warp(frame, rr, 0.0),
                     _warp(frame, rr, 0.12, min_ratio=8.0))
    blanks = [PlateBox(x, 120, 60, 24, 0.0, "blue", 1.0, frame[120:144, x : x + 60].copy())
              for x in (200, 600, 1000)]
    return frame, [tight, *blanks]


def test_a_fragment_is_read_wide_before_the_lesser_boxes(engine: CountingEngine) -> None:
    rec = Recogniser(cn_grammar(), engine, detector=False)
    frame, boxes = fragment_frame()
    first = rec._candidate(boxes[0], engine.read([boxes[0].crop])[0])
    assert rec._fragment(boxes[0], first)  # the premise: the tight box reads a fragment

    def read(wide_first: bool) -> tuple[list[PlateCandidate], int]:
        before = engine.crops
        out = rec._read_boxes(boxes, SHAPE, staged=True, frame=frame, wide_first=wide_first)
        return out, engine.crops - before

    whole, whole_crops = read(False)
    quick, quick_crops = read(True)
    assert whole[0].plate == quick[0].plate == PLATE and quick[0].valid
    assert whole_crops == 5  # the fragment, the three blanks, then the wide crop
    assert quick_crops == 2  # the fragment and its wide crop: nothing left could outrank it


def test_no_fallback_skips_the_detector_and_the_default_keeps_it(engine: CountingEngine) -> None:
    frame = decoy_frame()  # only the detector finds its plate
    cheap = Recogniser(cn_grammar(), engine, detector=Boom())  # type: ignore[arg-type]
    quick = cheap.read_frame(frame, fallback=False, wide_first=True)
    assert not any(c.valid for c in quick) and cheap.finder_missed(quick)
    rec = Recogniser(cn_grammar(), engine, detector=Looks())
    best = rec.read_frame(frame)  # the single-image read: the whole search
    assert best[0].plate == PLATE and best[0].found_by == "text"
    assert rec.finder_missed(best)  # found, but not by the cheap finder


def _cand(valid: bool, found_by: str, confidence: float = 0.95) -> PlateCandidate:
    return PlateCandidate(PLATE, PLATE, confidence, valid, "blue", (0, 0, 1, 1), (),
                          np.zeros((1, 1, 3), np.uint8), found_by=found_by)


def test_the_next_frame_runs_the_fallback_only_when_it_can_help(engine: CountingEngine) -> None:
    src = OnBoxPlateSource("http://127.0.0.1:9/x", "E1", grammar=cn_grammar(), tz=TZ,
                           recogniser=Recogniser(cn_grammar(), engine, detector=False))
    hit, weak = _cand(True, "finder"), _cand(True, "finder", 0.3)
    by_text, none = _cand(True, "text"), _cand(False, "finder", 0.0)
    assert not src._fallback_next(False, [hit])  # the cheap finder read it
    assert not src._fallback_next(True, [hit, by_text])
    assert src._fallback_next(False, [weak])  # a miss without the detector: try it next
    assert src._fallback_next(False, [])
    assert src._fallback_next(True, [by_text])  # only the detector finds it: keep it on
    assert not src._fallback_next(True, [none])  # it ran and found nothing: rest a frame


def _read(src: OnBoxPlateSource, cam: MjpegCamera, caplog: pytest.LogCaptureFixture,
          show: object, after_s: float) -> tuple[str, bool, list[dict[str, object]]]:
    """Trigger a read on the empty lane, show ``show`` (a plate, or a frame) after
    ``after_s``; the published plate, whether uncertain, and the trace's frames."""

    async def run() -> tuple[str, bool]:
        await src.start()
        try:
            src.trigger()
            await asyncio.sleep(after_s)
            if isinstance(show, str):
                await asyncio.to_thread(cam.set_car, show)
            else:
                await asyncio.to_thread(cam.set_image, show)  # type: ignore[arg-type]
            read = await asyncio.wait_for(src.get(), 15)
            return read.plate, read.uncertain
        finally:
            await src.stop()

    with caplog.at_level(logging.INFO, logger="edge.lpr.onbox_source"):
        plate, uncertain = asyncio.run(run())
    traces = [r.lpr_trace for r in caplog.records if hasattr(r, "lpr_trace")]
    assert len(traces) == 1
    frames = traces[0]["frames"]
    return plate, uncertain, frames


def _source(cam: MjpegCamera, rec: Recogniser) -> OnBoxPlateSource:
    return OnBoxPlateSource(cam.url, "E1", grammar=cn_grammar(), tz=TZ, recogniser=rec,
                            vote_frames=2, min_confidence=0.6, timeout_s=6.0,
                            second_opinion=False)


def test_frames_before_the_plate_is_in_view_do_not_each_run_the_fallback(
    engine: CountingEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """The car is on the loop but its plate not in view yet (the empty lane): the detector
    looks at most at every other of those frames, and the plate is read once in view."""
    det = Looks()
    with MjpegCamera(fps=15, scene=SCENE) as cam:
        src = _source(cam, Recogniser(cn_grammar(), engine, detector=det))
        plate, uncertain, frames = _read(src, cam, caplog, "粤BK7M36", 1.2)
    assert plate == "粤BK7M36" and not uncertain
    empty = [f for f in frames if f["plate"] != "粤BK7M36"]
    assert len(empty) >= 4  # the premise: several frames before the plate
    assert det.looks.count(False) <= (len(frames) + 1) // 2, (det.looks, frames)


def test_a_plate_only_the_fallback_finds_is_still_read(
    engine: CountingEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """The first frame reads with the cheap finder alone and misses; from the next one on the
    detector runs on each frame (it keeps finding the plate), and the car is read in time."""
    frame = decoy_frame()
    # the stream's JPEG, as the source sees it
    frame = cv2.imdecode(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])[1], 1)
    with MjpegCamera(fps=15, scene=SCENE) as cam:
        cam.set_image(frame)
        src = _source(cam, Recogniser(cn_grammar(), engine, detector=Looks()))
        plate, uncertain, frames = _read(src, cam, caplog, frame, 0.0)
    assert plate == PLATE and not uncertain
    assert [f["fallback"] for f in frames] == [False] + [True] * (len(frames) - 1)
    assert [f["plate"] for f in frames][1:] == [PLATE] * 2
