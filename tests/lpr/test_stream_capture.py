"""The MJPEG camera simulator read by real OpenCV, and the newest-frame grabber around it."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from parkedge_sim.mjpeg_stream import MjpegCamera
from parkedge_sim.render import Scene

from edge.barrier.interfaces import Health
from edge.lpr.capture import FrameGrabber

SMALL = Scene(width=640, height=360, plate_width=150)


def wait_for(pred, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_opencv_reads_the_stream_and_sees_the_car_change() -> None:
    with MjpegCamera(fps=25, scene=SMALL) as cam:
        cap = cv2.VideoCapture(cam.url)
        try:
            assert cap.isOpened()
            ok, empty = cap.read()
            assert ok and empty.shape == (360, 640, 3)
            cam.set_car("沪A12345")
            changed = False
            for _ in range(30):
                ok, frame = cap.read()
                assert ok
                if float(np.abs(frame.astype(int) - empty.astype(int)).mean()) > 5:
                    changed = True
                    break
            assert changed, "the car never appeared in the stream"
        finally:
            cap.release()


def test_snapshot_and_404() -> None:
    import urllib.error
    import urllib.request

    with MjpegCamera(scene=SMALL) as cam:
        body = urllib.request.urlopen(f"http://127.0.0.1:{cam.port}/snapshot.jpg", timeout=5).read()
        img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == (360, 640, 3)
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{cam.port}/nope", timeout=5)


def test_simulator_refuses_non_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        MjpegCamera(host="0.0.0.0")


def test_grabber_keeps_newest_and_reconnects_after_drop() -> None:
    with MjpegCamera(fps=20, scene=SMALL) as cam:
        g = FrameGrabber(cam.url, backoff_min_s=0.1, backoff_max_s=0.5)
        g.start()
        try:
            f1 = g.wait_frame(0, 10)
            assert f1 is not None
            assert wait_for(lambda: g.health is Health.OK)
            f2 = g.wait_frame(f1.seq, 5)
            assert f2 is not None and f2.seq > f1.seq
            time.sleep(0.3)  # frames keep arriving; we get the newest, not a backlog
            latest = g.latest()
            assert latest is not None and latest.seq > f2.seq + 1
            errors_before = g.reconnects
            cam.drop_clients()
            assert wait_for(lambda: g.reconnects > errors_before)
            f3 = g.wait_frame(g.latest().seq if g.latest() else 0, 10)  # type: ignore[union-attr]
            assert f3 is not None, "no frames after the stream came back"
            assert wait_for(lambda: g.health is Health.OK)
        finally:
            g.stop()


def test_grabber_is_down_when_camera_unreachable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    g = FrameGrabber(f"http://127.0.0.1:{port}/stream.mjpg", backoff_min_s=0.05, backoff_max_s=0.2)
    g.start()
    try:
        assert wait_for(lambda: g.reconnects >= 2)
        assert g.health is Health.DOWN
        assert g.last_error and "open failed" in g.last_error
        assert g.wait_frame(0, 0.2) is None
    finally:
        g.stop()


def test_folder_source_loops_over_images(tmp_path: Path) -> None:
    for i, v in enumerate((10, 200)):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((40, 60, 3), v, np.uint8))
    g = FrameGrabber(str(tmp_path), folder_fps=50)
    g.start()
    try:
        seen = set()
        seq = 0
        for _ in range(6):
            f = g.wait_frame(seq, 5)
            assert f is not None
            seq = f.seq
            seen.add(int(f.image[0, 0, 0]))
        assert seen == {10, 200}
    finally:
        g.stop()
