"""Newest-frame-only camera grabber with reconnect, back-off and health.

A queue of frames adds latency (the barrier would open for a car read seconds ago), so the
grabber thread keeps only the latest frame and a sequence number; readers ask for a frame newer
than the one they had. When the stream drops the thread releases the capture and reopens it
with exponential back-off; health is OK while frames arrive, DEGRADED while reconnecting after
a good spell, DOWN when it cannot open at all.

Sources: an MJPEG stream over HTTP (``multipart/x-mixed-replace``, what IP cameras serve) is
read by ``_MjpegReader``, which keeps each frame's JPEG bytes as they arrive: a frame is decoded
only when someone asks for its image, once (``Frame.image``), so the frames nobody reads (at
15 fps, most of them) cost no decode (a 1080p frame: ~5 ms of CPU). Anything else
``cv2.VideoCapture`` opens (RTSP, an HTTP URL that is not MJPEG, a video file, "0" or
"/dev/videoN"), or a folder of images (played in name order, looping: handy for tests and
demos), is decoded as it is read, as before.
"""

from __future__ import annotations

import base64
import http.client
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import cv2
import numpy as np

from edge.barrier.interfaces import Health

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


MAX_JPEG_BYTES = 32 << 20  # a part larger than this is not a camera frame
_MAX_HEADER_LINE = 8192


class FrameDecodeError(ValueError):
    """A frame's JPEG bytes did not decode."""


class Frame:
    """One frame: its sequence number, when it was grabbed, and its picture, decoded from the
    camera's JPEG on first use (once; later uses and other threads get the same array)."""

    __slots__ = ("_image", "_lock", "at_monotonic", "jpeg", "seq")

    def __init__(self, seq: int, at_monotonic: float, *, image: np.ndarray | None = None,
                 jpeg: bytes | None = None) -> None:
        if (image is None) == (jpeg is None):
            raise ValueError("a Frame needs exactly one of image and jpeg")
        self.seq = seq
        self.at_monotonic = at_monotonic
        self.jpeg = jpeg
        self._image = image
        self._lock = threading.Lock()

    @property
    def decoded(self) -> bool:
        return self._image is not None

    @property
    def image(self) -> np.ndarray:
        """The BGR picture (raises FrameDecodeError when the JPEG is corrupt)."""
        img = self._image
        if img is not None:
            return img
        with self._lock:
            if self._image is None:
                assert self.jpeg is not None
                img = cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR)
                if img is None:
                    raise FrameDecodeError(f"frame {self.seq}: JPEG did not decode "
                                           f"({len(self.jpeg)} bytes)")
                self._image = img
            return self._image


class _Reader(Protocol):
    def read(self) -> tuple[bool, np.ndarray | bytes | None]:
        """(ok, the frame: a decoded picture, or the JPEG's bytes to decode when used)."""
        ...

    def release(self) -> None: ...


class _FolderReader:
    """Plays the images of a folder in name order, looping, at ``fps``."""

    def __init__(self, folder: Path, fps: float) -> None:
        self._files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise OSError(f"no images in {folder}")
        self._i = 0
        self._period = 1.0 / fps if fps > 0 else 0.0

    def read(self) -> tuple[bool, np.ndarray | None]:
        path = self._files[self._i % len(self._files)]
        self._i += 1
        if self._period:
            time.sleep(self._period)
        img = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
        return img is not None, img

    def release(self) -> None:
        pass


class _CvReader:
    def __init__(self, source: str, open_timeout_s: float) -> None:
        target: str | int = int(source) if source.isdigit() else source
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(open_timeout_s * 1000),
        ]
        self._cap = cv2.VideoCapture(target, cv2.CAP_ANY, params)
        if not self._cap.isOpened():
            self._cap.release()
            raise OSError(f"cannot open video source {source!r}")
        self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)

    def read(self) -> tuple[bool, np.ndarray | None]:
        ok, img = self._cap.read()
        return bool(ok), img if ok else None

    def release(self) -> None:
        self._cap.release()


class _NotMjpeg(OSError):
    """The HTTP source answered, but not with a multipart MJPEG stream."""


def _boundary(content_type: str) -> bytes | None:
    """The multipart boundary of a ``multipart/x-mixed-replace`` Content-Type, else None."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/x-mixed-replace":
        return None
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            value = value.strip().strip('"')
            # some cameras write the boundary with its leading dashes already
            value = value[2:] if value.startswith("--") else value
            return value.encode("latin-1") if value else None
    return None


class _MjpegReader:
    """An MJPEG stream over HTTP, parsed part by part; ``read`` returns each JPEG's bytes
    undecoded. Parts with a Content-Length are read by length; without one, up to the next
    boundary line."""

    def __init__(self, url: str, open_timeout_s: float) -> None:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise _NotMjpeg(f"not an HTTP URL: {url!r}")
        conn_cls = (http.client.HTTPSConnection if u.scheme == "https"
                    else http.client.HTTPConnection)
        self._conn = conn_cls(u.hostname, u.port, timeout=open_timeout_s)
        headers = {"Accept": "multipart/x-mixed-replace, image/jpeg", "Connection": "close"}
        if u.username is not None:
            cred = f"{unquote(u.username)}:{unquote(u.password or '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(cred).decode("ascii")
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        try:
            self._conn.request("GET", target, headers=headers)
            resp = self._conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise OSError(f"cannot open video source {url!r}: {exc}") from exc
        if resp.status != 200:
            self._conn.close()
            raise OSError(f"cannot open video source {url!r}: HTTP {resp.status} {resp.reason}")
        boundary = _boundary(resp.getheader("Content-Type", ""))
        if boundary is None:
            self._conn.close()
            raise _NotMjpeg(f"{url!r} is not multipart MJPEG "
                            f"({resp.getheader('Content-Type', 'no Content-Type')})")
        self._resp = resp
        self._delim = b"--" + boundary
        self._at_part = False  # the previous part's scan already consumed this part's boundary

    def _line(self) -> bytes:
        line = self._resp.readline(_MAX_HEADER_LINE)
        if not line:
            raise EOFError
        return line

    def _read_part(self) -> bytes:
        if not self._at_part:
            while self._line().rstrip(b"\r\n") != self._delim:
                pass  # the preamble or a part's trailing CRLF
        self._at_part = False
        length: int | None = None
        while (line := self._line().rstrip(b"\r\n")) != b"":
            key, _, value = line.partition(b":")
            if key.strip().lower() == b"content-length":
                length = int(value.strip())
                if not 0 < length <= MAX_JPEG_BYTES:
                    raise OSError(f"part of {length} bytes")
        if length is not None:
            data = self._resp.read(length)
            if len(data) < length:
                raise EOFError
            return data
        chunks: list[bytes] = []  # no length: up to the next boundary line
        size = 0
        while True:
            line = self._resp.readline(MAX_JPEG_BYTES)
            if not line:
                raise EOFError
            if line.rstrip(b"\r\n") == self._delim:
                self._at_part = True
                break
            chunks.append(line)
            size += len(line)
            if size > MAX_JPEG_BYTES:
                raise OSError("part without a length and without an end")
        data = b"".join(chunks)
        return data[:-2] if data.endswith(b"\r\n") else data

    def read(self) -> tuple[bool, bytes | None]:
        try:
            while True:
                data = self._read_part()
                # a JPEG starts with SOI and ends with EOI; anything else (a truncated frame,
                # a text part) would fail to decode later, where it cannot be skipped
                if data[:2] == b"\xff\xd8" and data.rstrip(b"\r\n\x00")[-2:] == b"\xff\xd9":
                    return True, data
                log.debug("mjpeg: skipped a part of %d bytes that is not a whole JPEG", len(data))
        except (EOFError, OSError, ValueError, http.client.HTTPException):
            return False, None

    def release(self) -> None:
        self._resp.close()
        self._conn.close()


def open_source(source: str, *, fps: float = 10.0, open_timeout_s: float = 5.0) -> _Reader:
    """A frame reader for ``source`` (raises OSError with the source named when it fails)."""
    path = Path(source)
    if path.is_dir():
        return _FolderReader(path, fps)
    if source.lower().startswith(("http://", "https://")):
        try:
            return _MjpegReader(source, open_timeout_s)
        except _NotMjpeg:
            pass  # some other stream over HTTP: let OpenCV's demuxers have it
    return _CvReader(source, open_timeout_s)


class FrameGrabber:
    """Background thread keeping only the newest frame of one camera."""

    def __init__(
        self,
        source: str,
        *,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 10.0,
        stale_after_s: float = 3.0,
        folder_fps: float = 10.0,
        opener: Callable[[str], _Reader] | None = None,
    ) -> None:
        self.source = source
        self._backoff_min = backoff_min_s
        self._backoff_max = backoff_max_s
        self._stale_after = stale_after_s
        self._opener = opener or (lambda s: open_source(s, fps=folder_fps))
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ever_ok = False
        self._reconnecting = False
        self.reconnects = 0
        self.last_error: str | None = None

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"grab:{self.source}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread:
            self._thread.join(timeout_s)

    # --- readers -------------------------------------------------------------------------
    @property
    def health(self) -> Health:
        with self._cond:
            latest = self._latest
            reconnecting = self._reconnecting
        fresh = latest is not None and time.monotonic() - latest.at_monotonic < self._stale_after
        if fresh and not reconnecting:
            return Health.OK
        return Health.DEGRADED if self._ever_ok else Health.DOWN

    def latest(self) -> Frame | None:
        with self._cond:
            return self._latest

    def wait_frame(self, after_seq: int, timeout_s: float) -> Frame | None:
        """The newest frame with ``seq > after_seq``, waiting up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._latest is None or self._latest.seq <= after_seq:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return None
                self._cond.wait(left)
            return self._latest

    # --- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        backoff = self._backoff_min
        while not self._stop.is_set():
            try:
                reader = self._opener(self.source)
            except Exception as exc:  # any failure to open is a camera fault, never fatal
                self._note_error(f"open failed: {exc}")
                self._stop.wait(backoff)
                backoff = min(self._backoff_max, backoff * 2)
                continue
            try:
                while not self._stop.is_set():
                    ok, got = reader.read()
                    if not ok or got is None:
                        self._note_error("stream ended or read failed")
                        break
                    now = time.monotonic()
                    with self._cond:
                        self._seq += 1
                        self._latest = (Frame(self._seq, now, jpeg=got) if isinstance(got, bytes)
                                        else Frame(self._seq, now, image=got))
                        self._ever_ok = True
                        self._reconnecting = False
                        self._cond.notify_all()
                    backoff = self._backoff_min
            except Exception as exc:
                self._note_error(f"read failed: {exc}")
            finally:
                reader.release()
            if not self._stop.is_set():
                self._stop.wait(backoff)
                backoff = min(self._backoff_max, backoff * 2)

    def _note_error(self, message: str) -> None:
        with self._cond:
            first = self.last_error != message
            self.last_error = message
            self._reconnecting = True
            self.reconnects += 1
        # De-duplicated: the first at WARNING, repeats at DEBUG.
        log.log(logging.WARNING if first else logging.DEBUG, "camera %s: %s", self.source, message)
