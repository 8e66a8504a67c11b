"""Offline OCR of plate crops behind a small interface.

The engine is PP-OCRv4's text recogniser as shipped *inside* the ``rapidocr-onnxruntime`` wheel
(no download, no network; checked by ``tests/lpr/test_ocr_offline.py``), run directly with
onnxruntime on crops only: the wheel's detector on whole frames costs ~0.5 s and ~1 GB, which a
lane cannot afford, so the plate finder supplies the crops. We decode the CTC output ourselves
so that (a) the alphabet is restricted to the grammar's characters (a plate never holds 的 or
"-"), and (b) every character carries its own probability and runner-up, which voting needs.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

_MODEL_PACKAGE = "rapidocr_onnxruntime"
_REC_MODEL = "models/ch_PP-OCRv4_rec_infer.onnx"
_REC_H = 48
_MIN_W = 320  # crops narrower than this (after scaling to 48 px high) are zero-padded, as upstream
_TOP_K = 6  # alternatives kept per character, for grammar-constrained decoding


class OcrError(RuntimeError):
    """The OCR engine could not be loaded or run (message says what to fix)."""


@dataclass(frozen=True)
class CharRead:
    char: str
    prob: float
    runner_up: str  # second most likely allowed character at that step ("" when none)
    runner_up_prob: float
    # the most likely allowed characters at that step with their probabilities (this one
    # included): lets the grammar pick the likeliest *legal* character, not a fixed look-alike
    alts: Mapping[str, float] = field(default_factory=dict, compare=False, repr=False)
    # where the character was read: its centre as a fraction of the crop's width (-1 unknown)
    x: float = field(default=-1.0, compare=False, repr=False)


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


def _model_path() -> Path:
    # find_spec locates the wheel without importing it: its __init__ pulls in the detector
    # pipeline (shapely, pyclipper, ...) that we never use.
    spec = importlib.util.find_spec(_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise OcrError("OCR engine missing: install the pinned 'rapidocr-onnxruntime' (make setup)")
    path = Path(next(iter(spec.submodule_search_locations))) / _REC_MODEL
    if not path.is_file():
        raise OcrError(f"OCR model not found at {path}: reinstall rapidocr-onnxruntime")
    return path


class RapidOcrEngine:
    """PP-OCRv4 recogniser via onnxruntime, single-threaded (one core per lane)."""

    def __init__(self, alphabet: Iterable[str] | None = None, *, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(_model_path()), opts, providers=["CPUExecutionProvider"]
        )
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

    def _decode(
        self, probs: np.ndarray, step: float, geometry: tuple[float, int, int]
    ) -> OcrResult:
        scale, margin, width = geometry
        # The model ends in softmax; keeping the allowed columns then renormalising restricts
        # the alphabet.
        p = probs if self._keep is None else probs[:, self._keep]
        p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-9)
        classes = self._kept
        best = p.argmax(axis=1)
        chars: list[CharRead] = []
        prev = 0
        for t, k in enumerate(best):
            k = int(k)
            if k != 0 and k != prev:
                row = p[t].copy()
                row[0] = 0.0
                top = np.argpartition(row, -_TOP_K)[-_TOP_K:]
                alts = {classes[int(j)]: float(row[j]) for j in top if row[j] > 1e-4}
                row[k] = 0.0
                r = int(row.argmax())
                chars.append(
                    CharRead(
                        char=classes[k],
                        prob=float(p[t, k]),
                        runner_up=classes[r] if row[r] > 0 else "",
                        runner_up_prob=float(row[r]),
                        alts=alts,
                        x=min(1.0, max(0.0, ((t + 0.5) * step / scale - margin) / width)),
                    )
                )
            prev = k
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
