"""Camera push listener against the camera simulator: real HTTP posts carrying real XML."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from parkedge_sim.camera_push import CameraPushSim, anpr_xml, post

from edge.barrier.interfaces import Health
from edge.lpr.camera_push import (
    BadPost,
    CameraPushSource,
    HttpRequest,
    normalise_plate,
    parse_alert,
)
from edge.lpr.push_trust import Allowlist, parse_allow

TZ = ZoneInfo("Asia/Shanghai")
LOOPBACK_CAMERA = Allowlist(parse_allow(["127.0.0.1"]))
AT = datetime(2026, 11, 23, 20, 15, 3, tzinfo=TZ)
Body = Callable[[CameraPushSource, CameraPushSim], Awaitable[None]]


def run(body: Body, **kw: Any) -> None:
    async def main() -> None:
        kw.setdefault("allow", LOOPBACK_CAMERA)
        source = CameraPushSource("127.0.0.1", 0, "E1", min_confidence=0.8, tz=TZ, **kw)
        await source.start()
        cam = CameraPushSim(f"http://127.0.0.1:{source.port}/ISAPI/Event/notification/alertStream")
        try:
            await body(source, cam)
        finally:
            await source.stop()

    asyncio.run(main())


@pytest.mark.parametrize("as_multipart", [True, False])
def test_repeats_fold_into_one_read(as_multipart: bool) -> None:
    async def body(source: CameraPushSource, cam: CameraPushSim) -> None:
        statuses = await cam.push_plate("沪A·12345", AT, repeats=3, as_multipart=as_multipart)
        assert statuses == [200, 200, 200]
        read = await asyncio.wait_for(source.get(), 1.0)
        assert read.plate == "沪A12345"
        assert read.at == AT and read.at.tzinfo is not None
        assert read.confidence == pytest.approx(0.95)
        assert read.colour == "blue"
        assert read.source == "camera-push:E1"
        assert read.event_id.startswith("E1:")
        assert not read.uncertain
        assert source.duplicates_total == 2
        assert source._queue.empty()
        # a second vehicle with the same plate later is a new event with a new id
        await cam.push_plate("沪A12345", AT.replace(minute=40), repeats=1)
        again = await asyncio.wait_for(source.get(), 1.0)
        assert again.event_id != read.event_id

    run(body)


def test_same_alarm_without_uuid_has_a_stable_event_id() -> None:
    async def body(source: CameraPushSource, cam: CameraPushSim) -> None:
        url = cam.target_url
        for count in (1, 2):
            xml = anpr_xml("粤B88888", AT, post_count=count, confidence=70)
            assert await post(url, xml, "application/xml") == 200
        read = await asyncio.wait_for(source.get(), 1.0)
        assert read.uncertain  # 0.70 under the lane's 0.8 threshold
        assert source.events_total == 1 and source.duplicates_total == 1
        stable = CameraPushSource("127.0.0.1", 0, "E1", tz=TZ)
        req_xml = anpr_xml("粤B88888", AT, post_count=1, confidence=70)
        stable.handle(HttpRequest("POST", "/", {"content-type": "application/xml"}, req_xml))
        assert stable._queue.get_nowait().event_id == read.event_id

    run(body)


@pytest.mark.parametrize(
    "bad",
    [
        b"<EventNotificationAlert><eventType>ANPR",  # truncated
        b"not xml at all",
        b"<Other/>",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><EventNotificationAlert/>',
        b"<EventNotificationAlert><eventType>ANPR</eventType><ANPR><licensePlate>A1</licensePlate>"
        b"<confidenceLevel>high</confidenceLevel></ANPR></EventNotificationAlert>",
        b"<EventNotificationAlert><eventType>ANPR</eventType><dateTime>yesterday</dateTime>"
        b"<ANPR><licensePlate>A1</licensePlate></ANPR></EventNotificationAlert>",
    ],
)
def test_malformed_posts_get_400_and_listener_keeps_serving(
    bad: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(source: CameraPushSource, cam: CameraPushSim) -> None:
        caplog.set_level(logging.DEBUG, logger="edge.lpr.camera_push")
        assert await cam.post_raw(bad) == 400
        assert await cam.post_raw(bad) == 400
        assert source.malformed_total == 2
        errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(errors) == 1
        assert await cam.push_plate("京C11111", AT) == [200]
        assert (await asyncio.wait_for(source.get(), 1.0)).plate == "京C11111"

    run(body)


def test_oversized_and_garbage_requests_are_refused() -> None:
    async def body(source: CameraPushSource, cam: CameraPushSim) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", source.port)
        writer.write(b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")
        await writer.drain()
        assert (await reader.readline()).split()[1] == b"413"
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", source.port)
        writer.write(b"\x00\xff garbage\r\n\r\n")
        await writer.drain()
        assert (await reader.readline()).split()[1] == b"400"
        writer.close()
        assert await cam.push_plate("京C22222", AT) == [200]
        assert source.malformed_total == 2

    run(body)


def test_heartbeats_keep_health_and_silence_means_down() -> None:
    async def body(source: CameraPushSource, cam: CameraPushSim) -> None:
        assert await cam.heartbeat(AT) == 200
        assert source.heartbeats_total == 1
        assert source.health is Health.OK
        cam.set_fault("camera_down")
        assert await cam.push_plate("京C33333", AT) == []
        await asyncio.sleep(0.35)
        assert source.health is Health.DOWN
        cam.set_fault("camera_down", False)
        assert await cam.heartbeat(AT) == 200
        assert source.health is Health.OK
        assert source._queue.empty()

    run(body, silence_down_s=0.3)


def test_keep_alive_connection_serves_several_posts() -> None:
    async def body(source: CameraPushSource, cam: CameraPushSim) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", source.port)
        for i in range(3):
            xml = anpr_xml(f"苏E0000{i}", AT, confidence=90)
            writer.write(
                b"POST /a HTTP/1.1\r\nContent-Type: application/xml\r\n"
                + f"Content-Length: {len(xml)}\r\n\r\n".encode()
                + xml
            )
            await writer.drain()
            assert (await reader.readline()).split()[1] == b"200"
            await reader.readuntil(b"\r\n\r\nOK")
        writer.close()
        plates = [(await source.get()).plate for _ in range(3)]
        assert plates == ["苏E00000", "苏E00001", "苏E00002"]

    run(body)


def test_pure_parser_naive_time_takes_lane_zone_and_no_plate_is_empty() -> None:
    xml = (
        "<EventNotificationAlert><eventType>ANPR</eventType>"
        "<dateTime>2026-11-23T08:00:00</dateTime><activePostCount>1</activePostCount>"
        "<ANPR><licensePlate>无车牌</licensePlate><confidenceLevel>0</confidenceLevel>"
        "</ANPR></EventNotificationAlert>".encode()
    )
    event = parse_alert(xml, TZ)
    assert event.kind == "anpr" and event.plate == ""
    assert event.at == datetime(2026, 11, 23, 8, tzinfo=TZ)
    assert normalise_plate(" 沪a-123 45 ") == "沪A12345"
    with pytest.raises(BadPost, match="confidenceLevel"):
        parse_alert(xml.replace(b">0</conf", b">140</conf"), TZ)
