"""Helpers shared by central's tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from parkedge_sim.broker import MosquittoBroker

    from central.app import Central

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RULES = HERE / "data" / "rules.central.toml"


def config_dict(db_url: str = "sqlite:///central.db", **sections: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"site": {"site_id": "mall-1", "timezone": "Asia/Shanghai"},
                         "database": {"url": db_url}, "rules": {"bundle": str(RULES)}}
    for k, v in sections.items():
        d[k] = {**d.get(k, {}), **v}
    return d


def at(s: str) -> datetime:
    """A site-local (+08:00) instant from 'YYYY-MM-DD HH:MM'."""
    return datetime.fromisoformat(s.replace(" ", "T") + "+08:00")


@contextmanager
def serving(cfg_path: Path, port: int, log: Path, *, env: dict[str, str] | None = None,
            ready_s: float = 60.0) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``parkedge-central serve -c cfg_path`` in a subprocess (stdout and stderr to ``log``),
    yielded as (its base URL, the process) once ``/healthz`` answers; stopped with SIGTERM,
    then SIGKILL after 10 s. A server that exits or is not ready within ``ready_s`` fails
    the caller with its log."""
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "central", "serve", "-c", str(cfg_path)],
                                stdout=out, stderr=out, cwd=ROOT,
                                env=env or {**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(log.read_text(errors="replace")) from None
                time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class CentralSite:
    """What ``central_site`` built: the broker, central (migrated, in this process), the
    TOML config ``serving()`` starts the server with, its web port, central's public key
    (hex, for the lanes) and where ``serving()`` is to write its log."""

    broker: MosquittoBroker
    central: Central
    cfg_path: Path
    port: int
    pub: str
    log: Path


@contextmanager
def central_site(tmp_path: Path) -> Iterator[CentralSite]:
    """A site to serve: the tests' own Mosquitto started, central's config with ingest on
    (``test_ingest_mqtt.site_config``, SQLite in ``tmp_path``) migrated on start, the web on
    a free loopback port, jobs off, written as TOML to ``central.toml``, and a ``Central``
    from it. Central is closed and the broker stopped on leaving (after what the caller
    started inside, e.g. lanes and ``serving()``)."""
    # here, not at the top: test_ingest_mqtt and test_pages_browser import this module
    from parkedge_sim.broker import MosquittoBroker

    from central.app import Central
    from central.config import parse_config
    from tests.central.test_ingest_mqtt import site_config, to_toml
    from tests.central.test_pages_browser import free_port

    broker = MosquittoBroker(tmp_path)
    broker.start()
    try:
        port = free_port()
        d, pub = site_config(tmp_path, f"sqlite:///{tmp_path / 'central.db'}", broker.port)
        d["database"]["migrate_on_start"] = True
        d["web"] = {"listen": "127.0.0.1", "port": port}
        d["jobs"] = {"enabled": False}
        cfg_path = tmp_path / "central.toml"
        cfg_path.write_text(to_toml(d), encoding="utf-8")
        c = Central.from_config(parse_config(d), migrate=True)
        try:
            yield CentralSite(broker, c, cfg_path, port, pub, tmp_path / "serve.log")
        finally:
            c.close()
    finally:
        broker.stop()


PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def fresh_pg_database(prefix: str) -> Iterator[str]:
    """A new, migrated PostgreSQL database named ``<prefix>_<random>`` on 127.0.0.1:5432,
    yielded by name and dropped (even with connections left) at the end."""
    import secrets

    from sqlalchemy import text

    from central.db import make_engine, upgrade

    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = make_engine(PG_ADMIN).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    eng = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    upgrade(eng)
    eng.dispose()
    try:
        yield name
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def write_secret(path: Path, data: bytes) -> None:
    """A key file as an operator makes it: created 0600 before anything is written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ingest_central(tmp_path: Path, db_url: str, lanes: list[str]) -> Any:
    """Central with ingest configured for ``lanes`` (entry lanes, their HMAC key files, a
    site signing key) and no broker: for driving the worker's methods directly."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from central.app import Central
    from central.config import parse_config

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    write_secret(tmp_path / "site.key", pem)
    kd = tmp_path / "lane-keys"
    kd.mkdir()
    for lane in lanes:
        write_secret(kd / f"{lane}.key", f"key-{lane}\n".encode())
    d = config_dict(db_url, mqtt={"broker": "127.0.0.1:1"},
                    ingest={"enabled": True, "signing_key": {"file": str(tmp_path / "site.key")},
                            "keys_dir": str(kd),
                            "lanes": [{"id": lane, "kind": "entry"} for lane in lanes]})
    return Central.from_config(parse_config(d))
