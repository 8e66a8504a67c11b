"""Frame → plate candidates: find plate regions, OCR them in one batch, apply the grammar.

Several regions per frame are normal (a grille, a sign, a second car); the grammar and the OCR
confidence pick. Candidates that are not valid plates are still returned (``valid=False``) so
voting and logs can see them, but always after the valid ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.lpr.finder import PlateBox, find_plates
from edge.lpr.grammar import PlateGrammar, cn_grammar
from edge.lpr.ocr import CharRead, OcrEngine, RapidOcrEngine


@dataclass(frozen=True)
class PlateCandidate:
    plate: str  # grammar-corrected when the correction is forced, else the raw read
    raw: str  # what the OCR read
    confidence: float  # 0..1, weakest character's probability (0.5x when not a valid plate)
    valid: bool  # a plate of the configured grammar
    colour: str | None
    box: tuple[int, int, int, int]  # x, y, w, h in frame pixels
    chars: tuple[CharRead, ...]
    crop: np.ndarray


def load_image(path: Path | str) -> np.ndarray:
    """Read an image file (any name, any OpenCV format; non-ASCII paths work)."""
    p = Path(path)
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as exc:
        raise ValueError(f"cannot read image {p}: {exc.strerror}") from exc
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise ValueError(f"not a readable image: {p}")
    return img


class Recogniser:
    """Owns one OCR engine (its memory and thread) for one lane."""

    def __init__(
        self,
        grammar: PlateGrammar | None = None,
        engine: OcrEngine | None = None,
        *,
        max_candidates: int = 4,
    ) -> None:
        self.grammar = grammar or cn_grammar()
        self.engine = engine or RapidOcrEngine(self.grammar.alphabet)
        self.max_candidates = max_candidates

    def read_frame(self, bgr: np.ndarray) -> list[PlateCandidate]:
        """Best-first candidates for one full frame."""
        boxes = find_plates(bgr, max_candidates=self.max_candidates)
        return self._read_boxes(boxes)

    def read_crop(self, bgr: np.ndarray) -> PlateCandidate:
        """The frame *is* a plate crop (no finding)."""
        h, w = bgr.shape[:2]
        box = PlateBox(0, 0, w, h, 0.0, None, 1.0, bgr)
        return self._read_boxes([box])[0]

    def read_image(self, path: Path | str) -> list[PlateCandidate]:
        return self.read_frame(load_image(path))

    def _read_boxes(self, boxes: list[PlateBox]) -> list[PlateCandidate]:
        if not boxes:
            return []
        results = self.engine.read([b.crop for b in boxes])
        out = []
        for b, r in zip(boxes, results, strict=True):
            corrected = self.grammar.correct(r.text)
            valid = corrected is not None
            conf = r.confidence if valid else 0.5 * r.confidence
            out.append(
                PlateCandidate(
                    plate=corrected or r.text,
                    raw=r.text,
                    confidence=conf,
                    valid=valid,
                    colour=b.colour,
                    box=(b.x, b.y, b.w, b.h),
                    chars=r.chars,
                    crop=b.crop,
                )
            )
        out.sort(key=lambda c: (c.valid, c.confidence), reverse=True)
        return out
