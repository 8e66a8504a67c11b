"""Real Mosquitto brokers on free loopback ports, lane stores, lane syncs and a central
(``parkedge-central``'s ingest worker in the test's process, on SQLite or PostgreSQL)."""

from __future__ import annotations

import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from parkedge_sim.broker import MosquittoBroker as Broker  # killable, on a free port
from parkedge_sim.broker import free_port
from parkedge_sim.central_inproc import InProcessCentral
from sqlalchemy import create_engine, text

from edge.store import Store
from edge.sync.link import LinkSettings
from edge.sync.service import LaneSync

REPO = Path(__file__).resolve().parents[2]
SITE = "mall"
KEYS = {"entry-1": b"k-entry-1", "exit-1": b"k-exit-1", "lane-x": b"k-lane-x"}
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
#: Central's Ed25519 key of the tests' site: every member state, snapshot, rule bundle and
#: lane roster it sends is signed with it, and every lane made here verifies with it.
CENTRAL_KEY = Ed25519PrivateKey.generate()


def wait_until(pred: Callable[[], bool], timeout: float = 20.0, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("mosq"))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker this test may kill."""
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def roster(keys: dict[str, bytes] | None = None, serial: int = 1,
           key: Ed25519PrivateKey | None = None) -> bytes:
    """The signed lane roster central publishes (retained) for the tests' lanes."""
    from edge.sync import codec

    return codec.encode_lanes(SITE, serial, {
        lane: codec.public_hex_of(codec.lane_session_key(k, lane))
        for lane, k in (keys or KEYS).items()}, key or CENTRAL_KEY)


def make_store(tmp_path: Path, lane: str) -> Store:
    return Store.open(tmp_path / f"{lane}.db", lane)


def make_sync(store: Store, port: int, **kw: object) -> LaneSync:
    settings = LinkSettings(host="127.0.0.1", port=port, client_id=store.lane_id,
                            keepalive_s=5)
    args: dict[str, object] = {"ack_timeout_s": 1.0, "status_interval_s": 0.5,
                               "hmac_key": KEYS[store.lane_id],
                               "public_key_hex": public_hex(CENTRAL_KEY)}
    args.update(kw)
    return LaneSync(store, site=SITE, settings=settings, **args)  # type: ignore[arg-type]


def make_central(tmp_path: Path, port: int, **kw: Any) -> InProcessCentral:
    """The site's central (SQLite in ``tmp_path`` unless ``db_url=``), its rules the
    example bundle, every lane of ``KEYS`` configured."""
    args: dict[str, Any] = {"client_id": f"central-{free_port()}", "signing_key": CENTRAL_KEY}
    args.update(kw)
    return InProcessCentral(tmp_path / "central", port=port, site=SITE,
                            lane_keys=KEYS, rules=REPO / "config/rules.example.toml", **args)


def write_events(store: Store, n: int, start: int = 0) -> None:
    """``n`` ledger entries: alternating vehicle entries and lane events."""
    for i in range(start, start + n):
        at = T0 + timedelta(seconds=i)
        if i % 2 == 0:
            store.record_entry(plate=f"粤B{i:05d}", entered_at=at, event_id=f"{store.lane_id}-e{i}")
        else:
            store.record_lane_event("loop_check", at, detail={"i": i})


PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_url() -> Iterator[str]:
    pytest.importorskip("psycopg")
    schema = f"central_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with admin.begin() as c:
            c.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # no server here: nothing to test against
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432: {exc.__class__.__name__}")
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as c:
        c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def example_bundle(version: str) -> dict[str, Any]:
    """``config/rules.example.toml`` under another version name (a campaign edit)."""
    d = tomllib.loads((REPO / "config/rules.example.toml").read_text("utf-8"))
    d["version"] = version
    return d
