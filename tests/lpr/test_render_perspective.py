"""The simulator renders an angled plate in true perspective (#15): the far edge is shorter than
the near one and the plate is foreshortened, as in a real angled shot."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hardware-sim"))

from parkedge_sim.render import Scene, render_frame


def _plate_mask(yaw: float) -> np.ndarray:
    """Pixels of the plate: the same scene rendered with a blue and with a white plate differ
    only where the plate is."""
    scene = Scene(width=1280, height=720, plate_width=400, yaw=yaw, noise=0.0, seed=3)
    blue = render_frame("京A12345", scene).astype(np.int32)
    white = render_frame("京A1234警", scene).astype(np.int32)
    mask: np.ndarray = np.abs(blue - white).sum(axis=2) > 60
    return mask


def _edges(mask: np.ndarray) -> tuple[int, int, int]:
    """(plate width, left edge height, right edge height) in pixels, the edges measured a few
    columns in from the plate's ends."""
    cols = np.flatnonzero(mask.any(axis=0))
    left, right = int(cols[0]), int(cols[-1])
    return right - left + 1, int(mask[:, left + 3].sum()), int(mask[:, right - 3].sum())


def test_frontal_plate_is_a_rectangle() -> None:
    width, lh, rh = _edges(_plate_mask(0.0))
    assert abs(lh - rh) <= 2
    assert width == pytest.approx(400, abs=8)


@pytest.mark.parametrize("yaw", [0.6, -0.6])
def test_far_edge_shorter_and_plate_foreshortened(yaw: float) -> None:
    width, lh, rh = _edges(_plate_mask(yaw))
    near, far = (lh, rh) if yaw > 0 else (rh, lh)
    # 36 degrees at a 70-degree lane camera's distance: the far edge ~ 0.82 of the near one
    assert far < 0.9 * near, (far, near)
    # and the plate is cos(36 deg) ~ 0.81 as wide as head-on (the old squeeze kept it 400 wide)
    assert width < 0.88 * 400, width
