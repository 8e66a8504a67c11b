"""A fragment whose wide crop reads as a longer fragment is read once more, wider: the box held
one end of a plate with a wide gap (br OEL-1145: the box "OEL", the wide crop "OEL114")."""

from __future__ import annotations

import cv2
import numpy as np

from edge.lpr.finder import PlateBox, _warp
from edge.lpr.grammar import grammar_by_name
from edge.lpr.pipeline import Recogniser


def test_a_longer_fragment_is_read_wider() -> None:
    rec = Recogniser(grammar_by_name("latin:LLLDDDD,LLLDLDD"), detector=False)
    frame = np.full((720, 1280, 3), 90, np.uint8)
    cv2.rectangle(frame, (296, 400), (736, 500), (235, 235, 235), -1)
    cv2.putText(frame, "OEL", (312, 480), cv2.FONT_HERSHEY_DUPLEX, 2.6, (20, 20, 20), 6)
    cv2.putText(frame, "1145", (500, 480), cv2.FONT_HERSHEY_DUPLEX, 2.6, (20, 20, 20), 6)
    # the box over "OEL" alone, and its wide crop as the finder makes it (8x as wide as high)
    rr = ((395.0, 452.0), (170.0, 56.0), 0.0)
    crop, wider = _warp(frame, rr, 0.0), _warp(frame, rr, 0.12, min_ratio=8.0)
    box = PlateBox(310, 424, 170, 56, 0.0, None, 1.0, crop, wider)
    first, wide = rec.engine.read([crop, wider])
    assert first.text == "OEL" and 3 < len(wide.text) < 7  # both fragments, the wide longer
    cands = [rec._candidate(box, first)]
    assert not cands[0].valid
    assert rec._retry_wide([box], cands, (720, 1280))[0].plate == "OEL"  # no frame: no wider
    again = rec._retry_wide([box], cands, (720, 1280), frame)[0]
    assert again.valid and again.plate == "OEL1145"
