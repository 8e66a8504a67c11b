"""A simulated lane with a plain IP camera: the car is in the MJPEG stream's view from its arrival
to its leaving, frames vary as a real sensor's do, and ``camera_down`` cuts the stream."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from datetime import datetime
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest
from parkedge_sim.lane_sim import LaneSim
from parkedge_sim.mjpeg_stream import MjpegCamera
from parkedge_sim.render import Scene

from edge.lpr.grammar import cn_grammar
from edge.lpr.pipeline import Recogniser

TZ = ZoneInfo("Asia/Shanghai")
SMALL = Scene(width=640, height=360, plate_width=200, noise=3.0)


def snapshot(url: str) -> np.ndarray:
    with urllib.request.urlopen(url.replace("stream.mjpg", "snapshot.jpg"), timeout=5) as r:
        data = r.read()
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def test_the_car_is_in_view_while_at_the_lane_and_read_from_the_stream() -> None:
    recogniser = Recogniser(cn_grammar())

    async def go() -> None:
        sim = LaneSim("entry", video=True, video_scene=SMALL, rise_s=0.05, fall_s=0.05,
                      hold_s=0.05, tz=TZ, display=False)
        info = await sim.start()
        try:
            url = info["video_url"]
            assert url.startswith("http://127.0.0.1:")
            empty = snapshot(url)
            assert recogniser.read_frame(empty) == [] or not recogniser.read_frame(empty)[0].valid
            car = asyncio.create_task(sim.vehicle_arrives(
                "沪A12345", datetime(2026, 11, 17, 10, 5, tzinfo=TZ), open_timeout_s=3.0))
            seen: list[str] = []
            for _ in range(100):  # while the car waits at the (never opened) barrier
                await asyncio.sleep(0.05)
                if sim.video is not None and sim.video.plate == "沪A12345":
                    frame = await asyncio.to_thread(snapshot, url)
                    cands = await asyncio.to_thread(recogniser.read_frame, frame)
                    seen = [c.plate for c in cands]
                    break
            assert "沪A12345" in seen
            out = await car
            assert out.result == "blocked"  # nobody opened: the car gave up and left
            assert sim.video is not None and sim.video.plate is None  # out of view again
        finally:
            await sim.stop()

    asyncio.run(go())


def test_the_stream_cycles_through_differing_frames_of_one_car() -> None:
    with MjpegCamera(fps=30, scene=SMALL, variants=3) as cam:
        cam.set_car("苏E9B7K2")
        cap = cv2.VideoCapture(cam.url)
        try:
            frames = []
            for _ in range(6):
                ok, img = cap.read()
                assert ok
                frames.append(img)
        finally:
            cap.release()
    distinct = {f.tobytes() for f in frames}
    assert 2 <= len(distinct) <= 3  # three renderings, cycled


def test_camera_down_refuses_the_stream_until_it_is_back() -> None:
    async def go() -> None:
        sim = LaneSim("exit", video=True, video_scene=SMALL, display=False)
        info = await sim.start()
        try:
            sim.set_fault("camera_down", True)
            assert "camera_down" in sim.active_faults()
            with pytest.raises(urllib.error.HTTPError) as err:
                await asyncio.to_thread(snapshot, info["video_url"])
            assert err.value.code == 503
            sim.set_fault("camera_down", False)
            assert "camera_down" not in sim.active_faults()
            assert (await asyncio.to_thread(snapshot, info["video_url"])).shape == (360, 640, 3)
        finally:
            await sim.stop()

    asyncio.run(go())
