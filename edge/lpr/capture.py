"""Newest-frame-only camera grabber with reconnect, back-off and health.

A queue of frames adds latency (the barrier would open for a car read seconds ago), so the
grabber thread keeps only the latest frame and a sequence number; readers ask for a frame newer
than the one they had. When the stream drops the thread releases the capture and reopens it
with exponential back-off; health is OK while frames arrive, DEGRADED while reconnecting after
a good spell, DOWN when it cannot open at all.

Sources: anything ``cv2.VideoCapture`` opens (RTSP/HTTP URL, video file, "0" or "/dev/videoN"),
or a folder of images (played in name order, looping: handy for tests and demos).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge.barrier.interfaces import Health

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class Frame:
    seq: int
    image: np.ndarray
    at_monotonic: float


class _Reader(Protocol):
    def read(self) -> tuple[bool, np.ndarray | None]: ...

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


def open_source(source: str, *, fps: float = 10.0, open_timeout_s: float = 5.0) -> _Reader:
    """A frame reader for ``source`` (raises OSError with the source named when it fails)."""
    path = Path(source)
    if path.is_dir():
        return _FolderReader(path, fps)
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
                    ok, img = reader.read()
                    if not ok or img is None:
                        self._note_error("stream ended or read failed")
                        break
                    with self._cond:
                        self._seq += 1
                        self._latest = Frame(self._seq, img, time.monotonic())
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
