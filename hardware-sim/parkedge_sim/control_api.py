"""A small JSON HTTP API on loopback to inspect and drive a running simulated site.

Why: the demo, the bench page and the scenario player run in other processes than the
simulator; they need to play cars and inject faults without sharing memory. Plain asyncio and
HTTP/1.1 with Content-Length (no framework), 127.0.0.1 only.

    GET  /lanes                      -> {"entry": {...ports...}, ...}
    GET  /lanes/{id}                 -> snapshot of one lane
    POST /lanes/{id}/vehicle         {"plate", "at"?, "dwell_s"?, "reverse"?,
                                      "tailgate_plate"?, "read_plate"?, "open_timeout_s"?}
                                      -> outcome
    POST /lanes/{id}/fault           {"name", "on"?, "value"?} -> active faults
                                      ("faults": Modbus side, "active": every device)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import asdict
from datetime import datetime
from typing import Any

from parkedge_sim.lane_sim import SiteSim

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    500: "Internal Server Error",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlApi:
    """Serves one SiteSim over HTTP on 127.0.0.1."""

    def __init__(self, site: SiteSim, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the control API binds loopback only, not {host!r}")
        self.site = site
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                method, path, body = await asyncio.wait_for(_read_request(reader), 10.0)
                status, payload = 200, await self.dispatch(method, path, body)
            except ApiError as exc:
                status, payload = exc.status, {"error": str(exc)}
            except Exception as exc:  # one bad request never stops the API
                log.exception("control API request failed")
                status, payload = 500, {"error": f"{type(exc).__name__}: {exc}"}
            data = json.dumps(payload, ensure_ascii=False).encode()
            writer.write(
                f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: application/json; charset=utf-8\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def dispatch(self, method: str, path: str, body: bytes) -> Any:
        parts = [p for p in path.split("?", 1)[0].split("/") if p]
        if parts == ["lanes"]:
            _need(method, "GET")
            return {lane_id: lane.info() for lane_id, lane in self.site.lanes.items()}
        if len(parts) >= 2 and parts[0] == "lanes":
            lane = self.site.lanes.get(parts[1])
            if lane is None:
                raise ApiError(404, f"no lane {parts[1]!r}; lanes: {', '.join(self.site.lanes)}")
            if len(parts) == 2:
                _need(method, "GET")
                return lane.snapshot()
            if parts[2:] == ["vehicle"]:
                _need(method, "POST")
                args = _json(body)
                plate = args.get("plate")
                if not isinstance(plate, str) or not plate:
                    raise ApiError(400, "vehicle: 'plate' (a non-empty string) is required")
                at = _time(args.get("at"))
                try:
                    outcome = await lane.vehicle_arrives(
                        plate,
                        at,
                        dwell_s=float(args.get("dwell_s", 0.5)),
                        reverse=bool(args.get("reverse", False)),
                        tailgate_plate=args.get("tailgate_plate"),
                        read_plate=bool(args.get("read_plate", True)),
                        open_timeout_s=_opt_float(args.get("open_timeout_s")),
                    )
                except (ValueError, TypeError) as exc:
                    raise ApiError(400, f"vehicle: {exc}") from exc
                return asdict(outcome)
            if parts[2:] == ["fault"]:
                _need(method, "POST")
                args = _json(body)
                name = args.get("name")
                if not isinstance(name, str):
                    raise ApiError(400, "fault: 'name' (a string) is required")
                try:
                    lane.set_fault(name, bool(args.get("on", True)), float(args.get("value", 0)))
                except (ValueError, TypeError) as exc:
                    raise ApiError(400, f"fault: {exc}") from exc
                return {
                    "lane": lane.lane_id,
                    "faults": lane.modbus.snapshot()["faults"],
                    "active": lane.active_faults(),
                }
        raise ApiError(404, f"no route {method} {path}")


def _need(method: str, expected: str) -> None:
    if method != expected:
        raise ApiError(405, f"use {expected}")


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"body is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ApiError(400, "body must be a JSON object")
    return value


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise ApiError(400, f"'at' {value!r} is not ISO 8601") from exc
    if at.tzinfo is None:
        raise ApiError(400, f"'at' {value!r} needs a UTC offset")
    return at


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise ApiError(400, "bad request head") from exc
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, path, _ = lines[0].split(" ", 2)
    except ValueError as exc:
        raise ApiError(400, "bad request line") from exc
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            try:
                length = int(value.strip())
            except ValueError as exc:
                raise ApiError(400, "bad Content-Length") from exc
    if length < 0 or length > MAX_BODY:
        raise ApiError(413, f"body over {MAX_BODY} bytes")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise ApiError(400, "body shorter than Content-Length") from exc
    return method.upper(), path, body
