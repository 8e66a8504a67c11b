"""Would a PP-OCR x plate-CRNN vote help? On ground-truth crops of labelled folders (evaluation
only), count how often the two agree and who is right when they disagree.

    python -m lpr_train.agreement [--model=X.onnx] ../shared/lpr-data/cn_crops:cn \
        ../shared/lpr-data/eu:eu:sk,cz

Also, for the read alone and for the vote (``edge.lpr.second_opinion``, CRNN decoded within
the grammar, at each weight in ``WEIGHTS``; ``doubt``: the same without overturning a
character): exact, certain and right, certain and wrong (a wrong member charged), uncertain
(the operator) at the lane's ``min_confidence``.

A vote in which disagreement lowers the confidence sends to the lane's safe policy the reads in
``disagree``: it catches ``ocr_wrong_disagree`` and costs ``ocr_right_disagree`` (right reads
sent to the operator); ``ocr_wrong_agree`` it cannot catch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.lpr.confidence import conditioned  # noqa: E402
from edge.lpr.evaluate import apply_corrections, read_corrections, read_labels  # noqa: E402
from edge.lpr.grammar import grammar_by_name  # noqa: E402
from edge.lpr.pipeline import Recogniser  # noqa: E402
from edge.lpr.plate_rec import PlateRecogniser  # noqa: E402
from edge.lpr.second_opinion import second_opinion  # noqa: E402

MIN_CONFIDENCE = 0.8  # the lane's default: below it a read is uncertain
WEIGHTS = (0.25, 0.5, 1.0)
VARIANTS = [(w, True) for w in WEIGHTS] + [(w, False) for w in WEIGHTS]  # (weight, overturn)


def _key(w: float, overturn: bool) -> str:
    return f"vote{w}" if overturn else f"doubt{w}"


FIXES = ROOT / "bench" / "lpr_label_fixes.csv"


def _tally(out: dict[str, int], key: str, plate: str, conf: float, truth: str) -> None:
    """exact / certain and right / certain and wrong (the harm) / uncertain (the operator)."""
    out[f"{key}_exact"] += plate == truth
    certain = conf >= MIN_CONFIDENCE
    out[f"{key}_certain_right"] += certain and plate == truth
    out[f"{key}_certain_wrong"] += certain and plate != truth
    out[f"{key}_uncertain"] += not certain


def agreement(folder: Path, grammar: str, model: Path | None = None) -> dict[str, int]:
    g = grammar_by_name(grammar)
    ocr = Recogniser(g, detector=False)
    crnn = PlateRecogniser(model) if model else PlateRecogniser()
    out = dict.fromkeys(
        (
            "n",
            "ocr_right",
            "crnn_right",
            "agree_right",
            "ocr_wrong_agree",
            "ocr_wrong_disagree",
            "ocr_right_disagree",
        ),
        0,
    )
    for key in ("ocr", "crnn", *(_key(w, o) for w, o in VARIANTS)):
        for what in ("exact", "certain_right", "certain_wrong", "uncertain"):
            out[f"{key}_{what}"] = 0
    labels = apply_corrections(read_labels(folder), read_corrections(FIXES, folder.name))
    for label in labels:
        img = cv2.imdecode(np.fromfile(str(folder / label.file), np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            continue
        if label.box:
            x, y, w, h = label.box
            img = img[max(0, y) : y + h, max(0, x) : x + w]
        elif folder.name != "cn_crops":
            continue
        if img.shape[0] < 4 or img.shape[1] < 4:
            continue
        cand = ocr.read_crop(img)
        a = cand.plate
        other = crnn.read([img], g)[0]
        b = other.text
        out["n"] += 1
        probs = [c.prob for c in conditioned(a, cand.chars, g)]
        if len(probs) != len(a):
            probs = [cand.confidence] * len(a)
        _tally(out, "ocr", a, cand.confidence, label.plate)
        _tally(out, "crnn", b, other.confidence, label.plate)
        for wt, over in VARIANTS:
            op = second_opinion(a, probs, b, other.probs, g, weight=wt, overturn=over)
            # the OCR's own doubt stands: the vote can only add to it or overturn a character
            conf = op.confidence if op.plate != a else min(op.confidence, cand.confidence)
            _tally(out, _key(wt, over), op.plate, conf, label.plate)
        out["ocr_right"] += a == label.plate
        out["crnn_right"] += b == label.plate
        if a == b:
            out["agree_right"] += a == label.plate
            out["ocr_wrong_agree"] += a != label.plate
        else:
            out["ocr_wrong_disagree"] += a != label.plate
            out["ocr_right_disagree"] += a == label.plate
    return out


def main() -> None:
    res = {}
    args = sys.argv[1:]
    model = None
    if args and args[0].startswith("--model="):
        model = Path(args.pop(0).split("=", 1)[1])
    for arg in args:
        folder, grammar = arg.split(":", 1)
        res[Path(folder).name + ":" + grammar] = agreement(Path(folder), grammar, model)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
