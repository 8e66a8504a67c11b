"""Renders camera frames of a car with a Chinese (or Latin) plate, for tests and the demo.

Real pixels, not fixtures: the plate text is drawn with the Noto CJK font, the plate is placed on
a drawn car in a drawn lane, then perspective, lighting, blur and sensor noise are applied, all
from a seeded RNG so a frame is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_CANDIDATES = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
)

# (background BGR, text BGR) per plate colour.
PLATE_COLOURS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "blue": ((160, 60, 10), (255, 255, 255)),
    "yellow": ((20, 190, 240), (20, 20, 20)),
    "green": ((120, 200, 110), (20, 20, 20)),
    "white": ((240, 240, 240), (20, 20, 20)),
    "black": ((20, 20, 20), (255, 255, 255)),
}


class FontMissingError(RuntimeError):
    """The CJK font is not installed."""


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    for path in FONT_CANDIDATES:
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    raise FontMissingError(
        "CJK font not found (looked for "
        + ", ".join(str(p) for p in FONT_CANDIDATES)
        + "): install Debian's fonts-noto-cjk (make sysdeps)"
    )


def plate_colour_for(plate: str) -> str:
    """The colour a plate of this text is printed in (new-energy green, 学 yellow, ...)."""
    if len(plate) == 8:
        return "green"
    if plate.endswith("学") or plate.endswith("挂"):
        return "yellow"
    if plate.endswith("警"):
        return "white"
    if plate.endswith(("港", "澳")):
        return "black"
    return "blue"


def render_plate(plate: str, colour: str | None = None, height: int = 140) -> np.ndarray:
    """A flat, frontal plate image (BGR), 440:140 like a mainland plate."""
    if not plate:
        raise ValueError("plate text is empty")
    colour = colour or plate_colour_for(plate)
    if colour not in PLATE_COLOURS:
        raise ValueError(f"unknown plate colour {colour!r}: one of {sorted(PLATE_COLOURS)}")
    bg, fg = PLATE_COLOURS[colour]
    width = round(height * (480 if len(plate) >= 8 else 440) / 140)
    img = Image.new("RGB", (width, height), bg[::-1])
    draw = ImageDraw.Draw(img)
    border = max(2, height // 30)
    draw.rectangle(
        (border, border, width - border - 1, height - border - 1), outline=fg[::-1], width=border
    )
    font = _font(height)
    n = len(plate)
    slot = (width - 6 * border) / (n + 0.4)
    x = 3 * border
    glyph_w, glyph_h = round(slot * 0.82), round(height * 0.64)
    for i, ch in enumerate(plate):
        # Plate glyphs are condensed (45 x 90 mm): draw, crop to ink, squeeze into the slot.
        x0, t, r, b = font.getbbox(ch)
        mask = Image.new("L", (int(r - x0) + 2, int(b - t) + 2), 0)
        ImageDraw.Draw(mask).text((1 - x0, 1 - t), ch, font=font, fill=255)
        mask = mask.resize((glyph_w, glyph_h), Image.Resampling.LANCZOS)
        left = x + slot * (i + (0.4 if i >= 2 else 0)) + (slot - glyph_w) / 2
        img.paste(fg[::-1], (round(left), (height - glyph_h) // 2), mask)
        if i == 1:  # the separator dot after the city letter
            dx = x + slot * 2.2
            rad = max(2, height // 30)
            draw.ellipse((dx - rad, height / 2 - rad, dx + rad, height / 2 + rad), fill=fg[::-1])
    return cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2BGR)


@dataclass(frozen=True)
class Scene:
    """Knobs of one rendered frame."""

    width: int = 1920
    height: int = 1080
    plate_width: int = 300  # pixels across the plate, seen head-on, in the frame
    yaw: float = 0.0  # -1..1: the plate turned by yaw x 60 degrees about its vertical axis
    tilt_deg: float = 0.0  # roll in the image plane
    pitch_deg: float = 0.0  # camera above the plate looking down (its top edge farther)
    focal_px: float = 0.0  # pinhole focal length; 0 = a 70-degree lane camera across ``width``
    brightness: float = 1.0  # 0.4 dusk .. 1.4 glare
    blur: int = 0  # Gaussian kernel radius
    noise: float = 4.0  # sensor noise sigma
    seed: int = 0


YAW_MAX_DEG = 60.0
LANE_CAMERA_HFOV_DEG = 70.0  # a 4 mm lens on a 1/2.8" sensor, the usual lane camera


def plate_quad(
    s: Scene, width_px: float, height_px: float, centre: tuple[float, float]
) -> np.ndarray:
    """The plate's four corners (TL, TR, BR, BL) in the frame under true perspective.

    The plate is a flat rectangle in 3D, turned by the scene's yaw (about its vertical axis) and
    pitch, seen by a pinhole camera placed so that, head-on, it would be ``width_px`` wide: the
    far edge comes out shorter than the near one and the far half narrower than the near half,
    as in a real angled shot (the former squeeze only slanted the top and bottom edges).
    """
    f = s.focal_px or (s.width / 2) / np.tan(np.radians(LANE_CAMERA_HFOV_DEG / 2))
    half_w, half_h = width_px / 2, height_px / 2
    dist = f  # in pixel units of the plate: head-on, the plate spans width_px at distance f
    yaw = np.radians(max(-1.0, min(1.0, s.yaw)) * YAW_MAX_DEG)
    pitch = np.radians(s.pitch_deg)
    corners = np.array(
        [[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]], np.float64
    )
    out = []
    for x, y in corners:
        # yaw about the vertical axis: +yaw sends the right edge away from the camera
        x1, z1 = x * np.cos(yaw), x * np.sin(yaw)
        # pitch about the horizontal axis: the top edge away from a camera looking down
        y2, z2 = y * np.cos(pitch), z1 - y * np.sin(pitch)
        depth = dist + z2
        out.append((centre[0] + f * x1 / depth, centre[1] + f * y2 / depth))
    quad: np.ndarray = np.array(out, np.float32)
    if s.tilt_deg:
        rot = cv2.getRotationMatrix2D(centre, s.tilt_deg, 1.0)
        quad = cv2.transform(quad[None], rot)[0].astype(np.float32)
    return quad


def render_frame(plate: str | None, scene: Scene | None = None) -> np.ndarray:
    """A full lane frame (BGR). ``plate=None`` renders the empty lane."""
    s = scene or Scene()
    rng = np.random.default_rng(s.seed)
    W, H = s.width, s.height
    frame: np.ndarray = np.zeros((H, W, 3), np.float32)
    # Lane background: asphalt gradient with lane markings and a wall.
    ys = np.linspace(0, 1, H, dtype=np.float32)[:, None, None]
    frame[:] = 70 + 60 * ys
    frame[: H // 4] = (150, 150, 140)
    cv2.line(frame, (W // 8, H), (W // 3, H // 4), (220, 220, 220), 12)
    cv2.line(frame, (7 * W // 8, H), (2 * W // 3, H // 4), (220, 220, 220), 12)
    if plate is not None:
        pw = s.plate_width
        ph = round(pw * 140 / 440)
        cx, cy = W // 2 + int(rng.integers(-W // 10, W // 10)), int(H * 0.62)
        body = tuple(int(v) for v in rng.integers(30, 220, 3))
        cv2.rectangle(frame, (cx - 3 * pw, cy - 3 * ph), (cx + 3 * pw, cy + 4 * ph), body, -1)
        cv2.rectangle(
            frame, (cx - 2 * pw, cy - 6 * ph), (cx + 2 * pw, cy - 3 * ph), (60, 50, 40), -1
        )
        for sx in (-1, 1):  # lamps
            lamp = (cx + sx * int(2.3 * pw), cy - ph)
            cv2.ellipse(frame, lamp, (pw // 3, ph // 2), 0, 0, 360, (200, 220, 240), -1)
        cv2.rectangle(
            frame, (cx - pw, cy - ph // 2 - ph), (cx + pw, cy - ph // 2), (40, 40, 40), -1
        )
        flat = render_plate(plate).astype(np.float32)
        fh, fw = flat.shape[:2]
        pw_eff = round(pw * fw / (fh * 440 / 140))
        src = np.array([[0, 0], [fw, 0], [fw, fh], [0, fh]], np.float32)
        dst = plate_quad(s, pw_eff, ph, (cx, cy + ph / 2))
        m = cv2.getPerspectiveTransform(src, dst)
        warped = cv2.warpPerspective(flat, m, (W, H))
        mask = cv2.warpPerspective(np.ones((fh, fw), np.float32), m, (W, H))[..., None]
        frame = frame * (1 - mask) + warped * mask
    # Lighting: global gain plus a soft left-to-right gradient.
    xs = np.linspace(0.85, 1.15, W, dtype=np.float32)[None, :, None]
    frame *= s.brightness * xs
    if s.blur:
        k = 2 * s.blur + 1
        frame = cv2.GaussianBlur(frame, (k, k), 0)
    if s.noise:
        frame += rng.normal(0, s.noise, frame.shape).astype(np.float32)
    return np.clip(frame, 0, 255).astype(np.uint8)
