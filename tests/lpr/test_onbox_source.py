"""OnBoxPlateSource end to end: simulated MJPEG camera → grabber → recogniser → vote → PlateRead."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from parkedge_sim.mjpeg_stream import MjpegCamera
from parkedge_sim.render import Scene

from edge.barrier.interfaces import Health
from edge.lpr.grammar import cn_grammar
from edge.lpr.onbox_source import SETTLE, SETTLE_GAIN, OnBoxPlateSource, limit_heap_growth
from edge.lpr.pipeline import Recogniser
from edge.lpr.plate_rec import PlateText
from edge.lpr.second_opinion import SecondOpinion
from edge.lpr.source import PlateRead, PlateSource
from edge.lpr.voting import FrameRead, Vote

TZ = ZoneInfo("Asia/Shanghai")
SCENE = Scene(width=1280, height=720, plate_width=260)


@pytest.fixture(scope="module")
def recogniser() -> Recogniser:
    return Recogniser(cn_grammar())


def make(cam: MjpegCamera, rec: Recogniser, tmp: Path | None, **kw: object) -> OnBoxPlateSource:
    args: dict[str, object] = {"vote_frames": 3, "min_confidence": 0.6, "timeout_s": 6.0}
    args.update(kw)
    return OnBoxPlateSource(
        cam.url,
        "E1",
        grammar=cn_grammar(),
        tz=TZ,
        crops_dir=tmp,
        recogniser=rec,
        **args,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def opinion() -> SecondOpinion:
    return SecondOpinion(cn_grammar())


class OtherCrnn:
    """A plate CRNN that reads every crop as one other plate, surely."""

    def __init__(self, text: str) -> None:
        self.text = text

    def read(self, crops: list[object], grammar: object = None) -> list[PlateText]:
        return [PlateText(self.text, (0.99,) * len(self.text)) for _ in crops]


def read_car(rec: Recogniser, plate: str, caplog: pytest.LogCaptureFixture, **kw: object
             ) -> tuple[OnBoxPlateSource, PlateRead, dict[str, object]]:
    """One car with ``plate`` read by a source built with ``kw`` on the simulator's camera:
    the source, its published read and its ``lpr_trace``."""

    async def run(src: OnBoxPlateSource, cam: MjpegCamera) -> PlateRead:
        cam.set_car(plate)
        await src.start()
        try:
            src.trigger()
            return await asyncio.wait_for(src.get(), 15)
        finally:
            await src.stop()

    with MjpegCamera(fps=15, scene=SCENE) as cam, \
            caplog.at_level(logging.INFO, logger="edge.lpr.onbox_source"):
        src = make(cam, rec, None, **kw)
        read = asyncio.run(run(src, cam))
    traces = [r.lpr_trace for r in caplog.records if hasattr(r, "lpr_trace")]
    assert len(traces) == 1
    return src, read, traces[0]


def plate_frames(trace: dict[str, object]) -> int:
    frames = trace["frames"]
    assert isinstance(frames, list)
    return sum(1 for f in frames if f["plate"])


def test_a_sure_read_the_crnn_agrees_with_is_accepted_early(
    recogniser: Recogniser, opinion: SecondOpinion, caplog: pytest.LogCaptureFixture
) -> None:
    """Two frames read the plate at >= 0.9 and the real CRNN reads it too: a certain read
    after 2 frames, not the 5 the vote asks for."""
    src, read, trace = read_car(recogniser, "粤BK7M36", caplog, vote_frames=5, opinion=opinion)
    assert read.plate == "粤BK7M36" and not read.uncertain
    assert trace["ended"] == "early" and trace["early_asked"] == 1
    assert plate_frames(trace) == 2
    assert (src.early, src.settled, src.timeouts) == (1, 0, 0)


def test_one_frame_early_when_a_site_asks_for_it(
    recogniser: Recogniser, opinion: SecondOpinion, caplog: pytest.LogCaptureFixture
) -> None:
    _src, read, trace = read_car(recogniser, "沪A12345", caplog, vote_frames=5,
                                 opinion=opinion, early_frames=1)
    assert not read.uncertain and trace["ended"] == "early"
    assert plate_frames(trace) == 1


def test_a_crnn_that_reads_another_plate_keeps_the_vote_reading(
    recogniser: Recogniser, caplog: pytest.LogCaptureFixture
) -> None:
    """The CRNN reads one character otherwise: no early accept, vote_frames frames read."""
    other = SecondOpinion(cn_grammar(), recogniser=OtherCrnn("粤BK7M38"))
    src, read, trace = read_car(recogniser, "粤BK7M36", caplog, vote_frames=4, opinion=other)
    assert read.plate == "粤BK7M36"
    assert trace["ended"] == "vote" and src.early == 0
    assert plate_frames(trace) == 4
    assert trace["early_asked"] == 2  # at the 2nd and the 3rd frame; the 4th: the vote


def test_early_accept_off_reads_vote_frames(
    recogniser: Recogniser, opinion: SecondOpinion, caplog: pytest.LogCaptureFixture
) -> None:
    _src, read, trace = read_car(recogniser, "粤BK7M36", caplog, vote_frames=3,
                                 opinion=opinion, early_frames=0)
    assert read.plate == "粤BK7M36" and not read.uncertain
    assert trace["ended"] == "vote" and "early_asked" not in trace
    assert plate_frames(trace) == 3


def _frame(plate: str) -> FrameRead:
    return FrameRead(plate, (), True)


def test_may_end_early_only_when_every_condition_holds(opinion: SecondOpinion) -> None:
    src = OnBoxPlateSource("http://127.0.0.1:9/x", "E1", grammar=cn_grammar(), tz=TZ,
                           vote_frames=3, min_confidence=0.8, early_frames=2,
                           early_confidence=0.95, opinion=opinion)
    two = [_frame("沪A12345")] * 2
    assert src._may_end_early(_vote("沪A12345", 0.96, 2), two)
    assert not src._may_end_early(_vote("沪A12345", 0.94, 2), two)  # below early_confidence
    assert not src._may_end_early(_vote("沪A12345", 0.99, 1), two[:1])  # one frame of two
    # two frames voted, but they read different plates
    assert not src._may_end_early(_vote("沪A12345", 0.96, 2), [two[0], _frame("沪A12346")])
    assert not src._may_end_early(_vote("沪A1234", 0.99, 2), [_frame("沪A1234")] * 2)  # invalid
    assert not src._may_end_early(_vote("沪A12345", 0.99, 3), two * 2)  # the vote decides now
    src.min_confidence = 0.97  # early_confidence is never below min_confidence
    assert not src._may_end_early(_vote("沪A12345", 0.96, 2), two)
    off = OnBoxPlateSource("http://127.0.0.1:9/x", "E1", grammar=cn_grammar(), tz=TZ,
                           vote_frames=3, early_frames=0, opinion=opinion)
    assert not off._may_end_early(_vote("沪A12345", 1.0, 2), two)
    alone = OnBoxPlateSource("http://127.0.0.1:9/x", "E1", grammar=cn_grammar(), tz=TZ,
                             vote_frames=3, second_opinion=False)  # no CRNN: never early
    assert not alone._may_end_early(_vote("沪A12345", 1.0, 2), two)


def test_is_a_plate_source(recogniser: Recogniser) -> None:
    with MjpegCamera(scene=SCENE) as cam:
        assert isinstance(make(cam, recogniser, None), PlateSource)


def test_reads_the_car_in_view_and_keeps_the_crop(recogniser: Recogniser, tmp_path: Path) -> None:
    async def run() -> None:
        with MjpegCamera(fps=15, scene=SCENE) as cam:
            cam.set_car("粤BK7M36")
            src = make(cam, recogniser, tmp_path)
            await src.start()
            try:
                src.trigger()
                src.trigger()  # a second pulse while reading is the same vehicle
                read = await asyncio.wait_for(src.get(), 15)
                assert read.plate == "粤BK7M36"
                assert not read.uncertain
                assert read.confidence >= 0.6
                assert read.source == "lpr:E1" and read.event_id.startswith("lpr:E1:")
                assert read.at.tzinfo is not None
                assert read.colour == "blue"
                assert src.health is Health.OK
                crops = list(tmp_path.rglob("*.crop.jpg"))
                assert len(crops) == 1
                assert not list(tmp_path.rglob("*.frame.jpg"))  # full frames off by default
                assert src._queue.empty()
            finally:
                await src.stop()

    asyncio.run(run())


def test_unreachable_confidence_gives_an_uncertain_read_once_the_frames_settle(
    recogniser: Recogniser,
) -> None:
    """A car standing in view sends the same picture: once SETTLE x vote_frames frames agree
    and the vote stops rising, the read is published uncertain, long before the timeout (20 s
    here: the old rule waited it out, and this ``wait_for`` would fail)."""

    async def run() -> None:
        with MjpegCamera(fps=15, scene=SCENE) as cam:
            cam.set_car("沪A12345")
            src = make(cam, recogniser, None, min_confidence=1.0, timeout_s=20.0)
            await src.start()
            try:
                src.trigger()
                read = await asyncio.wait_for(src.get(), 10)
                assert read.uncertain
                assert read.plate == "沪A12345"
                assert (src.settled, src.timeouts) == (1, 0)
            finally:
                await src.stop()

    asyncio.run(run())


def _vote(plate: str, confidence: float, frames: int) -> Vote:
    return Vote(plate, confidence, frames, "blue", ())


def test_settled_only_when_the_votes_stop_moving() -> None:
    src = OnBoxPlateSource("http://127.0.0.1:9/x", "E1", grammar=cn_grammar(), tz=TZ,
                           vote_frames=3)
    flat = [_vote("沪A12345", 0.7, i + 1) for i in range(SETTLE * 3)]
    assert src._settled(flat)
    assert not src._settled(flat[:-1])  # too few frames yet
    rising = [_vote("沪A12345", 0.5 + 0.03 * i, i + 1) for i in range(SETTLE * 3)]
    assert not src._settled(rising)  # a car coming closer reads surer: keep reading
    changing = [*flat[:-1], _vote("沪A12346", 0.7, 6)]
    assert not src._settled(changing)  # the plate itself still moves
    slight = [*flat[:-1], _vote("沪A12345", 0.7 + SETTLE_GAIN / 2, 6)]
    assert src._settled(slight)


def test_empty_lane_publishes_nothing(recogniser: Recogniser) -> None:
    async def run() -> None:
        with MjpegCamera(fps=15, scene=SCENE) as cam:
            src = make(cam, recogniser, None, timeout_s=1.0)
            await src.start()
            try:
                src.trigger()
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(src.get(), 2.5)
            finally:
                await src.stop()

    asyncio.run(run())


def test_bad_settings_are_named(recogniser: Recogniser) -> None:
    with MjpegCamera(scene=SCENE) as cam:
        with pytest.raises(ValueError, match="vote_frames"):
            make(cam, recogniser, None, vote_frames=0)
        with pytest.raises(ValueError, match="min_confidence"):
            make(cam, recogniser, None, min_confidence=2.0)
        with pytest.raises(ValueError, match="early_frames"):
            make(cam, recogniser, None, early_frames=-1)
        with pytest.raises(ValueError, match="early_confidence"):
            make(cam, recogniser, None, early_confidence=1.2)
        with pytest.raises(RuntimeError, match="before start"):
            make(cam, recogniser, None).trigger()


def test_motion_gate_on_rendered_frames() -> None:
    from parkedge_sim.render import render_frame

    from edge.lpr.motion import MotionGate

    gate = MotionGate()
    small = Scene(width=640, height=360, plate_width=120, seed=1)
    empty = render_frame(None, small)
    assert gate.update(empty) is False  # first frame: nothing to compare
    noisy = render_frame(None, Scene(width=640, height=360, plate_width=120, seed=2))
    assert gate.update(noisy) is False  # sensor noise alone is no motion
    assert gate.update(render_frame("沪A12345", small)) is True  # a car arrives
    with pytest.raises(ValueError, match="min_changed"):
        MotionGate(min_changed=0)


def test_continuous_mode_reads_without_a_trigger_once_per_car(recogniser: Recogniser) -> None:
    from edge.lpr.motion import MotionGate

    async def run() -> None:
        with MjpegCamera(fps=15, scene=SCENE) as cam:
            src = OnBoxPlateSource(
                cam.url,
                "E1",
                grammar=cn_grammar(),
                tz=TZ,
                crops_dir=None,
                recogniser=recogniser,
                vote_frames=2,
                min_confidence=0.6,
                timeout_s=4.0,
                motion_gate=MotionGate(),
            )
            await src.start()
            try:
                await asyncio.sleep(0.5)  # the gate sees the empty lane first
                cam.set_car("京N7K2P9")
                read = await asyncio.wait_for(src.get(), 15)
                assert read.plate == "京N7K2P9" and not read.uncertain
                cam.set_car("京N7K2P9")  # same car, new frame noise: motion, but no re-publish
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(src.get(), 2.0)
            finally:
                await src.stop()

    asyncio.run(run())


def test_big_allocations_are_given_back_on_glibc() -> None:
    """The lane daemon's reads allocate in blocks of MBs (frames, the detector's maps): with
    glibc's threshold fixed they are mapped apart and unmapped when freed (the daemon's RSS
    is measured by bench/lane_e2e.py, daemon_rss_mb)."""
    import ctypes.util
    import platform

    if platform.system() != "Linux" or "glibc" not in " ".join(platform.libc_ver()):
        pytest.skip("glibc only")
    assert ctypes.util.find_library("c")
    assert limit_heap_growth()
