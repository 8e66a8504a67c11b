"""A smart LPR camera that pushes ANPR events the way a Hikvision camera does.

Why: the daemon's listener must be exercised with real HTTP posts carrying real XML: repeats of
one alarm (``activePostCount`` 1..n), multipart posts with a picture, and keep-alive
heartbeats; and the lane must see what happens when the camera goes quiet (``camera_down``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid as uuidlib
from datetime import datetime
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

ISAPI_NS = "http://www.hikvision.com/ver20/XMLSchema"
FAKE_JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64 + b"\xff\xd9"


def anpr_xml(
    plate: str,
    at: datetime,
    *,
    post_count: int = 1,
    confidence: int = 95,
    channel: int = 1,
    colour: str = "blue",
    event_uuid: str = "",
) -> bytes:
    """An EventNotificationAlert for one plate (the fields a Hikvision ANPR camera sends)."""
    uuid_el = f"<UUID>{escape(event_uuid)}</UUID>" if event_uuid else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<EventNotificationAlert version="2.0" xmlns="{ISAPI_NS}">\n'
        "<ipAddress>127.0.0.1</ipAddress><portNo>80</portNo><protocol>HTTP</protocol>\n"
        "<macAddress>00:00:00:00:00:01</macAddress>\n"
        f"<channelID>{channel}</channelID>\n"
        f"<dateTime>{at.isoformat(timespec='seconds')}</dateTime>\n"
        f"<activePostCount>{post_count}</activePostCount>\n"
        "<eventType>ANPR</eventType><eventState>active</eventState>\n"
        "<eventDescription>ANPR</eventDescription>\n"
        f"{uuid_el}"
        "<ANPR><country>CN</country>"
        f"<licensePlate>{escape(plate)}</licensePlate><line>1</line><direction>forward</direction>"
        f"<confidenceLevel>{confidence}</confidenceLevel><plateType>92TypeCivil</plateType>"
        f"<plateColor>{escape(colour)}</plateColor><vehicleType>vehicle</vehicleType>"
        "</ANPR>\n</EventNotificationAlert>\n"
    ).encode()


def heartbeat_xml(at: datetime, channel: int = 1) -> bytes:
    """The idle keep-alive a Hikvision device repeats (videoloss, inactive, count 0)."""
    return (
        f'<EventNotificationAlert version="2.0" xmlns="{ISAPI_NS}">'
        f"<channelID>{channel}</channelID><dateTime>{at.isoformat(timespec='seconds')}</dateTime>"
        "<activePostCount>0</activePostCount><eventType>videoloss</eventType>"
        "<eventState>inactive</eventState><eventDescription>videoloss alarm</eventDescription>"
        "</EventNotificationAlert>"
    ).encode()


def multipart(xml: bytes, picture: bytes = FAKE_JPEG) -> tuple[str, bytes]:
    """Body and content type of a multipart/form-data post: anpr.xml plus a plate picture."""
    boundary = "boundary" + uuidlib.uuid4().hex[:12]
    body = b"".join(
        [
            f"--{boundary}\r\n".encode(),
            b'Content-Disposition: form-data; name="anpr.xml"; filename="anpr.xml"\r\n',
            b"Content-Type: application/xml\r\n\r\n",
            xml,
            f"\r\n--{boundary}\r\n".encode(),
            b'Content-Disposition: form-data; name="licensePlatePicture.jpg"; '
            b'filename="licensePlatePicture.jpg"\r\n',
            b"Content-Type: image/jpeg\r\n\r\n",
            picture,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    return f"multipart/form-data; boundary={boundary}", body


async def post(url: str, body: bytes, content_type: str, timeout: float = 2.0) -> int:
    """POST one body with Content-Length; returns the HTTP status."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        head = (
            f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        writer.write(head + body)
        await asyncio.wait_for(writer.drain(), timeout)
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        return int(status_line.split()[1])
    finally:
        writer.close()
        # bounded: a peer that stops reading must not hang the camera
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), timeout)


class CameraPushSim:
    """One camera aimed at one lane, posting to ``target_url``."""

    def __init__(self, target_url: str, *, channel: int = 1, repeat_gap_s: float = 0.02) -> None:
        parts = urlsplit(target_url)
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"camera target {target_url!r} must be http:// on loopback")
        self.target_url = target_url
        self.channel = channel
        self.repeat_gap_s = repeat_gap_s
        self.down = False  # camera_down fault
        self.sent = 0
        self.failed = 0
        self.last_plate: str | None = None
        self.statuses: list[int] = []

    def set_fault(self, name: str, on: bool = True) -> None:
        if name != "camera_down":
            raise ValueError(f"unknown camera fault {name!r}: camera_down")
        self.down = on

    async def push_plate(
        self,
        plate: str,
        at: datetime,
        *,
        repeats: int = 1,
        confidence: int = 95,
        colour: str = "blue",
        as_multipart: bool = True,
    ) -> list[int]:
        """Post one alarm ``repeats`` times (activePostCount 1..n); the statuses received."""
        if self.down:
            return []
        event_uuid = str(uuidlib.uuid4())
        statuses = []
        for count in range(1, repeats + 1):
            xml = anpr_xml(
                plate,
                at,
                post_count=count,
                confidence=confidence,
                channel=self.channel,
                colour=colour,
                event_uuid=event_uuid,
            )
            ctype, body = multipart(xml) if as_multipart else ("application/xml", xml)
            statuses.append(await self._post(body, ctype))
            if count < repeats:
                await asyncio.sleep(self.repeat_gap_s)
        self.last_plate = plate
        return statuses

    async def heartbeat(self, at: datetime) -> int | None:
        if self.down:
            return None
        return await self._post(heartbeat_xml(at, self.channel), "application/xml")

    async def post_raw(self, body: bytes, content_type: str = "application/xml") -> int:
        """Anything at all (malformed-input tests)."""
        return await self._post(body, content_type)

    async def _post(self, body: bytes, ctype: str) -> int:
        try:
            status = await post(self.target_url, body, ctype)
        except (OSError, TimeoutError, ValueError, IndexError):
            self.failed += 1
            return 0
        self.sent += 1
        self.statuses.append(status)
        return status
