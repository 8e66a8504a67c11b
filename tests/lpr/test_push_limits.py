"""The push listener's limits (#12 item 6), small and fast: slow heads and bodies are cut,
idle connections make room for the camera, a full house answers 503, a 401 on a big post is
seen by the camera, and a real multipart post with a large picture (curl, Expect: 100-continue,
Digest) is read to its plate."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from parkedge_sim.camera_push import CameraCredentials, anpr_xml, multipart, post

from edge.lpr.camera_push import CameraPushSource
from edge.lpr.push_trust import Allowlist, PushAuth, parse_allow

TZ = ZoneInfo("Asia/Shanghai")
AT = datetime(2026, 11, 23, 20, 15, 3, tzinfo=TZ)
USER, PASSWORD = "parkedge", "s3cret-cam"
Body = Callable[[CameraPushSource], Awaitable[None]]


def run(body: Body, **kw: Any) -> None:
    async def main() -> None:
        source = CameraPushSource("127.0.0.1", 0, "E1", tz=TZ,
                                  allow=Allowlist(parse_allow(["127.0.0.1"])), **kw)
        await source.start()
        try:
            await body(source)
        finally:
            await source.stop()

    asyncio.run(main())


def url(source: CameraPushSource) -> str:
    return f"http://127.0.0.1:{source.port}/ISAPI/Event/notification/alertStream"


def test_a_slow_head_is_cut_at_the_header_timeout() -> None:
    async def body(source: CameraPushSource) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", source.port)
        writer.write(b"POST / HTTP/1.1\r\n")  # ... and then one byte now and then
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 2.0) == b""  # closed by the listener
        assert source.refused["timeout"] == 1 and source.connections == 0
        writer.close()

    run(body, header_timeout_s=0.3)


def test_a_slow_body_is_cut_at_the_body_timeout() -> None:
    async def body(source: CameraPushSource) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", source.port)
        writer.write(b"POST / HTTP/1.1\r\nContent-Type: application/xml\r\n"
                     b"Content-Length: 1000\r\n\r\n<Event")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 2.0)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert source.refused["timeout"] == 1 and source._queue.empty()
        writer.close()

    run(body, body_timeout_s=0.3)


def test_idle_connections_make_room_for_the_camera() -> None:
    async def body(source: CameraPushSource) -> None:
        idle = [await asyncio.open_connection("127.0.0.1", source.port) for _ in range(10)]
        await asyncio.sleep(0.1)
        assert source.connections <= 4
        assert await post(url(source), anpr_xml("沪A12345", AT), "application/xml") == 200
        assert (await asyncio.wait_for(source.get(), 1.0)).plate == "沪A12345"
        assert source.refused["evicted"] >= 7
        for _r, w in idle:
            w.close()

    run(body, max_connections=4)


def test_a_full_house_of_posts_in_progress_answers_503() -> None:
    async def body(source: CameraPushSource) -> None:
        busy = []
        for _ in range(2):  # two posts mid-body: not idle, not evicted
            _r, w = await asyncio.open_connection("127.0.0.1", source.port)
            w.write(b"POST / HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                    b"Content-Length: 100000\r\n\r\n--b\r\n")
            await w.drain()
            busy.append(w)
        await asyncio.sleep(0.1)
        assert await post(url(source), anpr_xml("沪A12345", AT), "application/xml") == 503
        assert source.refused["busy"] == 1
        for w in busy:
            w.close()
        await asyncio.sleep(0.1)
        assert await post(url(source), anpr_xml("沪A12345", AT), "application/xml") == 200

    run(body, max_connections=2)


def test_a_big_post_without_credentials_gets_its_401_then_passes_with_them() -> None:
    async def body(source: CameraPushSource) -> None:
        ctype, data = multipart(anpr_xml("粤B12345", AT), b"\xff\xd8" + b"\x00" * 900_000)
        assert await post(url(source), data, ctype) == 401  # seen, not a reset
        creds = CameraCredentials(USER, PASSWORD, "digest")
        assert await post(url(source), data, ctype, credentials=creds) == 200
        assert (await asyncio.wait_for(source.get(), 1.0)).plate == "粤B12345"

    run(body, auth=PushAuth("digest", USER, PASSWORD))


def test_a_body_over_the_cap_is_refused_unread() -> None:
    async def body(source: CameraPushSource) -> None:
        ctype, data = multipart(anpr_xml("粤B12345", AT), b"\x00" * 300_000)
        assert await post(url(source), data, ctype) == 413
        assert source.refused["too_large"] == 1 and source._queue.empty()

    run(body, max_body_bytes=256 * 1024)


CURL = shutil.which("curl")


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_multipart_with_a_large_picture_and_digest(tmp_path: Path) -> None:
    xml_file = tmp_path / "anpr.xml"
    xml_file.write_bytes(anpr_xml("浙A8B8C8", AT))
    picture = tmp_path / "licensePlatePicture.jpg"
    picture.write_bytes(b"\xff\xd8" + b"\x10" * 1_500_000 + b"\xff\xd9")

    async def body(source: CameraPushSource) -> None:
        assert CURL is not None
        done = await asyncio.to_thread(
            subprocess.run,
            [CURL, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
             "--digest", "-u", f"{USER}:{PASSWORD}",
             "-F", f"anpr.xml=@{xml_file};type=application/xml",
             "-F", f"licensePlatePicture.jpg=@{picture};type=image/jpeg", url(source)],
            capture_output=True, check=False)
        assert done.stdout == b"200", done
        assert (await asyncio.wait_for(source.get(), 1.0)).plate == "浙A8B8C8"

    run(body, auth=PushAuth("digest", USER, PASSWORD))
