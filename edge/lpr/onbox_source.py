"""On-box recognition as a ``PlateSource``: trigger → read frames → vote → one ``PlateRead``.

The arming loop calls ``trigger()``; a task then reads the newest frames (never a backlog) and
recognises each in a worker thread (OCR is CPU-bound) until ``vote_frames`` frames agree with
at least ``min_confidence``, or ``timeout_s`` passes. A read very sure before that is accepted
early (``early_frames``, ``early_confidence``, and the plate CRNN reading the same plate: see
``_may_end_early``). On timeout the best vote so far is published with ``uncertain=True`` so
the lane can still compute a fee and ask the driver to use the intercom; a trigger that saw
no plate at all publishes nothing (the lane's own timeout handles a car without a readable
plate).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from edge.barrier.interfaces import Health
from edge.logs import LogLimiter
from edge.lpr import busy
from edge.lpr.capture import Frame, FrameDecodeError, FrameGrabber
from edge.lpr.grammar import PlateGrammar, cn_grammar
from edge.lpr.motion import MotionGate
from edge.lpr.pipeline import PlateCandidate, Recogniser
from edge.lpr.plate_input import FieldError, accept_plate
from edge.lpr.plate_rec import PlateRecError
from edge.lpr.second_opinion import SecondOpinion
from edge.lpr.source import PlateRead
from edge.lpr.voting import FrameRead, Vote, vote

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def _libc() -> Any:
    """glibc, for ``malloc_trim``; None elsewhere (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()
# Allocations from this size up get pages of their own, returned to the system when freed.
# glibc's default threshold rises to the largest block freed so far, after which a frame's
# copies and the text detector's feature maps (tens of MB each time) come from the heap and
# stay there: the lane daemon's RSS climbed car after car, 260 -> 436 MB (bench/lane_e2e.py,
# daemon_rss_mb). Measured on the 川VLQWMU frames: peak 375 -> 236 MB, the same CPU.
MMAP_THRESHOLD = 256 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def limit_heap_growth() -> bool:
    """Big allocations by mmap, from ``MMAP_THRESHOLD`` (process-wide; glibc only). True if
    set. The lane daemon's other parts allocate little; its reads allocate in large blocks."""
    if _LIBC is None or not hasattr(_LIBC, "mallopt"):
        return False
    return bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))

# A read that is not sure yet stops before the timeout once its frames have no more to say:
# after SETTLE x ``vote_frames`` frames that read a plate, the vote is the same plate as
# ``vote_frames`` frames before and its confidence has not risen by more than SETTLE_GAIN.
# It is published uncertain (the lane's safe policy: the operator, no points spent), not
# after the whole timeout (4.8 s on a lane with the default 6 s plate timer): a car standing
# at the barrier shows the camera the same plate in every frame, and a read its first frames
# were unsure of stays unsure (bench/lane_e2e.py, docs/lpr.md). A car still coming closer
# reads surer frame by frame and is not stopped.
SETTLE = 2
SETTLE_GAIN = 0.02


class OnBoxPlateSource:
    """Reads plates from a camera URL with the on-box pipeline (see module docstring)."""

    def __init__(
        self,
        url: str,
        lane_id: str,
        *,
        grammar: PlateGrammar | None = None,
        vote_frames: int = 3,
        min_confidence: float = 0.8,
        timeout_s: float = 3.0,
        tz: tzinfo,
        now: Callable[[], datetime] | None = None,
        crops_dir: Path | None = None,
        keep_frames: bool = False,
        recogniser: Recogniser | None = None,
        grabber: FrameGrabber | None = None,
        motion_gate: MotionGate | None = None,
        repeat_suppress_s: float = 10.0,
        second_opinion: bool = True,
        opinion: SecondOpinion | None = None,
        early_frames: int = 2,
        early_confidence: float = 0.9,
    ) -> None:
        if vote_frames < 1:
            raise ValueError(f"vote_frames must be >= 1, got {vote_frames}")
        if early_frames < 0:
            raise ValueError(f"early_frames must be >= 0 (0: off), got {early_frames}")
        if not 0.0 <= early_confidence <= 1.0:
            raise ValueError(f"early_confidence must be within 0..1, got {early_confidence}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be within 0..1, got {min_confidence}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.lane_id = lane_id
        self.grammar = grammar or cn_grammar()
        self.vote_frames = vote_frames
        self.min_confidence = min_confidence
        self.early_frames = early_frames
        self.early_confidence = early_confidence
        self.timeout_s = timeout_s
        self.tz = tz
        # the lane's clock (a bench clock in the demo); the wall clock by default
        self._now: Callable[[], datetime] = now or (lambda: datetime.now(tz))
        self.crops_dir = crops_dir
        self.keep_frames = keep_frames
        self._recogniser = recogniser
        self._grabber = grabber or FrameGrabber(url)
        self._queue: asyncio.Queue[PlateRead] = asyncio.Queue(maxsize=16)
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._counter = itertools.count(1)
        self.reads = 0
        self.timeouts = 0
        self.settled = 0  # reads given up before the timeout: the frames had no more to say
        self.early = 0  # reads accepted before vote_frames: sure, and the CRNN read the same
        # Continuous mode: with a gate, motion triggers reads; the same plate read again within
        # ``repeat_suppress_s`` (a car standing in view) is not published twice.
        self._gate = motion_gate
        self._repeat_suppress_s = repeat_suppress_s
        self._watch: asyncio.Task[None] | None = None
        self._last_published: tuple[str, float] | None = None
        self._logs = LogLimiter(log)
        # the plate CRNN's vote on each car's read (second_opinion.py); None: PP-OCR alone
        self._want_opinion = second_opinion or opinion is not None
        self._opinion: SecondOpinion | None = opinion
        self._reader = ThreadPoolExecutor(1, thread_name_prefix=f"lpr-{lane_id}")

    @property
    def health(self) -> Health:
        return self._grabber.health

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        limit_heap_growth()  # before the models and the first frame
        self._grabber.start()
        if self._recogniser is None:  # loading the model takes ~0.2 s: not on the event loop
            self._recogniser = await self._on_reader(Recogniser, self.grammar)
        if self._gate is not None:
            self._watch = self._loop.create_task(
                self._watch_motion(), name=f"motion:{self.lane_id}"
            )
        if self._want_opinion and self._opinion is None:
            try:
                self._opinion = await self._on_reader(SecondOpinion, self.grammar)
            except PlateRecError as exc:  # the lane reads on with PP-OCR alone
                log.warning("lane %s: no second opinion on plates: %s", self.lane_id, exc)

    async def stop(self) -> None:
        for task in (self._watch, self._task):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.to_thread(self._grabber.stop)
        self._reader.shutdown(wait=False)

    async def _on_reader(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` on the source's own reading thread. One thread for every model
        load, frame read and second opinion: their buffers stay in one malloc arena (the
        default executor's threads each grew their own, and kept it: RSS), and a read never
        waits for a slot behind other work of the executor."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, functools.partial(fn, *args))

    def _trim(self) -> None:
        """Give the memory the car's read freed back to the system (glibc keeps freed heap
        pages otherwise: frames, their copies, the models' scratch). After the read is
        published, on the reading thread; ~1 ms."""
        if _LIBC is not None:
            _LIBC.malloc_trim(0)

    def trigger(self) -> None:
        """Start a read unless one is already running (a second loop pulse is the same car)."""
        if self._loop is None:
            raise RuntimeError("OnBoxPlateSource.trigger() before start()")
        if self._task and not self._task.done():
            return
        self._task = self._loop.create_task(self._read_vehicle(), name=f"lpr:{self.lane_id}")

    async def get(self) -> PlateRead:
        return await self._queue.get()

    async def _watch_motion(self) -> None:
        assert self._gate is not None
        after = 0
        while True:
            try:
                frame = await asyncio.to_thread(self._grabber.wait_frame, after, 1.0)
                if frame is None:
                    continue
                after = frame.seq
                if self._gate.update(frame.image):
                    self.trigger()
                await asyncio.sleep(0.1)  # 10 checks a second is plenty for a car
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lane %s: motion watch failed", self.lane_id)
                await asyncio.sleep(1.0)

    async def _read_vehicle(self) -> None:
        busy.start_reading()  # the uplink yields meanwhile (edge.lpr.busy)
        try:
            await self._read_vehicle_inner()
        except Exception:  # a failed read must never take the source down
            log.exception("lane %s: plate read failed", self.lane_id)
        finally:
            busy.done_reading()
        with contextlib.suppress(Exception):
            await self._on_reader(self._trim)

    def _settled(self, history: list[Vote]) -> bool:
        """The votes so far (one per frame that read a plate) have stopped moving."""
        if len(history) < SETTLE * self.vote_frames:
            return False
        now, before = history[-1], history[-1 - self.vote_frames]
        return now.plate == before.plate and now.confidence <= before.confidence + SETTLE_GAIN

    def _may_end_early(self, result: Vote, frames: Sequence[FrameRead]) -> bool:
        """The vote is sure enough to ask the CRNN for an early accept: ``early_frames``
        frames (0: never) read the voted plate itself, fewer than ``vote_frames`` voted, a
        valid plate, at least ``early_confidence`` (never below ``min_confidence``). The
        CRNN's agreement alone does not rule out a sure misread: on the dev sets one frame
        of a Czech/Slovak plate read B as 8 at 0.99 and the CRNN read it the same
        (bench/lpr_unsure.py, ``early``), hence two frames by default."""
        return (
            self._opinion is not None
            and 0 < self.early_frames <= sum(f.plate == result.plate for f in frames)
            and result.frames < self.vote_frames
            and result.confidence >= max(self.early_confidence, self.min_confidence)
            and self.grammar.is_valid(result.plate)
        )

    def _fallback_next(self, ran: bool, cands: list[PlateCandidate]) -> bool:
        """May the car's next frame run the fallback text detector (``read_frame(fallback=)``)?
        Only when the cheap finder read no plate on this frame, and this frame either did not
        run the detector or the detector read a plate on it (the first frame: the cheap finder
        alone). The detector costs 0.1-0.8 s a frame on the box, and most frames it ran on
        were a plate the cheap finder read as a fragment there and whole on the next frame
        (bench/lane_e2e.py: the read's tail). The price: a plate only the detector finds (dim,
        unsaturated; 9-13 % of the dev sets' full frames) is read from the second frame on,
        each with the detector, one cheap frame later. A view with no plate in it yet (the
        car still coming) pays for the detector on every other frame, not each, so the frame
        that shows the plate is read sooner. Running it on the first frame too was measured
        and not kept: docs/lpr.md."""
        assert self._recogniser is not None
        if not self._recogniser.finder_missed(cands):
            return False
        return not ran or any(c.found_by == "text" and c.valid for c in cands)

    def _next_read(self, after: int, wait_s: float, fallback: bool = True
                   ) -> tuple[Frame | None, list[PlateCandidate], dict[str, Any]]:
        """One worker-thread hop: wait for a frame newer than ``after``, then recognise it
        as one frame of many (``fallback``: with the text detector if the cheap finder misses).
        Also what it cost (wall and this thread's CPU, ms) for the read's trace."""
        assert self._recogniser is not None
        t0, c0 = time.monotonic(), time.thread_time()
        frame = self._grabber.wait_frame(after, wait_s)
        t1 = time.monotonic()
        if frame is None:
            return None, [], {"wait_ms": _ms(t1 - t0)}
        try:
            image = frame.image  # an MJPEG frame is decoded here, on first use
        except FrameDecodeError as exc:
            log.warning("lane %s: %s", self.lane_id, exc)
            return frame, [], {"wait_ms": _ms(t1 - t0), "bad_jpeg": True}
        td = time.monotonic()
        cands = self._recogniser.read_frame(image, fallback=fallback, wide_first=True)
        t2 = time.monotonic()
        return frame, cands, {
            "fallback": fallback,
            "wait_ms": _ms(t1 - t0),
            "age_ms": _ms(t1 - frame.at_monotonic),  # the frame's age when it was taken
            "decode_ms": _ms(td - t1),
            "read_ms": _ms(t2 - t1),
            "cpu_ms": _ms(time.thread_time() - c0),
        }

    async def _read_vehicle_inner(self) -> None:
        assert self._recogniser is not None
        started = time.monotonic()
        trace: dict[str, Any] = {"trigger": round(time.time(), 4), "frames": []}
        deadline = started + self.timeout_s
        seen_at = self._now()
        # Only frames grabbed after the trigger: the newest one before it was taken before the
        # loop saw the car (in the lane bench most often the empty lane: a ~150 ms read, the
        # fallback detector twice, for nothing; on a lane, maybe the car before). Waiting for
        # the next costs at most one frame interval (67 ms at 15 fps).
        latest = self._grabber.latest()
        after = latest.seq if latest is not None else 0
        frames: list[FrameRead] = []
        history: list[Vote] = []  # the vote after each frame that read something
        best: tuple[PlateCandidate, np.ndarray] | None = None
        result: Vote | None = None
        ended = "timeout"
        fallback = False  # the first frame: the cheap finder alone (_fallback_next)
        while (left := deadline - time.monotonic()) > 0:
            frame, cands, cost = await self._on_reader(
                self._next_read, after, min(left, 0.5), fallback
            )
            if frame is None:
                continue
            after = frame.seq
            if not cost.get("bad_jpeg"):
                fallback = self._fallback_next(fallback, cands)
            top = cands[0] if cands and cands[0].plate else None
            trace["frames"].append({**cost, "at_ms": _ms(time.monotonic() - started),
                                    "plate": top.plate if top else None,
                                    "conf": round(top.confidence, 3) if top else None})
            if top is None:
                continue
            frames.append(FrameRead(top.plate, top.chars, top.valid, top.colour))
            if best is None or (top.valid, top.confidence) > (best[0].valid, best[0].confidence):
                best = (top, frame.image)
            result = vote(frames, self.grammar)
            if result is None:
                continue
            history.append(result)
            if self._may_end_early(result, frames):
                assert self._opinion is not None
                t = time.monotonic()
                judged = await self._on_reader(self._opinion.judge, result, best[0])
                trace["opinion_ms"] = _ms(time.monotonic() - t)
                trace["early_asked"] = trace.get("early_asked", 0) + 1
                if judged.agreed:  # every character read the same by both recognisers
                    result = judged.vote
                    ended = "early"
                    break
            if (
                result.frames >= self.vote_frames
                and result.confidence >= self.min_confidence
                and self.grammar.is_valid(result.plate)
            ):
                ended = "vote"
                break
            if self._settled(history):
                ended = "settled"
                break
        if ended == "timeout":
            self.timeouts += 1
        elif ended == "settled":
            self.settled += 1
        elif ended == "early":
            self.early += 1
        trace["ended"] = ended
        trace["vote_ms"] = _ms(time.monotonic() - started)
        if result is None or best is None:
            log.info("lane %s: no plate read within %.1f s", self.lane_id, self.timeout_s,
                     extra={"lpr_trace": trace})
            return
        if self._opinion is not None and ended != "early":  # ~1 ms: one small CRNN pass
            t = time.monotonic()
            result = await self._on_reader(self._opinion.apply, result, best[0])
            trace["opinion_ms"] = _ms(time.monotonic() - t)
        certain = ended == "early" or (
            result.frames >= self.vote_frames
            and result.confidence >= self.min_confidence
            and self.grammar.is_valid(result.plate)
        )
        try:  # the grammar's vote should only give plates, but it is checked where it enters
            accept_plate(result.plate, "lpr")
        except FieldError as exc:
            self._logs.log("bad-plate", logging.WARNING, "lane %s: read refused: %s",
                           self.lane_id, exc)
            return
        now = time.monotonic()
        if self._gate is not None and self._last_published is not None:
            last_plate, last_at = self._last_published
            if last_plate == result.plate and now - last_at < self._repeat_suppress_s:
                return  # the same car still in view: neither published nor kept
        event_id = f"lpr:{self.lane_id}:{seen_at:%Y%m%dT%H%M%S}-{next(self._counter)}"
        if self.crops_dir is not None:
            await asyncio.to_thread(self._save, event_id, seen_at, best[0].crop, best[1])
        self.reads += 1
        read = PlateRead(
            plate=result.plate,
            confidence=round(result.confidence, 4),
            at=seen_at,
            source=f"lpr:{self.lane_id}",
            event_id=event_id,
            uncertain=not certain,
            colour=result.colour,
            candidates=result.candidates,
        )
        self._last_published = (read.plate, time.monotonic())
        if self._queue.full():  # nobody is listening: keep the newest reads
            self._queue.get_nowait()
        self._queue.put_nowait(read)
        trace.update(published=round(time.time(), 4), plate=read.plate,
                     confidence=read.confidence, uncertain=read.uncertain,
                     ms=_ms(time.monotonic() - started))
        # one line a car: where its read's time went (bench/lane_e2e.py reads these)
        log.info("lane %s: read %s in %.0f ms, %d frame(s), %s", self.lane_id, read.plate,
                 trace["ms"], len(trace["frames"]), ended, extra={"lpr_trace": trace})

    def _save(self, event_id: str, at: datetime, crop: np.ndarray, frame: np.ndarray) -> None:
        assert self.crops_dir is not None
        day = self.crops_dir / f"{at:%Y-%m-%d}"
        try:
            day.mkdir(parents=True, exist_ok=True)
            name = event_id.replace(":", "_")
            _write_jpeg(day / f"{name}.crop.jpg", crop)
            if self.keep_frames:
                _write_jpeg(day / f"{name}.frame.jpg", frame)
        except OSError as exc:  # a full disk must not stop the lane
            log.warning("lane %s: cannot save crop: %s", self.lane_id, exc)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _write_jpeg(path: Path, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise OSError(f"JPEG encoding failed for {path.name}")
    buf.tofile(path)
