"""A site's own Mosquitto, bridged to central's broker (docs/network_faults.md).

Why: with one broker at central, a site cut off from central also cuts its entry lanes off
from its exit lanes, so a car that came in during the cut has no session at the exit. With a
broker at the site the lanes talk to each other (``sessions/+``) whatever the uplink does, and
the bridge carries the ledger up and central's acks and signed states down when it can.

The bridge forwards exactly the sync's topics (docs/sync-protocol.md), each way it needs:
lanes' ledgers, statuses, snapshot requests and session notices up; acks, snapshots, member
states, prepayments, rules and the lane roster down. Session notices also go up, so several
sites' lanes could cross if a chain wants it; central ignores them. Nothing is kept only in
the bridge: a lane resends its unacknowledged batches from its ledger, central de-duplicates.
"""

from __future__ import annotations

from pathlib import Path

from parkedge_sim.broker import MosquittoBroker

#: (topic below ``parkedge/<site>/``, direction) forwarded by the bridge, QoS 1.
BRIDGED = (
    ("lane/+/ledger", "out"),
    ("lane/+/status", "out"),
    ("snapshot/request", "out"),
    ("sessions/+", "out"),
    ("lane/+/ack", "in"),
    ("lane/+/snapshot", "in"),
    ("members/+", "in"),
    ("prepaid/+", "in"),
    ("rules", "in"),
    ("lanes", "in"),
)


def bridge_config(site: str, central: str, *, keepalive_s: int = 5,
                  restart_s: tuple[int, int] = (1, 5)) -> str:
    """The ``connection`` section for Mosquitto 2.0: ``central`` is "host:port".

    ``keepalive_s`` bounds how long a dead uplink goes unnoticed (1.5 x); ``restart_s`` is
    Mosquitto's reconnect back-off (base, cap). ``try_private`` lets a Mosquitto at central
    know the peer is a bridge, so nothing is echoed back down. The bridge's own state is
    published on the site broker at ``parkedge/<site>/bridge/central`` ("1" up, "0" down,
    retained), for monitoring.
    """
    root = f"parkedge/{site}"
    lines = [
        f"connection central-{site}",
        f"address {central}",
        f"remote_clientid bridge-{site}",
        "cleansession true",
        "try_private true",
        f"keepalive_interval {keepalive_s}",
        f"restart_timeout {restart_s[0]} {restart_s[1]}",
        "start_type automatic",
        "notifications true",
        "notifications_local_only true",
        f"notification_topic {root}/bridge/central",
        "bridge_protocol_version mqttv311",
    ]
    lines += [f"topic {root}/{topic} {way} 1" for topic, way in BRIDGED]
    return "\n".join(lines) + "\n"


class SiteBroker(MosquittoBroker):
    """A Mosquitto on 127.0.0.1:``port`` of the namespace it is started in, bridged to
    central's broker at ``central`` ("host:port", reachable from that namespace)."""

    def __init__(self, workdir: Path, site: str, central: str, port: int | None = None,
                 keepalive_s: int = 5) -> None:
        super().__init__(workdir, port, extra=bridge_config(site, central,
                                                            keepalive_s=keepalive_s))
        self.site = site
        self.central = central


def central_broker(workdir: Path, listen_on: str, port: int | None = None) -> MosquittoBroker:
    """Central's Mosquitto: 127.0.0.1:``port`` for central's workers, and the same port on
    ``listen_on`` (central's end of the sites' links) for the sites' bridges."""
    b = MosquittoBroker(workdir, port)
    b.conf.write_text(b.conf.read_text(encoding="utf-8") + f"listener {b.port} {listen_on}\n",
                      encoding="utf-8")
    return b
