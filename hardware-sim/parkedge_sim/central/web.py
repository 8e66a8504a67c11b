"""The marketing page of the bench central: members, history, figures, campaign publishing.

Loopback only. Plain ``http.server``: a bench tool, no framework. Campaigns are edited as a
rule bundle (JSON) POSTed to ``/api/rules``: central validates it with ``edge.pricing``, signs
it and publishes it retained, and the lanes switch at its ``effective_from``.
"""

from __future__ import annotations

import html
import json
import logging
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edge.pricing import BundleError
from parkedge_sim.central.figures import figures, history
from parkedge_sim.central.server import CentralServer

log = logging.getLogger(__name__)
MAX_BODY = 1024 * 1024


def _page(central: CentralServer) -> str:
    f = figures(central.db)
    rows = "".join(
        f"<tr><td><a href='/api/members/{html.escape(m)}'>{html.escape(m)}</a></td>"
        f"<td>{central.db.balance(m)}</td></tr>" for m in central.db.member_ids()[:500])
    figs = "".join(f"<tr><th>{html.escape(k)}</th>"
                   f"<td>{html.escape(json.dumps(v, ensure_ascii=False))}</td></tr>"
                   for k, v in f.items())
    return ("<!doctype html><html lang='zh'><meta charset='utf-8'><title>parkedge points</title>"
            "<h1>Parking points</h1><h2>Figures</h2><table id='figures'>" + figs + "</table>"
            "<h2>Members</h2><table id='members'><tr><th>member</th><th>balance</th></tr>"
            + rows + "</table><p>Campaigns: POST a rule bundle (JSON) to /api/rules.</p>")


class MarketingWeb:
    def __init__(self, central: CentralServer, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"host: {host!r}: the marketing page listens on loopback only")
        handler = _handler(central)
        self._server = ThreadingHTTPServer((host, port), handler)
        self.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="central-web")
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(central: CentralServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("web: " + fmt, *args)

        def _send(self, code: int, body: Any, ctype: str = "application/json") -> None:
            data = (body if isinstance(body, str) else json.dumps(
                body, ensure_ascii=False, default=str)).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", f"{ctype}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            try:
                path = self.path.split("?")[0]
                if path == "/":
                    self._send(200, _page(central), "text/html")
                elif path == "/api/figures":
                    self._send(200, figures(central.db))
                elif path == "/api/members":
                    self._send(200, [{"member_id": m, "balance": central.db.balance(m)}
                                     for m in central.db.member_ids()])
                elif path.startswith("/api/members/"):
                    mid = path.removeprefix("/api/members/")
                    st = central.db.member_state(mid, {}, 0)
                    if st is None:
                        self._send(404, {"error": f"no member {mid!r}"})
                        return
                    self._send(200, {"member_id": mid, "tier": st.tier, "balance": st.balance,
                                     "version": st.version, "flagged": st.flagged,
                                     "plates": list(st.plates),
                                     "history": history(central.db, mid)})
                else:
                    self._send(404, {"error": "not found"})
            except Exception as exc:  # the page never takes central down
                log.exception("web GET %s", self.path)
                self._send(500, {"error": str(exc)})

        def do_POST(self) -> None:
            try:
                n = int(self.headers.get("Content-Length") or 0)
                if n <= 0 or n > MAX_BODY:
                    self._send(413 if n > MAX_BODY else 400, {"error": "body size"})
                    return
                body = json.loads(self.rfile.read(n), parse_float=Decimal)
                if self.path == "/api/rules":
                    if not isinstance(body, dict):
                        self._send(400, {"error": "a rule bundle must be a JSON object"})
                        return
                    self._send(200, {"serial": central.publish_rules(body)})
                else:
                    self._send(404, {"error": "not found"})
            except (BundleError, ValueError) as exc:
                self._send(400, {"error": str(exc)})
            except Exception as exc:
                log.exception("web POST %s", self.path)
                self._send(500, {"error": str(exc)})

    return Handler
