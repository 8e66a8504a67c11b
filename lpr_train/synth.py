"""Synthetic plate crops for training the plate recogniser (#15); training-only, never imported
by the runtime (``edge/``).

Every plate is drawn from its real geometry in millimetres (GA 36-2018 for mainland China, the
EU 520 x 110 mm plate for SK/CZ, 400 x 130 mm for Brazil) with fonts installed by Debian that
allow commercial use: Noto Sans CJK Bold (fonts-noto-cjk, SIL OFL 1.1) for Chinese plates and
DejaVu Sans (Condensed) Bold (fonts-dejavu-core, Bitstream Vera licence) for EU/BR plates.
Plate glyphs are condensed, so each glyph is drawn, cropped to its ink and squeezed into the
character box the standard gives. The flat plate is then put on a car-coloured background and
degraded the way lane cameras degrade it: perspective (yaw, pitch, roll) and a loose or tight
crop, blur (focus and motion), low light, an IR night look, dirt, rain streaks, a partial
occlusion, sensor noise, low resolution and JPEG. Everything comes from one seeded
``numpy.random.Generator``: the same seed gives the same crops.

No image of ``../shared/lpr-data`` is read here (non-commercial or unclear licences): they are
for evaluation only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from edge.lpr.eu_plates import CZ_LETTERS
from edge.lpr.grammar import CN_ALNUM, CN_CITY_LETTERS, CN_LETTERS, DIGITS, LETTERS
from edge.lpr.plate_rec import INPUT_H, INPUT_W

CJK_FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc")
# real plate glyphs are of a medium weight: half the Chinese plates use the Regular cut
CJK_FONTS = (CJK_FONT, Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"))
LATIN_FONTS = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf"),
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
)
# the plate's own alphanumerics (GA 36's font is narrow, of an even stroke, with open C/G and a
# flat-topped 3): a condensed sans squeezed into the standard's 45 x 90 mm box comes closer to
# it than the CJK font's proportional Latin; a ``1`` is drawn as a bar with a short flag
# (the Bold cut of fonts-dejavu-core, thinned or thickened: ``_glyph``'s ``stroke``)
PLATE_FONT = LATIN_FONTS[0]
FONT_LICENCES = {
    CJK_FONT.name: "SIL Open Font License 1.1 (fonts-noto-cjk)",
    CJK_FONTS[1].name: "SIL Open Font License 1.1 (fonts-noto-cjk)",
    LATIN_FONTS[0].name: "Bitstream Vera licence (fonts-dejavu-core)",
    LATIN_FONTS[1].name: "Bitstream Vera licence (fonts-dejavu-core)",
}

Rng = np.random.Generator
BGR = tuple[int, int, int]

# Plate kinds and how often they are drawn (mainland plates dominate our sites).
KINDS: dict[str, float] = {
    "cn_blue": 0.40,
    "cn_yellow": 0.08,
    "cn_green": 0.14,
    "cn_green_large": 0.04,
    "cn_white": 0.04,
    "cn_black": 0.03,
    "cn_yellow_two_row": 0.07,
    "eu_sk": 0.08,
    "eu_cz": 0.06,
    "br_old": 0.03,
    "br_mercosul": 0.03,
}
# pixels per mm of the flat plate: a few values, so the glyph cache hits
SCALES = (0.3, 0.36, 0.42, 0.5)
PROVINCES = sorted(CN_CITY_LETTERS)
_SERIAL = sorted(CN_ALNUM)
_CN_LET = sorted(CN_LETTERS)
_DIG = sorted(DIGITS)
_LET = sorted(LETTERS)
_CZ_REGIONS = "ABCEHJKLMPSTUZ"
_SK_DISTRICTS = [
    "BA",
    "BL",
    "BB",
    "BR",
    "BS",
    "BJ",
    "CA",
    "DK",
    "DS",
    "DT",
    "GA",
    "GL",
    "HC",
    "HE",
    "IL",
    "KA",
    "KE",
    "KK",
    "KM",
    "KN",
    "KS",
    "LC",
    "LE",
    "LM",
    "LV",
    "MA",
    "MI",
    "ML",
    "MT",
    "NI",
    "NM",
    "NO",
    "NR",
    "NZ",
    "PB",
    "PD",
    "PE",
    "PK",
    "PN",
    "PO",
    "PP",
    "PT",
    "PU",
    "RA",
    "RK",
    "RS",
    "RV",
    "SA",
    "SB",
    "SC",
    "SE",
    "SI",
    "SK",
    "SL",
    "SN",
    "SO",
    "SP",
    "SV",
    "TN",
    "TO",
    "TR",
    "TS",
    "TT",
    "TV",
    "VK",
    "VT",
    "ZA",
    "ZC",
    "ZH",
    "ZM",
    "ZV",
]


# ---------------------------------------------------------------- plate texts


def _cn_prefix(rng: Rng) -> str:
    prov = PROVINCES[int(rng.integers(len(PROVINCES)))]
    letters = sorted(CN_CITY_LETTERS[prov] - {"O"}) if rng.random() < 0.97 else ["O"]
    return prov + letters[int(rng.integers(len(letters)))]


def _pick(rng: Rng, pool: list[str], n: int) -> str:
    return "".join(pool[int(rng.integers(len(pool)))] for _ in range(n))


def _cn_serial(rng: Rng, n: int = 5) -> str:
    """Serials: mostly digits with a few letters, sometimes letters first (as issued)."""
    mode = rng.random()
    if mode < 0.35:
        return _pick(rng, _SERIAL, n)
    out = [_DIG[int(rng.integers(10))] for _ in range(n)]
    for i in rng.choice(n, size=int(rng.integers(1, 3)), replace=False):
        out[int(i)] = _CN_LET[int(rng.integers(len(_CN_LET)))]
    return "".join(out)


def plate_text(kind: str, rng: Rng) -> str:
    """A valid text for a plate of this kind."""
    if kind in ("cn_blue", "cn_yellow_two_row"):
        return _cn_prefix(rng) + _cn_serial(rng)
    if kind == "cn_yellow":
        suffix = rng.random()
        if suffix < 0.2:
            return _cn_prefix(rng) + _cn_serial(rng, 4) + "学"
        if suffix < 0.3:
            return _cn_prefix(rng) + _cn_serial(rng, 4) + "挂"
        return _cn_prefix(rng) + _cn_serial(rng)
    if kind == "cn_green":  # small new-energy car: D|F + alnum + 4 digits
        return (
            _cn_prefix(rng)
            + "DF"[int(rng.integers(2))]
            + _pick(rng, _SERIAL, 1)
            + _pick(rng, _DIG, 4)
        )
    if kind == "cn_green_large":  # large new-energy vehicle: 5 digits + D|F
        return _cn_prefix(rng) + _pick(rng, _DIG, 5) + "DF"[int(rng.integers(2))]
    if kind == "cn_white":  # police
        return _cn_prefix(rng) + _cn_serial(rng, 4) + "警"
    if kind == "cn_black":  # Hong Kong / Macau cross-border
        return "粤Z" + _cn_serial(rng, 4) + "港澳"[int(rng.integers(2))]
    if kind == "eu_sk":
        d = _SK_DISTRICTS[int(rng.integers(len(_SK_DISTRICTS)))]
        return d + _pick(rng, _DIG, 3) + _pick(rng, _LET, 2)
    if kind == "eu_cz":
        first = _pick(rng, _DIG[1:], 1) + _pick(rng, list(_CZ_REGIONS), 1)
        third = _pick(rng, _DIG, 1) if rng.random() < 0.8 else _pick(rng, sorted(CZ_LETTERS), 1)
        return first + third + _pick(rng, _DIG, 4)
    if kind == "br_old":
        return _pick(rng, _LET, 3) + _pick(rng, _DIG, 4)
    if kind == "br_mercosul":
        return _pick(rng, _LET, 3) + _pick(rng, _DIG, 1) + _pick(rng, _LET, 1) + _pick(rng, _DIG, 2)
    raise ValueError(f"unknown plate kind {kind!r}")


# ---------------------------------------------------------------- glyphs


@lru_cache(maxsize=8)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    # Noto CJK collections: face 2 is Simplified Chinese (face 0, Japanese, draws some hanzi
    # in their Japanese forms)
    return ImageFont.truetype(path, size, index=2 if path.endswith(".ttc") else 0)


@lru_cache(maxsize=8192)
def _glyph(ch: str, font: str, w: int, h: int, stroke: int = 0) -> np.ndarray:
    """The character's ink squeezed into a w x h box (float 0..1), as plate glyphs are;
    ``stroke`` (px at size 96) thickens it, or thins it when negative."""
    f = _font(font, 96)
    if ch == "1" and font == str(PLATE_FONT):
        return _plate_one(w, h, stroke)
    grow = max(0, stroke)
    x0, t, r, b = f.getbbox(ch, stroke_width=grow)
    mask = Image.new("L", (int(r - x0) + 2, int(b - t) + 2), 0)
    ImageDraw.Draw(mask).text((1 - x0, 1 - t), ch, font=f, fill=255, stroke_width=grow,
                              stroke_fill=255)
    if stroke < 0:
        k = 2 * -stroke + 1
        mask = Image.fromarray(cv2.erode(np.asarray(mask), np.ones((k, k), np.uint8)))
    # keep narrow glyphs (1, I) narrow: scale by height, cap the width at the box
    mw, mh = mask.size
    gw = min(w, max(1, round(mw * h / mh))) if ch in "1I" else w
    out = np.zeros((h, w), np.float32)
    g = np.asarray(mask.resize((gw, h), Image.Resampling.LANCZOS), np.float32) / 255.0
    x = (w - gw) // 2
    out[:, x : x + gw] = g
    return out


def _plate_one(w: int, h: int, stroke: int) -> np.ndarray:
    """The plate font's ``1``: a bar of the font's stroke with a short flag, no foot."""
    out = np.zeros((h, w), np.float32)
    bar = max(1, round(w * (0.2 + stroke / 64)))
    x = (w - bar) // 2 + w // 12
    out[:, x : x + bar] = 1.0
    flag = max(1, round(h * 0.16))
    thick = max(1, bar // 2)
    for i in range(flag):  # a thin flag sloping down to the left from the bar's top
        x0 = max(0, round(x - (i + 1) * w * 0.3 / flag))
        out[i : i + thick, x0 : x0 + thick + 1] = 1.0
    return out


def _ink(canvas: np.ndarray, glyph: np.ndarray, x: float, y: float, colour: BGR) -> None:
    h, w = glyph.shape
    xi, yi = round(x), round(y)
    H, W = canvas.shape[:2]
    x0, y0, x1, y1 = max(0, xi), max(0, yi), min(W, xi + w), min(H, yi + h)
    if x1 <= x0 or y1 <= y0:
        return
    a = glyph[y0 - yi : y1 - yi, x0 - xi : x1 - xi, None]
    canvas[y0:y1, x0:x1] = canvas[y0:y1, x0:x1] * (1 - a) + np.array(colour, np.float32) * a


# ---------------------------------------------------------------- flat plates (1 px = 1/scale mm)


@dataclass(frozen=True)
class Flat:
    """A drawn frontal plate and the texts it carries (two-row plates: one per row, with each
    row's y range so training can read the rows apart, as the pipeline does)."""

    image: np.ndarray  # float32 BGR
    text: str
    rows: tuple[tuple[str, int, int], ...] = ()


_CN_COLOURS: dict[str, tuple[BGR, BGR]] = {
    "blue": ((165, 70, 15), (250, 250, 250)),
    "yellow": ((25, 185, 245), (25, 25, 25)),
    "white": ((240, 240, 240), (25, 25, 25)),
    "black": ((25, 25, 25), (250, 250, 250)),
}


def _jitter(colour: BGR, rng: Rng, amount: int = 25) -> BGR:
    c = np.clip(np.array(colour) + rng.integers(-amount, amount + 1, 3), 0, 255)
    return (int(c[0]), int(c[1]), int(c[2]))


def _cn_single_row(kind: str, text: str, rng: Rng, s: float) -> Flat:
    """GA 36 single-row plates: 440 x 140 mm, glyphs 45 x 90 mm, 12 mm apart, 34 mm between the
    2nd and 3rd with a 10 mm dot; new energy 480 x 140, glyphs 43 x 90, 9 mm apart."""
    green = len(text) == 8
    W, H = (480 if green else 440), 140
    img = np.zeros((round(H * s), round(W * s), 3), np.float32)
    if green:
        top = np.array(_jitter((235, 245, 235), rng, 12), np.float32)
        bottom = np.array(
            _jitter((90, 200, 60), rng) if kind == "cn_green" else _jitter((25, 190, 240), rng),
            np.float32,
        )
        if kind == "cn_green_large":
            top = np.array(_jitter((25, 190, 240), rng), np.float32)
            bottom = np.array(_jitter((90, 200, 60), rng), np.float32)
        ramp = np.linspace(0, 1, img.shape[0], dtype=np.float32)[:, None, None] ** 1.3
        img[:] = top * (1 - ramp) + bottom * ramp
        fg: BGR = (25, 25, 25)
    else:
        name = {"cn_blue": "blue", "cn_yellow": "yellow", "cn_white": "white"}.get(kind, "black")
        bg, fg = _CN_COLOURS[name]
        img[:] = _jitter(bg, rng)
        fg = _jitter(fg, rng, 10)
    # border line 1.5 mm, 3 mm in from the edge (the white/black frame of the plate)
    b = max(1, round(1.5 * s))
    m = round(3 * s)
    cv2.rectangle(img, (m, m), (img.shape[1] - m - 1, img.shape[0] - m - 1), fg, b)
    cw, gap, mid = (43.0, 9.0, 49.0) if green else (45.0, 12.0, 34.0)
    total = len(text) * cw + (len(text) - 2) * gap + mid
    x = (W - total) / 2
    y = (H - 90) / 2
    font = str(CJK_FONTS[int(rng.integers(len(CJK_FONTS)))])
    # the alphanumerics: the plate-like condensed face on most plates, else the CJK font's
    alnum = str(PLATE_FONT) if rng.random() < 0.65 else font
    stroke = int(rng.integers(-3, 2)) if alnum == str(PLATE_FONT) else 0
    for i, ch in enumerate(text):
        colour = fg
        if ch in "警" and kind == "cn_white":
            colour = (30, 30, 200)
        gw, gh = round(cw * s), round(90 * s)
        latin = ch.isascii()
        glyph = _glyph(ch, alnum if latin else font, gw, gh, stroke if latin else 0)
        _ink(img, glyph, x * s, y * s, colour)
        if i == 1:
            dot_x = x + cw + mid / 2
            cv2.circle(img, (round(dot_x * s), round(H / 2 * s)), max(1, round(5 * s)), fg, -1)
            x += cw + mid
        else:
            x += cw + gap
    # two rivets in the top border area, as on most plates
    for rx in (W * 0.2, W * 0.8):
        cv2.circle(img, (round(rx * s), round(8 * s)), max(1, round(3.5 * s)), _jitter(fg, rng), -1)
    return Flat(img, text)


def _cn_two_row(text: str, rng: Rng, s: float) -> Flat:
    """GA 36 large-vehicle rear plate: 440 x 220 mm, yellow; top row province + city letter
    (80 x 60 mm glyphs), bottom row five serials (65 x 110 mm, 15 mm apart)."""
    W, H = 440, 220
    img = np.zeros((round(H * s), round(W * s), 3), np.float32)
    bg, fg = _CN_COLOURS["yellow"]
    img[:] = _jitter(bg, rng)
    b, m = max(1, round(1.5 * s)), round(3 * s)
    cv2.rectangle(img, (m, m), (img.shape[1] - m - 1, img.shape[0] - m - 1), fg, b)
    font = str(CJK_FONT)
    top_y, top_h = 15, 60
    for i, ch in enumerate(text[:2]):
        x = 110.0 + i * 140
        _ink(img, _glyph(ch, font, round(80 * s), round(top_h * s)), x * s, top_y * s, fg)
    cv2.circle(img, (round(220 * s), round(45 * s)), max(1, round(5 * s)), fg, -1)
    bot_y, bot_h = 95, 110
    x = (W - (5 * 65 + 4 * 15)) / 2
    for ch in text[2:]:
        _ink(img, _glyph(ch, font, round(65 * s), round(bot_h * s)), x * s, bot_y * s, fg)
        x += 80
    rows = (
        (text[:2], round(0 * s), round((top_y + top_h + 8) * s)),
        (text[2:], round((bot_y - 10) * s), img.shape[0]),
    )
    return Flat(img, text, rows)


def _eu(kind: str, text: str, rng: Rng, s: float) -> Flat:
    """EU plate 520 x 110 mm, white, a 40 mm blue band with the stars and country code, glyphs
    75 mm tall: SK 'BA·123AB' with the coat of arms after the district, CZ '1B2 5790'."""
    W, H = 520, 110
    img = np.zeros((round(H * s), round(W * s), 3), np.float32)
    img[:] = _jitter((235, 238, 238), rng, 12)
    fg: BGR = _jitter((20, 20, 20), rng, 10)
    cv2.rectangle(img, (0, 0), (img.shape[1] - 1, img.shape[0] - 1), fg, max(1, round(2 * s)))
    band = round(40 * s)
    img[:, :band] = _jitter((150, 50, 0), rng, 15)
    cv2.circle(img, (band // 2, round(30 * s)), round(14 * s), (0, 200, 250), max(1, round(2 * s)))
    code = "SK" if kind == "eu_sk" else "CZ"
    font = str(LATIN_FONTS[int(rng.integers(len(LATIN_FONTS)))])
    for i, ch in enumerate(code):
        _ink(
            img,
            _glyph(ch, font, round(13 * s), round(22 * s)),
            (6 + 14 * i) * s,
            76 * s,
            (250, 250, 250),
        )
    groups = (text[:2], text[2:]) if kind == "eu_sk" else (text[:3], text[3:])
    cw, gap, group_gap = 44.0, 5.0, 30.0
    n = len(text)
    total = n * cw + (n - 2) * gap + group_gap
    x = 40 + (W - 40 - total) / 2
    y = (H - 75) / 2
    for gi, grp in enumerate(groups):
        for ch in grp:
            _ink(img, _glyph(ch, font, round(cw * s), round(75 * s)), x * s, y * s, fg)
            x += cw + gap
        if gi == 0:
            cx = round((x - gap + group_gap / 2) * s)
            if kind == "eu_sk":  # coat of arms: a red shield with a white cross
                sw, sh = round(14 * s), round(20 * s)
                cy = round(H / 2 * s)
                cv2.rectangle(
                    img,
                    (cx - sw // 2, cy - sh // 2),
                    (cx + sw // 2, cy + sh // 2),
                    (40, 40, 200),
                    -1,
                )
                cv2.line(
                    img,
                    (cx, cy - sh // 3),
                    (cx, cy + sh // 3),
                    (250, 250, 250),
                    max(1, round(2 * s)),
                )
            elif rng.random() < 0.6:  # the registration sticker: two coloured dots
                for dy in (-12, 12):
                    cv2.circle(
                        img,
                        (cx, round((H / 2 + dy) * s)),
                        round(8 * s),
                        _jitter((60, 160, 60), rng, 60),
                        -1,
                    )
            x += group_gap - gap
    return Flat(img, text)


def _br(kind: str, text: str, rng: Rng, s: float) -> Flat:
    """Brazil 400 x 130 mm: the old grey plate 'ABC-1234' with the town above, or the Mercosul
    white plate with a blue 'BRASIL' band on top, glyphs 65 mm tall."""
    W, H = 400, 130
    img = np.zeros((round(H * s), round(W * s), 3), np.float32)
    font = str(LATIN_FONTS[int(rng.integers(len(LATIN_FONTS)))])
    fg: BGR = _jitter((25, 25, 25), rng, 10)
    if kind == "br_old":
        img[:] = _jitter((185, 185, 180), rng, 20)
        for i in range(6):  # the town name: small letters, not read
            _ink(
                img,
                _glyph(_LET[int(rng.integers(26))], font, round(12 * s), round(18 * s)),
                (140 + 20 * i) * s,
                8 * s,
                fg,
            )
        y, chars = 40.0, text[:3] + "-" + text[3:]
    else:
        img[:] = _jitter((240, 240, 240), rng, 12)
        img[: round(28 * s)] = _jitter((150, 60, 10), rng, 15)
        for i, ch in enumerate("BRASIL"):
            _ink(
                img,
                _glyph(ch, font, round(12 * s), round(16 * s)),
                (160 + 14 * i) * s,
                6 * s,
                (250, 250, 250),
            )
        y, chars = 45.0, text
    cv2.rectangle(img, (0, 0), (img.shape[1] - 1, img.shape[0] - 1), fg, max(1, round(2 * s)))
    cw, gap = 40.0, 6.0
    total = sum(18.0 if c == "-" else cw for c in chars) + gap * (len(chars) - 1)
    x = (W - total) / 2
    for ch in chars:
        w = 18.0 if ch == "-" else cw
        if ch == "-":
            cv2.rectangle(
                img,
                (round(x * s), round((y + 30) * s)),
                (round((x + w) * s), round((y + 36) * s)),
                fg,
                -1,
            )
        else:
            _ink(img, _glyph(ch, font, round(w * s), round(65 * s)), x * s, y * s, fg)
        x += w + gap
    return Flat(img, text)


def draw_plate(kind: str, text: str, rng: Rng, scale: float = 0.5) -> Flat:
    """The frontal plate at ``scale`` pixels per millimetre."""
    if kind == "cn_yellow_two_row":
        return _cn_two_row(text, rng, scale)
    if kind.startswith("cn_"):
        return _cn_single_row(kind, text, rng, scale)
    if kind.startswith("eu_"):
        return _eu(kind, text, rng, scale)
    return _br(kind, text, rng, scale)


# ---------------------------------------------------------------- camera degradations


def _perspective_crop(img: np.ndarray, rng: Rng, out_w: int, out_h: int) -> np.ndarray:
    """The plate in a scene under perspective, then cut out the way the finder cuts it: a
    quadrilateral near the plate's (a tight or loose crop, slightly misaligned) warped flat."""
    h, w = img.shape[:2]
    pad = round(0.5 * h)
    body = rng.integers(20, 230, 3).astype(np.float32)
    scene = np.empty((h + 2 * pad, w + 2 * pad, 3), np.float32)
    scene[:] = body
    scene += rng.normal(0, 6, (1, 1, 1)).astype(np.float32)
    scene[pad : pad + h, pad : pad + w] = img
    # true perspective of the flat plate: yaw and pitch via a pinhole at a random distance
    yaw = np.radians(rng.normal(0, 18))
    pitch = np.radians(rng.uniform(-5, 25))
    roll = np.radians(rng.normal(0, 3))
    f = w * rng.uniform(1.5, 5.0)
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64) - (w / 2, h / 2)
    proj = []
    for x, y in corners:
        x1, z1 = x * np.cos(yaw), x * np.sin(yaw)
        y2, z2 = y * np.cos(pitch), z1 - y * np.sin(pitch)
        u, v = f * x1 / (f + z2), f * y2 / (f + z2)
        proj.append((u * np.cos(roll) - v * np.sin(roll), u * np.sin(roll) + v * np.cos(roll)))
    dst_plate = (np.array(proj) + np.array([pad + w / 2, pad + h / 2])).astype(np.float32)
    src_plate = (np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32) + pad).astype(np.float32)
    m = cv2.getPerspectiveTransform(src_plate, dst_plate)
    seen = cv2.warpPerspective(
        scene, m, (scene.shape[1], scene.shape[0]), borderMode=cv2.BORDER_REPLICATE
    )
    # the finder's crop: the plate's quad, loosened or tightened, corners jittered
    ctr = dst_plate.mean(axis=0)
    grow = rng.uniform(-0.08, 0.12, 2)  # tight crops cut into the frame, as real ones do
    quad = ctr + (dst_plate - ctr) * (1 + grow)
    quad = quad + rng.normal(0, 0.025, (4, 2)) * (w * 0.5, h)
    if rng.random() < 0.5:  # often the crop is axis-aligned, not deskewed
        x0, y0 = quad.min(axis=0)
        x1, y1 = quad.max(axis=0)
        quad = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
    out = np.array([[0, 0], [out_w, 0], [out_w, out_h], [0, out_h]], np.float32)
    m2 = cv2.getPerspectiveTransform(quad.astype(np.float32), out)
    crop: np.ndarray = cv2.warpPerspective(
        seen, m2, (out_w, out_h), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE
    )
    return crop


def _dirt(img: np.ndarray, rng: Rng) -> np.ndarray:
    h, w = img.shape[:2]
    low = cv2.resize(rng.random((4, 8)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    alpha = np.clip((low - rng.uniform(0.5, 0.8)) * rng.uniform(0.8, 2.0), 0, 0.6)[..., None]
    grime = np.array(_jitter((40, 60, 80), rng, 30), np.float32)
    return img * (1 - alpha) + grime * alpha


def _rain(img: np.ndarray, rng: Rng) -> np.ndarray:
    h, w = img.shape[:2]
    layer = np.zeros((h, w), np.float32)
    angle = rng.uniform(-0.4, 0.4)
    for _ in range(int(rng.integers(8, 40))):
        x, y = rng.uniform(0, w), rng.uniform(-h, h)
        ln = rng.uniform(0.3, 1.2) * h
        cv2.line(layer, (round(x), round(y)), (round(x + angle * ln), round(y + ln)), 1.0, 1)
    layer = cv2.GaussianBlur(layer, (3, 3), 0) * rng.uniform(0.3, 0.7)
    return img * (1 - layer[..., None]) + 230 * layer[..., None]


def _occlude(img: np.ndarray, rng: Rng) -> np.ndarray:
    """A bolt, a tow bar, a frame edge or a leaf over a small part of the plate (the text stays
    readable: at most a tenth of one edge)."""
    h, w = img.shape[:2]
    out = img.copy()
    colour = rng.integers(0, 255, 3).astype(np.float32)
    where = rng.integers(4)
    if where == 0:  # top strip (a frame)
        out[: round(h * rng.uniform(0.05, 0.18))] = colour
    elif where == 1:  # bottom strip
        out[h - round(h * rng.uniform(0.05, 0.18)) :] = colour
    elif where == 2:  # a side
        side = round(w * rng.uniform(0.01, 0.05))
        out[:, :side] = colour
    else:  # a blob on the border
        cv2.circle(
            out,
            (round(rng.uniform(0, w)), int(rng.choice([0, h]))),
            round(h * rng.uniform(0.1, 0.3)),
            colour.tolist(),
            -1,
        )
    return out


def degrade(img: np.ndarray, rng: Rng, out_w: int = INPUT_W, out_h: int = INPUT_H) -> np.ndarray:
    """A camera's view of a flat plate, as uint8 BGR ``out_w`` x ``out_h``."""
    crop = _perspective_crop(img, rng, out_w, out_h)
    if rng.random() < 0.2:
        crop = _dirt(crop, rng)
    if rng.random() < 0.15:
        crop = _occlude(crop, rng)
    # lighting: gain, gamma, a shadow or glare gradient
    crop = crop * rng.uniform(0.45, 1.35)
    if rng.random() < 0.3:
        g = np.linspace(rng.uniform(0.5, 1.4), rng.uniform(0.5, 1.4), out_w, dtype=np.float32)
        crop = crop * g[None, :, None]
    night = rng.random()
    if night < 0.12:  # IR night: monochrome, the retroreflective plate bright, low contrast
        grey = crop @ rng.dirichlet((1, 1, 1)).astype(np.float32)
        grey = 255 * (np.clip(grey, 0, 255) / 255) ** rng.uniform(0.5, 1.0)
        crop = np.repeat(grey[..., None], 3, axis=2) * rng.uniform(0.6, 1.1)
    elif night < 0.25:  # low light: dark, warm or cold cast
        crop = crop * rng.uniform(0.2, 0.5) * rng.uniform(0.8, 1.2, 3).astype(np.float32)
    if rng.random() < 0.15:
        crop = _rain(crop, rng)
    blur = rng.random()
    if blur < 0.3:
        k = 2 * int(rng.integers(1, 3)) + 1
        crop = cv2.GaussianBlur(crop, (k, k), 0)
    elif blur < 0.45:  # motion along the lane
        k = int(rng.integers(3, 8))
        kern = np.zeros((k, k), np.float32)
        kern[:, k // 2] = 1.0 / k
        if rng.random() < 0.5:
            kern = kern.T
        crop = cv2.filter2D(crop, -1, kern)
    crop = crop + rng.normal(0, rng.uniform(1, 12), crop.shape).astype(np.float32)
    crop = np.clip(crop, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:  # low resolution: a small plate in a wide frame
        f = rng.uniform(0.35, 0.8)
        small = cv2.resize(
            crop, (max(8, round(out_w * f)), max(4, round(out_h * f))), interpolation=cv2.INTER_AREA
        )
        crop = cv2.resize(small, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.8:
        ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 95))])
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            crop = decoded
    return crop


# ---------------------------------------------------------------- samples


def sample(rng: Rng, kind: str | None = None) -> tuple[np.ndarray, str]:
    """One degraded crop (uint8 BGR, the recogniser's input size) and its label. A two-row
    plate gives one of its rows, as the pipeline reads them."""
    kinds = list(KINDS)
    kind = (
        kind
        or kinds[
            int(rng.choice(len(kinds), p=np.array(list(KINDS.values())) / sum(KINDS.values())))
        ]
    )
    text = plate_text(kind, rng)
    flat = draw_plate(kind, text, rng, scale=float(rng.choice(SCALES)))
    img, label = flat.image, flat.text
    if flat.rows:
        label, y0, y1 = flat.rows[int(rng.integers(len(flat.rows)))]
        img = img[y0:y1]
    return degrade(img, rng), label


def dataset(
    n: int, seed: int, progress: Callable[[int], None] | None = None
) -> tuple[np.ndarray, list[str]]:
    """``n`` samples as the recogniser's input (uint8 grey N x INPUT_H x INPUT_W) and labels."""
    from edge.lpr.plate_rec import to_input_grey

    rng = np.random.default_rng(seed)
    xs = np.empty((n, INPUT_H, INPUT_W), np.uint8)
    labels: list[str] = []
    for i in range(n):
        crop, label = sample(rng)
        xs[i] = to_input_grey(crop)
        labels.append(label)
        if progress and i % 5000 == 0:
            progress(i)
    return xs, labels
