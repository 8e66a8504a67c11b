"""A simulated IP camera: MJPEG over HTTP (multipart/x-mixed-replace) on 127.0.0.1.

``set_car("沪A12345")`` puts a rendered car in view, ``set_car(None)`` empties the lane; every
connected client receives the current frame ``fps`` times a second, as a cheap IP camera does.
``cv2.VideoCapture("http://127.0.0.1:PORT/stream.mjpg")`` reads it; ``/snapshot.jpg`` serves
one frame. ``drop_clients()`` cuts every connection (to test reconnects).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from parkedge_sim.render import Scene, render_frame

log = logging.getLogger(__name__)
BOUNDARY = "parkedgeframe"


class MjpegCamera:
    """Serves rendered frames of the car currently in view."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        fps: float = 10.0,
        scene: Scene | None = None,
        jpeg_quality: int = 85,
        variants: int = 1,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the simulator only listens on loopback, not {host!r}")
        if variants < 1:
            raise ValueError(f"variants must be >= 1, got {variants}")
        self.fps = fps
        # a real sensor never sends the same frame twice: with variants > 1 each car is
        # rendered that many times (other noise, position) and the stream cycles through them
        self.variants = variants
        self._cycle: list[bytes] = []
        self.scene = scene or Scene()
        self._quality = jpeg_quality
        self._lock = threading.Lock()
        self._jpeg = b""
        self._frame_no = 0
        self._generation = 0  # bumped by drop_clients()
        self._plate: str | None = None
        self.down = False  # camera_down fault: no stream, no snapshot
        self.frames_sent = 0
        self._empty: bytes | None = None  # the empty lane, rendered once
        self.set_car(None)
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                log.debug("mjpeg: " + format, *args)

            def do_GET(self) -> None:
                if camera.down:
                    self.send_error(503, "camera down")
                elif self.path.startswith("/stream.mjpg"):
                    camera._stream(self)
                elif self.path.startswith("/snapshot.jpg"):
                    body = camera.jpeg()
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_error(404, "try /stream.mjpg or /snapshot.jpg")

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    @property
    def plate(self) -> str | None:
        return self._plate

    def start(self) -> MjpegCamera:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.drop_clients()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> MjpegCamera:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_car(self, plate: str | None, scene: Scene | None = None) -> None:
        """The vehicle now in view (None: empty lane). Renders ``variants`` frames once; the
        stream reuses their JPEGs."""
        if plate is None and scene is None and self._empty is not None:
            with self._lock:
                self._jpeg, self._cycle = self._empty, []
            self._plate = None
            return
        jpegs = []
        for _ in range(self.variants if plate is not None else 1):
            with self._lock:
                self._frame_no += 1
                seed = self._frame_no
            jpegs.append(self._encode(render_frame(plate, replace(scene or self.scene,
                                                                  seed=seed))))
        with self._lock:
            self._jpeg, self._cycle = jpegs[0], jpegs if len(jpegs) > 1 else []
        self._plate = plate
        if plate is None and scene is None:
            self._empty = jpegs[0]

    def set_down(self, down: bool) -> None:
        """The ``camera_down`` fault: cut every stream and refuse new ones until it is back."""
        self.down = down
        if down:
            self.drop_clients()

    def set_image(self, bgr: np.ndarray) -> None:
        jpeg = self._encode(bgr)
        with self._lock:
            self._jpeg, self._cycle = jpeg, []

    def _encode(self, bgr: np.ndarray) -> bytes:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self._quality])
        if not ok:
            raise ValueError("frame could not be JPEG-encoded")
        return bytes(buf.tobytes())

    def jpeg(self) -> bytes:
        with self._lock:
            return self._jpeg

    def drop_clients(self) -> None:
        with self._lock:
            self._generation += 1

    def _stream(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            generation = self._generation
        h.send_response(200)
        h.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        h.send_header("Cache-Control", "no-cache")
        h.end_headers()
        period = 1.0 / self.fps
        sent = 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
            while True:
                with self._lock:
                    if self._generation != generation:
                        break
                    body = self._cycle[sent % len(self._cycle)] if self._cycle else self._jpeg
                h.wfile.write(
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                )
                h.wfile.write(body)
                h.wfile.write(b"\r\n")
                h.wfile.flush()
                sent += 1
                self.frames_sent += 1
                time.sleep(period)
        h.close_connection = True
