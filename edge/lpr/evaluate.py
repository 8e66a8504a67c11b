"""Accuracy and latency of the recogniser on a labelled folder (``lpr eval`` and the bench).

A folder holds images and ``labels.csv`` with ``file,plate[,x,y,w,h]``. Exact-plate accuracy,
character accuracy (1 - edit distance / length, summed over plates), latency per image
(recognition only: decoding the file is not the camera's cost) and the process's peak RSS.

Label corrections: a public data set can label a plate wrongly (openalpr's EU set writes a
letter O in the digit group of Slovak plates, where the plate shows 0). Rather than editing data
we do not own, a corrections file lists each one with what the label says, what the plate
shows and why; the figures are then against the corrected labels, and ``exact_as_labelled``
keeps the raw figure beside them. A correction whose ``labelled`` no longer matches the data
set's label is an error (the data set changed: look again).
"""

from __future__ import annotations

import csv
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge.lpr.grammar import normalise_plate
from edge.lpr.pipeline import Recogniser, load_image


@dataclass(frozen=True)
class Label:
    file: str
    plate: str
    box: tuple[int, int, int, int] | None


@dataclass
class EvalReport:
    n: int
    exact: float
    char_acc: float
    p50_ms: float
    p95_ms: float
    rss_mb: float
    # exact after folding O→0 and I→1 on both sides: some labelled sets (openalpr's EU) write
    # the letter where the plate shows the digit, so the strict figure understates the reader
    exact_folded: float = 0.0
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # file, truth, read
    # every image's (right?, confidence of the read; 0 when nothing was read): calibration
    reads: list[tuple[bool, float]] = field(default_factory=list)
    corrected: int = 0  # labels replaced by a corrections file
    exact_as_labelled: float = 0.0  # exact against the data set's own labels

    def as_json(self, *, folded: bool = False) -> dict[str, float | int]:
        out: dict[str, float | int] = {
            "n": self.n,
            "exact": round(self.exact, 4),
            "char_acc": round(self.char_acc, 4),
            "p50_ms": round(self.p50_ms, 1),
            "p95_ms": round(self.p95_ms, 1),
            "rss_mb": round(self.rss_mb, 1),
        }
        if folded:
            out["exact_folded"] = round(self.exact_folded, 4)
        if self.corrected:
            out["exact_as_labelled"] = round(self.exact_as_labelled, 4)
            out["labels_corrected"] = self.corrected
        return out


def read_labels(folder: Path) -> list[Label]:
    """Parse ``labels.csv``; a malformed row is an error naming its line."""
    path = folder / "labels.csv"
    if not path.is_file():
        raise ValueError(f"{folder}: no labels.csv (expected file,plate[,x,y,w,h])")
    out: list[Label] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        for lineno, row in enumerate(reader, start=1):
            if not row or (lineno == 1 and row[0].strip().lower() == "file"):
                continue
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                raise ValueError(f"{path}:{lineno}: need file,plate, got {row!r}")
            box = None
            if len(row) >= 6 and all(v.strip() for v in row[2:6]):
                try:
                    x, y, w, h = (int(float(v)) for v in row[2:6])
                except ValueError:
                    raise ValueError(
                        f"{path}:{lineno}: box must be numbers, got {row[2:6]}"
                    ) from None
                box = (x, y, w, h)
            out.append(Label(row[0].strip(), normalise_plate(row[1]), box))
    return out


@dataclass(frozen=True)
class Correction:
    file: str
    labelled: str  # what the data set's labels.csv says
    seen: str  # what the plate in the image shows
    why: str


def read_corrections(path: Path, folder_name: str) -> dict[str, Correction]:
    """``folder,file,labelled,seen,why`` rows for ``folder_name``; ValueError naming the line."""
    out: dict[str, Correction] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or row[0].startswith("#") or (lineno == 1 and row[0] == "folder"):
                continue
            if len(row) != 5 or not all(v.strip() for v in row):
                raise ValueError(f"{path}:{lineno}: need folder,file,labelled,seen,why")
            folder, file, labelled, seen, why = (v.strip() for v in row)
            if folder == folder_name:
                out[file] = Correction(
                    file, normalise_plate(labelled), normalise_plate(seen), why
                )
    return out


def apply_corrections(labels: list[Label], fixes: dict[str, Correction]) -> list[Label]:
    """Labels with each correction applied; ValueError if one no longer fits the data set."""
    by_file = {lab.file: lab for lab in labels}
    for fix in fixes.values():
        lab = by_file.get(fix.file)
        if lab is None or lab.plate != fix.labelled:
            now = lab.plate if lab else "no such file"
            raise ValueError(
                f"correction for {fix.file}: expects label {fix.labelled}, data set has {now}"
            )
    return [
        Label(lab.file, fixes[lab.file].seen, lab.box) if lab.file in fixes else lab
        for lab in labels
    ]


_FOLD = str.maketrans("OI", "01")


def fold_confusables(plate: str) -> str:
    return plate.translate(_FOLD)


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM first: ru_maxrss survives fork+exec, so a child started
    by a big parent would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def is_crop(shape: tuple[int, ...], label: Label) -> bool:
    """A plate-shaped small image with no box is a crop, not a scene."""
    h, w = shape[:2]
    return label.box is None and w / max(h, 1) >= 2.2 and h <= 160


def evaluate_dir(
    folder: Path,
    recogniser: Recogniser,
    *,
    mode: str = "auto",
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    corrections: dict[str, Correction] | None = None,
) -> EvalReport:
    """Run the recogniser over a labelled folder. ``mode``: auto, frame or crop."""
    if mode not in ("auto", "frame", "crop"):
        raise ValueError(f"mode must be auto, frame or crop, got {mode!r}")
    raw = read_labels(folder)
    fixes = corrections or {}
    labels = apply_corrections(raw, fixes)[:limit]
    as_labelled = {lab.file: lab.plate for lab in raw}
    exact_raw = 0
    if not labels:
        raise ValueError(f"{folder}: labels.csv lists no images")
    times: list[float] = []
    exact = folded = chars_ok = chars_total = 0
    errors: list[tuple[str, str, str]] = []
    reads: list[tuple[bool, float]] = []
    for i, label in enumerate(labels):
        got, conf = "", 0.0
        try:
            img = load_image(folder / label.file)
        except ValueError as exc:
            errors.append((label.file, label.plate, f"<{exc}>"))
            img = None
        if img is not None:
            crop = mode == "crop" or (mode == "auto" and is_crop(img.shape, label))
            t0 = time.perf_counter()
            cands = [recogniser.read_crop(img)] if crop else recogniser.read_frame(img)
            if cands:
                got, conf = cands[0].plate, cands[0].confidence
            times.append(time.perf_counter() - t0)
        reads.append((got == label.plate, conf))
        exact_raw += got == as_labelled[label.file]
        folded += fold_confusables(got) == fold_confusables(label.plate)
        if got == label.plate:
            exact += 1
        elif img is not None:
            errors.append((label.file, label.plate, got))
        chars_total += len(label.plate)
        chars_ok += max(0, len(label.plate) - edit_distance(got, label.plate))
        if progress:
            progress(i + 1, len(labels))
    n = len(labels)
    times_ms = sorted(t * 1000 for t in times) or [0.0]
    p95 = times_ms[min(len(times_ms) - 1, int(0.95 * len(times_ms)))]
    return EvalReport(
        n=n,
        exact=exact / n,
        char_acc=chars_ok / max(chars_total, 1),
        p50_ms=statistics.median(times_ms),
        p95_ms=p95,
        rss_mb=peak_rss_mb(),
        exact_folded=folded / n,
        errors=errors,
        reads=reads,
        corrected=sum(1 for lab in labels if lab.file in fixes),
        exact_as_labelled=exact_raw / n,
    )


def calibration(
    reads: list[tuple[bool, float]], thresholds: tuple[float, ...]
) -> dict[str, object]:
    """Per threshold, the share of right reads and the count of wrong (non-empty) reads with
    confidence at or above it: what a lane's ``min_confidence`` lets through."""
    right = [c for ok, c in reads if ok]
    wrong = [c for ok, c in reads if not ok and c > 0.0]
    return {
        "right": len(right),
        "wrong": len(wrong),
        "at": {
            str(t): {
                "right": sum(c >= t for c in right),
                "right_share": round(sum(c >= t for c in right) / max(1, len(right)), 4),
                "wrong": sum(c >= t for c in wrong),
            }
            for t in thresholds
        },
    }
