"""``main()`` of the bench central server, for ``parkedge-sim central`` (or ``python -m``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import tomllib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.config.secret import SecretError, read_secret_file
from parkedge_sim.central.db import CentralDB
from parkedge_sim.central.figures import figures
from parkedge_sim.central.server import CentralServer
from parkedge_sim.central.web import MarketingWeb


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The 32-byte Ed25519 seed as hex; created (mode 0600) on first use of a bench.

    An existing file follows the rule of every secret file (owner-only mode, our own or
    root's): SecretError naming ``--signing-key`` otherwise.
    """
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        from cryptography.hazmat.primitives import serialization
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(seed.hex() + "\n")
        return key
    seed = read_secret_file(path, key="--signing-key")
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed.decode("ascii").strip()))


def load_lane_keys(items: list[str]) -> dict[str, bytes]:
    """``LANE=PATH`` pairs → each lane's HMAC key, read from its secret file.

    Keys are never taken on the command line: argv is readable by every user in ``ps``.
    A key file holds the same text as the lane's ``sync.hmac_key`` file (surrounding
    whitespace ignored). SecretError or ValueError naming the bad item.
    """
    keys: dict[str, bytes] = {}
    for item in items:
        lane, sep, path = item.partition("=")
        if not sep or not lane or not path:
            raise ValueError(f"--lane-key-file: {item!r} is not LANE=PATH")
        key = read_secret_file(path, key=f"--lane-key-file {lane}").strip()
        if not key:
            raise ValueError(f"--lane-key-file {lane}: {path} is empty")
        keys[lane] = key
    return keys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="parkedge-sim central", allow_abbrev=False,
                                description="Bench central server of a parkedge site.")
    p.add_argument("--broker", default="127.0.0.1:1883", help="MQTT broker host:port")
    p.add_argument("--site", help="the site (required unless --json / --export-lane)")
    p.add_argument("--db", default="sqlite:///central.db",
                   help="SQLAlchemy URL (sqlite:///file or postgresql+psycopg://...)")
    p.add_argument("--lane-key-file", action="append", default=[], metavar="LANE=PATH",
                   help="file holding a lane's HMAC key, mode 0600/0400 (repeat per lane)")
    # Refused with a reason (not "unrecognized"): a key in argv is visible to every user.
    p.add_argument("--lane-key", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--signing-key", type=Path, default=Path("central-rules.key"),
                   help="Ed25519 seed (hex) signing rule bundles; created if missing")
    p.add_argument("--rules", type=Path, help="rule bundle (TOML) to publish at start")
    p.add_argument("--allowance", type=int, default=100,
                   help="offline points allowance per account and lane")
    p.add_argument("--stall-alert-s", type=float, default=300.0,
                   help="alert when a lane's backlog has not moved for this long")
    p.add_argument("--web-port", type=int, default=None,
                   help="serve the marketing page on 127.0.0.1:PORT")
    p.add_argument("--json", action="store_true",
                   help="print the marketing figures of --db as JSON and exit")
    p.add_argument("--export-lane", metavar="LANE",
                   help="print every entry of LANE held in --db as JSON lines and exit "
                        "(for `parkedge ledger recover --central-export`)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run until SIGINT/SIGTERM; returns the process exit code."""
    a = _parser().parse_args(argv)
    if a.export_lane:
        db = CentralDB(a.db)
        for e in db.export_lane(a.export_lane):
            print(json.dumps(e, ensure_ascii=False, sort_keys=True))
        db.close()
        return 0
    if a.json:
        db = CentralDB(a.db)
        print(json.dumps(figures(db), ensure_ascii=False, sort_keys=True))
        db.close()
        return 0
    if not a.site:
        _parser().error("--site is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if a.lane_key:
        print("--lane-key: keys on the command line are visible to every user (ps); "
              "use --lane-key-file LANE=PATH (mode 0600)")
        return 2
    try:
        keys = load_lane_keys(a.lane_key_file)
        signing_key = load_signing_key(a.signing_key)
    except (SecretError, ValueError) as exc:
        print(exc)
        return 2
    host, _, port = a.broker.rpartition(":")
    if not host or not port.isdigit():
        print(f"--broker: {a.broker!r} is not host:port")
        return 2
    bundle: dict[str, Any] | None = None
    if a.rules is not None:
        bundle = tomllib.loads(a.rules.read_text("utf-8"))
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    pub = signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    print(f"rules public key (sync.rules_public_key on every lane): {pub}")
    server = CentralServer(host=host, port=int(port), site=a.site, lane_keys=keys,
                           db_url=a.db, signing_key=signing_key, allowance=a.allowance,
                           stall_alert_s=a.stall_alert_s)
    server.start()
    web = None
    if a.web_port is not None:
        web = MarketingWeb(server, port=a.web_port)
        web.start()
        print(f"marketing page on http://127.0.0.1:{web.port}/")
    if bundle is not None:
        if not server.connected.wait(10):
            print(f"cannot reach the broker at {a.broker}")
        else:
            serial = server.publish_rules(bundle)
            print(f"rule bundle {bundle.get('version')} published as serial {serial}")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    if web is not None:
        web.stop()
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
