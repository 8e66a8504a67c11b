"""Marks inside a plate that the OCR reads as characters.

A Czech registration sticker (two small coloured dots) or a Slovak coat of arms between a plate's
groups reads as an "8" or "0". The grammar cannot tell under the generic Latin layout, where an
8-character read is a valid plate; the picture can: a mark's ink is much shorter than the plate's
glyphs, and the OCR half-saw a gap there (its blank is likely). Pure: arrays in, indices out.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edge.lpr.ocr import CharRead

MARK_HEIGHT = 0.46  # ink this short, as a share of the read's median glyph height, is a mark
MARK_BLANK = 0.05  # ...and the OCR's blank at least this likely there


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


def mark_index(crop: np.ndarray, chars: Sequence[CharRead]) -> int | None:
    """The inner character that is most likely a mark, or None: its ink is under
    ``MARK_HEIGHT`` of the glyphs' and the OCR's blank there at least ``MARK_BLANK``. Only
    when every character carries its position."""
    if len(chars) < 3 or any(c.x < 0 for c in chars):
        return None
    heights = glyph_heights(crop, [c.x for c in chars])
    inner = [
        (heights[i], i)
        for i in range(1, len(chars) - 1)
        if heights[i] < MARK_HEIGHT and chars[i].blank >= MARK_BLANK
    ]
    return min(inner)[1] if inner else None
