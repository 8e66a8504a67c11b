"""The technician's bench page: every simulated lane live in a browser, with buttons.

Why: on a bench without hardware, a technician wants to *see* the lane (arm, loops, what the
board shows and says, what the camera sees, what the daemon thinks and wrote to its ledger)
and poke it (drive a car in or out, inject a fault) without curl. Plain HTML + vanilla JS from
``web/`` (no build step, no CDN); the page polls ``GET /api/state`` every 300 ms. Binds
127.0.0.1 only and refuses requests whose Host header is not loopback (DNS rebinding);
state-changing requests must be JSON (a cross-site form cannot send one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from parkedge_sim.control_api import REASONS, ApiError, _json, _read_request
from parkedge_sim.lane_sim import ALL_FAULTS, SiteSim, VehicleOutcome

log = logging.getLogger(__name__)

WEB = Path(__file__).resolve().parent / "web"
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
LEDGER_ROWS = 8

DaemonStatus = Callable[[str], dict[str, Any]]  # socket path -> status reply


@lru_cache(maxsize=64)
def frame_jpeg(plate: str | None) -> bytes:
    """The camera's view: the simulator's renderer, small enough to poll."""
    import cv2

    from parkedge_sim.render import Scene, render_frame

    img = render_frame(plate, Scene(width=480, height=270, plate_width=150, noise=2.0))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return bytes(buf)


def _daemon_status(path: str) -> dict[str, Any]:
    from edge.control import request

    return request(Path(path), {"cmd": "status"}, timeout_s=1.0)


class BenchPage:
    """Serves the page and its JSON API for one SiteSim."""

    def __init__(
        self,
        site: SiteSim,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        lane_sockets: dict[str, str] | None = None,
        ledger: Path | None = None,
        daemon_status: DaemonStatus = _daemon_status,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the bench page binds loopback only, not {host!r}")
        unknown = [lane for lane in lane_sockets or {} if lane not in site.lanes]
        if unknown:
            raise ValueError(f"--lane-socket {unknown[0]!r}: no such lane "
                             f"({', '.join(site.lanes)})")
        self.site = site
        self.host = host
        self.port = port
        self.lane_sockets = dict(lane_sockets or {})
        self.ledger = ledger
        self.daemon_status = daemon_status
        self._store: Any = None
        self._server: asyncio.Server | None = None
        self._cars: set[asyncio.Task[VehicleOutcome]] = set()
        self.errors: list[str] = []  # the last few failed car runs, shown on the page

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def stop(self) -> None:
        for car in list(self._cars):
            car.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- HTTP ---------------------------------------------------------------------------------
    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, ctype, data = 200, "application/json; charset=utf-8", b""
            try:
                method, path, body, headers = await asyncio.wait_for(_read(reader), 10.0)
                if _hostname(headers.get("host", "")) not in LOOPBACK_HOSTS:
                    raise ApiError(400, f"Host {headers.get('host')!r} refused: loopback only")
                ctype, data = await self.dispatch(method, path, body, headers)
            except ApiError as exc:
                status = exc.status
                data = json.dumps({"error": str(exc)}, ensure_ascii=False).encode()
            except Exception as exc:  # one bad request never stops the page
                log.exception("bench page request failed")
                status = 500
                data = json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode()
            writer.write(
                f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
                "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
                "Connection: close\r\n\r\n".encode() + data
            )
            await writer.drain()
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def dispatch(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[str, bytes]:
        route = path.split("?", 1)[0]
        if route in STATIC:
            _need(method, "GET")
            name, ctype = STATIC[route]
            return ctype, (WEB / name).read_bytes()
        parts = [p for p in route.split("/") if p]
        if parts == ["api", "state"]:
            _need(method, "GET")
            return _as_json(await self.state())
        if len(parts) == 4 and parts[:2] == ["api", "lanes"]:
            lane = self.site.lanes.get(parts[2])
            if lane is None:
                raise ApiError(404, f"no lane {parts[2]!r}")
            if parts[3] == "frame.jpg":
                _need(method, "GET")
                if lane.video is not None and not lane.video.down:  # what the daemon sees
                    jpeg = lane.video.jpeg()
                else:
                    jpeg = await asyncio.to_thread(frame_jpeg, lane.current_plate)
                return "image/jpeg", jpeg
            _need(method, "POST")
            if not headers.get("content-type", "").startswith("application/json"):
                raise ApiError(400, "send application/json")
            args = _json(body)
            if parts[3] == "vehicle":
                return _as_json(self.drive(parts[2], args))
            if parts[3] == "fault":
                fault = args.get("name")
                if not isinstance(fault, str):
                    raise ApiError(400, "fault: 'name' (a string) is required")
                try:
                    lane.set_fault(fault, bool(args.get("on", True)), float(args.get("value", 0)))
                except (ValueError, TypeError) as exc:
                    raise ApiError(400, f"fault: {exc}") from exc
                return _as_json({"lane": lane.lane_id, "active": lane.active_faults()})
        raise ApiError(404, f"no route {method} {path}")

    # -- actions ------------------------------------------------------------------------------
    def drive(self, lane_id: str, args: dict[str, Any]) -> dict[str, Any]:
        """Start a car (the page does not wait for it; it watches the lane instead)."""
        lane = self.site.lanes[lane_id]
        plate = args.get("plate")
        if not isinstance(plate, str) or not plate.strip():
            raise ApiError(400, "vehicle: type a plate first")
        if lane.current_plate is not None:
            raise ApiError(400, f"vehicle: {lane.current_plate} is still at the barrier")
        try:
            dwell = float(args.get("dwell_s", 0.8))
        except (TypeError, ValueError) as exc:
            raise ApiError(400, f"vehicle: dwell_s: {exc}") from exc

        async def go() -> VehicleOutcome:
            try:
                return await lane.vehicle_arrives(
                    plate.strip(),
                    dwell_s=dwell,
                    reverse=bool(args.get("reverse", False)),
                    open_timeout_s=float(args.get("open_timeout_s", 10.0)),
                )
            except Exception as exc:
                self.errors = [*self.errors[-4:], f"{lane_id} {plate}: {exc}"]
                raise

        car = asyncio.create_task(go())
        self._cars.add(car)
        car.add_done_callback(self._cars.discard)
        car.add_done_callback(lambda t: t.cancelled() or t.exception())  # no "never retrieved"
        return {"lane": lane_id, "plate": plate.strip(), "started": True}

    # -- the state the page shows -------------------------------------------------------------
    async def state(self) -> dict[str, Any]:
        lanes = {}
        for lane_id, lane in self.site.lanes.items():
            snap = lane.snapshot()
            sock = self.lane_sockets.get(lane_id)
            if sock is not None:
                try:
                    snap["daemon"] = await asyncio.to_thread(self.daemon_status, sock)
                except (ConnectionError, OSError, ValueError) as exc:
                    snap["daemon"] = {"ok": False, "error": str(exc)}
            else:
                snap["daemon"] = None
            lanes[lane_id] = snap
        return {
            "lanes": lanes,
            "faults": list(ALL_FAULTS),
            "ledger": await asyncio.to_thread(self.ledger_tail),
            "errors": self.errors,
        }

    def ledger_tail(self) -> dict[str, Any] | None:
        """The last ledger entries, read through the store (it never writes from here)."""
        if self.ledger is None:
            return None
        try:
            if self._store is None:
                from edge.store import Store

                if not self.ledger.is_file():
                    return {"path": str(self.ledger), "error": "no ledger file yet", "entries": []}
                self._store = Store.open(self.ledger, "BENCH-PAGE")
            rows = list(self._store.export("entries"))[-LEDGER_ROWS:]
        except Exception as exc:  # a locked or broken file must not break the page
            return {"path": str(self.ledger), "error": f"{type(exc).__name__}: {exc}",
                    "entries": []}
        keep = ("lane_id", "seq", "kind", "at", "plate", "session_id", "payload")
        return {
            "path": str(self.ledger),
            "entries": [{k: r.get(k) for k in keep} for r in reversed(rows)],
        }


def _hostname(host: str) -> str:
    """``127.0.0.1:8091`` -> ``127.0.0.1``; ``[::1]:8091`` -> ``[::1]``."""
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.split(":", 1)[0]


def _need(method: str, expected: str) -> None:
    if method != expected:
        raise ApiError(405, f"use {expected}")


def _as_json(value: Any) -> tuple[str, bytes]:
    return "application/json; charset=utf-8", json.dumps(
        value, ensure_ascii=False, default=str
    ).encode()


async def _read(reader: asyncio.StreamReader) -> tuple[str, str, bytes, dict[str, str]]:
    """The control API's request reader, plus the headers this page checks."""
    head: dict[str, str] = {}

    class Tee:
        async def readuntil(self, sep: bytes) -> bytes:
            raw = await reader.readuntil(sep)
            for line in raw.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name:
                    head[name.strip().lower()] = value.strip()
            return raw

        async def readexactly(self, n: int) -> bytes:
            return await reader.readexactly(n)

    method, path, body = await _read_request(Tee())  # type: ignore[arg-type]
    return method, path, body, head
