"""Fallback plate localisation with PP-OCRv4's text detector (in the rapidocr wheel).

The colour/edge finder is cheap but misses dim, unsaturated and grey plates. The wheel's DB
text detector finds nearly all of them, but on a full 1080p frame it costs ~0.3 s and ~1 GB, so
it runs only on a small copy of the frame (about 480x288 px: ~50 ms on one core) and only when
the finder's crops gave no confident plate. Its text boxes are filtered to plate shapes; the
grammar picks among them. Pure apart from loading the model file.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from edge.lpr.finder import PlateBox, _iou, _plate_angle, _warp
from edge.lpr.models import session

_DET_MODEL = "models/ch_PP-OCRv4_det_infer.onnx"
_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0
_THRESH = 0.3  # DB probability map binarisation, as upstream
_BOX_THRESH = 0.5  # mean probability inside a text region to keep it, as upstream
_UNCLIP = 1.6  # DB regions are shrunk text: grow them back, as upstream
CLOSER_AREA = 1.36  # the second look's pixels, x the first's (480x288 -> 560x336)


class TextDetector:
    """Plate-shaped text regions of a frame, searched at ``area`` pixels (one thread)."""

    def __init__(self, *, area: int = 480 * 288, threads: int = 1) -> None:
        self._session = session(_DET_MODEL, "text detector", threads=threads)
        self._input = self._session.get_inputs()[0].name
        self._lock = threading.Lock()
        self.area = area

    def find(
        self,
        bgr: np.ndarray,
        *,
        max_candidates: int = 4,
        skip: tuple[tuple[int, int, int, int], ...] = (),
        closer: bool = False,
    ) -> list[PlateBox]:
        """Best-first plate-shaped text boxes, leaving out those that are nearly the same box
        as one in ``skip`` (already read; a fragment of a plate is not the plate). ``closer``:
        the second look at a frame where the first found no plate, at ``CLOSER_AREA`` times the
        pixels and with local contrast evened out (CLAHE): a dim plate at night (cn_full
        浙A26M71, 粤BDB720) has too little contrast left in the small copy."""
        h0, w0 = bgr.shape[:2]
        area = self.area * (CLOSER_AREA if closer else 1.0)
        scale = min(1.0, (area / (w0 * h0)) ** 0.5)
        w = max(32, round(w0 * scale / 32) * 32)
        h = max(32, round(h0 * scale / 32) * 32)
        small = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)
        if closer:
            lab = cv2.cvtColor(small, cv2.COLOR_BGR2LAB)
            lab[:, :, 0] = cv2.createCLAHE(2.0, (8, 8)).apply(lab[:, :, 0])
            small = cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
        x = ((small.astype(np.float32) - _MEAN) / _STD).transpose(2, 0, 1)[None]
        with self._lock:
            prob = self._session.run(None, {self._input: x})[0][0, 0]
        mask = cv2.dilate((prob > _THRESH).astype(np.uint8), np.ones((2, 2), np.uint8))
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        sx, sy = w0 / w, h0 / h
        found: list[tuple[float, tuple, tuple[int, int, int, int]]] = []
        for c in contours:
            (cx, cy), (a, b), ang = cv2.minAreaRect(c)
            if min(a, b) < 3:
                continue
            region = np.zeros_like(mask)
            cv2.drawContours(region, [c], -1, 1, -1)
            score = float(prob[region > 0].mean())
            if score < _BOX_THRESH:
                continue
            d = a * b * _UNCLIP / (2 * (a + b))  # DB's unclip distance
            rr = ((cx * sx, cy * sy), ((a + 2 * d) * sx, (b + 2 * d) * sy), ang)
            long_, short = max(rr[1]), min(rr[1])
            if short < 8 or not 1.3 <= long_ / short <= 8.0 or abs(_plate_angle(rr)) > 30:
                continue
            pts = cv2.boxPoints(rr)
            x0, y0 = np.maximum(pts.min(axis=0), 0)
            x1, y1 = pts.max(axis=0)
            box = (int(x0), int(y0), int(x1 - x0), int(y1 - y0))
            if any(_iou(box, s) > 0.5 for s in skip):
                continue
            found.append((score * long_ * short, rr, box))  # big, sure text first
        found.sort(key=lambda f: f[0], reverse=True)
        out = []
        for score, rr, (x, y, bw, bh) in found[:max_candidates]:
            out.append(
                PlateBox(
                    x,
                    y,
                    bw,
                    bh,
                    float(_plate_angle(rr)),
                    None,
                    score,
                    _warp(bgr, rr, 0.0),
                    _warp(bgr, rr, 0.12, min_ratio=8.0),
                )
            )
        return out
