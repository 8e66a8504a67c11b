"""``parkedge-central serve``: uvicorn on loopback by default; any other address only with
TLS files configured and at least one enabled admin account (so nobody can reach an open,
unencrypted, un-administrable service from the network)."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import uvicorn

from central.services import staff
from central.services.errors import Refused
from edge import notify

if TYPE_CHECKING:
    from central.app import Central


def listen_problems(c: Central) -> list[str]:
    web = c.cfg.web
    if web.loopback:
        return []
    out = []
    if web.tls_cert is None or web.tls_key is None:
        out.append(f"web.listen: {web.listen} is not loopback; set web.tls_cert and "
                   "web.tls_key (or keep 127.0.0.1 behind a TLS reverse proxy)")
    with c.tx() as s:
        if staff.admin_count(s) == 0:
            out.append(f"web.listen: {web.listen} is not loopback and there is no admin "
                       "account (parkedge-central user add NAME --role admin)")
    return out


def serve(c: Central) -> None:
    from central import logs
    from central.jobs import build_scheduler
    from central.web import create_app

    problems = listen_problems(c)
    if problems:
        raise Refused("web.listen", "; ".join(problems))
    web = c.cfg.web
    logs.setup(c.cfg.logging.level, c.cfg.logging.json_lines)
    if c.cfg.metrics.listen:
        from central.metrics import start_metrics_server
        start_metrics_server(c.cfg.metrics.listen)
    sched = build_scheduler(c) if c.cfg.jobs.enabled else None
    if sched is not None:
        sched.start()
    config = uvicorn.Config(create_app(c), host=web.listen, port=web.port,
                            ssl_certfile=str(web.tls_cert) if web.tls_cert else None,
                            ssl_keyfile=web.tls_key.ref if web.tls_key else None,
                            proxy_headers=web.forwarded_allow_ips is not None,
                            forwarded_allow_ips=web.forwarded_allow_ips, server_header=False,
                            log_config=None, log_level=c.cfg.logging.level.lower())
    server = _NotifyingServer(config)
    try:
        server.run()
    finally:
        if sched is not None:
            sched.shutdown(wait=False)
    if not server.started:
        raise SystemExit(3)  # as uvicorn.run: the port could not be bound, or startup failed


class _NotifyingServer(uvicorn.Server):
    """systemd's Type=notify: READY=1 only once the port is bound and the app has started
    (migrations ran before, in ``Central.from_config``), so units ordered after central and
    ``systemctl start`` wait for a service that answers."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            notify.ready(f"serving on {self.config.host}:{self.config.port}")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        notify.stopping()  # systemd shows "deactivating" while requests drain
        await super().shutdown(sockets=sockets)
