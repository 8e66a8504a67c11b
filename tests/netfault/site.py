"""A chain's smallest piece, for real: central (its broker, one ``parkedge-central ingest``
worker on a fresh PostgreSQL database) in one network namespace, a site (its bridged broker,
an entry and an exit ``parkedge run`` daemon on the simulator's devices) in another, one
faulty link between them (``parkedge_sim.netns``).

PostgreSQL is reached over its Unix socket, which no network namespace hides, so no address
outside the namespaces made here (or their loopbacks) is used.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from parkedge_sim.broker import MosquittoBroker, free_port
from parkedge_sim.netns import Link, Namespace, make_link
from parkedge_sim.site_broker import SiteBroker, central_broker

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "config" / "rules.mall.example.toml"
SITE = "seed-mall"  # the bundle's site_id
LANES = {"entry-1": "entry", "exit-1": "exit"}
PG_SOCKET = "/var/run/postgresql"
ALLOWANCE = 100


def wait_until(pred: Callable[[], bool], timeout: float = 30.0, step: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def secret_file(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new PostgreSQL database (dropped afterwards), as a URL over the Unix socket."""
    import psycopg

    name = f"netfault_{secrets.token_hex(6)}"
    admin = f"host={PG_SOCKET} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@/{name}?host={PG_SOCKET}"
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def central_toml(tmp: Path, db_url: str, broker_port: int) -> tuple[Path, str]:
    """Central's config (ingest on, the two lanes, keys on disk); and its public key (hex)."""
    key = Ed25519PrivateKey.generate()
    secret_file(tmp / "site.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    kd = tmp / "lane-keys"
    kd.mkdir(exist_ok=True)
    for lane in LANES:
        secret_file(kd / f"{lane}.key", f"k-{lane}-secret\n".encode())
    lanes = "".join(f'[[ingest.lanes]]\nid = "{lane}"\nkind = "{kind}"\n\n'
                    for lane, kind in LANES.items())
    path = tmp / "central.toml"
    path.write_text(f"""[site]
site_id = "{SITE}"
timezone = "Asia/Shanghai"

[database]
url = "{db_url}"

[rules]
bundle = "{RULES}"

[mqtt]
broker = "127.0.0.1:{broker_port}"
keepalive_s = 5

[logging]
level = "INFO"

[ingest]
enabled = true
signing_key = {{ file = "{tmp / 'site.key'}" }}
keys_dir = "{kd}"
allowance = {ALLOWANCE}
publish_interval_s = 0.2

{lanes}""", encoding="utf-8")
    pub = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw).hex()
    return path, pub


@dataclass
class Topology:
    """Central's and the site's namespaces, the link, both brokers, central's worker."""

    tmp: Path
    db_url: str
    central_ns: Namespace
    site_ns: Namespace
    link: Link
    central_broker: MosquittoBroker
    site_broker: SiteBroker
    central_config: Path
    central_pub: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_ingest(self) -> None:
        log = (self.tmp / "central-ingest.log").open("ab")
        with self.central_ns.entered():  # the worker reaches its broker on this loopback
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "central", "ingest", "--config",
                 str(self.central_config), "--client-id", "central-w1"],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO))

    def ingest_log(self, chars: int = 3000) -> str:
        return (self.tmp / "central-ingest.log").read_text(errors="replace")[-chars:]


@contextlib.contextmanager
def topology(tmp: Path) -> Iterator[Topology]:
    tag = secrets.token_hex(3)
    cns, sns = Namespace(f"pe{tag}c"), Namespace(f"pe{tag}s")
    made: list[Namespace] = []
    link: Link | None = None
    brokers: list[MosquittoBroker] = []
    topo: Topology | None = None
    try:
        with fresh_database() as db_url:
            for ns in (cns, sns):
                made.append(ns.create())
            link = make_link(cns, sns, subnet=secrets.randbelow(1000))
            cb = central_broker(tmp, listen_on=link.a_addr)
            with cns.entered():
                cb.start()
            brokers.append(cb)
            sb = SiteBroker(tmp, SITE, f"{link.a_addr}:{cb.port}", port=free_port())
            with sns.entered():
                sb.start()
            brokers.append(sb)
            cfg, pub = central_toml(tmp, db_url, cb.port)
            subprocess.run([sys.executable, "-m", "central", "migrate", "--config", str(cfg)],
                           check=True, cwd=REPO, capture_output=True, timeout=120)
            topo = Topology(tmp, db_url, cns, sns, link, cb, sb, cfg, pub)
            try:
                yield topo
            finally:
                for p in topo.procs:
                    if p.poll() is None:
                        p.terminate()
                        try:
                            p.wait(15)
                        except subprocess.TimeoutExpired:
                            p.kill()
                for b in brokers:
                    b.stop()
    finally:
        if link is not None:
            link.close()
        for ns in made:
            ns.destroy()
