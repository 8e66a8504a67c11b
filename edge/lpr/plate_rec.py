"""The plate-specific recogniser (#15): a small CRNN with CTC trained on synthetic plates only
(``lpr_train/``), run with onnxruntime on one thread; no PyTorch at run time.

It reads one plate crop (a row, for two-row plates) and gives the text with each character's
probability, to stand beside PP-OCR (``ocr.RapidOcrEngine``): the two disagree on different
characters, so a per-character vote within the grammar can lower the confidence of a read
either one is unsure of. The model file and how it was made: ``edge/lpr/models/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.lpr.grammar import CN_PROVINCES, CN_SUFFIXES

INPUT_H = 32
INPUT_W = 128
# CTC classes: 0 is the blank, then these characters in this order (the model's output layout;
# changing it needs a new model).
ALPHABET = (
    "".join(sorted(CN_PROVINCES))
    + "".join(sorted(CN_SUFFIXES))
    + "0123456789"
    + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
MODEL_PATH = Path(__file__).resolve().parent / "models" / "plate_crnn.onnx"


class PlateRecError(RuntimeError):
    """The recogniser's model is missing or unreadable."""


def to_input_grey(bgr: np.ndarray) -> np.ndarray:
    """A crop as the model's input picture: grey, ``INPUT_W`` x ``INPUT_H`` (uint8)."""
    grey = bgr if bgr.ndim == 2 else cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    out: np.ndarray = cv2.resize(grey, (INPUT_W, INPUT_H), interpolation=cv2.INTER_AREA)
    return out


def normalise(grey: np.ndarray) -> np.ndarray:
    """uint8 pictures (N x H x W) → float32 N x 1 x H x W, each zero-mean unit-variance, so a
    dark night crop and a bright one look alike to the network (training does the same)."""
    x = grey.astype(np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = x.std(axis=(1, 2), keepdims=True)
    out: np.ndarray = ((x - mean) / (std + 8.0))[:, None]
    return out


@dataclass(frozen=True)
class PlateText:
    """A read: the text and each character's probability (the surest step of its CTC run)."""

    text: str
    probs: tuple[float, ...]

    @property
    def confidence(self) -> float:
        return min(self.probs) if self.probs else 0.0


def ctc_decode(probs: np.ndarray) -> PlateText:
    """Greedy CTC over T x C probabilities (class 0 the blank)."""
    best = probs.argmax(axis=1)
    chars: list[str] = []
    ps: list[float] = []
    prev = 0
    for t, k in enumerate(best):
        k = int(k)
        if k != 0 and k != prev:
            chars.append(ALPHABET[k - 1])
            ps.append(float(probs[t, k]))
        elif k != 0 and k == prev:
            ps[-1] = max(ps[-1], float(probs[t, k]))
        prev = k
    return PlateText("".join(chars), tuple(ps))


class PlateRecogniser:
    """The ONNX model on one onnxruntime thread (one core per lane)."""

    def __init__(self, path: Path = MODEL_PATH, threads: int = 1) -> None:
        import onnxruntime as ort

        if not path.is_file():
            raise PlateRecError(f"plate recogniser model not found at {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self._session: Any = ort.InferenceSession(
                str(path), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own error types
            raise PlateRecError(f"plate recogniser model {path} unreadable: {exc}") from exc
        self._input = self._session.get_inputs()[0].name

    def probabilities(self, crops: list[np.ndarray]) -> np.ndarray:
        """N x T x C class probabilities for BGR (or grey) crops."""
        grey = np.stack([to_input_grey(c) for c in crops])
        out: np.ndarray = self._session.run(None, {self._input: normalise(grey)})[0]
        return out

    def read(self, crops: list[np.ndarray]) -> list[PlateText]:
        """The text of each crop."""
        if not crops:
            return []
        return [ctc_decode(p) for p in self.probabilities(crops)]
