"""A smart LPR camera that pushes ANPR events the way a Hikvision camera does.

Why: the daemon's listener must be exercised with real HTTP posts carrying real XML: repeats of
one alarm (``activePostCount`` 1..n), multipart posts with a picture, and keep-alive
heartbeats; and the lane must see what happens when the camera goes quiet (``camera_down``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import secrets
import uuid as uuidlib
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit
from urllib.request import parse_http_list, parse_keqv_list
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


@dataclass(frozen=True)
class CameraCredentials:
    """What the camera's "HTTP host" page holds: user, password and Basic or Digest."""

    username: str
    password: str
    scheme: str = "digest"  # "basic" | "digest"


def digest_authorization(creds: CameraCredentials, method: str, uri: str, challenge: str,
                   nc: int = 1) -> str:
    """The Authorization value a camera computes for a Digest challenge (RFC 7616, qop=auth)."""
    params = parse_keqv_list(parse_http_list(challenge.split(" ", 1)[1]))
    algorithm = params.get("algorithm", "MD5").upper()

    def h(text: str) -> str:
        data = text.encode()
        return hashlib.sha256(data).hexdigest() if algorithm == "SHA-256" else \
            hashlib.md5(data, usedforsecurity=False).hexdigest()

    cnonce, ncs = secrets.token_hex(8), f"{nc:08x}"
    ha1 = h(f"{creds.username}:{params['realm']}:{creds.password}")
    ha2 = h(f"{method}:{uri}")
    response = h(f"{ha1}:{params['nonce']}:{ncs}:{cnonce}:auth:{ha2}")
    return (f'Digest username="{creds.username}", realm="{params["realm"]}", '
            f'nonce="{params["nonce"]}", uri="{uri}", algorithm={algorithm}, qop=auth, '
            f'nc={ncs}, cnonce="{cnonce}", response="{response}"')


async def _exchange(host: str, port: int, head: bytes, body: bytes, timeout: float,
                    source_address: str | None) -> tuple[int, dict[str, list[str]]]:
    """One request on a fresh connection: the status and the response headers."""
    local = (source_address, 0) if source_address else None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, local_addr=local), timeout)
    try:
        writer.write(head + body)
        await asyncio.wait_for(writer.drain(), timeout)
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        lines = raw.decode("latin-1").split("\r\n")
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers.setdefault(name.strip().lower(), []).append(value.strip())
        return int(lines[0].split()[1]), headers
    finally:
        writer.close()
        # bounded: a peer that stops reading must not hang the camera
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), timeout)


async def post(url: str, body: bytes, content_type: str, timeout: float = 2.0, *,
               credentials: CameraCredentials | None = None,
               source_address: str | None = None) -> int:
    """POST one body with Content-Length (and the camera's credentials); the HTTP status.

    Digest as a camera does it: the first request carries no credentials and gets the
    challenge (the body is sent anyway: cameras do not use Expect: 100-continue)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path or "/"

    def head(auth: str | None) -> bytes:
        line = f"Authorization: {auth}\r\n" if auth else ""
        return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{line}"
                "Connection: close\r\n\r\n").encode()

    auth = None
    if credentials is not None and credentials.scheme == "basic":
        token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode())
        auth = f"Basic {token.decode()}"
    status, headers = await _exchange(host, port, head(auth), body, timeout, source_address)
    if status == 401 and credentials is not None and credentials.scheme == "digest":
        challenges = [c for c in headers.get("www-authenticate", []) if c.startswith("Digest")]
        if challenges:
            auth = digest_authorization(credentials, "POST", path, challenges[0])
            status, _ = await _exchange(host, port, head(auth), body, timeout, source_address)
    return status


class CameraPushSim:
    """One camera aimed at one lane, posting to ``target_url``."""

    def __init__(self, target_url: str, *, channel: int = 1, repeat_gap_s: float = 0.02,
                 credentials: CameraCredentials | None = None,
                 source_address: str | None = None) -> None:
        parts = urlsplit(target_url)
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"camera target {target_url!r} must be http:// on loopback")
        if source_address is not None and not source_address.startswith("127."):
            raise ValueError(f"camera source address {source_address!r} must be loopback")
        self.target_url = target_url
        # what the camera's HTTP-host page holds, and the address it posts from (127.0.0.x:
        # every 127/8 address is loopback on Linux, so tests can play a second host)
        self.credentials = credentials
        self.source_address = source_address
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
            status = await post(self.target_url, body, ctype, credentials=self.credentials,
                                source_address=self.source_address)
        except (OSError, EOFError, TimeoutError, ValueError, IndexError):  # EOF: dropped
            self.failed += 1
            return 0
        self.sent += 1
        self.statuses.append(status)
        return status
