"""Would a PP-OCR x plate-CRNN vote help? On ground-truth crops of labelled folders (evaluation
only), count how often the two agree and who is right when they disagree.

    python -m lpr_train.agreement ../shared/lpr-data/cn_crops:cn ../shared/lpr-data/eu:eu:sk,cz

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

from edge.lpr.evaluate import apply_corrections, read_corrections, read_labels  # noqa: E402
from edge.lpr.grammar import grammar_by_name  # noqa: E402
from edge.lpr.pipeline import Recogniser  # noqa: E402
from edge.lpr.plate_rec import PlateRecogniser  # noqa: E402

FIXES = ROOT / "bench" / "lpr_label_fixes.csv"


def agreement(folder: Path, grammar: str) -> dict[str, int]:
    ocr = Recogniser(grammar_by_name(grammar), detector=False)
    crnn = PlateRecogniser()
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
        a = ocr.read_crop(img).plate
        b = crnn.read([img])[0].text
        out["n"] += 1
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
    for arg in sys.argv[1:]:
        folder, grammar = arg.split(":", 1)
        res[Path(folder).name + ":" + grammar] = agreement(Path(folder), grammar)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
