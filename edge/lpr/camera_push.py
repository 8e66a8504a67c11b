"""Plates pushed by a smart LPR camera (Hikvision ISAPI ``EventNotificationAlert``, ANPR).

Why a listener of our own: the camera POSTs each plate to an HTTP URL we configure, and repeats
the same alarm (``activePostCount`` 1, 2, 3...), sometimes as bare XML, sometimes as
multipart/form-data with ``anpr.xml`` plus pictures. The lane must see *one* ``PlateRead`` per
vehicle, with a stable ``event_id``, and a broken or hostile post must never take the lane
down. So: ``asyncio.start_server``, bodies capped, DTDs refused before parsing (ISAPI never
uses them, and this is what makes entity tricks impossible without adding defusedxml), 200
answered at once, 400 for anything malformed (counted, logged once until a good post).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, tzinfo

from edge.barrier.interfaces import Health
from edge.lpr import grammar
from edge.lpr.source import PlateRead

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 8 * 1024
MAX_BODY_BYTES = 2 * 1024 * 1024  # multipart posts carry a plate and a scene picture
MAX_XML_BYTES = 64 * 1024
NO_PLATE = {"", "无车牌", "UNKNOWN", "NOPLATE", "车牌"}


class BadPost(ValueError):
    """A post the listener refuses (answered 400)."""


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"


async def read_http_request(
    reader: asyncio.StreamReader, *, max_body: int = MAX_BODY_BYTES
) -> HttpRequest | None:
    """Read one HTTP/1.1 request with a Content-Length body; None at a clean end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise BadPost("truncated request head") from exc
    except asyncio.LimitOverrunError as exc:
        raise BadPost("request head too large") from exc
    if len(head) > MAX_HEADER_BYTES:
        raise BadPost("request head too large")
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, path, _version = lines[0].split(" ", 2)
    except ValueError as exc:
        raise BadPost("bad request line") from exc
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadPost(f"bad header line {line[:40]!r}")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise BadPost("chunked bodies are not accepted; send Content-Length")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError as exc:
        raise BadPost("bad Content-Length") from exc
    if length < 0 or length > max_body:
        raise BadPost(f"body of {length} bytes exceeds the {max_body} byte cap")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise BadPost("body shorter than Content-Length") from exc
    return HttpRequest(method.upper(), path, headers, body)


def http_response(status: int, reason: str, body: bytes = b"", ctype: str = "text/plain") -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# -- pure parsing ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CameraEvent:
    """What one post said, before de-duplication."""

    kind: str  # "anpr" | "heartbeat" | "other"
    channel: str = ""
    plate: str = ""
    confidence: float = 0.0
    at: datetime | None = None
    post_count: int = 1
    colour: str | None = None
    uuid: str = ""
    event_type: str = ""


def extract_xml(content_type: str, body: bytes) -> bytes:
    """The EventNotificationAlert document of a bare or multipart/form-data post."""
    if "multipart/" in content_type.lower():
        boundary = ""
        for param in content_type.split(";")[1:]:
            key, _, value = param.strip().partition("=")
            if key.lower() == "boundary":
                boundary = value.strip().strip('"')
        if not boundary:
            raise BadPost("multipart post without a boundary")
        for part in body.split(b"--" + boundary.encode("latin-1")):
            head, sep, content = part.partition(b"\r\n\r\n")
            if not sep:
                continue
            if b"xml" in head.lower() or content.lstrip().startswith(b"<"):
                return content.rstrip(b"\r\n")
        raise BadPost("multipart post without an XML part")
    return body


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find(root: ET.Element, *path: str) -> str:
    node: ET.Element | None = root
    for name in path:
        if node is None:
            return ""
        node = next((c for c in node if _local(c.tag) == name), None)
    return (node.text or "").strip() if node is not None else ""


def parse_alert(xml: bytes, tz: tzinfo) -> CameraEvent:
    """Parse an ISAPI EventNotificationAlert (pure: no clock; naive times take ``tz``)."""
    if len(xml) > MAX_XML_BYTES:
        raise BadPost(f"XML of {len(xml)} bytes exceeds {MAX_XML_BYTES}")
    if b"<!DOCTYPE" in xml.upper() or b"<!ENTITY" in xml.upper():
        raise BadPost("XML with a DTD or entities is refused")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise BadPost(f"malformed XML: {exc}") from exc
    if _local(root.tag) != "EventNotificationAlert":
        raise BadPost(f"root element is {_local(root.tag)!r}, not EventNotificationAlert")
    event_type = _find(root, "eventType")
    state = _find(root, "eventState").lower()
    try:
        post_count = int(_find(root, "activePostCount") or "1")
    except ValueError as exc:
        raise BadPost("activePostCount is not an integer") from exc
    channel = _find(root, "channelID") or _find(root, "dynChannelID")
    if event_type.lower() == "heartbeat" or (
        event_type.lower() == "videoloss" and state == "inactive" and post_count == 0
    ):
        return CameraEvent("heartbeat", channel=channel, event_type=event_type)
    if event_type.upper() != "ANPR":
        return CameraEvent("other", channel=channel, event_type=event_type)
    raw_plate = _find(root, "ANPR", "licensePlate")
    plate = normalise_plate(raw_plate)
    try:
        confidence = float(_find(root, "ANPR", "confidenceLevel") or "0") / 100.0
    except ValueError as exc:
        raise BadPost("confidenceLevel is not a number") from exc
    if not 0.0 <= confidence <= 1.0:
        raise BadPost(f"confidenceLevel {confidence * 100:g} is outside 0..100")
    stamp = _find(root, "dateTime")
    try:
        at = datetime.fromisoformat(stamp) if stamp else None
    except ValueError as exc:
        raise BadPost(f"dateTime {stamp!r} is not ISO 8601") from exc
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=tz)
    colour = _find(root, "ANPR", "plateColor").lower() or None
    return CameraEvent(
        "anpr",
        channel=channel,
        plate=plate,
        confidence=confidence,
        at=at,
        post_count=post_count,
        colour=colour,
        uuid=_find(root, "UUID") or _find(root, "uuid"),
        event_type=event_type,
    )


def normalise_plate(text: str) -> str:
    """The grammar's canonical form (shared by every plate source), or "" for the camera's
    own "no plate" markers."""
    plate = grammar.normalise_plate(text)
    return "" if plate in NO_PLATE else plate


# -- the listener ---------------------------------------------------------------------------
class CameraPushSource:
    """PlateSource fed by camera HTTP pushes; one PlateRead per alarm, repeats folded."""

    def __init__(
        self,
        listen_host: str,
        listen_port: int,
        lane_id: str,
        *,
        min_confidence: float = 0.0,
        tz: tzinfo,
        dedup_window_s: float = 10.0,
        silence_down_s: float | None = None,
        queue_max: int = 64,
    ) -> None:
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be 0..1, got {min_confidence}")
        self.listen_host = listen_host
        self.port = listen_port
        self.lane_id = lane_id
        self.min_confidence = min_confidence
        self.tz = tz
        self.dedup_window_s = dedup_window_s
        self.silence_down_s = silence_down_s
        self._queue: asyncio.Queue[PlateRead] = asyncio.Queue(queue_max)
        self._seen: dict[str, float] = {}  # dedup key -> monotonic time
        self._recent: dict[tuple[str, str], tuple[float, str]] = {}  # (channel, plate)
        self._server: asyncio.Server | None = None
        self._last_heard = time.monotonic()
        self._bad_logged = False
        self.events_total = 0
        self.duplicates_total = 0
        self.heartbeats_total = 0
        self.malformed_total = 0
        self.ignored_total = 0
        self.dropped_total = 0

    @property
    def health(self) -> Health:
        if self.silence_down_s and time.monotonic() - self._last_heard > self.silence_down_s:
            return Health.DOWN
        return Health.OK

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._client, self.listen_host, self.port, limit=MAX_HEADER_BYTES * 2
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._last_heard = time.monotonic()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    def trigger(self) -> None:
        """Push cameras decide for themselves."""

    async def get(self) -> PlateRead:
        return await self._queue.get()

    # -- connection handling ------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    request = await asyncio.wait_for(read_http_request(reader), 30.0)
                except BadPost as exc:
                    self._bad(str(exc))
                    writer.write(http_response(400, "Bad Request", str(exc).encode()))
                    await writer.drain()
                    return
                if request is None:
                    return
                status, reason, text = self.handle(request)
                writer.write(http_response(status, reason, text.encode()))
                await writer.drain()
                if not request.keep_alive:
                    return
        except (TimeoutError, ConnectionError):
            return
        except Exception:  # never let one connection hurt the listener
            log.exception("camera push connection failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def handle(self, request: HttpRequest) -> tuple[int, str, str]:
        """Answer one request; plates go to the queue."""
        if request.method != "POST":
            return 405, "Method Not Allowed", "POST only"
        try:
            xml = extract_xml(request.headers.get("content-type", ""), request.body)
            event = parse_alert(xml, self.tz)
        except BadPost as exc:
            self._bad(str(exc))
            return 400, "Bad Request", str(exc)
        self._last_heard = time.monotonic()
        self._bad_logged = False
        if event.kind == "heartbeat":
            self.heartbeats_total += 1
        elif event.kind == "other" or not event.plate:
            self.ignored_total += 1
        else:
            self._accept(event)
        return 200, "OK", "OK"

    def _bad(self, reason: str) -> None:
        self.malformed_total += 1
        if not self._bad_logged:
            log.error("camera push refused (%s): %s", self.lane_id, reason)
            self._bad_logged = True
        else:
            log.debug("camera push refused again (%s): %s", self.lane_id, reason)

    def _accept(self, event: CameraEvent) -> None:
        now = time.monotonic()
        self._expire(now)
        stamp = event.at.isoformat() if event.at else ""
        key = event.uuid or f"{event.channel}|{event.plate}|{stamp}"
        recent = self._recent.get((event.channel, event.plate))
        if key in self._seen or (event.post_count > 1 and recent is not None):
            self.duplicates_total += 1
            return
        self._seen[key] = now
        self._recent[(event.channel, event.plate)] = (now, key)
        self.events_total += 1
        digest = hashlib.sha1(f"{self.lane_id}|{key}".encode()).hexdigest()[:16]
        read = PlateRead(
            plate=event.plate,
            confidence=event.confidence,
            at=event.at or datetime.now(self.tz),
            source=f"camera-push:{self.lane_id}",
            event_id=f"{self.lane_id}:{digest}",
            uncertain=event.confidence < self.min_confidence,
            colour=event.colour,
        )
        if self._queue.full():
            self._queue.get_nowait()  # the lane is stuck: the newest plate matters most
            self.dropped_total += 1
        self._queue.put_nowait(read)

    def _expire(self, now: float) -> None:
        horizon = now - self.dedup_window_s
        self._seen = {k: t for k, t in self._seen.items() if t >= horizon}
        self._recent = {k: v for k, v in self._recent.items() if v[0] >= horizon}
