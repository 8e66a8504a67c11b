"""Marks inside a plate that the OCR reads as characters.

A Czech registration sticker (two small coloured dots) or a Slovak coat of arms between a plate's
groups reads as an "8" or "0"; the old Slovak coat of arms at the plate's left end as an "R" or
"E". The grammar cannot tell under the generic Latin layout, where an 8-character read is a
valid plate; the picture can, with the OCR half-seeing a gap there (its blank is likely):
- a sticker's ink is much shorter than the plate's glyphs;
- the coat of arms is as tall as the glyphs, but coloured (a red shield, a blue base) where
  plate characters are ink of one colour on a plain plate: the band it stands in is much more
  saturated than the other characters' bands.
Pure: arrays in, indices out.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edge.lpr.ocr import CharRead

MARK_HEIGHT = 0.46  # ink this short, as a share of the read's median glyph height, is a mark
MARK_BLANK = 0.05  # ...and the OCR's blank at least this likely there
# A band this many times as colourful as the other characters' (median) is a coloured mark
# (on the photos: marks 2.1-3.4, real characters at most 1.85, and those read sure, blank 0)...
MARK_COLOUR = 2.0
MIN_CHROMA = 5.0  # the other bands' colour counted as at least this (a grey plate: noise)
# ...when the OCR's blank there is at least this likely (marks 0.13-0.25; on coloured CN plates
# real characters with a colourful band reach 0.05, and 0.12 at a read's end)...
COLOUR_BLANK = 0.1
# ...or this at an end of the read (the old coat of arms left of the district code: 0.25)
END_BLANK = 0.2


def glyph_heights(crop: np.ndarray, xs: Sequence[float]) -> list[float]:
    """Each character's ink height, as a share of the median over the read: the longest run of
    rows with ink in a narrow column band around its centre (``xs``: fractions of the width).
    Ink is the darker side of Otsu's threshold on a light plate, the lighter on a dark one."""
    h, w = crop.shape[:2]
    if not xs or h < 4 or w < 4:
        return [1.0] * len(xs)
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    t, _ = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    ink = gray < t if np.median(gray) > t else gray > t
    px = [x * w for x in xs]
    step = float(np.median(np.diff(px))) if len(px) > 1 else w / 8
    out = []
    for x in px:
        a, b = int(max(0.0, x - 0.3 * step)), int(min(w, x + 0.3 * step + 1))
        if b <= a:
            out.append(0.0)
            continue
        rows = ink[:, a:b].sum(axis=1) >= max(1.0, 0.15 * (b - a))
        best = run = 0
        for r in rows:
            run = run + 1 if r else 0
            best = max(best, run)
        out.append(best / h)
    med = float(np.median(out))
    return [o / med for o in out] if med > 0 else [1.0] * len(out)


def colour_excess(crop: np.ndarray, xs: Sequence[float]) -> list[float]:
    """Each character's colourfulness: the 90th percentile of chroma (max - min of B, G, R) in
    a narrow column band around its centre, less the crop's median chroma (the plate's own
    colour). Black-on-white glyphs score near 0, a red and blue shield tens."""
    h, w = crop.shape[:2]
    if not xs or h < 4 or w < 4 or crop.ndim != 3:
        return [0.0] * len(xs)
    px = crop.astype(np.int16)
    chroma = (px.max(axis=2) - px.min(axis=2)).astype(np.float32)
    base = float(np.median(chroma))
    cx = [x * w for x in xs]
    step = float(np.median(np.diff(cx))) if len(cx) > 1 else w / 8
    out = []
    for x in cx:
        a, b = int(max(0.0, x - 0.3 * step)), int(min(w, x + 0.3 * step + 1))
        out.append(float(np.percentile(chroma[:, a:b], 90)) - base if b > a else 0.0)
    return out


def coloured_marks(crop: np.ndarray, chars: Sequence[CharRead]) -> list[int]:
    """Indices of characters that stand on a coloured mark: their band ``MARK_COLOUR`` times as
    colourful as the others' median, and the OCR half saw a gap there (blank at least
    ``COLOUR_BLANK`` inside the read, ``END_BLANK`` at its ends); most colourful first."""
    if len(chars) < 3 or any(c.x < 0 for c in chars):
        return []
    excess = colour_excess(crop, [c.x for c in chars])
    found = []
    for i, c in enumerate(chars):
        others = float(np.median([e for j, e in enumerate(excess) if j != i]))
        need = END_BLANK if i in (0, len(chars) - 1) else COLOUR_BLANK
        if excess[i] >= MARK_COLOUR * max(others, MIN_CHROMA) and c.blank >= need:
            found.append((excess[i], i))
    return [i for _, i in sorted(found, reverse=True)]


def mark_index(crop: np.ndarray, chars: Sequence[CharRead]) -> int | None:
    """The character that is most likely a mark, or None: an inner one whose ink is under
    ``MARK_HEIGHT`` of the glyphs' and the OCR's blank there at least ``MARK_BLANK``, else the
    most colourful of ``coloured_marks``. Only when every character carries its position."""
    if len(chars) < 3 or any(c.x < 0 for c in chars):
        return None
    heights = glyph_heights(crop, [c.x for c in chars])
    inner = [
        (heights[i], i)
        for i in range(1, len(chars) - 1)
        if heights[i] < MARK_HEIGHT and chars[i].blank >= MARK_BLANK
    ]
    if inner:
        return min(inner)[1]
    coloured = coloured_marks(crop, chars)
    return coloured[0] if coloured else None
