"""Frame → plate candidates: find plate regions, OCR them in one batch, apply the grammar.

Several regions per frame are normal (a grille, a sign, a second car); the grammar and the OCR
confidence pick. Candidates that are not valid plates are still returned (``valid=False``) so
voting and logs can see them, but always after the valid ones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np

from edge.lpr.confidence import conditioned, fused
from edge.lpr.finder import PlateBox, _warp, find_plates, is_blue_plate
from edge.lpr.grammar import CONFUSABLES, PlateGrammar, cn_grammar
from edge.lpr.marks import mark_index
from edge.lpr.ocr import CharRead, OcrEngine, OcrResult, RapidOcrEngine
from edge.lpr.textdet import TextDetector

_MIN_ALT = 0.02  # an OCR alternative less likely than this is no evidence
# ...but from this on it ranks a look-alike above a rival less likely (below: the softmax's
# tail, no evidence at all)
_WEAK_ALT = 1e-3
# A box within CUT_MARGIN of the frame's edge (as a share of its width/height) is "cut": it
# weighs CUT_WEIGHT of its area (cn_full, br: the far-left parked car's plate read first and sure)
CUT_MARGIN = 0.005
CUT_WEIGHT = 0.25
# a sure read stops the search early only if no unread box weighs SURE_RATIO times as much
SURE_RATIO = 4.0
# characters dropped from a read to find a valid plate in it (ends or marks inside)
MAX_DROPS = 2
# A crop TWO_ROW_MIN..TWO_ROW_MAX as tall as it is wide may be a two-row plate (GA 36 large-
# vehicle and trailer plates: 440 x 220 mm, province and city letter over the 5 serials; a
# one-row plate is 440 x 140), if its one-line read holds at least TWO_ROW_CHARS characters (the
# bottom row's, "B2893"; a grille or a badge reads as fewer); its rows are split at
# TWO_ROW_SPLIT of the height, each row crop reaching TWO_ROW_OVERLAP past it.
TWO_ROW_MIN = 0.4
TWO_ROW_MAX = 0.75
TWO_ROW_CHARS = 4
TWO_ROW_SPLIT = 0.375
TWO_ROW_OVERLAP = 0.045
# A best read less sure than SECOND_LOOK_BELOW is read again from two copies of its crop, one
# without TRIM of its height at the top and at the bottom (the plate's frame, or the margin a
# crop of a plate seen at an angle holds, shrink the characters in the recogniser's 48 px), one
# WIDEN times as wide; the three reads vote per character (``confidence.fused``): test-time
# augmentation only where the first read is unsure.
SECOND_LOOK_BELOW = 0.9
TRIM = 1 / 12
WIDEN = 1.2
# A fragment whose wide crop reads as a longer fragment still (the wide crop is centred on the
# box, and the box held one end of the plate: br "OEL" of OEL-1145, wide "OEL114") is read once
# more from a crop WIDER times as wide around the same middle.
WIDER = 1.5


@dataclass(frozen=True)
class PlateCandidate:
    plate: str  # grammar-corrected when the correction is forced, else the raw read
    raw: str  # what the OCR read
    # 0..1: the weakest character's probability among the characters the grammar allows there
    # (``confidence.conditioned``); an invalid read: half its weakest raw probability
    confidence: float
    valid: bool  # a plate of the configured grammar
    colour: str | None
    box: tuple[int, int, int, int]  # x, y, w, h in frame pixels
    chars: tuple[CharRead, ...]
    crop: np.ndarray
    # the box touches the frame's edge: a passing or parked car's plate, maybe cut off, never
    # the car at the barrier (which the camera is aimed at)
    cut: bool = False
    # which finder proposed the box: "finder" (the cheap colour/edge one) or "text" (the
    # fallback text detector)
    found_by: str = "finder"


def load_image(path: Path | str) -> np.ndarray:
    """Read an image file (any name, any OpenCV format; non-ASCII paths work; a truncated
    JPEG gives what it holds)."""
    p = Path(path)
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as exc:
        raise ValueError(f"cannot read image {p}: {exc.strerror}") from exc
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None and data[:2].tobytes() == b"\xff\xd8" and data[-2:].tobytes() != b"\xff\xd9":
        # a truncated JPEG (a dropped camera packet, an interrupted copy): libjpeg decodes what
        # is there once the end marker is present, and the rest comes out grey
        img = cv2.imdecode(np.concatenate([data, np.array([0xFF, 0xD9], np.uint8)]), 1)
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
        first_batch: int = 1,
        stop_confidence: float = 0.85,
        detector: TextDetector | bool | None = True,
        fallback_below: float = 0.6,
    ) -> None:
        self.grammar = grammar or cn_grammar()
        self.engine = engine or RapidOcrEngine(self.grammar.alphabet)
        self._blue = self.grammar.in_colour("blue")
        self.max_candidates = max_candidates
        self.first_batch = max(1, first_batch)
        self.stop_confidence = stop_confidence
        # the text detector is the fallback finder: True loads the wheel's, None/False: none
        self.detector = TextDetector() if detector is True else detector or None
        self.fallback_below = fallback_below

    def read_frame(
        self, bgr: np.ndarray, *, fallback: bool = True, wide_first: bool = False
    ) -> list[PlateCandidate]:
        """Best-first candidates for one full frame: the cheap finder's crops first; when none
        reads as a plate with confidence >= ``fallback_below``, the text detector's; when none
        reads as a plate at all, the detector's on a larger, contrast-evened copy
        (``TextDetector.find(closer=)``: dim plates at night).

        For one frame of many (a car's read, ``OnBoxPlateSource``), where the next frame can
        make up for this one: ``fallback=False`` skips the detector (~0.1-0.3 s on a frame the
        cheap finder got only a fragment or nothing from), and ``wide_first`` reads a fragment
        wide as soon as it is read, before the lesser boxes (a tight box missing the province
        character otherwise waits for every small box to be read first, one OCR call each).
        A single image keeps the defaults: the whole search."""
        boxes = find_plates(
            bgr, max_candidates=self.max_candidates, min_aspect=self.grammar.min_aspect
        )
        shape = (bgr.shape[0], bgr.shape[1])
        out = self._read_boxes(boxes, shape, staged=True, frame=bgr, wide_first=wide_first)
        for closer in (False, True):  # a second, closer look when the first finds no plate
            if not fallback or self.detector is None or any(
                c.valid and c.confidence >= (0.0 if closer else self.fallback_below) for c in out
            ):
                break
            more = self.detector.find(
                bgr,
                max_candidates=self.max_candidates,
                # a box read as no plate may hold a fragment of the one the detector's box
                # holds whole (a blue plate on a blue car): only plates read are skipped
                skip=tuple(c.box for c in out if c.valid),
                closer=closer,
            )
            found = [replace(c, found_by="text") for c in self._read_boxes(more, shape, frame=bgr)]
            out = sorted(out + found, key=_rank, reverse=True)
        if out:
            out[0] = self._second_look(out[0])
            out.sort(key=_rank, reverse=True)
        return out

    def finder_missed(self, cands: list[PlateCandidate]) -> bool:
        """No read of the cheap finder's boxes is a plate as sure as ``fallback_below``: the
        frame needed (or would have needed) the fallback detector."""
        return not any(
            c.found_by == "finder" and c.valid and c.confidence >= self.fallback_below
            for c in cands
        )

    def read_crop(self, bgr: np.ndarray) -> PlateCandidate:
        """The frame *is* a plate crop (no finding)."""
        h, w = bgr.shape[:2]
        box = PlateBox(0, 0, w, h, 0.0, None, 1.0, bgr)
        return self._second_look(self._read_boxes([box])[0])

    def _second_look(self, c: PlateCandidate) -> PlateCandidate:
        """A valid read less sure than ``SECOND_LOOK_BELOW``, voted per character with the
        reads of its crop trimmed and widened (one OCR call); unchanged when the vote is no
        valid plate."""
        if not c.valid or c.confidence >= SECOND_LOOK_BELOW:
            return c
        h, w = c.crop.shape[:2]
        t = max(1, round(h * TRIM))
        if h - 2 * t < 8:
            return c
        looks = [
            c.crop[t : h - t],
            cv2.resize(c.crop, (round(w * WIDEN), h), interpolation=cv2.INTER_CUBIC),
        ]
        box = PlateBox(*c.box, 0.0, c.colour, 1.0, c.crop)
        again = [self._candidate(box, r, c.cut) for r in self.engine.read(looks)]
        vote = fused(c.plate, [c.chars] + [a.chars for a in again if a.valid], self.grammar)
        if vote is None:
            return c
        plate, chars = vote
        return replace(c, plate=plate, chars=chars, confidence=min(x.prob for x in chars))

    def read_image(self, path: Path | str) -> list[PlateCandidate]:
        return self.read_frame(load_image(path))

    def _read_boxes(
        self,
        boxes: list[PlateBox],
        shape: tuple[int, int] | None = None,
        *,
        staged: bool = False,
        frame: np.ndarray | None = None,
        wide_first: bool = False,
    ) -> list[PlateCandidate]:
        """OCR the boxes best-first; when ``staged``, ``first_batch`` at a time, stopping once
        the answer is settled (most frames need one crop read, not all candidates). Fragments
        are read wide at the end, or with ``wide_first`` after each batch (each once)."""
        if not boxes:
            return []
        out: list[PlateCandidate] = []
        widened: set[int] = set()  # boxes whose fragment was read wide already
        size = self.first_batch if staged else len(boxes)  # a batch costs what its crops do
        for batch in (boxes[i : i + size] for i in range(0, len(boxes), size)):
            results = self.engine.read([b.crop for b in batch])
            read = [
                self._candidate(b, r, _is_cut(b, shape))
                for b, r in zip(batch, results, strict=True)
            ]
            out.extend(self._two_rows(batch, read))
            if wide_first:
                out = self._retry_wide(boxes, out, shape, frame, widened)
            if staged and self._settled(out, boxes, shape, widened):
                break
        if not wide_first:
            out = self._retry_wide(boxes, out, shape, frame)
        out.sort(key=_rank, reverse=True)
        return out

    def _settled(
        self,
        out: list[PlateCandidate],
        boxes: list[PlateBox],
        shape: tuple[int, int] | None,
        widened: set[int] | None = None,
    ) -> bool:
        """No unread box can change the answer. The answer is the read with the highest
        ``_score`` (weight x confidence); an unread box, or a fragment still to be re-read
        wide, could score its weight at most. A sure read (>= ``stop_confidence``) of a whole
        plate may stop early unless a box ``SURE_RATIO`` times its weight is unread: a sure read
        of a small plate up the frame must not end the search before the near car's. A fragment
        read wide already (``widened``) has nothing more to give."""
        done = widened or set()
        pending = [(_weight(b, _is_cut(b, shape)), b) for b in boxes[len(out) :]]
        read = enumerate(zip(boxes[: len(out)], out, strict=True))
        pending += [
            (_weight(b, c.cut), b) for i, (b, c) in read if i not in done and self._fragment(b, c)
        ]
        biggest = max((w for w, _ in pending), default=0.0)

        def below(c: PlateCandidate) -> float:  # the heaviest pending box lower in the frame
            mid = c.box[1] + c.box[3] / 2
            return max((w for w, b in pending if b.y + b.h / 2 > mid), default=0.0)

        return any(
            c.valid
            and c.confidence >= 0.5
            and (
                _score(c) >= biggest
                or (
                    c.confidence >= self.stop_confidence
                    and not c.cut
                    and _weight_of(c) * SURE_RATIO >= below(c)
                )
            )
            for c in out
        )

    def _two_rows(
        self, boxes: list[PlateBox], cands: list[PlateCandidate]
    ) -> list[PlateCandidate]:
        """A squat box whose read is no plate but most of one may be a two-row plate read
        as one line (the serials alone, "B2893"): read its top and bottom rows (one OCR call for
        all such boxes) and join them; the joined read replaces the first when it is a valid
        plate."""
        redo = [
            i
            for i, (b, c) in enumerate(zip(boxes, cands, strict=True))
            if not c.valid
            and len(c.raw) >= TWO_ROW_CHARS
            and TWO_ROW_MIN <= b.crop.shape[0] / b.crop.shape[1] <= TWO_ROW_MAX
        ]
        if not redo:
            return cands
        rows = [row for i in redo for row in _split_rows(boxes[i].crop)]
        results = self.engine.read(rows)
        out = list(cands)
        for k, i in enumerate(redo):
            top, bottom = results[2 * k], results[2 * k + 1]
            # the joined characters have no position on one line: none is a mark
            chars = tuple(replace(c, x=-1.0) for c in (*top.chars, *bottom.chars))
            again = self._candidate(boxes[i], OcrResult(top.text + bottom.text, chars), out[i].cut)
            if again.valid:
                out[i] = again
        return out

    def _fragment(self, b: PlateBox, c: PlateCandidate) -> bool:
        """The read is a fragment of a plate that a wider crop may complete."""
        short = min(self.grammar.lengths)
        return not c.valid and 3 <= len(c.raw) < short + 1 and b.wide is not None

    def _retry_wide(
        self,
        boxes: list[PlateBox],
        cands: list[PlateCandidate],
        shape: tuple[int, int] | None,
        frame: np.ndarray | None = None,
        widened: set[int] | None = None,
    ) -> list[PlateCandidate]:
        """Boxes that read as a fragment of a plate (a colour blob split by the characters,
        a province character outside the mask) get one more read on a wider crop: all of them
        when no read is sure, else those that could outrank the best read. Boxes in
        ``widened`` are skipped, and those read wide here are added to it."""
        sure = any(c.valid and c.confidence >= self.stop_confidence for c in cands)
        best = max((_score(c) for c in cands if c.valid and c.confidence >= 0.5), default=0.0)
        skip = widened if widened is not None else set()
        redo = [
            i
            for i, (b, c) in enumerate(zip(boxes[: len(cands)], cands, strict=True))
            if i not in skip and self._fragment(b, c) and (not sure or _weight_of(c) > best)
        ]
        if not redo:
            return cands
        skip.update(redo)
        wides = [boxes[i] for i in redo]
        results = self.engine.read([b.wide for b in wides if b.wide is not None])
        out = list(cands)
        for i, b, r in zip(redo, wides, results, strict=True):
            assert b.wide is not None
            again = self._candidate(
                PlateBox(b.x, b.y, b.w, b.h, b.angle, b.colour, b.score, b.wide),
                r,
                cands[i].cut,
            )
            if again.valid:
                out[i] = again
        # still a fragment, but longer: the box held one end of the plate; once more, wider
        short = min(self.grammar.lengths)
        longer = [
            (i, b)
            for i, b, r in zip(redo, wides, results, strict=True)
            if not out[i].valid and len(cands[i].raw) < len(r.text) < short
        ]
        if frame is None or not longer:
            return out
        crops = [_wider(frame, b) for _, b in longer]
        for (i, b), crop, r in zip(longer, crops, self.engine.read(crops), strict=True):
            again = self._candidate(
                PlateBox(b.x, b.y, b.w, b.h, b.angle, b.colour, b.score, crop), r, cands[i].cut
            )
            if again.valid:
                out[i] = again
        return out

    def _candidate(self, b: PlateBox, r: OcrResult, cut: bool = False) -> PlateCandidate:
        # a blue plate is never a new-energy (green) or suffixed (yellow, white, black) one:
        # its read is decoded with the layouts printed in blue only
        g = self._blue if is_blue_plate(b.crop) else self.grammar
        text, chars = self._plate_span(r, g)
        text, chars = self._drop_mark(text, chars, b.crop, g)
        corrected = g.correct(text)
        if corrected is None:
            text, chars = self._constrained(text, chars, g)
            corrected = g.correct(text)
        if corrected is None:
            text, chars = self._runner_up_repair(text, chars, g)
            corrected = g.correct(text)
        valid = corrected is not None
        if corrected is not None:
            chars = conditioned(corrected, chars, g)
        conf = min((c.prob for c in chars), default=0.0)
        return PlateCandidate(
            plate=corrected or r.text,
            raw=r.text,
            confidence=conf if valid else 0.5 * r.confidence,
            valid=valid,
            colour=b.colour,
            box=(b.x, b.y, b.w, b.h),
            chars=chars if valid else r.chars,
            crop=b.crop,
            cut=cut,
        )

    def _drop_mark(
        self,
        text: str,
        chars: tuple[CharRead, ...],
        crop: np.ndarray,
        g: PlateGrammar | None = None,
    ) -> tuple[str, tuple[CharRead, ...]]:
        """A valid read with a mark read in (``marks.mark_index``: a sticker's dots as "8"
        under the generic Latin layout) loses the mark when what is left is valid too."""
        g = g or self.grammar
        if len(chars) != len(text) or g.correct(text) is None:
            return text, chars
        i = mark_index(crop, chars)
        if i is None or g.correct(text[:i] + text[i + 1 :]) is None:
            return text, chars
        return text[:i] + text[i + 1 :], chars[:i] + chars[i + 1 :]

    def _constrained(
        self, text: str, chars: tuple[CharRead, ...], g: PlateGrammar | None = None
    ) -> tuple[str, tuple[CharRead, ...]]:
        """Grammar-constrained decoding of an invalid read: per layout of its length, every
        illegal character becomes the likeliest legal one among the OCR's alternatives there
        (or a legal look-alike); the likeliest layout wins if clearly ahead. Picks O over D for
        a 0 in a letter slot where the text alone is ambiguous. At most two changes."""
        g = g or self.grammar
        if len(chars) != len(text) or len(text) not in g.lengths:
            return text, chars
        found: list[tuple[float, str, tuple[CharRead, ...]]] = []
        for layout in g.layouts:
            if len(layout) != len(text):
                continue
            score, out, changed, tie = 1.0, [], 0, ""
            for c, allowed in zip(chars, layout, strict=True):
                if c.char in allowed:
                    out.append(c)
                    score *= max(c.prob, 1e-3)
                    continue
                alts = c.alts or {c.runner_up: c.runner_up_prob}
                options = [(p, ch) for ch, p in alts.items() if ch in allowed and p >= _MIN_ALT]
                look = sorted(CONFUSABLES.get(c.char, frozenset()) & allowed)
                # a look-alike with no evidence; one with some (>= _WEAK_ALT) ranks above one
                # with less: a 0 in a letter slot the OCR put at O 0.8 %, D 0.03 % is an O
                weak = {ch: alts.get(ch, 0.0) for ch in look if alts.get(ch, 0.0) < _MIN_ALT}
                options += [(q if q >= _WEAK_ALT else 0.0, ch) for ch, q in weak.items()]
                options.sort(reverse=True)
                if not options:
                    break
                p, ch = options[0]
                if len(options) > 1 and options[1][0] * 2 >= p:
                    # two legal characters about as likely: this layout reads both ways
                    tie = "".join(x.char for x in out) + options[1][1]
                changed += 1
                out.append(
                    CharRead(
                        ch, p if p >= _MIN_ALT else c.prob, c.char, c.prob, c.alts, c.x, c.blank
                    )
                )
                score *= max(p, 1e-3)
            else:
                if changed <= 2:
                    found.append((score, "".join(x.char for x in out), tuple(out)))
                    if tie:  # a rival reading as likely as this one: never ahead of it
                        found.append((score, tie + text[len(tie) :], ()))
        if not found:
            return text, chars
        found.sort(key=lambda f: f[0], reverse=True)
        found = [f for i, f in enumerate(found) if all(f[1] != e[1] for e in found[:i])]
        if len(found) > 1 and found[1][0] * 2 > found[0][0]:
            return text, chars  # two layouts about as likely: leave it unread
        return found[0][1], found[0][2]

    def _runner_up_repair(
        self, text: str, chars: tuple[CharRead, ...], g: PlateGrammar | None = None
    ) -> tuple[str, tuple[CharRead, ...]]:
        """An invalid read whose least sure character's runner-up makes it valid: take the
        runner-up (at the runner-up's lower probability). The OCR's own second choice is better
        evidence than a fixed look-alike table (it turns "皖429C52" into "皖A29C52")."""
        g = g or self.grammar
        if len(chars) != len(text) or len(text) not in g.lengths:
            return text, chars
        for i in sorted(range(len(chars)), key=lambda k: chars[k].prob)[:2]:
            c = chars[i]
            if not c.runner_up or c.runner_up_prob < 0.05:
                continue
            alt = text[:i] + c.runner_up + text[i + 1 :]
            if g.correct(alt) is not None:
                swapped = CharRead(
                    c.runner_up, c.runner_up_prob, c.char, c.prob, c.alts, c.x, c.blank
                )
                return alt, (*chars[:i], swapped, *chars[i + 1 :])
        return text, chars

    def _plate_span(
        self, r: OcrResult, g: PlateGrammar | None = None
    ) -> tuple[str, tuple[CharRead, ...]]:
        """The best grammar-valid plate left after dropping at most ``MAX_DROPS`` characters of
        the read: a loose crop adds a character of the neighbouring text at an end
        (\"皖湘A0PQ76\"), a Czech registration sticker or the Slovak coat of arms reads as an
        "8" or "0" inside the plate (\"1B285790\" for 1B2·5790). Longest first; then the
        dropped characters that look least like characters (the OCR's probability less its
        blank: a mark is read unsure and half blank, a real character sure); then the most
        confident. The whole text when nothing valid is left."""
        g = g or self.grammar
        text = r.text
        if g.correct(text) is not None:
            return text, r.chars
        chars = r.chars if len(r.chars) == len(text) else None
        best: tuple[int, float, float, tuple[int, ...]] | None = None
        for n in sorted(g.lengths, reverse=True):
            if len(text) <= n:
                continue
            # a run of the read; with per-character reads also any MAX_DROPS characters
            drops = {(*range(i), *range(i + n, len(text))) for i in range(len(text) - n + 1)}
            if chars is not None and len(text) - n <= MAX_DROPS:
                drops.update(combinations(range(len(text)), len(text) - n))
            for drop in sorted(drops):
                kept = "".join(ch for k, ch in enumerate(text) if k not in drop)
                if g.correct(kept) is None:
                    continue
                cost = sum(_charness(r.chars[k]) for k in drop) if chars else 0.0
                conf = min((c.prob for k, c in enumerate(r.chars) if k not in drop), default=0.0)
                if best is None or (n, -cost, conf) > (best[0], -best[1], best[2]):
                    best = (n, cost, conf, drop)
            if best is not None:
                break
        if best is None:
            return text, r.chars
        drop = best[3]
        kept_chars = tuple(c for k, c in enumerate(r.chars) if k not in drop)
        return "".join(ch for k, ch in enumerate(text) if k not in drop), kept_chars


def _wider(frame: np.ndarray, b: PlateBox) -> np.ndarray:
    """``WIDER`` times ``b``'s wide crop, around the same middle, at the same tilt."""
    assert b.wide is not None
    h, w = b.wide.shape[:2]
    return _warp(frame, ((b.x + b.w / 2, b.y + b.h / 2), (w * WIDER, h), 0.0), 0.0, tilt=b.angle)


def _split_rows(crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The top and bottom rows of a two-row plate crop (``TWO_ROW_SPLIT``, overlapping by
    ``TWO_ROW_OVERLAP`` so a row's glyphs are not cut where the split misses a little)."""
    h = crop.shape[0]
    top = crop[: max(4, round(h * (TWO_ROW_SPLIT + TWO_ROW_OVERLAP)))]
    bottom = crop[min(h - 4, round(h * (TWO_ROW_SPLIT - TWO_ROW_OVERLAP))) :]
    return top, bottom


def _charness(c: CharRead) -> float:
    """How surely the OCR saw a character here (its probability less the blank's share)."""
    return c.prob * (1.0 - c.blank)


def _is_cut(b: PlateBox, shape: tuple[int, int] | None) -> bool:
    """The box touches the frame's edge (within ``CUT_MARGIN`` of its size)."""
    if shape is None:
        return False
    h, w = shape
    mx, my = CUT_MARGIN * w, CUT_MARGIN * h
    return b.x <= mx or b.y <= my or b.x + b.w >= w - mx or b.y + b.h >= h - my


def _weight(b: PlateBox, cut: bool) -> float:
    """How much a box counts as the plate of the car at the barrier: its area (the nearest car's
    plate is the largest), cut by ``CUT_WEIGHT`` when it touches the frame's edge."""
    return float(b.w * b.h) * (CUT_WEIGHT if cut else 1.0)


def _weight_of(c: PlateCandidate) -> float:
    return float(c.box[2] * c.box[3]) * (CUT_WEIGHT if c.cut else 1.0)


def _score(c: PlateCandidate) -> float:
    return _weight_of(c) * c.confidence


def _rank(c: PlateCandidate) -> tuple[bool, bool, float]:
    """Valid plates first; among confident ones the heaviest (``_weight``: a lane camera's own
    vehicle is the nearest one, in view: a plate further back, on a passing car or cut by the
    frame's edge is smaller or weighs less); else by confidence."""
    sure = c.confidence >= 0.5
    return (c.valid, sure, _score(c) if sure else c.confidence)
