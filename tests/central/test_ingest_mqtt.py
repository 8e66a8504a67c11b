"""Ingest over a real Mosquitto with real lanes (``LaneSync`` on SQLite stores): one worker
in this process on SQLite and PostgreSQL; three ``parkedge-central ingest`` processes on
PostgreSQL with one killed by SIGKILL mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from parkedge_sim.broker import MosquittoBroker
from sqlalchemy import func, select

from central import metrics
from central.app import Central
from central.config import parse_config
from central.db.models import DownlinkOutbox, Lane, LaneEntry, LaneStatus, Member
from central.ingest.commit import export_lane
from central.services import members, points
from edge.pricing import RuleBundle
from edge.store import Store
from edge.store.types import ExitRecord
from edge.sync import codec
from edge.sync.link import LinkSettings
from edge.sync.service import LaneSync
from tests.central.helpers import config_dict

REPO = Path(__file__).resolve().parents[2]
KEYS = {"entry-1": "k-entry-1-secret", "exit-1": "k-exit-1-secret"}
T0 = datetime(2026, 3, 3, 2, 0, tzinfo=UTC)
PLATE = "粤B12345"


def wait_until(pred: Callable[[], bool], timeout: float = 30.0, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    b = MosquittoBroker(tmp_path)
    b.start()
    yield b
    b.stop()


def _secret(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def site_config(tmp_path: Path, db_url: str, port: int) -> tuple[dict[str, Any], str]:
    """Central's config with ingest on, its key files; and central's public key (hex)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    _secret(tmp_path / "site.key", pem)
    kd = tmp_path / "lane-keys"
    kd.mkdir()
    for lane, k in KEYS.items():
        _secret(kd / f"{lane}.key", k.encode() + b"\n")
    d = config_dict(db_url, mqtt={"broker": f"127.0.0.1:{port}", "keepalive_s": 5},
                    ingest={"enabled": True, "signing_key": {"file": str(tmp_path / "site.key")},
                            "keys_dir": str(kd), "publish_interval_s": 0.2,
                            "lanes": [{"id": "entry-1", "kind": "entry", "name": "North in"},
                                      {"id": "exit-1", "kind": "exit"}]})
    pub = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw).hex()
    return d, pub


def lane(tmp_path: Path, lane_id: str, port: int, pub: str,
         rules_seen: list[RuleBundle] | None = None) -> tuple[Store, LaneSync]:
    store = Store.open(tmp_path / f"{lane_id}.db", lane_id)
    sync = LaneSync(store, site="mall-1", settings=LinkSettings(
        host="127.0.0.1", port=port, client_id=lane_id, keepalive_s=5),
        hmac_key=KEYS[lane_id].encode(), public_key_hex=pub, ack_timeout_s=1.0,
        status_interval_s=0.3,
        on_rules=None if rules_seen is None else rules_seen.append)
    return store, sync


def write_events(store: Store, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        when = T0 + timedelta(seconds=i)
        if i % 2 == 0:
            store.record_entry(plate=f"粤A{i:05d}", entered_at=when,
                               event_id=f"{store.lane_id}-e{i}")
        else:
            store.record_lane_event("loop_check", when, detail={"i": i})


def deduct(store: Store, event: str, n: int, earn: int, minute: int) -> None:
    store.record_exit(ExitRecord(
        exit_event_id=event, session_id=None, plate=PLATE,
        exited_at=T0 + timedelta(minutes=minute), member_id="M1",
        rules_version="central-test-1", fee=Decimal("10.00"), payable=Decimal("0.00"),
        points_deducted=n, lots_used=(("central", n),) if n else (), coupons_used=(),
        points_earned=earn, earned_expires_at=T0 + timedelta(days=300) if earn else None,
        quote={}))


def enrol_m1(c: Central, balance: int) -> None:
    now = T0 - timedelta(days=1)
    with c.tx() as s:
        m = members.enrol(s, c.rules, member_id="M1", phone=None, name="Li", tier="member",
                          now=now, plates=(PLATE,))
        points.accrue(s, c.rules, m, balance, now, lot_id="seed", source="test")


def committed(c: Central) -> list[str]:
    with c.tx() as s:
        return list(s.scalars(select(LaneEntry.entry_id)))


def test_one_worker_lanes_to_central_and_back(tmp_path: Path, db_url: str,
                                              broker: MosquittoBroker) -> None:
    """Entries of two lanes committed once each, points through the lots, the new balance
    signed back to the lanes, statuses recorded, roster and rules accepted by the lanes."""
    d, pub = site_config(tmp_path, db_url, broker.port)
    c = Central.from_config(parse_config(d))
    enrol_m1(c, 500)
    worker = c.ingest_worker(client_id="central-test")
    worker.start()
    rules_seen: list[RuleBundle] = []
    entry_store, entry_sync = lane(tmp_path, "entry-1", broker.port, pub, rules_seen)
    exit_store, exit_sync = lane(tmp_path, "exit-1", broker.port, pub)
    try:
        for sy in (entry_sync, exit_sync):
            sy.start()
        # the member state central signed reached the exit lane
        assert wait_until(lambda: exit_sync.spend_limit("M1") == 500)
        assert wait_until(lambda: _have_roster(entry_sync, exit_sync))
        write_events(entry_store, 40)
        deduct(exit_store, "x-1", 30, 0, 10)
        deduct(exit_store, "x-2", 0, 5, 20)
        for sy in (entry_sync, exit_sync):
            sy.notify()
        def want() -> set[str]:  # the exit lane also records the entry lane's sessions
            return {e.entry_id for st in (entry_store, exit_store)
                    for e in st.entries(0, 10_000)}
        assert wait_until(lambda: set(committed(c)) == want()
                          and entry_sync.backlog() == 0 and exit_sync.backlog() == 0), (
            len(committed(c)), len(want()), worker.stats)
        assert len(committed(c)) == len(want())
        with c.tx() as s:
            assert points.ledger_sums(s, "M1") == (475, 475, 475)
            assert export_lane(s, "exit-1") == [codec.entry_to_wire(e)
                                                for e in exit_store.entries(0, 100)]
            assert {r.lane_id: r.kind for r in s.scalars(select(Lane))} == {
                "entry-1": "entry", "exit-1": "exit"}
        assert (metrics.REGISTRY.get_sample_value("central_ingest_entries_total",
                                                  {"lane": "exit-1"}) or 0) >= 3
        # the balance after ingest, with applied[exit-1], went back to the lanes
        assert wait_until(lambda: exit_sync.spend_limit("M1") == 475
                          and entry_sync.spend_limit("M1") == 475)
        assert wait_until(lambda: _status(c, "exit-1") == ("online", 0))
        assert rules_seen and rules_seen[-1].version == "central-test-1"
        assert not entry_sync.refusals.counts and not exit_sync.refusals.counts
        assert worker.stats["committed"] == len(want())
        # a forged batch (another key) is refused and counted, never committed or acked
        n = len(committed(c))
        forged = codec.encode_batch("mall-1", "entry-1", [codec.encode_entry(
            entry_store.entries(0, 1)[0])], 1, 1, b"not the key", T0)
        got = _mqtt_roundtrip(broker.port, publish=("parkedge/mall-1/lane/entry-1/ledger",
                                                    forged, False))
        assert wait_until(lambda: worker.stats["rejected_bad_hmac"] == 1)
        assert len(committed(c)) == n and got == []
        # the outbox: a row a service wrote is published (retained here) and marked
        with c.tx() as s:
            s.add(DownlinkOutbox(site_id="mall-1", topic="lane/exit-1/prepaid",
                                 payload='{"v":1}', retain=True, created_at=T0))
        assert wait_until(lambda: _outbox_done(c))
        assert _mqtt_roundtrip(broker.port, subscribe="parkedge/mall-1/lane/exit-1/prepaid"
                               ) == [b'{"v":1}']
    finally:
        for sy in (entry_sync, exit_sync):
            sy.stop()
        worker.stop()
        entry_store.close()
        exit_store.close()
        c.close()


def _have_roster(*syncs: LaneSync) -> bool:
    """Every lane has central's signed roster (a snapshot can bring member states to a lane
    before the leader's first tick has published the roster: at a site's very first start
    the first session events would be refused as from unknown lanes)."""
    return all(sy.state.lane_roster()[1].keys() == KEYS.keys() for sy in syncs)


def _outbox_done(c: Central) -> bool:
    with c.tx() as s:
        return all(r.published_at is not None for r in s.scalars(select(DownlinkOutbox)))


def _mqtt_roundtrip(port: int, *, subscribe: str | None = None,
                    publish: tuple[str, bytes, bool] | None = None) -> list[bytes]:
    """Publish one message and/or collect what a topic holds (its retained copy) for 1 s."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[bytes] = []
    cl = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{time.monotonic_ns()}")
    cl.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
    cl.connect("127.0.0.1", port)
    cl.loop_start()
    try:
        if subscribe:
            cl.subscribe(subscribe, qos=1)
        if publish:
            cl.publish(publish[0], publish[1], qos=1, retain=publish[2]).wait_for_publish(5)
        time.sleep(1.0)
    finally:
        cl.disconnect()
        cl.loop_stop()
    return got


def _status(c: Central, lane_id: str) -> tuple[str, int] | None:
    with c.tx() as s:
        r = s.get(LaneStatus, ("mall-1", lane_id))
        return None if r is None else (r.state, r.backlog)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v), ensure_ascii=False)


def to_toml(d: dict[str, Any]) -> str:
    """The tests' config dict as TOML (sections of scalars, inline secrets, lane tables)."""
    out = []
    for sec, body in d.items():
        out.append(f"[{sec}]")
        tables: list[tuple[str, dict[str, Any]]] = []
        for k, v in body.items():
            if isinstance(v, list):
                tables.extend((k, t) for t in v)
            else:
                out.append(f"{k} = {_toml_value(v)}")
        for k, t in tables:
            out.append(f"[[{sec}.{k}]]")
            out.extend(f"{kk} = {_toml_value(vv)}" for kk, vv in t.items())
    return "\n".join(out) + "\n"


def _leader(tmp_path: Path) -> int | None:
    """Which worker process says it is the leader (from its log)."""
    for i in range(3):
        log = tmp_path / f"w{i}.log"
        if log.exists() and "this worker is the leader" in log.read_text():
            return i
    return None


def _spawn(cfg: Path, name: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "central", "ingest", "-c", str(cfg),
                             "--client-id", name], cwd=REPO, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)


def test_three_workers_one_killed_every_entry_once(tmp_path: Path, pg_url: str | None,
                                                   broker: MosquittoBroker) -> None:
    """Three worker processes share the lanes' batches; one is killed with SIGKILL while
    entries flow; every entry is at central exactly once and balances equal the sum of
    the entries."""
    if pg_url is None:
        pytest.skip("no PostgreSQL server at 127.0.0.1:5432")
    from sqlalchemy import text

    from central.db import make_engine
    from central.db.models import Base
    eng = make_engine(pg_url)
    with eng.begin() as conn:
        conn.execute(text("TRUNCATE " + ", ".join(t.name for t in Base.metadata.sorted_tables)
                          + " RESTART IDENTITY CASCADE"))
    eng.dispose()
    d, pub = site_config(tmp_path, pg_url, broker.port)
    cfg_path = tmp_path / "central.toml"
    cfg_path.write_text(to_toml(d), encoding="utf-8")
    c = Central.from_config(parse_config(d))
    enrol_m1(c, 100_000)
    procs = [_spawn(cfg_path, f"w{i}", tmp_path / f"w{i}.log") for i in range(3)]
    stores: list[Store] = []
    syncs: list[LaneSync] = []
    try:
        for lane_id in KEYS:
            st, sy = lane(tmp_path, lane_id, broker.port, pub)
            stores.append(st)
            syncs.append(sy)
            sy.start()
        assert wait_until(lambda: syncs[1].spend_limit("M1") == 100_000, 60)
        assert wait_until(lambda: _have_roster(*syncs), 30)
        assert wait_until(lambda: _leader(tmp_path) is not None, 30)
        killed = _leader(tmp_path)
        assert killed is not None
        spent = 0
        for rnd in range(6):
            write_events(stores[0], 150, rnd * 150)
            for k in range(10):
                deduct(stores[1], f"x-{rnd}-{k}", 7, 1 if k % 3 == 0 else 0, rnd * 10 + k)
                spent += 7 - (1 if k % 3 == 0 else 0)
            write_events(stores[1], 50, 10_000 + rnd * 50)
            for sy in syncs:
                sy.notify()
            if rnd == 2:  # mid-run, the leader: its transaction and its publishing role
                time.sleep(0.05)
                procs[killed].send_signal(signal.SIGKILL)
            time.sleep(0.2)
        def want() -> set[str]:
            return {e.entry_id for st in stores for e in st.entries(0, 100_000)}
        assert wait_until(lambda: len(committed(c)) >= len(want())
                          and all(sy.backlog() == 0 for sy in syncs), 120), (
            len(committed(c)), len(want()), [sy.backlog() for sy in syncs])
        got = committed(c)
        assert len(got) == len(set(got)) == len(want()) and set(got) == want()
        with c.tx() as s:
            assert points.ledger_sums(s, "M1") == (100_000 - spent,) * 3
            for st in stores:
                assert export_lane(s, st.lane_id) == [codec.entry_to_wire(e)
                                                      for e in st.entries(0, 100_000)]
            assert s.scalar(select(func.count()).select_from(Member)) == 1
        assert procs[killed].wait(5) == -signal.SIGKILL
        assert all(p.poll() is None for i, p in enumerate(procs) if i != killed)
        assert wait_until(lambda: syncs[1].spend_limit("M1") == 100_000 - spent, 30)
    finally:
        for sy in syncs:
            sy.stop()
        for st in stores:
            st.close()
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        c.close()
    # the survivors both took a share of the batches (the shared subscription)
    for i in {0, 1, 2} - {killed}:
        stopped = [json.loads(line) for line in (tmp_path / f"w{i}.log").read_text()
                   .splitlines() if "stopping; committed" in line]
        assert stopped and int(stopped[0]["msg"].split()[3]) > 0, stopped


def test_offline_overdraft_flags_then_new_points_settle(tmp_path: Path, db_url: str,
                                                        broker: MosquittoBroker) -> None:
    """Two lanes offline each spend their allowance + overdraft (more than the balance):
    back online, central takes every deduction (never refuses what happened), the account
    is below zero and flagged on every lane; points earned at central (a POS-like accrual,
    no lane involved) pay the debt first and the new state reaches the lanes."""
    d, pub = site_config(tmp_path, db_url, broker.port)
    c = Central.from_config(parse_config(d))
    enrol_m1(c, 150)
    worker = c.ingest_worker(client_id="central-test")
    worker.start()
    pairs = [lane(tmp_path, lane_id, broker.port, pub) for lane_id in KEYS]
    syncs = [sy for _st, sy in pairs]
    try:
        for sy in syncs:
            sy.start()
        assert wait_until(lambda: all(sy.spend_limit("M1") == 150 for sy in syncs))
        assert wait_until(lambda: _have_roster(*syncs))
        broker.kill()
        assert wait_until(lambda: not any(sy.link.subscribed.is_set() for sy in syncs), 15)
        for st, sy in pairs:
            for k in range(4):
                n = min(40, sy.spend_limit("M1", overdraft=10))
                if n:
                    deduct(st, f"{st.lane_id}-x{k}", n, 0, k)
        broker.start()
        for sy in syncs:
            sy.notify()
        assert wait_until(lambda: _sums(c) == (150 - 220,) * 3
                          and all(sy.backlog() == 0 for sy in syncs), 60), _sums(c)
        # flagged (overdrawn): no lane deducts anything
        assert wait_until(lambda: all(sy.spend_limit("M1", overdraft=10) == 0 for sy in syncs))
        with c.tx() as s:
            m = points.lock_member(s, "M1")
            points.accrue(s, c.rules, m, 100, T0 + timedelta(hours=2), lot_id="pos-1",
                          source="purchase")
        assert wait_until(lambda: all(sy.spend_limit("M1") == 30 for sy in syncs), 20)
        with c.tx() as s:
            assert points.ledger_sums(s, "M1") == (30, 30, 30)
            assert points.spendable(s, "M1", T0 + timedelta(hours=3)) == 30  # debt repaid
    finally:
        for sy in syncs:
            sy.stop()
        worker.stop()
        for st, _sy in pairs:
            st.close()
        c.close()


def _sums(c: Central) -> tuple[int, int, int]:
    with c.tx() as s:
        return points.ledger_sums(s, "M1")


def test_workers_starting_together_both_record_the_lanes(tmp_path: Path, db_url: str) -> None:
    """Another worker's uncommitted insert of the same lane rows makes this one's insert
    wait and then fail on the key (PostgreSQL): it tries again and updates instead."""
    import threading

    from central.db.models import Lane as LaneRow

    d, _pub = site_config(tmp_path, db_url, 1883)  # never connects
    c = Central.from_config(parse_config(d))
    worker = c.ingest_worker(client_id="w-test")
    errors: list[BaseException] = []

    def start_worker() -> None:
        try:
            worker._upsert_lanes()
        except BaseException as exc:  # reported by the assert below
            errors.append(exc)

    try:
        with c.tx() as s:  # the other worker, mid-transaction
            for lane_id in KEYS:
                s.add(LaneRow(site_id="mall-1", lane_id=lane_id, name="", kind="entry",
                              enabled=True, created_at=T0))
            s.flush()
            t = threading.Thread(target=start_worker)
            t.start()
            t.join(0.5)
        t.join(30)
        assert not errors, errors
        with c.tx() as s:
            assert {r.lane_id: r.kind for r in s.scalars(select(LaneRow))} == {
                "entry-1": "entry", "exit-1": "exit"}
    finally:
        c.close()
