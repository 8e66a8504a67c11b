"""Who may push a plate (#12 items 1, 2, 11): address allowlist, Basic/Digest credentials (real
curl as an independent client), plate limits and defusedxml, all over real loopback sockets.

127.0.0.2 plays "another host on the car-park LAN": every 127/8 address is loopback on Linux,
so a socket bound to it reaches the listener on 127.0.0.1 with a different peer address.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from parkedge_sim.camera_push import CameraCredentials, CameraPushSim, anpr_xml, post

from edge import metrics
from edge.lpr.camera_push import BadPost, CameraPushSource, parse_alert
from edge.lpr.push_trust import Allowlist, PushAuth, parse_allow

TZ = ZoneInfo("Asia/Shanghai")
AT = datetime(2026, 11, 23, 20, 15, 3, tzinfo=TZ)
CAMERA = "127.0.0.1"
ROGUE = "127.0.0.2"
USER, PASSWORD = "parkedge", "s3cret-cam"
Body = Callable[[CameraPushSource], Awaitable[None]]


def run(body: Body, allow: list[str] | None = None, **kw: Any) -> None:
    async def main() -> None:
        source = CameraPushSource(
            "127.0.0.1", 0, "E1", tz=TZ,
            allow=Allowlist(parse_allow([CAMERA] if allow is None else allow)), **kw)
        await source.start()
        try:
            await body(source)
        finally:
            await source.stop()

    asyncio.run(main())


def url(source: CameraPushSource) -> str:
    return f"http://127.0.0.1:{source.port}/ISAPI/Event/notification/alertStream"


def refused(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        "parkedge_camera_push_refused_total", {"reason": reason}) or 0.0


def bad_input(source: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        "parkedge_bad_input_total", {"source": source}) or 0.0


# -- address allowlist ------------------------------------------------------------------------
def test_push_from_another_address_is_dropped_unread_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body(source: CameraPushSource) -> None:
        caplog.set_level(logging.INFO, logger="edge.lpr.camera_push")
        rogue = CameraPushSim(url(source), source_address=ROGUE)
        before = refused("source")
        for _ in range(5):
            assert await rogue.push_plate("沪A12345", AT) == [0]  # connection dropped
        assert rogue.failed == 5 and source._queue.empty()
        assert refused("source") - before == 5
        assert source.refused_sources[ROGUE] == 5
        lines = [r for r in caplog.records if ROGUE in r.getMessage()]
        assert len(lines) == 1 and "not an allowed camera address" in lines[0].getMessage()
        # the camera itself still gets through
        camera = CameraPushSim(url(source), source_address=CAMERA)
        assert await camera.push_plate("沪A12345", AT) == [200]
        assert (await asyncio.wait_for(source.get(), 1.0)).plate == "沪A12345"

    run(body)


def test_a_network_in_allow_from_admits_its_hosts() -> None:
    async def body(source: CameraPushSource) -> None:
        cam2 = CameraPushSim(url(source), source_address=ROGUE)
        assert await cam2.push_plate("京C11111", AT) == [200]
        assert (await asyncio.wait_for(source.get(), 1.0)).plate == "京C11111"

    run(body, allow=["127.0.0.0/30"])


def test_empty_allowlist_refuses_everyone() -> None:
    async def body(source: CameraPushSource) -> None:
        cam = CameraPushSim(url(source))
        assert await cam.push_plate("京C11111", AT) == [0]
        assert source._queue.empty() and source.refused["source"] == 1

    run(body, allow=[])


def test_allowlist_matches_ipv4_mapped_peers_and_refuses_names() -> None:
    allow = Allowlist(parse_allow(["192.168.10.64"]))
    assert allow.allows("192.168.10.64") and allow.allows("::ffff:192.168.10.64")
    assert not allow.allows("192.168.10.65") and not allow.allows("camera.local")
    with pytest.raises(ValueError, match="not an IP address"):
        parse_allow(["camera.local"])


# -- credentials ------------------------------------------------------------------------------
CURL = shutil.which("curl")


async def curl(source: CameraPushSource, *args: str) -> int:
    """POST an ANPR document with curl (an HTTP client written by others); the final status."""
    assert CURL is not None
    xml = anpr_xml("苏E12345", AT)
    done = await asyncio.to_thread(
        subprocess.run,
        [CURL, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
         "--interface", CAMERA, "-H", "Content-Type: application/xml",
         "--data-binary", "@-", *args, url(source)],
        input=xml, capture_output=True, check=False)
    return int(done.stdout or b"0")


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
@pytest.mark.parametrize("scheme", ["basic", "digest"])
def test_curl_with_the_cameras_credentials_is_accepted_and_without_refused(scheme: str) -> None:
    async def body(source: CameraPushSource) -> None:
        flag = f"--{scheme}"
        assert await curl(source) == 401  # no credentials
        assert await curl(source, flag, "-u", f"{USER}:wrong") == 401
        assert await curl(source, flag, "-u", f"intruder:{PASSWORD}") == 401
        assert source._queue.empty()
        assert source.refused["auth"] == 2  # the two wrong ones; a bare first leg is not
        assert await curl(source, flag, "-u", f"{USER}:{PASSWORD}") == 200
        read = await asyncio.wait_for(source.get(), 1.0)
        assert read.plate == "苏E12345"

    run(body, auth=PushAuth(scheme, USER, PASSWORD))  # type: ignore[arg-type]


@pytest.mark.parametrize("scheme", ["basic", "digest"])
def test_simulated_camera_authenticates_like_a_camera(scheme: str) -> None:
    async def body(source: CameraPushSource) -> None:
        good = CameraPushSim(url(source), credentials=CameraCredentials(USER, PASSWORD, scheme))
        bad = CameraPushSim(url(source), credentials=CameraCredentials(USER, "nope", scheme))
        anonymous = CameraPushSim(url(source))
        assert await anonymous.push_plate("京A00001", AT) == [401]
        assert await bad.push_plate("京A00002", AT) == [401]
        assert await good.push_plate("京A00003", AT, repeats=2) == [200, 200]
        assert (await asyncio.wait_for(source.get(), 1.0)).plate == "京A00003"
        assert source._queue.empty()

    run(body, auth=PushAuth(scheme, USER, PASSWORD))  # type: ignore[arg-type]


def test_a_sniffeddigest_authorization_cannot_be_replayed() -> None:
    async def body(source: CameraPushSource) -> None:
        target = url(source)
        path = "/ISAPI/Event/notification/alertStream"
        xml = anpr_xml("京B12345", AT)
        reader, writer = await asyncio.open_connection("127.0.0.1", source.port)

        async def send(auth: str | None, payload: bytes) -> tuple[int, str]:
            line = f"Authorization: {auth}\r\n" if auth else ""
            writer.write(f"POST {path} HTTP/1.1\r\nContent-Type: application/xml\r\n"
                         f"Content-Length: {len(payload)}\r\n{line}\r\n".encode() + payload)
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            length = int(head.lower().split("content-length:")[1].split("\r\n")[0])
            await reader.readexactly(length)
            return int(head.split()[1]), head

        status, head = await send(None, xml)
        assert status == 401
        challenge = next(line.split(": ", 1)[1] for line in head.split("\r\n")
                         if line.lower().startswith("www-authenticate: digest"))
        from parkedge_sim.camera_push import digest_authorization

        header = digest_authorization(CameraCredentials(USER, PASSWORD), "POST", path, challenge)
        assert (await send(header, xml))[0] == 200
        forged = anpr_xml("京Z99999", AT)
        assert (await send(header, forged))[0] == 401  # same nonce count again: a replay
        writer.close()
        assert (await asyncio.wait_for(source.get(), 1.0)).plate == "京B12345"
        assert source._queue.empty() and source.refused["auth"] == 1
        assert target  # the URL the camera uses carries no credentials

    run(body, auth=PushAuth("digest", USER, PASSWORD))


def test_expired_nonce_is_stale_and_foreign_nonce_refused() -> None:
    now = [1000.0]
    auth = PushAuth("digest", USER, PASSWORD, nonce_ttl_s=60, clock=lambda: now[0])
    from parkedge_sim.camera_push import digest_authorization

    challenge = auth.challenge()[1]  # the MD5 one
    header = digest_authorization(CameraCredentials(USER, PASSWORD), "POST", "/a", challenge)
    now[0] += 61
    result = auth.check("POST", "/a", header)
    assert not result.ok and result.stale
    other = PushAuth("digest", USER, PASSWORD)  # another process: another nonce key
    result = other.check("POST", "/a", header)
    assert not result.ok and "not issued here" in result.reason
    assert not auth.check("POST", "/b", header).ok  # the uri is part of what is signed


# -- what the camera says: plates and XML ---------------------------------------------------
@pytest.mark.parametrize(
    ("plate", "why"),
    [("沪A" + "1" * 298, "characters"), ("沪A1\x7f2345", "U+007F"), ("沪A1\x852345", "U+0085"),
     ("沪A1&#10;2345", "U+000A"), ("沪A1\u200b2345", "U+200B")],
)
def test_a_plate_that_is_not_a_plate_is_refused_at_the_listener(plate: str, why: str) -> None:
    async def body(source: CameraPushSource) -> None:
        before = bad_input("camera_push")
        xml = anpr_xml("PLACEHOLDER", AT).replace(b"PLACEHOLDER", plate.encode())
        reader, writer = await asyncio.open_connection("127.0.0.1", source.port)
        writer.write(b"POST / HTTP/1.1\r\nContent-Type: application/xml\r\n"
                     + f"Content-Length: {len(xml)}\r\nConnection: close\r\n\r\n".encode() + xml)
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert why.encode() in answer
        assert source._queue.empty()
        assert bad_input("camera_push") - before == 1
        # the lane goes on: the next good post is read
        assert await post(url(source), anpr_xml("沪A12345", AT), "application/xml") == 200
        assert (await asyncio.wait_for(source.get(), 1.0)).plate == "沪A12345"

    run(body)


BILLION_LAUGHS = (
    '<?xml version="1.0" encoding="UTF-16"?>\n'
    '<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
              for i in range(1, 10))
    + "]>\n<EventNotificationAlert><eventType>ANPR</eventType><ANPR><licensePlate>"
    "&lol9;</licensePlate></ANPR></EventNotificationAlert>"
)


def test_utf16_billion_laughs_is_refused_by_defusedxml_not_by_luck() -> None:
    doc = BILLION_LAUGHS.encode("utf-16")
    assert b"<!DOCTYPE" not in doc.upper()  # a byte search for the DTD finds nothing
    with pytest.raises(BadPost, match="DTDForbidden"):
        parse_alert(doc, TZ)

    async def body(source: CameraPushSource) -> None:
        assert await post(url(source), doc, "application/xml") == 400
        assert source._queue.empty() and source.refused["malformed"] == 1

    run(body)
