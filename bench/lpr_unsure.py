"""How sure the on-box reader is when it is wrong: per dev set, the reads that are exact, the
reads wrong but sure (what a lane would act on: a certain read of another plate), and the
unsure reads (below the lane's ``min_confidence`` or no valid plate: the lane's safe policy,
the operator or no points spent).

    .venv/bin/python bench/lpr_unsure.py [--data ../shared/lpr-data] [--json]
    # the same sets read by another checkout's code (its own venv):
    cd /work/main && .venv/bin/python /work/wt/lpr/bench/lpr_unsure.py --code /work/main

Sets and grammars as ``bench/lpr.py`` reads them (labels corrected from
``bench/lpr_label_fixes.csv``): cn_crops and cn_full with ``cn``, eu as a Slovak/Czech site
reads it (``eu:sk,cz``), br with its two layouts (``latin:LLLDDDD,LLLDLDD``). Each read is
judged as the lane judges a car's: the frames' vote over the best candidate, then the plate
CRNN's second opinion (``--no-opinion``: without it); the candidate's own figure is counted
beside it (``reader_alone``). The counts
overlap on purpose: ``exact`` is every read equal to the label (the figure ``bench/lpr.py``
shows), ``sure_wrong`` the wrong reads that are sure, ``unsure`` every read that is not sure
(right or wrong; ``unsure_right`` of them were right). Run it pinned to one core
(``taskset -c 0``) when timing matters; the counts do not depend on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
LABEL_FIXES = HERE / "bench" / "lpr_label_fixes.csv"
# (set name, folder, grammar), as bench/lpr.py's GRAMMAR and EXTRA name them
SETS = (
    ("cn_crops", "cn_crops", "cn"),
    ("cn_full", "cn_full", "cn"),
    ("eu", "eu", "eu:sk,cz"),
    ("br", "br", "latin:LLLDDDD,LLLDLDD"),
)
MIN_CONFIDENCE = 0.8  # the lane's default min_confidence (edge/config/models.py)
# early_confidence thresholds tried for the lane's early accept (OnBoxPlateSource, #15)
EARLY = (0.9, 0.95, 0.98, 0.99)


def early_counts(reads: list[tuple[bool, float, bool]],
                 thresholds: tuple[float, ...]) -> dict[str, dict[str, int]]:
    """Per ``early_confidence``: the one-frame reads the lane's early accept would take
    (``reads``: valid and the CRNN read the same plate, the vote's confidence, right) and how
    many of those are wrong. A wrong one would be a certain read of another plate after one
    frame, with no later frame to outvote it."""
    out: dict[str, dict[str, int]] = {}
    for t in thresholds:
        took = [right for agreed, conf, right in reads if agreed and conf >= t]
        out[f"{t:g}"] = {"early": len(took), "early_wrong": took.count(False)}
    return out


def count_set(folder: Path, grammar_name: str, threshold: float,
              limit: int | None = None, opinion: bool = True,
              early: tuple[float, ...] = EARLY) -> dict[str, Any]:
    """Each image read as the lane judges a car's read: the recogniser's best candidate, the
    frames' vote over it (``voting.vote``, which conditions its characters again), then the
    plate CRNN's second opinion (``SecondOpinion``, on by default on a lane; ``opinion``).
    Sure: a valid plate at ``threshold`` or above (the lane's ``min_confidence``; one frame
    here, so ``vote_frames`` is not asked). ``reader_alone`` counts the same with the
    candidate's own confidence (no vote, no second opinion). ``early``: per threshold, the
    reads the early accept would take (``early_counts``; only with the second opinion)."""
    from edge.lpr.evaluate import apply_corrections, is_crop, read_corrections, read_labels
    from edge.lpr.grammar import grammar_by_name
    from edge.lpr.pipeline import Recogniser, load_image
    from edge.lpr.second_opinion import SecondOpinion
    from edge.lpr.voting import FrameRead, vote

    grammar = grammar_by_name(grammar_name)
    rec = Recogniser(grammar)
    second = SecondOpinion(grammar) if opinion else None
    labels = apply_corrections(read_labels(folder),
                               read_corrections(LABEL_FIXES, folder.name))[:limit]
    lane = {"exact": 0, "sure_wrong": 0, "unsure": 0, "unsure_right": 0}
    alone = dict(lane)
    wrong: list[dict[str, Any]] = []
    judged: list[tuple[bool, float, bool]] = []  # (early-eligible, confidence, right)
    early_wrong: list[dict[str, Any]] = []

    def tally(c: dict[str, int], right: bool, sure: bool) -> None:
        c["exact"] += right
        c["sure_wrong"] += sure and not right
        c["unsure"] += not sure
        c["unsure_right"] += right and not sure

    t0 = time.monotonic()
    for label in labels:
        got, conf, own, own_conf = "", 0.0, "", 0.0
        try:
            img = load_image(folder / label.file)
        except ValueError:
            img = None
        if img is not None:
            cands = ([rec.read_crop(img)] if is_crop(img.shape, label) else rec.read_frame(img))
            best = cands[0] if cands and cands[0].plate else None
            if best is not None:
                own, own_conf = best.plate, best.confidence
                v = vote([FrameRead(best.plate, best.chars, best.valid, best.colour)], grammar)
                if v is not None and second is not None:
                    j = second.judge(v, best)
                    eligible = j.agreed and grammar.is_valid(v.plate)
                    judged.append((eligible, v.confidence, v.plate == label.plate))
                    if eligible and v.plate != label.plate and v.confidence >= min(early):
                        early_wrong.append({"file": label.file, "plate": label.plate,
                                            "read": v.plate,
                                            "confidence": round(v.confidence, 3)})
                    v = j.vote
                if v is not None:
                    got, conf = v.plate, v.confidence
        sure = bool(got) and conf >= threshold and grammar.is_valid(got)
        tally(lane, got == label.plate, sure)
        tally(alone, own == label.plate,
              bool(own) and own_conf >= threshold and grammar.is_valid(own))
        if sure and got != label.plate:
            wrong.append({"file": label.file, "plate": label.plate, "read": got,
                          "confidence": round(conf, 3)})
    n = len(labels)
    return {
        "n": n, "grammar": grammar_name, "second_opinion": opinion, **lane,
        "exact_share": round(lane["exact"] / n, 4),
        "sure_wrong_share": round(lane["sure_wrong"] / n, 4),
        "unsure_share": round(lane["unsure"] / n, 4), "sure_wrong_reads": wrong,
        "reader_alone": alone,
        "early": early_counts(judged, early) if second is not None else {},
        "early_wrong_reads": early_wrong, "seconds": round(time.monotonic() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "lpr-data")
    ap.add_argument("--code", type=Path, default=HERE,
                    help="the checkout whose edge/ is read (default: this one)")
    ap.add_argument("--sets", default=",".join(s[0] for s in SETS),
                    help="comma-separated subset of " + ", ".join(s[0] for s in SETS))
    ap.add_argument("--min-confidence", type=float, default=MIN_CONFIDENCE)
    ap.add_argument("--limit", type=int, help="only the first N images of each set")
    ap.add_argument("--no-opinion", action="store_true",
                    help="without the plate CRNN's second opinion (a lane that has none)")
    ap.add_argument("--early", default=",".join(f"{t:g}" for t in EARLY),
                    help="comma-separated early_confidence thresholds to count")
    ap.add_argument("--json", action="store_true", help="one JSON object on the last line")
    args = ap.parse_args()
    sys.path[:0] = [str(args.code.resolve()), str(args.code.resolve() / "hardware-sim")]
    data = args.data if args.data.is_dir() else Path("/work/shared/lpr-data")
    wanted = set(args.sets.split(","))
    unknown = wanted - {s[0] for s in SETS}
    if unknown:
        ap.error(f"unknown set(s): {', '.join(sorted(unknown))}")
    import edge

    early = tuple(float(t) for t in args.early.split(","))
    results: dict[str, Any] = {"code": str(Path(edge.__file__).resolve().parents[1]),
                               "min_confidence": args.min_confidence, "early": list(early),
                               "sets": {}}
    for name, folder, grammar in SETS:
        if name not in wanted:
            continue
        r = count_set(data / folder, grammar, args.min_confidence, args.limit,
                      not args.no_opinion, early)
        results["sets"][name] = r
        if not args.json:
            print(f"{name:9s} n={r['n']:4d}  exact {r['exact']:4d} ({r['exact_share']:.1%})  "
                  f"sure but wrong {r['sure_wrong']:2d} ({r['sure_wrong_share']:.1%})  "
                  f"unsure {r['unsure']:3d} ({r['unsure_share']:.1%}; {r['unsure_right']} right)"
                  f"  [{r['seconds']} s]", flush=True)
            a = r["reader_alone"]
            print(f"          the reader's own figure: exact {a['exact']}, sure but wrong "
                  f"{a['sure_wrong']}, unsure {a['unsure']} ({a['unsure_right']} right)",
                  flush=True)
            for w in r["sure_wrong_reads"]:
                print(f"          sure but wrong: {w['file']}: {w['plate']} read {w['read']} "
                      f"({w['confidence']})", flush=True)
            print("          early accept (CRNN agrees, valid, conf >= T): " + ", ".join(
                f"T={t}: {e['early']} ({e['early_wrong']} wrong)"
                for t, e in r["early"].items()), flush=True)
            for w in r["early_wrong_reads"]:
                print(f"          early but wrong: {w['file']}: {w['plate']} read {w['read']} "
                      f"({w['confidence']})", flush=True)
    if args.json:
        print(json.dumps(results, ensure_ascii=False))


if __name__ == "__main__":
    main()
