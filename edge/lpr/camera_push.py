"""Plates pushed by a smart LPR camera (Hikvision ISAPI ``EventNotificationAlert``, ANPR).

Why a listener of our own: the camera POSTs each plate to an HTTP URL we configure, and repeats
the same alarm (``activePostCount`` 1, 2, 3...), sometimes as bare XML, sometimes as
multipart/form-data with ``anpr.xml`` plus pictures. The lane must see *one* ``PlateRead`` per
vehicle, with a stable ``event_id``, and a broken or hostile post must never take the lane
down or open the barrier (#12 items 1, 2, 6, 11). So, in this order:

- a connection from an address not in ``camera.allow_from`` is dropped before a byte is read;
- at most ``max_connections`` are open; at the cap the oldest *idle* one (waiting for a
  request head) makes room, so idle floods cannot lock the camera out;
- a request head must arrive within ``header_timeout_s``, a body within ``body_timeout_s``;
- ``camera.auth`` (Basic/Digest, see ``push_trust``) is checked on the head, before the body;
- bodies are streamed in 64 KiB chunks and only the XML part is kept (at most 64 KiB), so
  950 posts of 2 MB cost no more memory than a few, and that memory comes back;
- the XML is parsed by ``defusedxml`` (DTDs and entities refused, in any encoding);
- the plate is checked by ``plate_input.accept_plate`` (``edge.fields`` limits).

Every refusal answers 4xx/5xx (or drops the connection), counts in
``parkedge_camera_push_refused_total{reason}`` and is logged once per source and reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import xml.etree.ElementTree as ET
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import datetime, tzinfo

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from edge import metrics
from edge.barrier.interfaces import Health
from edge.logs import LogLimiter
from edge.lpr import grammar
from edge.lpr.plate_input import FieldError, accept_plate
from edge.lpr.push_trust import Allowlist, PushAuth
from edge.lpr.source import PlateRead

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 8 * 1024
MAX_BODY_BYTES = 2 * 1024 * 1024  # multipart posts carry a plate and a scene picture
MAX_XML_BYTES = 64 * 1024
CHUNK = 64 * 1024
NO_PLATE = {"", "无车牌", "UNKNOWN", "NOPLATE", "车牌"}


class BadPost(ValueError):
    """A post the listener refuses; ``status`` and ``reason`` say how it is answered/counted."""

    def __init__(self, message: str, status: int = 400, reason: str = "malformed") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes  # the whole body, or (multipart) its first ``MAX_XML_BYTES`` and a margin
    truncated: bool = False  # the body went on past ``body`` (pictures, discarded)

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"

    @property
    def content_length(self) -> int:
        return int(self.headers.get("content-length", "0"))


async def read_http_head(reader: asyncio.StreamReader) -> HttpRequest | None:
    """Read one HTTP/1.1 request head (body empty); None at a clean end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise BadPost("truncated request head") from exc
    except asyncio.LimitOverrunError as exc:
        raise BadPost("request head too large", 431, "too_large") from exc
    if len(head) > MAX_HEADER_BYTES:
        raise BadPost("request head too large", 431, "too_large")
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
        raise BadPost("chunked bodies are not accepted; send Content-Length", 411)
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError as exc:
        raise BadPost("bad Content-Length") from exc
    if length < 0:
        raise BadPost("bad Content-Length")
    return HttpRequest(method.upper(), path, headers, b"")


async def read_xml_body(
    reader: asyncio.StreamReader, request: HttpRequest, max_body: int = MAX_BODY_BYTES
) -> HttpRequest:
    """Stream the body in chunks, keeping only what can hold the XML (see module docstring)."""
    length = request.content_length
    multipart = "multipart/" in request.headers.get("content-type", "").lower()
    keep = MAX_XML_BYTES + 4096 if multipart else MAX_XML_BYTES
    if length > max_body or (not multipart and length > keep):
        limit = max_body if multipart else keep
        raise BadPost(f"body of {length} bytes exceeds the {limit} byte cap", 413, "too_large")
    kept = bytearray()
    left = length
    while left:
        chunk = await reader.read(min(CHUNK, left))
        if not chunk:
            raise BadPost("body shorter than Content-Length")
        left -= len(chunk)
        if len(kept) < keep:
            kept += chunk[: keep - len(kept)]
    return HttpRequest(request.method, request.path, request.headers, bytes(kept),
                       truncated=length > len(kept))


async def read_http_request(
    reader: asyncio.StreamReader, *, max_body: int = MAX_BODY_BYTES
) -> HttpRequest | None:
    """Read one request, head and (streamed, bounded) body; None at a clean end of stream."""
    request = await read_http_head(reader)
    return None if request is None else await read_xml_body(reader, request, max_body)


def http_response(
    status: int, reason: str, body: bytes = b"", ctype: str = "text/plain",
    headers: tuple[tuple[str, str], ...] = (), close: bool = False,
) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
    if close:
        extra += "Connection: close\r\n"
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


REASONS = {400: "Bad Request", 401: "Unauthorized", 405: "Method Not Allowed",
           411: "Length Required", 413: "Content Too Large", 431: "Request Header Fields Too Large",
           503: "Service Unavailable"}


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


def extract_xml(content_type: str, body: bytes, truncated: bool = False) -> bytes:
    """The EventNotificationAlert document of a bare or multipart/form-data post.

    ``truncated``: ``body`` is only the start of the post; the XML part must then end (its
    closing boundary) within it, as it does on Hikvision cameras, which send it first."""
    if "multipart/" in content_type.lower():
        boundary = ""
        for param in content_type.split(";")[1:]:
            key, _, value = param.strip().partition("=")
            if key.lower() == "boundary":
                boundary = value.strip().strip('"')
        if not boundary:
            raise BadPost("multipart post without a boundary")
        parts = body.split(b"--" + boundary.encode("latin-1"))
        for i, part in enumerate(parts):
            head, sep, content = part.partition(b"\r\n\r\n")
            if not sep:
                continue
            if b"xml" in head.lower() or content.lstrip().startswith(b"<"):
                if truncated and i == len(parts) - 1:
                    raise BadPost(f"the XML part must come first and be under {MAX_XML_BYTES} "
                                  "bytes", 413, "too_large")
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
        raise BadPost(f"XML of {len(xml)} bytes exceeds {MAX_XML_BYTES}", 413, "too_large")
    try:
        # defusedxml: no DTD at all (ISAPI never sends one), so no entity expansion and no
        # external fetch, whatever the document's encoding (a UTF-16 billion laughs got past a
        # byte search for "<!DOCTYPE" and was stopped only by expat's own limit).
        root = DET.fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise BadPost(f"XML with a DTD or entities is refused ({type(exc).__name__})") from exc
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
    plate = _plate(_find(root, "ANPR", "licensePlate"))
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


def _plate(raw: str) -> str:
    """The camera's plate checked against ``edge.fields`` ("" for its "no plate" markers)."""
    if normalise_plate(raw) == "":
        return ""
    try:
        return accept_plate(raw, "camera_push")
    except FieldError as exc:
        raise BadPost(f"licensePlate refused: {exc}", 400, "bad_plate") from exc


# -- the listener ---------------------------------------------------------------------------
class _Conn:
    """One open connection: idle while it waits for a request head (it may then be evicted)."""

    __slots__ = ("idle", "since", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.idle = True
        self.since = time.monotonic()


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
        allow: Allowlist | None = None,
        auth: PushAuth | None = None,
        dedup_window_s: float = 10.0,
        silence_down_s: float | None = None,
        queue_max: int = 64,
        max_connections: int = 16,
        max_body_bytes: int = MAX_BODY_BYTES,
        header_timeout_s: float = 10.0,
        body_timeout_s: float = 30.0,
    ) -> None:
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be 0..1, got {min_confidence}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self.listen_host = listen_host
        self.port = listen_port
        self.lane_id = lane_id
        self.min_confidence = min_confidence
        self.tz = tz
        # None only for the listener's own unit tests: the factory always passes one
        self.allow = allow if allow is not None else Allowlist(())
        self.auth = auth or PushAuth("none")
        self.dedup_window_s = dedup_window_s
        self.silence_down_s = silence_down_s
        self.max_connections = max_connections
        self.max_body_bytes = max_body_bytes
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self._queue: asyncio.Queue[PlateRead] = asyncio.Queue(queue_max)
        self._seen: dict[str, float] = {}  # dedup key -> monotonic time
        self._recent: dict[tuple[str, str], tuple[float, str]] = {}  # (channel, plate)
        self._server: asyncio.Server | None = None
        self._conns: dict[int, _Conn] = {}  # insertion order = oldest first
        self._last_heard = time.monotonic()
        self._logs = LogLimiter(log, interval_s=60.0, max_keys=256, burst=20)
        self.refused: Counter[str] = Counter()  # by reason
        self.refused_sources: OrderedDict[str, int] = OrderedDict()  # bounded, by peer address
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

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._client, self.listen_host, self.port, limit=MAX_HEADER_BYTES * 2, backlog=128
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._last_heard = time.monotonic()
        if self.listen_host in ("0.0.0.0", "::", ""):
            log.warning("camera push (%s) listens on every interface (%s): bind camera.listen "
                        "to this box's address on the camera network", self.lane_id,
                        self.listen_host or "*")
        if not self.allow.networks:
            log.warning("camera push (%s): no camera.address or camera.allow_from: every push "
                        "is refused", self.lane_id)
        log.info("camera push (%s) on %s:%d, from %s, auth %s", self.lane_id, self.listen_host,
                 self.port, self.allow, self.auth.scheme)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self._conns.values()):
                conn.writer.transport.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    def trigger(self) -> None:
        """Push cameras decide for themselves."""

    async def get(self) -> PlateRead:
        return await self._queue.get()

    # -- connection handling ------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if peer else "?"
        if not self.allow.allows(host):
            self._refuse("source", host, f"{host} is not an allowed camera address "
                         f"(camera.allow_from: {self.allow})")
            writer.transport.abort()
            return
        if len(self._conns) >= self.max_connections and not self._evict_idle():
            self._refuse("busy", host, f"{self.max_connections} connections already open")
            writer.write(http_response(503, REASONS[503], b"busy", close=True))
            writer.close()
            return
        conn = _Conn(writer)
        self._conns[id(conn)] = conn
        metrics.CAMERA_PUSH_CONNECTIONS.set(len(self._conns))
        try:
            await self._serve(reader, writer, conn, host)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # never let one connection hurt the listener
            self._logs.log(f"crash:{host}", logging.ERROR,
                           "camera push (%s): connection from %s failed", self.lane_id, host)
            log.debug("camera push connection failed", exc_info=True)
        finally:
            self._conns.pop(id(conn), None)
            metrics.CAMERA_PUSH_CONNECTIONS.set(len(self._conns))
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    def _evict_idle(self) -> bool:
        """Close the oldest connection that is waiting for a request head; False if none."""
        for key, conn in self._conns.items():
            if conn.idle:
                del self._conns[key]
                conn.writer.transport.abort()
                peer = conn.writer.get_extra_info("peername")
                self._refuse("evicted", str(peer[0]) if peer else "?",
                             f"idle connection closed to make room ({self.max_connections} open)",
                             level=logging.INFO)
                return True
        return False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     conn: _Conn, host: str) -> None:
        served = 0
        while True:
            conn.idle, conn.since = True, time.monotonic()
            try:
                async with asyncio.timeout(self.header_timeout_s):
                    head = await read_http_head(reader)
            except TimeoutError:
                if served == 0:  # a connection that never sent a request: not a camera
                    self._refuse("timeout", host,
                                 f"no request head within {self.header_timeout_s:g} s",
                                 level=logging.INFO)
                return  # (a kept-alive camera connection that went quiet just closes)
            except BadPost as exc:
                self._answer_bad(writer, exc, host)
                return
            if head is None:
                return
            conn.idle = False
            status, text, headers, close = await self._request(reader, writer, head, host)
            writer.write(http_response(status, REASONS.get(status, "OK"), text.encode(),
                                       headers=headers, close=close))
            await writer.drain()
            served += 1
            if close or not head.keep_alive:
                return

    async def _request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: HttpRequest,
        host: str,
    ) -> tuple[int, str, tuple[tuple[str, str], ...], bool]:
        """Authenticate, read the body, handle it: (status, text, extra headers, close)."""
        expects = head.headers.get("expect", "").lower() == "100-continue"
        result = self.auth.check(head.method, head.path, head.headers.get("authorization"))
        if not result.ok:
            quiet = result.reason == "no credentials"  # the first leg of every Digest exchange
            if not quiet:
                self._refuse("auth", host, result.reason)
            challenge = tuple(("WWW-Authenticate", c) for c in self.auth.challenge(result.stale))
            # the body is read (streamed, bounded) and dropped, so the camera sees the 401
            # rather than a reset, and can retry on this connection
            close = expects or head.content_length > self.max_body_bytes
            if not close:
                await self._drain(reader, head.content_length)
            return 401, "authentication required", challenge, close
        if head.method != "POST":
            await self._drain(reader, min(head.content_length, MAX_XML_BYTES))
            return 405, "POST only", (), head.content_length > MAX_XML_BYTES
        if expects:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            async with asyncio.timeout(self.body_timeout_s):
                request = await read_xml_body(reader, head, self.max_body_bytes)
        except TimeoutError:
            self._refuse("timeout", host, f"body not received within {self.body_timeout_s:g} s")
            return 408, "body too slow", (), True
        except BadPost as exc:
            self._refuse(exc.reason, host, str(exc))
            return exc.status, str(exc), (), True
        status, _reason, text = self.handle(request, host)
        return status, text, (), False

    async def _drain(self, reader: asyncio.StreamReader, length: int) -> None:
        async with asyncio.timeout(self.body_timeout_s):
            while length > 0:
                chunk = await reader.read(min(CHUNK, length))
                if not chunk:
                    raise ConnectionError("closed mid-body")
                length -= len(chunk)

    def _answer_bad(self, writer: asyncio.StreamWriter, exc: BadPost, host: str) -> None:
        self._refuse(exc.reason, host, str(exc))
        writer.write(http_response(exc.status, REASONS.get(exc.status, "Bad Request"),
                                   str(exc).encode(), close=True))

    def handle(self, request: HttpRequest, host: str = "?") -> tuple[int, str, str]:
        """Answer one request whose body has been read; plates go to the queue."""
        if request.method != "POST":
            return 405, "Method Not Allowed", "POST only"
        try:
            xml = extract_xml(request.headers.get("content-type", ""), request.body,
                              request.truncated)
            event = parse_alert(xml, self.tz)
        except BadPost as exc:
            self._refuse(exc.reason, host, str(exc))
            return exc.status, REASONS.get(exc.status, "Bad Request"), str(exc)
        self._last_heard = time.monotonic()
        if event.kind == "heartbeat":
            self.heartbeats_total += 1
        elif event.kind == "other" or not event.plate:
            self.ignored_total += 1
        else:
            self._accept(event)
        return 200, "OK", "OK"

    def _refuse(self, reason: str, host: str, detail: str, level: int = logging.WARNING) -> None:
        """Count (metric by reason, bounded per-source tally) and log once per source+reason."""
        self.refused[reason] += 1
        metrics.CAMERA_PUSH_REFUSED.labels(reason=reason).inc()
        if reason in ("malformed", "bad_plate", "too_large"):
            self.malformed_total += 1
            if reason != "bad_plate":  # accept_plate counted that one already
                metrics.BAD_INPUT.labels(source="camera_push").inc()
        self.refused_sources[host] = self.refused_sources.pop(host, 0) + 1
        while len(self.refused_sources) > 256:
            self.refused_sources.popitem(last=False)
        self._logs.log(f"{reason}:{host}", level, "camera push (%s) refused from %s (%s): %s",
                       self.lane_id, host, reason, detail)

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
