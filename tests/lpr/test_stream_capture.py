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


# --- MJPEG frames kept as JPEG bytes, decoded when read (#15) -----------------------------------


def _solid(value: int) -> np.ndarray:
    return np.full((360, 640, 3), value, np.uint8)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every cv2.imdecode call made by the capture module (the real decoder runs)."""
    from edge.lpr import capture

    calls: list[int] = []
    real = cv2.imdecode

    def counting(buf, flags):  # type: ignore[no-untyped-def]
        calls.append(len(buf))
        return real(buf, flags)

    monkeypatch.setattr(capture.cv2, "imdecode", counting)
    return calls


def test_mjpeg_frames_are_decoded_only_when_read_and_once(decodes: list[int]) -> None:
    with MjpegCamera(fps=30, scene=SMALL) as cam:
        cam.set_image(_solid(90))
        g = FrameGrabber(cam.url, backoff_min_s=0.1, backoff_max_s=0.5)
        g.start()
        try:
            first = g.wait_frame(0, 10)
            assert first is not None and first.jpeg is not None  # kept as the camera's bytes
            assert wait_for(lambda: (g.latest() or first).seq >= first.seq + 10)
            assert decodes == [], "frames nobody read were decoded"
            frame = g.latest()
            assert frame is not None and not frame.decoded
            img = frame.image
            assert img.shape == (360, 640, 3) and abs(float(img.mean()) - 90) < 3
            assert frame.image is img and frame.decoded
            assert len(decodes) == 1, "a frame read twice was decoded twice"
            assert not first.decoded
        finally:
            g.stop()


def test_mjpeg_grabber_returns_the_newest_frame(decodes: list[int]) -> None:
    with MjpegCamera(fps=30, scene=SMALL) as cam:
        g = FrameGrabber(cam.url, backoff_min_s=0.1, backoff_max_s=0.5)
        g.start()
        try:
            seen = g.wait_frame(0, 10)
            assert seen is not None
            for value in (40, 120, 200):  # the picture changes while nobody reads
                cam.set_image(_solid(value))
                time.sleep(0.2)
            newest = g.wait_frame(seen.seq, 5)
            assert newest is not None
            assert newest.seq >= seen.seq + 10  # many frames went by, none queued
            assert abs(float(newest.image.mean()) - 200) < 3
            assert len(decodes) == 1
        finally:
            g.stop()


class _HandMadeMjpeg:
    """A loopback HTTP server writing the multipart stream given, byte for byte, then
    closing: the shapes real cameras send that the simulator does not."""

    def __init__(self, content_type: str, body: bytes) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/video"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _jpeg(value: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((48, 64, 3), value, np.uint8))
    assert ok
    return bytes(buf.tobytes())


def test_mjpeg_parts_without_length_quoted_boundary_and_a_broken_part() -> None:
    from edge.lpr.capture import open_source

    a, b = _jpeg(30), _jpeg(220)
    body = (
        b"preamble a camera may send\r\n"
        b"--myboundary\r\nContent-Type: image/jpeg\r\n\r\n" + a + b"\r\n"  # no length
        b"--myboundary\r\nContent-Type: image/jpeg\r\nContent-Length: 40\r\n\r\n"
        + b[:40] + b"\r\n"  # a truncated JPEG: skipped, not handed on
        b"--myboundary\r\nContent-Type: image/jpeg\r\nContent-Length: "
        + str(len(b)).encode() + b"\r\n\r\n" + b + b"\r\n"
    )
    srv = _HandMadeMjpeg('multipart/x-mixed-replace; boundary="--myboundary"', body)
    try:
        reader = open_source(srv.url)
        try:
            got = [reader.read() for _ in range(3)]
        finally:
            reader.release()
    finally:
        srv.close()
    assert got[0] == (True, a)
    assert got[1] == (True, b)
    assert got[2] == (False, None)  # the stream ended


def test_a_corrupt_jpeg_raises_when_its_image_is_asked_for() -> None:
    from edge.lpr.capture import Frame, FrameDecodeError

    bad = Frame(7, time.monotonic(), jpeg=b"\xff\xd8" + b"\x00" * 64 + b"\xff\xd9")
    with pytest.raises(FrameDecodeError):
        _ = bad.image
