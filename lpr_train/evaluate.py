"""The plate recogniser alone on labelled folders (evaluation only; nothing here trains).

    python -m lpr_train.evaluate ../shared/lpr-data/cn_crops [more folders] [--model X.onnx]

A folder holds images and ``labels.csv`` (``file,plate,x,y,w,h``): with a box, the box is the
crop (a ground-truth crop: the finder is not measured here); without, the whole image. Two-row
plates are not split here. Prints exact-match and character accuracy per folder, and, with
``--grammar``, the share of reads the grammar accepts as they stand.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.lpr.grammar import grammar_by_name, normalise_plate  # noqa: E402
from edge.lpr.plate_rec import MODEL_PATH, PlateRecogniser  # noqa: E402


def _char_acc(truth: str, read: str) -> float:
    """1 - edit distance / len(truth)."""
    prev = list(range(len(read) + 1))
    for i, a in enumerate(truth, 1):
        cur = [i]
        for j, b in enumerate(read, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a != b)))
        prev = cur
    return max(0.0, 1 - prev[-1] / max(1, len(truth)))


def evaluate(folder: Path, rec: PlateRecogniser, grammar: str | None = None,
             constrained: bool = False) -> dict[str, object]:
    rows = list(csv.DictReader((folder / "labels.csv").open(encoding="utf-8")))
    g = grammar_by_name(grammar) if grammar else None
    exact = valid = 0
    acc = 0.0
    times: list[float] = []
    misses: list[tuple[str, str]] = []
    for row in rows:
        img = cv2.imdecode(np.fromfile(str(folder / row["file"]), np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            continue
        if row.get("w"):
            x, y, w, h = (int(float(row[k])) for k in ("x", "y", "w", "h"))
            img = img[max(0, y) : y + h, max(0, x) : x + w]
        truth = normalise_plate(row["plate"])
        t0 = time.perf_counter()
        read = rec.read([img], g if constrained else None)[0].text
        times.append((time.perf_counter() - t0) * 1000)
        exact += read == truth
        acc += _char_acc(truth, read)
        if g is not None:
            valid += g.is_valid(read)
        if read != truth and len(misses) < 8:
            misses.append((truth, read))
    n = len(times)
    out: dict[str, object] = {
        "n": n,
        "exact": round(exact / max(1, n), 4),
        "char_acc": round(acc / max(1, n), 4),
        "p50_ms": round(float(np.median(times)), 2) if times else 0.0,
        "misses": misses,
    }
    if g is not None:
        out["valid_as_read"] = round(valid / max(1, n), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--model", type=Path, default=MODEL_PATH)
    ap.add_argument("--grammar", help="grammar name, e.g. cn or eu:sk,cz")
    ap.add_argument("--constrained", action="store_true",
                    help="decode within --grammar (the likeliest plate it allows)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rec = PlateRecogniser(args.model)
    results = {f.name: evaluate(f, rec, args.grammar, args.constrained) for f in args.folders}
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
        return
    for name, r in results.items():
        print(
            f"{name}: n={r['n']} exact {r['exact']:.1%} char {r['char_acc']:.1%} "
            f"p50 {r['p50_ms']} ms  misses: {r['misses']}"
        )


if __name__ == "__main__":
    main()
