"""Offline OCR of plate crops behind a small interface.

The engine is PP-OCRv4's text recogniser as shipped *inside* the ``rapidocr-onnxruntime`` wheel
(no download, no network; checked by ``tests/lpr/test_ocr.py``), run directly with
onnxruntime on crops only: the wheel's detector on whole frames costs ~0.5 s and ~1 GB, which a
lane cannot afford, so the plate finder supplies the crops. We decode the CTC output ourselves
so that (a) the alphabet is restricted to the grammar's characters (a plate never holds 的 or
"-"), and (b) every character carries its own probability and runner-up, which voting needs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from edge.lpr.models import OcrError, session

__all__ = ["CharRead", "OcrEngine", "OcrError", "OcrResult", "RapidOcrEngine"]

_REC_MODEL = "models/ch_PP-OCRv4_rec_infer.onnx"
_REC_H = 48
_MIN_W = 320  # crops narrower than this (after scaling to 48 px high) are zero-padded, as upstream
# Alternatives kept per character: every allowed character at least this likely (at most
# _MAX_ALTS of them), for constrained decoding and for conditioning the confidence on the
# grammar (the legal characters' sum must be nearly whole: 70 classes x 1e-5 is < 0.1 %).
_ALT_MIN = 1e-5
_MAX_ALTS = 24


@dataclass(frozen=True)
class CharRead:
    char: str
    prob: float
    runner_up: str  # second most likely allowed character at that step ("" when none)
    runner_up_prob: float
    # the OCR's raw distribution at that step over the allowed characters (this one included,
    # those below 1e-5 left out; blank excluded): lets the grammar pick the likeliest *legal*
    # character, and condition the confidence on the legal ones (``confidence.conditioned``)
    alts: Mapping[str, float] = field(default_factory=dict, compare=False, repr=False)
    # where the character was read: its centre as a fraction of the crop's width (-1 unknown)
    x: float = field(default=-1.0, compare=False, repr=False)
    # the CTC blank's probability at that step: "no character here" (a rival reading only
    # where the plate without this character is valid too)
    blank: float = field(default=0.0, compare=False, repr=False)


@dataclass(frozen=True)
class OcrResult:
    text: str
    chars: tuple[CharRead, ...]

    @property
    def confidence(self) -> float:
        """Product-free summary: the weakest character's probability (one bad char = bad read)."""
        return min((c.prob for c in self.chars), default=0.0)


class OcrEngine(Protocol):
    """Reads text from tight plate crops (BGR uint8). One result per crop, in order."""

    def read(self, crops: Sequence[np.ndarray]) -> list[OcrResult]: ...


class RapidOcrEngine:
    """PP-OCRv4 recogniser via onnxruntime, single-threaded (one core per lane)."""

    def __init__(self, alphabet: Iterable[str] | None = None, *, threads: int = 1) -> None:
        self._session = session(_REC_MODEL, "OCR model", threads=threads)
        meta = self._session.get_modelmeta().custom_metadata_map
        if "character" not in meta:
            raise OcrError("OCR model has no character table in its metadata")
        # CTC classes: 0 = blank, then the model's table, then a space.
        self._classes = ["", *meta["character"].splitlines(), " "]
        self._input = self._session.get_inputs()[0].name
        self._lock = threading.Lock()  # one inference at a time per session
        # Decoding works on the allowed classes only (blank first): ~70 columns, not ~6600.
        self._keep: np.ndarray | None = None
        self._kept = self._classes
        if alphabet is not None:
            allowed = set(alphabet)
            unknown = sorted(allowed - set(self._classes))
            if unknown:
                raise OcrError(f"OCR model cannot output {unknown!r}")
            self._keep = np.array(
                [i for i, c in enumerate(self._classes) if i == 0 or c in allowed], np.intp
            )
            self._kept = [self._classes[i] for i in self._keep]

    def read(self, crops: Sequence[np.ndarray]) -> list[OcrResult]:
        if not crops:
            return []
        batch, geometry = _prepare(crops)
        with self._lock:
            logits = self._session.run(None, {self._input: batch})[0]
        step = batch.shape[3] / logits.shape[1]  # input pixels per CTC step
        return [self._decode(row, step, g) for row, g in zip(logits, geometry, strict=True)]

    def _char(self, dist: np.ndarray, k: int, x: float) -> CharRead:
        """Character ``k`` read from one step's distribution ``dist`` (blank first)."""
        classes = self._kept
        row = dist.copy()
        row[0] = 0.0
        top = np.flatnonzero(row >= _ALT_MIN)
        if len(top) > _MAX_ALTS:
            top = top[np.argpartition(row[top], -_MAX_ALTS)[-_MAX_ALTS:]]
        alts = {classes[int(j)]: float(row[j]) for j in top}
        row[k] = 0.0
        r = int(row.argmax())
        return CharRead(
            char=classes[k],
            prob=float(dist[k]),
            runner_up=classes[r] if row[r] > 0 else "",
            runner_up_prob=float(row[r]),
            alts=alts,
            x=min(1.0, max(0.0, x)),
            blank=float(dist[0]),
        )

    def _decode(
        self, probs: np.ndarray, step: float, geometry: tuple[float, int, int]
    ) -> OcrResult:
        scale, margin, width = geometry
        # The model ends in softmax; keeping the allowed columns then renormalising restricts
        # the alphabet.
        p = probs if self._keep is None else probs[:, self._keep]
        p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-9)
        best = p.argmax(axis=1)
        chars: list[CharRead] = []
        t, n = 0, len(best)
        while t < n:
            k = int(best[t])
            end = t + 1
            while end < n and best[end] == k:
                end += 1
            if k != 0:
                # a character spans a run of steps: read it at the run's surest step (its first
                # is often half blank, which says "where", not "what")
                at = t + int(p[t:end, k].argmax())
                chars.append(self._char(p[at], k, ((t + end) / 2 * step / scale - margin) / width))
            t = end
        chars = [c for c in chars if c.char.strip()]
        return OcrResult("".join(c.char for c in chars), tuple(chars))


def _prepare(
    crops: Sequence[np.ndarray],
) -> tuple[np.ndarray, list[tuple[float, int, int]]]:
    """Scale each crop to 48 px high, normalise to [-1, 1], pad to a common width. Also each
    crop's (scale, left margin, width), to map CTC steps back to crop columns."""
    resized = []
    geometry = []
    for crop in crops:
        if crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] < 4 or crop.shape[1] < 4:
            raise ValueError(f"OCR crop must be a BGR image at least 4x4, got shape {crop.shape}")
        # A replicated margin helps the recogniser with tight crops (+0.4 % exact on real ones).
        m = max(2, crop.shape[0] // 6)
        crop = cv2.copyMakeBorder(crop, m, m, 2 * m, 2 * m, cv2.BORDER_REPLICATE)
        h, w = crop.shape[:2]
        new_w = max(8, round(_REC_H * w / h))
        resized.append(cv2.resize(crop, (new_w, _REC_H), interpolation=cv2.INTER_LINEAR))
        geometry.append((new_w / w, 2 * m, w - 4 * m))
    width = max(_MIN_W, *(r.shape[1] for r in resized))
    batch = np.zeros((len(resized), 3, _REC_H, width), dtype=np.float32)
    for i, img in enumerate(resized):
        x = img.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
        batch[i, :, :, : img.shape[1]] = x
    return batch, geometry
