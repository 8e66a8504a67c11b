"""Fast plate localisation in a full frame, so OCR runs only on a few small crops.

Two cheap proposal sources, both on a downscaled copy of the frame:
- colour: HSV masks for blue, yellow, green (new-energy) plates, closed with a wide kernel;
- texture: dense vertical edges (characters) closed into plate-shaped blobs — this finds white,
  black and Latin plates the colour masks miss.
Each blob's rotated rectangle must have a plate-like aspect ratio and size; survivors are scored,
overlaps suppressed, and the best few are deskewed (perspective warp of the rotated rectangle)
from the full-resolution frame. Pure: arrays in, arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

WORK_WIDTH = 960  # frames wider than this are searched at this width
# A plate-coloured blob may be tilted up to 45 degrees (a plate screwed on askew, a camera
# rolled: cn_full 川A019W2 at 40-45); a texture blob at most 25 (the horizontal closing that
# makes it joins characters along a row, and steeper ones are grilles and rails). Blobs within
# 25 degrees of level or upright are taken as before (``_plate_angle``).
COLOUR_MAX_ANGLE = 45.0
# A crop under THIN x the thinnest plate's height/width is the characters' row alone (a
# texture blob is the band of vertical edges; cn_full 皖Q19917 as a 70x13 crop of a 70x20
# plate read its Q as D): it is cropped as tall as that plate, around the same middle.
THIN = 0.86


@dataclass(frozen=True)
class PlateBox:
    """A candidate plate: axis-aligned box in frame pixels, the deskewed crop, how found."""

    x: int
    y: int
    w: int
    h: int
    angle: float
    colour: str | None  # blue, yellow, green, or None (texture proposal)
    score: float
    crop: np.ndarray
    wide: np.ndarray | None = None  # a wider crop, for when the box caught only part of a plate


# HSV ranges (OpenCV hue 0..180) for plate backgrounds. Each colour twice: a loose range for
# dim or washed-out plates and a strict one that separates a plate from a car body of a
# similar colour (a navy car swallows a blue plate in the loose mask).
_COLOURS: tuple[tuple[str, tuple[int, int, int], tuple[int, int, int]], ...] = (
    ("blue", (100, 90, 50), (125, 255, 255)),
    ("blue", (100, 130, 100), (122, 255, 255)),
    ("yellow", (12, 90, 90), (35, 255, 255)),
    ("yellow", (15, 140, 130), (32, 255, 255)),
    ("green", (40, 40, 90), (85, 255, 255)),
)


def find_plates(
    bgr: np.ndarray, *, max_candidates: int = 4, min_aspect: float | None = None
) -> list[PlateBox]:
    """Best-first plate candidates in ``bgr`` (H x W x 3 uint8). ``min_aspect``: the
    thinnest plate's height / width (``PlateGrammar.min_aspect``): a crop much thinner caught
    only the row of characters, cut at their tops and bottoms, and is cropped taller."""
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ValueError(f"frame must be an HxWx3 uint8 BGR image, got {bgr.shape} {bgr.dtype}")
    h0, w0 = bgr.shape[:2]
    if h0 < 16 or w0 < 32:
        raise ValueError(f"frame too small to hold a plate: {w0}x{h0}")
    scale = min(1.0, WORK_WIDTH / w0)
    small = cv2.resize(bgr, (round(w0 * scale), round(h0 * scale)), interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)

    rects: list[tuple[tuple[tuple[float, float], tuple[float, float], float], str | None, float]]
    rects = []
    edges = _edge_map(gray)
    for name, lo, hi in _COLOURS:
        mask = cv2.inRange(hsv, np.array(lo, np.uint8), np.array(hi, np.uint8))
        mask = cv2.morphologyEx(
            mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (9, 3))
        )
        mask = cv2.morphologyEx(
            mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
        )
        for rr in _plate_rects(mask, small.shape[:2], max_angle=COLOUR_MAX_ANGLE):
            rects.append((rr, name, _texture(edges, rr) + 0.5))
    texture_rects = []
    # Two closing widths: wide bridges the gaps of big plates, narrow keeps a small plate from
    # fusing with the grille just above it.
    for kw in (17, 9):
        closed = cv2.morphologyEx(
            edges, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (kw, 3))
        )
        closed = cv2.morphologyEx(
            closed, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (5, 3))
        )
        texture_rects += _plate_rects(closed, small.shape[:2])
    for rr in texture_rects + _merge_split(texture_rects):
        rects.append((rr, None, _texture(edges, rr)))

    rects.sort(key=lambda r: r[2], reverse=True)
    kept: list[tuple[tuple[int, int, int, int], tuple, str | None, float]] = []
    for rr, colour, score in rects:
        box = _bbox(rr)
        if any(_iou(box, k[0]) > 0.3 for k in kept):
            continue
        kept.append((box, rr, colour, score))
        if len(kept) >= max_candidates:
            break

    out = []
    inv = 1.0 / scale
    for (x, y, w, h), rr, colour, score in kept:
        (cx, cy), (rw, rh), ang = rr
        full = ((cx * inv, cy * inv), (rw * inv, rh * inv), ang)
        tilt = _plate_angle(rr) if abs(_plate_angle(rr)) <= 25 else _tilt(rr)
        margin = 0.03 if colour else 0.0  # colour masks end at the plate's edge
        crop = _warp(bgr, full, margin, tilt=tilt)
        if min_aspect and crop.shape[0] < THIN * min_aspect * crop.shape[1]:
            grow = (min_aspect * max(rw, rh) / max(min(rw, rh), 1.0) - 1) / 2
            crop = _warp(bgr, full, margin, tilt=tilt, margin_y=grow)
        slant = _slant(crop)
        if slant:  # a leaning plate's corners stick out of the box: warp wider, shear, trim
            lean = abs(slant) * crop.shape[0] / 2
            (fx, fy), (fw, fh), fa = full
            wide = ((fx, fy), (fw + 2 * lean, fh) if fw >= fh else (fw, fh + 2 * lean), fa)
            crop = _shear(_warp(bgr, wide, margin, tilt=tilt), slant)
            crop = crop[:, round(lean) : crop.shape[1] - round(lean)]
        if colour is None:
            crop = trim_side_band(crop)
        out.append(
            PlateBox(
                round(x * inv),
                round(y * inv),
                round(w * inv),
                round(h * inv),
                float(tilt),
                colour,
                float(score),
                crop,
                _warp(bgr, full, 0.12, min_ratio=8.0, tilt=tilt),
            )
        )
    return out


def trim_side_band(crop: np.ndarray) -> np.ndarray:
    """Cut a saturated blue band off the left of a light plate (the EU country strip): OCR
    reads its country letters as part of the plate."""
    h, w = crop.shape[:2]
    if w < 40:
        return crop
    hsv = cv2.cvtColor(crop[:, : w // 5], cv2.COLOR_BGR2HSV)
    blue = cv2.inRange(hsv, np.array((95, 100, 50), np.uint8), np.array((130, 255, 255), np.uint8))
    cols = np.count_nonzero(blue, axis=0) / h
    banded = np.nonzero(cols > 0.5)[0]
    if banded.size < max(2, w // 40):
        return crop
    return crop[:, int(banded.max()) + 1 :]


# A crop is a blue plate when at least BLUE_MIN of it is plate blue and at most OTHER_MAX green
# or yellow. Only blue is measured: it is the one plate colour that holds under the sets'
# lighting (blue crops of cn_crops: median share 0.62), where a new-energy plate's white-to-
# green gradient and a faded yellow plate do not; a cyan cast makes some blue crops read
# green (0.39), which this leaves undecided.
BLUE_MIN = 0.3
OTHER_MAX = 0.05


def is_blue_plate(crop: np.ndarray) -> bool:
    """The crop is clearly a blue plate (an ordinary small-car plate, never a new-energy one)."""
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)
    n = max(1, hsv.shape[0] * hsv.shape[1])

    def share(lo: tuple[int, int, int], hi: tuple[int, int, int]) -> float:
        mask = cv2.inRange(hsv, np.array(lo, np.uint8), np.array(hi, np.uint8))
        return float(np.count_nonzero(mask)) / n

    blue = share(*_COLOURS[0][1:])
    other = max(share(*c[1:]) for c in _COLOURS if c[0] != "blue")
    return bool(blue >= BLUE_MIN and other <= OTHER_MAX)


# Slants tried when straightening a crop (x shift per row, as a share of the height's
# distance from the middle) and the least one applied: a frontal plate's measures 0 or one step,
# and is left as it is.
SHEARS = np.linspace(-0.6, 0.6, 13)
MIN_SHEAR = 0.2


def _slant(crop: np.ndarray) -> float:
    """How far a level crop's characters lean (x shift per row): a plate seen from the side
    is a parallelogram, which the tilt's warp levels but leaves leaning (cn_full 川A019W2). The
    slant is the shear whose column profile of vertical edges is sharpest (upright strokes add
    up in one column); 0.0 under ``MIN_SHEAR``."""
    h, w = crop.shape[:2]
    if h < 8 or w < 16:
        return 0.0
    k = min(1.0, 32.0 / h)
    small = cv2.resize(crop, (max(16, round(w * k)), max(8, round(h * k))))
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    edge = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3))
    sh, sw = edge.shape
    best, best_s = -1.0, 0.0
    for s in SHEARS:
        m = np.array([[1.0, s, -s * sh / 2], [0.0, 1.0, 0.0]], np.float32)
        cols = cv2.warpAffine(edge, m, (sw, sh)).sum(axis=0)
        score = float(np.dot(cols, cols))
        if score > best:
            best, best_s = score, float(s)
    return best_s if abs(best_s) >= MIN_SHEAR else 0.0


def _shear(crop: np.ndarray, s: float) -> np.ndarray:
    """The crop with each row shifted by ``s`` x its distance from the middle row."""
    h, w = crop.shape[:2]
    m = np.array([[1.0, s, -s * h / 2], [0.0, 1.0, 0.0]], np.float32)
    return cv2.warpAffine(
        crop, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def _edge_map(gray: np.ndarray) -> np.ndarray:
    blur = cv2.GaussianBlur(gray, (3, 3), 0)
    sob = cv2.Sobel(blur, cv2.CV_16S, 1, 0, ksize=3)
    mag = cv2.convertScaleAbs(sob)
    _, th = cv2.threshold(mag, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return th


def _plate_rects(mask: np.ndarray, shape: tuple[int, int], *, max_angle: float = 25.0) -> list:
    """Rotated rectangles of blobs with a plate's aspect ratio and a plausible size, tilted
    at most ``max_angle`` degrees."""
    H, W = shape
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    found = []
    for c in contours:
        if cv2.contourArea(c) < 150:
            continue
        rr = cv2.minAreaRect(c)
        _, (a, b), _ = rr
        long_, short = max(a, b), min(a, b)
        if short < 7 or long_ < 28 or long_ > 0.6 * W or short > 0.25 * H:
            continue
        ratio = long_ / short
        if not 1.6 <= ratio <= 6.5:
            continue
        if abs(_plate_angle(rr)) > 25 and abs(_tilt(rr)) > max_angle:
            continue
        fill = cv2.contourArea(c) / max(a * b, 1.0)
        if fill < 0.45:
            continue
        found.append(rr)
    return found


def _merge_split(rects: list) -> list:
    """Plates whose letters and digits are separated by a dash or a gap (Brazil's grey plates)
    come out as two blobs side by side: propose their union too."""
    boxes = [_bbox(rr) for rr in rects[:40]]
    merged = []
    for i, (ax, ay, aw, ah) in enumerate(boxes):
        for bx, by, bw, bh in boxes[i + 1 :]:
            if not 0.7 <= ah / max(bh, 1) <= 1.4:
                continue
            overlap = min(ay + ah, by + bh) - max(ay, by)
            if overlap < 0.6 * min(ah, bh):
                continue
            gap = max(ax, bx) - min(ax + aw, bx + bw)
            if not -0.2 * min(aw, bw) <= gap <= 0.8 * max(ah, bh):
                continue
            x0, y0 = min(ax, bx), min(ay, by)
            x1, y1 = max(ax + aw, bx + bw), max(ay + ah, by + bh)
            if not 2.0 <= (x1 - x0) / max(y1 - y0, 1) <= 6.5:
                continue
            merged.append((((x0 + x1) / 2, (y0 + y1) / 2), (float(x1 - x0), float(y1 - y0)), 0.0))
    return merged


def _long_side_angle(rr: tuple, half: float) -> float:
    """Angle of the rotated rectangle's long side from horizontal, wrapped into (-half, half]."""
    _, (a, b), ang = rr
    if a < b:
        ang -= 90
    while ang <= -half:
        ang += 2 * half
    while ang > half:
        ang -= 2 * half
    return float(ang)


def _plate_angle(rr: tuple) -> float:
    """Tilt of the rectangle's long side from horizontal, in degrees (-45..45). An upright
    blob comes out level (0): its crop is the level band through it."""
    return _long_side_angle(rr, 45)


def _tilt(rr: tuple) -> float:
    """Tilt of the rectangle's long side from horizontal, in degrees (-90..90]: unlike
    ``_plate_angle`` a long side at 45 or 50 degrees is itself, not the short side's tilt."""
    return _long_side_angle(rr, 90)


def _texture(edges: np.ndarray, rr: tuple) -> float:
    """How much the box looks like a row of characters: edge density near a third, and many
    edge transitions along its middle rows (7-8 characters give 14+ crossings)."""
    x, y, w, h = _bbox(rr)
    roi = edges[max(0, y) : y + h, max(0, x) : x + w]
    if roi.size == 0 or roi.shape[0] < 3:
        return 0.0
    dens = float(np.count_nonzero(roi)) / roi.size
    mid = roi[roi.shape[0] // 4 : 3 * roi.shape[0] // 4 + 1] > 0
    crossings = float(np.median(np.count_nonzero(mid[:, 1:] & ~mid[:, :-1], axis=1)))
    rhythm = 0.0 if crossings < 5 else min(crossings, 16.0) / 16.0
    return (1.0 - abs(dens - 0.35) * 2) + rhythm


def _bbox(rr: tuple) -> tuple[int, int, int, int]:
    pts = cv2.boxPoints(rr)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return int(x0), int(y0), int(np.ceil(x1 - x0)), int(np.ceil(y1 - y0))


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union else 0.0


def _warp(
    bgr: np.ndarray,
    rr: tuple,
    margin: float = 0.03,
    *,
    min_ratio: float = 0.0,
    tilt: float | None = None,
    margin_y: float | None = None,
) -> np.ndarray:
    """Deskewed crop of a rotated rectangle (long side horizontal), with a small margin;
    at least ``min_ratio`` times as wide as high (to recover a plate the box only half-covers).
    Rotated by ``tilt`` when given, else by ``_plate_angle`` (never more than 45°);
    ``margin_y``: the margin above and below, when not ``margin``."""
    (cx, cy), (a, b), _ = rr
    a, b = max(a, b), min(a, b)
    ang = _plate_angle(rr) if tilt is None else tilt
    w = max(8, round(max(a * (1 + 2 * margin), b * min_ratio)))
    h = max(4, round(b * (1 + 2 * (margin if margin_y is None else margin_y))))
    m = cv2.getRotationMatrix2D((cx, cy), ang, 1.0)
    m[0, 2] += w / 2 - cx
    m[1, 2] += h / 2 - cy
    return cv2.warpAffine(bgr, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
