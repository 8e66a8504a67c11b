"""One resynchronising frame scanner shared by the codecs (pure, never raises).

The scanner looks for the header, reads the declared length, and checks the trailer. On a
bad checksum or an impossible length it drops *one* byte and scans again, so a good frame that
starts inside a corrupted one is still found. The buffer never grows beyond one maximal frame
plus the chunk being fed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

F = TypeVar("F")


class FrameScanner:
    """Splits a byte stream into checksum-verified raw frames."""

    def __init__(
        self,
        *,
        header: bytes,
        prefix_len: int,
        body_len: Callable[[bytes], int],
        trailer_len: int,
        verify: Callable[[bytes], bool],
        max_body: int,
    ) -> None:
        self._header = header
        self._prefix_len = prefix_len
        self._body_len = body_len
        self._trailer_len = trailer_len
        self._verify = verify
        self._max_body = max_body
        self._buf = bytearray()
        self.bad_frames = 0  # complete frames whose checksum did not match
        self.oversize = 0  # headers declaring a body longer than max_body
        self.garbage_bytes = 0  # bytes skipped while looking for a header

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget a partial frame (the line was idle too long for it to be completed)."""
        self._buf.clear()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        buf = self._buf
        while True:
            start = buf.find(self._header)
            if start < 0:
                # keep a possible partial header at the end
                keep = 0
                for k in range(len(self._header) - 1, 0, -1):
                    if buf.endswith(self._header[:k]):
                        keep = k
                        break
                self.garbage_bytes += len(buf) - keep
                del buf[: len(buf) - keep]
                break
            if start:
                self.garbage_bytes += start
                del buf[:start]
            if len(buf) < self._prefix_len:
                break
            body = self._body_len(bytes(buf[: self._prefix_len]))
            if body < 0 or body > self._max_body:
                self.oversize += 1
                del buf[:1]
                continue
            total = self._prefix_len + body + self._trailer_len
            if len(buf) < total:
                break
            frame = bytes(buf[:total])
            if self._verify(frame):
                frames.append(frame)
                del buf[:total]
            else:
                self.bad_frames += 1
                del buf[:1]
        return frames


class FrameDecoder(Generic[F]):
    """Incremental decoder of one codec: ``feed(bytes) -> [frame]``. Why a base: every codec's
    decoder is the same scanner plus "raw verified bytes -> the codec's frame type"."""

    def __init__(self, scanner: FrameScanner, parse: Callable[[bytes], F]) -> None:
        self._scan = scanner
        self._parse = parse

    @property
    def bad_frames(self) -> int:
        return self._scan.bad_frames

    @property
    def pending(self) -> int:
        return self._scan.pending

    def reset(self) -> None:
        self._scan.reset()

    def feed(self, data: bytes) -> list[F]:
        return [self._parse(f) for f in self._scan.feed(data)]
