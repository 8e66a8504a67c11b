"""Motion gate for continuous mode (lanes without an arming loop): trigger a read when the
picture changes, not on every frame. Pure: frames in, a yes/no out; no I/O, no clock."""

from __future__ import annotations

import cv2
import numpy as np


class MotionGate:
    """Compares each frame with the previous one at 160 px wide; says "moved" when more than
    ``min_changed`` of the pixels changed by more than ``pixel_delta`` grey levels. Sensor noise
    and slow light changes stay below both."""

    def __init__(self, *, min_changed: float = 0.01, pixel_delta: int = 25, width: int = 160):
        if not 0.0 < min_changed < 1.0:
            raise ValueError(f"min_changed must be within 0..1, got {min_changed}")
        self.min_changed = min_changed
        self.pixel_delta = pixel_delta
        self.width = width
        self._prev: np.ndarray | None = None

    def update(self, bgr: np.ndarray) -> bool:
        h, w = bgr.shape[:2]
        small = cv2.resize(bgr, (self.width, max(1, round(h * self.width / w))))
        gray = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (5, 5), 0)
        prev, self._prev = self._prev, gray
        if prev is None or prev.shape != gray.shape:
            return False
        changed = np.count_nonzero(cv2.absdiff(gray, prev) > self.pixel_delta) / gray.size
        return bool(changed > self.min_changed)
