"""The plate-specific recogniser (#15): a small CRNN with CTC trained on synthetic plates only
(``lpr_train/``), run with onnxruntime on one thread; no PyTorch at run time.

It reads one plate crop (a row, for two-row plates) and gives the text with each character's
probability, to stand beside PP-OCR (``ocr.RapidOcrEngine``): the two disagree on different
characters, so a per-character vote within the grammar can lower the confidence of a read
either one is unsure of. The model file and how it was made: ``edge/lpr/models/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.lpr.grammar import CN_PROVINCES, CN_SUFFIXES, PlateGrammar

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


_NEG = -1e9


def _masks(grammar: PlateGrammar) -> dict[int, np.ndarray]:
    """Per plate length, the grammar's layouts as class masks: layouts x positions x C (the
    blank column never allowed); layouts alike over the model's alphabet are kept once."""
    index = {c: i + 1 for i, c in enumerate(ALPHABET)}
    out: dict[int, set[tuple[frozenset[int], ...]]] = {}
    for layout in grammar.layouts:
        sets = tuple(frozenset(index[c] for c in s if c in index) for s in layout)
        if all(sets):
            out.setdefault(len(sets), set()).add(sets)
    masks: dict[int, np.ndarray] = {}
    for n, layouts in out.items():
        m = np.zeros((len(layouts), n, len(ALPHABET) + 1), bool)
        for i, sets in enumerate(sorted(layouts, key=lambda ls: [sorted(x) for x in ls])):
            for j, ks in enumerate(sets):
                m[i, j, list(ks)] = True
        masks[n] = m
    return masks


def ctc_decode_constrained(probs: np.ndarray, grammar: PlateGrammar) -> PlateText | None:
    """The likeliest plate the grammar allows, by a CTC Viterbi per layout (T x C
    probabilities). Each slot scores a step by its likeliest allowed character; the best
    alignment over every layout wins and each slot then takes the allowed character surest
    over its aligned steps. None when the grammar has nothing the model can write."""
    logp = np.log(np.maximum(probs, 1e-12))
    best: tuple[float, PlateText] | None = None
    for mask in _mask_cache(grammar).values():
        # emissions: layouts x slots x T, the likeliest allowed character's log-probability
        em = np.where(mask[:, :, None, :], logp[None, None], _NEG).max(axis=3)
        text, probs_out, score = _viterbi(em, logp, mask)
        if text is not None and (best is None or score > best[0]):
            best = (score, PlateText(text, probs_out))
    return best[1] if best else None


def _viterbi(em: np.ndarray, logp: np.ndarray,
             mask: np.ndarray) -> tuple[str | None, tuple[float, ...], float]:
    """CTC Viterbi over blank-slot-blank states, vectorised over layouts of one length."""
    n_lay, n, T = em.shape
    S = 2 * n + 1
    blank = logp[:, 0]
    emit = np.empty((n_lay, S, T))
    emit[:, 0::2, :] = blank[None, None, :]
    emit[:, 1::2, :] = em
    score = np.full((n_lay, S), _NEG)
    score[:, 0] = emit[:, 0, 0]
    score[:, 1] = emit[:, 1, 0]
    back = np.zeros((T, n_lay, S), np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    skip_ok = np.zeros(S, bool)
    skip_ok[3::2] = True  # slot to slot past a blank (a doubled character needs the blank:
    # the slot's character is not known yet, so the skip is allowed; rare on plates)
    for t in range(1, T):
        prev1 = np.concatenate([np.full((n_lay, 1), _NEG), score[:, :-1]], axis=1)
        prev2 = np.concatenate([np.full((n_lay, 2), _NEG), score[:, :-2]], axis=1)
        prev2[:, ~skip_ok] = _NEG
        stack = np.stack([score, prev1, prev2])
        arg = stack.argmax(axis=0)
        back[t] = arg
        score = np.take_along_axis(stack, arg[None], 0)[0] + emit[:, :, t]
    ends = np.maximum(score[:, S - 1], score[:, S - 2])
    lay = int(ends.argmax())
    total = float(ends[lay])
    if total <= _NEG / 2:
        return None, (), total
    s = S - 1 if score[lay, S - 1] >= score[lay, S - 2] else S - 2
    steps: list[list[int]] = [[] for _ in range(n)]
    for t in range(T - 1, -1, -1):
        if s % 2 == 1:
            steps[s // 2].append(t)
        s -= int(back[t, lay, s])
    chars, ps = [], []
    for j, ts in enumerate(steps):
        if not ts:
            return None, (), _NEG
        allowed = np.flatnonzero(mask[lay, j])
        k = int(allowed[logp[ts][:, allowed].sum(axis=0).argmax()])
        chars.append(ALPHABET[k - 1])
        ps.append(float(np.exp(logp[ts, k].max())))
    return "".join(chars), tuple(ps), total


@lru_cache(maxsize=16)
def _mask_cache(grammar: PlateGrammar) -> dict[int, np.ndarray]:
    return _masks(grammar)


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
        # no arena: it keeps the largest scratch of every input shape seen (the OCR's batch
        # widths vary by crop) for ever; plain allocations cost no measurable time (#15)
        opts.enable_cpu_mem_arena = False
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

    def read(self, crops: list[np.ndarray],
             grammar: PlateGrammar | None = None) -> list[PlateText]:
        """The text of each crop; with a grammar, the likeliest plate it allows (greedy when
        it allows none the model can write)."""
        if not crops:
            return []
        probs = self.probabilities(crops)
        if grammar is None:
            return [ctc_decode(p) for p in probs]
        return [ctc_decode_constrained(p, grammar) or ctc_decode(p) for p in probs]
