"""N lanes with the real sync code against parkedge-central's ingest workers (#16).

Why: a chain of car parks puts hundreds of lanes on one central, and after an outage they
all come back with a backlog at once. This measures central's real ingest
(``central.ingest.IngestWorker``, ``--workers`` processes on a fresh PostgreSQL database)
fed by ``--lanes`` lanes (``LaneSync``, each its own SQLite ledger, HMAC key and client id;
``--per-proc`` of them per process) through a broker of the bench's own
(``--broker mosquitto|rabbitmq``). Three phases in one run:

1. **steady**: every lane writes one entry per vehicle, Poisson arrivals with a mall's day
   (``mall_profile``: morning and evening peaks) squeezed into ``--duration`` seconds, at a
   mean of ``--rate`` vehicles per lane per second. Lag = central's ``received_at`` minus
   the lane's ``recorded`` (both clocks are this machine's): lane commit to central commit.
   Before it every lane connects, asks for its snapshot and has one entry acked (``warm_s``:
   how long central takes to serve a whole site reconnecting; not counted in the lag).
2. **storm**: every lane stops syncing, writes ``--backlog`` entries offline, then all
   reconnect at once. ``drain_s`` = reconnect to central's last commit; ``entries_per_s``
   = backlog entries / drain_s; central's RSS is sampled throughout (peak per worker).
3. **raw**: the same storm rows inserted again by psycopg alone (same table, same unique
   keys: ``lane_id`` and ``entry_id`` prefixed ``raw-``), the same ``INSERT ... SELECT ...
   FROM unnest(...) ON CONFLICT DO NOTHING`` and rows per transaction as central's mean
   group in the storm, one connection per worker: ``raw_insert_per_s`` and central's
   ratio to it; then once more with the multi-row ``VALUES`` statement central used before
   (``raw_values_insert_per_s``).

**Where the cores go** (``cpu_*_s``): CPU seconds during the drain window (reconnect to
every lane acked) of central's workers, their PostgreSQL backends, the rest of PostgreSQL,
the broker, the lane processes, and the whole machine (``cpu_box_busy_s`` against
``cpu_capacity_s`` = cores x window; ``cpu_other_s`` is everyone else's work on a shared
box); ``cpu_raw_s`` for the raw insert. ``central_entries_per_cpu_s`` (workers + their
backends) against ``raw_rows_per_cpu_s``: ``cpu_ratio``, which the box's load does not bend.
``SITE_SCALE_PYSPY=<folder>`` samples worker 0 with py-spy through the drain.

On Mosquitto the workers share ``$share/<group>/...`` as in production. RabbitMQ 3.10's MQTT
plugin has no shared subscriptions (docs/brokers.md): there the workers take the lanes'
batches and snapshot requests from one durable AMQP queue bound to ``amq.topic``
(``AmqpIngestWorker``, pika) and answer over MQTT as usual; the lanes run unchanged.

    .venv/bin/python bench/site_scale.py --smoke --json             # 8 lanes, seconds
    nice .venv/bin/python bench/site_scale.py --workers 2 --broker rabbitmq --json
    nice .venv/bin/python bench/site_scale.py --backlog 10000 ...   # the issue's full storm
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import multiprocessing as mp
import os
import queue
import random
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hardware-sim"))
sys.path.insert(0, str(ROOT))

SITE = "chain"
RULES = ROOT / "tests" / "central" / "data" / "rules.central.toml"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
QUEUE = f"parkedge.{SITE}.ingest"
COLS = ("lane_id", "seq", "entry_id", "kind", "at", "recorded", "session_id", "member_id",
        "plate", "rules_version", "payload", "prev_hash", "hash", "received_at")


def lane_ids(n: int) -> list[str]:
    return [f"lane-{i:04d}" for i in range(n)]


def key_of(lane: str) -> bytes:
    return f"key-{lane}".encode()


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes ``pids`` have used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def cpu_of(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds (user + system, all threads) each live process of ``pids`` has used."""
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def uid_pids(user: str) -> list[int]:
    """Every process of the system user ``user`` (PostgreSQL: the postmaster, its
    checkpointer, walwriter, autovacuum and every backend, this run's and others')."""
    import pwd
    try:
        uid = str(pwd.getpwnam(user).pw_uid)
    except KeyError:
        return []
    pids = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            for line in (d / "status").read_text().splitlines():
                if line.startswith("Uid:"):
                    if line.split()[1] == uid:
                        pids.append(int(d.name))
                    break
        except OSError:
            continue
    return pids


def session_pids(sid: int) -> list[int]:
    """The processes of session ``sid`` (a RabbitMQ node: start script, Erlang VM, helpers)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[3]) == sid:
                pids.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return pids


def box_busy_s() -> float:
    """CPU seconds the whole machine has been busy (every core; /proc/stat less idle and
    iowait): what every process of every user took, this bench's and everyone else's."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


class CpuWindow:
    """Where the cores went between ``start()`` and ``stop()``: CPU seconds per group of
    processes, read from /proc/<pid>/stat (utime + stime) at both ends. Groups are
    callables giving pids, asked at both ends: a process that appeared in between counts
    whole (it started inside the window), one that ended in between is missed (a lower
    bound: PostgreSQL's autovacuum workers, a pooled connection closed)."""

    def __init__(self, groups: dict[str, Callable[[], Iterable[int]]]) -> None:
        self.groups = groups
        self.t0 = 0.0
        self.box0 = 0.0
        self.at0: dict[str, dict[int, float]] = {}

    def start(self) -> None:
        self.at0 = {k: cpu_of(f()) for k, f in self.groups.items()}
        self.t0, self.box0 = time.monotonic(), box_busy_s()

    def stop(self) -> dict[str, float]:
        wall, box = time.monotonic() - self.t0, box_busy_s() - self.box0
        out = {}
        for k, f in self.groups.items():
            now, before = cpu_of(f()), self.at0[k]
            out[k] = sum(max(0.0, v - before.get(pid, 0.0)) for pid, v in now.items())
        out["wall"], out["box"] = wall, box
        return out


def pg_backends(name: str) -> list[int]:
    """The server processes of the connections to database ``name``."""
    import psycopg
    with psycopg.connect(dsn("postgres")) as c:
        return [int(r[0]) for r in c.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,)).fetchall()]


def mall_profile(x: float) -> float:
    """Relative arrival rate at ``x`` in [0, 1) of a mall day (10:00-22:00): a late-morning
    peak, a lunch dip and a larger evening peak; the mean over the day is ~1, the peak ~2.2."""
    hour = 10 + 12 * x
    return 0.35 + 1.5 * math.exp(-((hour - 11.5) / 1.2) ** 2) \
        + 1.9 * math.exp(-((hour - 18.5) / 1.5) ** 2)


PEAK = max(mall_profile(i / 1000) for i in range(1000))
MEAN = sum(mall_profile(i / 1000) for i in range(1000)) / 1000


# ---------------------------------------------------------------- central
def central_config(folder: Path, db_url: str, port: int, lanes: list[str],
                   seed: bytes) -> dict[str, Any]:
    """Central's config with ingest on: the lanes, their key files, central's signing key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    def secret(path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    pem = Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    secret(folder / "site.key", pem)
    kd = folder / "lane-keys"
    kd.mkdir(exist_ok=True)
    for lane in lanes:
        secret(kd / f"{lane}.key", key_of(lane) + b"\n")
    return {"site": {"site_id": SITE, "timezone": "Asia/Shanghai"},
            "database": {"url": db_url}, "rules": {"bundle": str(RULES)},
            "mqtt": {"broker": f"127.0.0.1:{port}", "keepalive_s": 15},
            "ingest": {"enabled": True, "signing_key": {"file": str(folder / "site.key")},
                       "keys_dir": str(kd), "publish_interval_s": 0.5,
                       "lanes": [{"id": lane, "kind": "entry"} for lane in lanes]}}


def amqp_worker_class() -> Any:
    """``IngestWorker`` fed from one durable AMQP queue (RabbitMQ has no ``$share``)."""
    import pika
    from parkedge_sim.rabbitmq import PASSWORD, USER

    from central.ingest.worker import IngestWorker
    from edge.sync import topics

    class AmqpIngestWorker(IngestWorker):
        """Batches and snapshot requests from the shared queue, one at a time per message
        (prefetch bounds what one worker holds); statuses, acks, states over MQTT."""

        amqp_port = 0
        prefetch = 256
        amqp_ready = threading.Event()  # one worker per process: a class attribute will do

        def subscriptions(self) -> list[str]:
            return [topics.all_statuses(self.site)]

        def start(self) -> None:
            super().start()
            threading.Thread(target=self._consume, name="amqp", daemon=True).start()

        def _consume(self) -> None:
            conn = pika.BlockingConnection(pika.ConnectionParameters(
                host="127.0.0.1", port=self.amqp_port,
                credentials=pika.PlainCredentials(USER, PASSWORD)))
            ch = conn.channel()
            ch.basic_qos(prefetch_count=self.prefetch)

            def on(ch: Any, method: Any, _props: Any, body: bytes) -> None:
                topic = str(method.routing_key).replace(".", "/")
                while not self._stop.is_set():
                    try:
                        self._q.put((topic, body), timeout=0.5)  # back-pressure, no refusal
                        break
                    except queue.Full:
                        continue
                ch.basic_ack(method.delivery_tag)

            ch.basic_consume(QUEUE, on)
            self.amqp_ready.set()
            while not self._stop.is_set():
                conn.process_data_events(time_limit=0.2)
            conn.close()

    return AmqpIngestWorker


def declare_queue(amqp_port: int) -> None:
    """The workers' queue: durable, bound to every lane's ledger and the snapshot requests."""
    import pika
    from parkedge_sim.rabbitmq import PASSWORD, USER

    from edge.sync import topics
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1", port=amqp_port, credentials=pika.PlainCredentials(USER, PASSWORD)))
    ch = conn.channel()
    ch.queue_declare(QUEUE, durable=True)
    for t in (topics.all_ledgers(SITE), topics.snapshot_request(SITE)):
        ch.queue_bind(QUEUE, "amq.topic", routing_key=t.replace("/", ".").replace("+", "*"))
    conn.close()


def profiled(w: Any) -> Any:
    """cProfile of the worker's ingest thread (its ``_handle`` and ``_tick``), dumped to
    ``$SITE_SCALE_PROFILE/<worker>.prof`` at the end: where central's time goes."""
    import cProfile
    prof = cProfile.Profile()

    def wrap(f: Any) -> Any:
        def inner(*args: Any, **kw: Any) -> Any:
            prof.enable()
            try:
                return f(*args, **kw)
            finally:
                prof.disable()
        return inner

    w._handle = wrap(w._handle)
    w._tick = wrap(w._tick)
    return prof


def run_worker(name: str, cfg: dict[str, Any], amqp_port: int | None,
               ready: Any, stop: Any, out: Any) -> None:
    """One ingest worker process (as ``parkedge-central ingest``); its counters at stop."""
    from central.app import Central
    from central.config import parse_config
    from central.ingest.worker import Deps, IngestWorker

    c = Central.from_config(parse_config(cfg))
    deps = Deps(c.cfg, c.engine, c.sessions, c.rules, c.clock)
    cls: Any = IngestWorker if amqp_port is None else amqp_worker_class()
    if amqp_port is not None:
        cls.amqp_port = amqp_port
    w: IngestWorker = cls(deps, client_id=name)
    groups = [0, 0]  # groups committed, rows in them
    commit = w.committer.commit

    def counted(bs: Any) -> Any:
        groups[0] += 1
        groups[1] += sum(len(b.entries) for b in bs)
        return commit(bs)

    w.committer.commit = counted  # type: ignore[method-assign]
    prof = profiled(w) if os.environ.get("SITE_SCALE_PROFILE") else None
    w.start()
    ok = w.connected.wait(170)
    if amqp_port is not None:
        ok = ok and w.amqp_ready.wait(60)  # type: ignore[attr-defined]
    if ok:
        ready.put(name)
    stop.wait()
    out.put({"name": name, **dict(w.stats), "groups": groups[0], "group_rows": groups[1]})
    w.stop()
    if prof is not None:
        prof.dump_stats(Path(os.environ["SITE_SCALE_PROFILE"]) / f"{name}.prof")
    c.close()


# ---------------------------------------------------------------- lanes
class Lanes:
    """``lanes`` lanes of one process: their stores and (while online) their syncs."""

    def __init__(self, lanes: list[str], port: int, folder: str, public_hex: str) -> None:
        from edge.store import Store
        self.lanes, self.port, self.public_hex = lanes, port, public_hex
        self.stores = {lane: Store.open(Path(folder) / f"{lane}.db", lane) for lane in lanes}
        self.syncs: dict[str, Any] = {}
        self.last: dict[str, int] = dict.fromkeys(lanes, 0)

    def online(self) -> None:
        from edge.sync.link import LinkSettings
        from edge.sync.service import LaneSync
        for lane in self.lanes:
            self.syncs[lane] = LaneSync(self.stores[lane], site=SITE, settings=LinkSettings(
                host="127.0.0.1", port=self.port, client_id=lane, keepalive_s=15),
                hmac_key=key_of(lane), public_key_hex=self.public_hex,
                status_interval_s=5.0)
            self.syncs[lane].start()

    def offline(self) -> None:
        for sy in self.syncs.values():
            sy.stop()
        self.syncs.clear()

    def write(self, lane: str, n: int) -> None:
        e = self.stores[lane].record_lane_event("vehicle", datetime.now(UTC),
                                                plate=f"粤B{n % 99999:05d}")
        self.last[lane] = e.seq
        if lane in self.syncs:
            self.syncs[lane].notify()

    def acked(self) -> bool:
        return all(self.syncs[lane].uplink.acked_seq >= self.last[lane] for lane in self.lanes)

    def wait_acked(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.acked():
                return True
            time.sleep(0.05)
        return self.acked()

    def close(self) -> None:
        self.offline()
        for st in self.stores.values():
            st.close()


def steady(ls: Lanes, rate: float, duration: float) -> int:
    """Poisson arrivals per lane with the mall's profile (thinning at the peak rate)."""
    rng = random.Random(ls.lanes[0])
    top = rate * PEAK / MEAN
    start = time.monotonic()
    end = start + duration
    due = [(start + rng.expovariate(top), lane) for lane in ls.lanes]
    heapq.heapify(due)
    n = 0
    while due and due[0][0] < end:
        at, lane = heapq.heappop(due)
        heapq.heappush(due, (at + rng.expovariate(top), lane))
        if rng.random() * PEAK > mall_profile((at - start) / duration):
            continue
        time.sleep(max(0.0, at - time.monotonic()))
        ls.write(lane, n)
        n += 1
    return n


def run_lanes(lanes: list[str], port: int, folder: str, public_hex: str, a: Any,
              go: Any, queue_go: Any, storm_go: Any, finish: Any, out: Any) -> None:
    """One lane process through the three phases; reports after each (see ``main``)."""
    ls = Lanes(lanes, port, folder, public_hex)
    try:
        ls.online()
        for i, lane in enumerate(lanes):  # one entry each: acked = connected and served
            ls.write(lane, i)
        out.put({"phase": "warm", "acked": ls.wait_acked(900)})
        go.wait()
        n = steady(ls, a.rate, a.duration)
        ok = ls.wait_acked(120)
        out.put({"phase": "steady", "written": n, "acked": ok})
        ls.offline()
        queue_go.wait()  # every lane's steady entries are in before a backlog entry is
        for lane in lanes:
            for i in range(a.backlog):
                ls.write(lane, i)
        out.put({"phase": "queued", "written": a.backlog * len(lanes)})
        storm_go.wait()
        ls.online()
        ok = ls.wait_acked(a.storm_timeout)
        out.put({"phase": "drained", "acked": ok})
        finish.wait()
    finally:
        ls.close()


# ---------------------------------------------------------------- database
def fresh_database() -> str:
    """A new, migrated PostgreSQL database for this run (dropped by ``drop_database``)."""
    from sqlalchemy import text

    from central.db import make_engine, upgrade
    name = f"site_scale_{secrets.token_hex(5)}"
    admin = make_engine(PG_ADMIN).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    eng = make_engine(url)
    upgrade(eng)
    eng.dispose()
    return name


def drop_database(name: str) -> None:
    import psycopg
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres",
                         autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def dsn(name: str) -> str:
    return f"host=127.0.0.1 port=5432 user=postgres dbname={name}"


def lags_ms(name: str, since: datetime, until: datetime) -> tuple[int, float | None,
                                                                 float | None, list[int]]:
    """Lane commit to central commit of the entries recorded in [since, until): count,
    p50, p99, and the p99 of each fifth of the phase (does the lag grow?)."""
    import psycopg
    with psycopg.connect(dsn(name)) as c:
        row = c.execute(
            "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY d), "
            "percentile_cont(0.99) WITHIN GROUP (ORDER BY d) FROM (SELECT "
            "extract(epoch FROM received_at - recorded::timestamptz) * 1000 AS d "
            "FROM lane_entries WHERE recorded::timestamptz >= %s "
            "AND recorded::timestamptz < %s) x", (since, until)).fetchone()
        fifths = c.execute(
            "SELECT b, percentile_cont(0.99) WITHIN GROUP (ORDER BY d) FROM (SELECT "
            "width_bucket(extract(epoch FROM recorded::timestamptz), extract(epoch FROM "
            "%s::timestamptz), extract(epoch FROM %s::timestamptz), 5) AS b, "
            "extract(epoch FROM received_at - recorded::timestamptz) * 1000 AS d "
            "FROM lane_entries WHERE recorded::timestamptz >= %s "
            "AND recorded::timestamptz < %s) x GROUP BY b ORDER BY b",
            (since, until, since, until)).fetchall()
    assert row is not None
    return int(row[0]), None if row[1] is None else float(row[1]), \
        None if row[2] is None else float(row[2]), [round(float(v)) for _b, v in fifths]


def storm_rows(name: str, since: datetime) -> tuple[list[tuple[Any, ...]], datetime | None,
                                                    dict[str, Any]]:
    """The storm's rows as central stored them, central's last commit time, and the
    table's bytes per entry on disk (heap, and heap plus its indexes)."""
    import psycopg
    with psycopg.connect(dsn(name)) as c:
        rows = c.execute(f"SELECT {', '.join(COLS)} FROM lane_entries WHERE "
                         "recorded::timestamptz >= %s ORDER BY lane_id, seq",
                         (since,)).fetchall()
        last = c.execute("SELECT max(received_at) FROM lane_entries").fetchone()
        size = c.execute("SELECT pg_relation_size('lane_entries'), "
                         "pg_total_relation_size('lane_entries'), count(*) "
                         "FROM lane_entries").fetchone()
        idx = c.execute("SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) "
                        "FROM pg_index WHERE indrelid = 'lane_entries'::regclass").fetchall()
    n = max(1, int(size[2])) if size else 1
    sizes: dict[str, Any] = {
        "heap_bytes_per_entry": round(size[0] / n) if size else 0,
        "bytes_per_entry": round(size[1] / n) if size else 0,
        "index_bytes_per_entry": {str(k): round(int(v) / n) for k, v in idx}}
    return rows, None if last is None else last[0], sizes


def raw_insert(name: str, rows: list[tuple[Any, ...]], per_tx: int, conns: int,
               form: str = "unnest") -> tuple[float, float, float, float]:
    """Rows/s of psycopg alone inserting ``rows`` (renamed ``raw-``, or ``rawv-`` for the
    ``values`` form) as central does, ``per_tx`` rows per transaction, sorted by (lane,
    seq), ``conns`` connections each taking whole lanes. ``unnest``: central's statement
    (central.ingest.commit: one ``INSERT ... SELECT ... FROM unnest(<one array per
    column>) ON CONFLICT DO NOTHING`` per transaction); ``values``: the multi-row ``VALUES``
    statement (14 placeholders a row, 4,000 rows at most) central used before.
    Also the CPU seconds it took (this process and its PostgreSQL backends, whose whole
    lives are inside the run), its wall seconds and the machine's busy CPU meanwhile."""
    import psycopg
    chunk = 4000
    prefix = "raw-" if form == "unnest" else "rawv-"
    one = "(" + ", ".join(["%s"] * len(COLS)) + ")"
    head = f"INSERT INTO lane_entries ({', '.join(COLS)}) VALUES "
    # the arrays in psycopg's binary format, as central sends them (central.ingest.commit)
    arrays = ", ".join(f"%b::{'bigint' if c == 'seq' else 'text'}[]" for c in COLS[:-1])
    unnest = (f"INSERT INTO lane_entries ({', '.join(COLS)}) SELECT u.*, %s::timestamptz "
              f"FROM unnest({arrays}) AS u ON CONFLICT DO NOTHING")
    now = datetime.now(UTC)
    mine: list[list[tuple[Any, ...]]] = [[] for _ in range(conns)]
    for r in rows:
        mine[hash(r[0]) % conns].append(
            (prefix + r[0], r[1], prefix + r[2], *r[3:13], now))
    for part in mine:
        part.sort(key=lambda r: (r[0], r[1]))

    def insert(part: list[tuple[Any, ...]]) -> None:
        with psycopg.connect(dsn(name)) as c:
            for i in range(0, len(part), per_tx):
                tx = part[i:i + per_tx]
                with c.transaction():
                    if form == "unnest":
                        cols = [list(col) for col in zip(*tx, strict=True)]
                        c.execute(unnest, (now, *cols[:-1]))
                        continue
                    for j in range(0, len(tx), chunk):
                        p = tx[j:j + chunk]
                        c.execute(head + ",".join([one] * len(p)) + " ON CONFLICT DO NOTHING",
                                  tuple(v for r in p for v in r))

    t0 = time.monotonic()
    cpu0 = time.process_time()
    box0 = box_busy_s()
    threads = [threading.Thread(target=insert, args=(p,)) for p in mine if p]
    for t in threads:
        t.start()
    time.sleep(0.2)
    backends = pg_backends(name)  # new connections: their whole CPU is this insert's
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    raw_cpu = time.process_time() - cpu0 + cpu_s(backends)
    return len(rows) / wall, raw_cpu, wall, box_busy_s() - box0


# ---------------------------------------------------------------- where the cores go
def drain_window(db: str, wpids: list[int], lane_pids: list[int], broker: Any) -> CpuWindow:
    """The drain's CPU accounting: central's worker processes, their PostgreSQL backends
    (connections to this run's database), the rest of PostgreSQL (postmaster, walwriter,
    checkpointer, autovacuum, other databases' backends), the broker (Mosquitto's process,
    or the RabbitMQ node's session; nothing for an outside ``--port`` broker), the lane
    processes, and this process (the RSS sampler, the phase queues)."""
    def bench_backends() -> list[int]:
        return pg_backends(db)

    def pg_rest() -> list[int]:
        mine = set(pg_backends(db))
        return [p for p in uid_pids("postgres") if p not in mine]

    def broker_pids() -> list[int]:
        proc = getattr(broker, "proc", None)
        if proc is None:
            return []
        return session_pids(proc.pid) if hasattr(broker, "amqp_port") else [proc.pid]

    return CpuWindow({"central": lambda: wpids, "pg": bench_backends, "pg_rest": pg_rest,
                      "broker": broker_pids, "lanes": lambda: lane_pids,
                      "bench": lambda: [os.getpid()]})


def drain_figures(c: dict[str, float], n: int, raw_cpu: float | None, raw_s: float | None,
                  raw_box: float | None) -> dict[str, Any]:
    """The drain window's CPU seconds per part, the machine's capacity and busy time in
    that window, and central's entries per CPU second against psycopg's rows per CPU
    second: the ratio that does not depend on what else shares the cores."""
    ncpu = os.cpu_count() or 1
    ours = sum(c[k] for k in ("central", "pg", "broker", "lanes", "bench"))
    central = c["central"] + c["pg"]

    def per(cpu: float | None) -> float | None:
        return None if not cpu or not n else round(n / cpu, 1)

    out: dict[str, Any] = {
        "cpu_window_s": round(c["wall"], 2), "cpu_capacity_s": round(c["wall"] * ncpu, 2),
        "cpu_box_busy_s": round(c["box"], 2),
        "cpu_central_s": round(c["central"], 2), "cpu_pg_s": round(c["pg"], 2),
        "cpu_pg_rest_s": round(c["pg_rest"], 2), "cpu_broker_s": round(c["broker"], 2),
        "cpu_lanes_s": round(c["lanes"], 2), "cpu_bench_s": round(c["bench"], 2),
        # everything else on the box in the window: other users' work, the kernel's threads
        "cpu_other_s": round(max(0.0, c["box"] - ours - c["pg_rest"]), 2),
        "cpu_raw_s": None if raw_cpu is None else round(raw_cpu, 2),
        "raw_s": None if raw_s is None else round(raw_s, 2),
        "cpu_raw_box_busy_s": None if raw_box is None else round(raw_box, 2),
        # entries per CPU second: central = its workers + their backends; pipeline = that
        # plus the broker and the lanes (what the whole storm cost the box)
        "central_entries_per_cpu_s": per(central),
        "central_entries_per_worker_cpu_s": per(c["central"]),
        "pipeline_entries_per_cpu_s": per(central + c["broker"] + c["lanes"]),
        "raw_rows_per_cpu_s": per(raw_cpu),
    }
    r, cen = out["raw_rows_per_cpu_s"], out["central_entries_per_cpu_s"]
    out["cpu_ratio"] = None if not r or not cen else round(cen / r, 3)
    return out


def pyspy_start(pid: int) -> Any:
    """``SITE_SCALE_PYSPY=<folder>``: py-spy (on PATH, or ``$SITE_SCALE_PYSPY_BIN``)
    samples worker 0, every thread, through the drain, into ``<folder>/drain.txt`` (raw
    collapsed stacks: ``sort | uniq``-able, or flamegraph.pl). 50 Hz, non-blocking: its
    own CPU is on the same cores (counted in ``cpu_other_s``)."""
    import subprocess
    folder = os.environ.get("SITE_SCALE_PYSPY")
    if not folder:
        return None
    exe = os.environ.get("SITE_SCALE_PYSPY_BIN") or shutil.which("py-spy") or "py-spy"
    Path(folder).mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "50",
                             "--nonblocking", "--threads", "--format", "raw",
                             "-o", str(Path(folder) / "drain.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pyspy_stop(spy: Any) -> None:
    import signal
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        spy.wait(60)


# ---------------------------------------------------------------- main
def ms_each(seconds: float | None, n: int) -> float | None:
    return None if seconds is None or not n else round(seconds * 1000 / n, 3)


def percent(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--lanes", type=int, default=200)
    ap.add_argument("--per-proc", type=int, default=50, help="lanes per process")
    ap.add_argument("--workers", type=int, default=1, help="central ingest processes")
    ap.add_argument("--broker", choices=("mosquitto", "rabbitmq"), default="mosquitto")
    ap.add_argument("--port", type=int, default=None,
                    help="use the --broker already listening on 127.0.0.1:PORT (Mosquitto, "
                         "or RabbitMQ with --amqp-port)")
    ap.add_argument("--amqp-port", type=int, default=None)
    ap.add_argument("--rate", type=float, default=0.1,
                    help="mean vehicles per lane per second (peaks ~2x)")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of the mall's day")
    ap.add_argument("--backlog", type=int, default=250,
                    help="entries each lane queues offline before the storm (issue: 10000)")
    ap.add_argument("--storm-timeout", type=float, default=1800.0)
    ap.add_argument("--smoke", action="store_true",
                    help="8 lanes, 4 per process, 1 vehicle/s each for 5 s, backlog 20")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.smoke:
        a.lanes, a.per_proc, a.rate, a.duration, a.backlog = 8, 4, 1.0, 5.0, 20
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from parkedge_sim.broker import MosquittoBroker
    from parkedge_sim.rabbitmq import RabbitMQBroker

    folder = Path(tempfile.mkdtemp(prefix="site-scale-"))
    broker: MosquittoBroker | RabbitMQBroker | None = None
    port, amqp_port = a.port, a.amqp_port
    if port is None:
        broker = MosquittoBroker(folder) if a.broker == "mosquitto" else RabbitMQBroker(folder)
        broker.start(**({"timeout_s": 180.0} if a.broker == "rabbitmq" else {}))
        port = broker.port
        amqp_port = getattr(broker, "amqp_port", None)
    if a.broker == "rabbitmq":
        if amqp_port is None:
            raise SystemExit("--broker rabbitmq --port needs --amqp-port")
        declare_queue(amqp_port)
    else:
        amqp_port = None
    lanes = lane_ids(a.lanes)
    seed = os.urandom(32)
    public_hex = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw).hex()
    db = fresh_database()
    cfg = central_config(folder, f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}", port,
                         lanes, seed)
    ctx = mp.get_context("spawn")
    ready, wq, lq = ctx.Queue(), ctx.Queue(), ctx.Queue()
    stop, go, storm_go, finish = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
    queue_go = ctx.Event()
    workers = [ctx.Process(target=run_worker, args=(f"central-w{i}", cfg, amqp_port,
                                                    ready, stop, wq)) for i in range(a.workers)]
    procs = [ctx.Process(target=run_lanes, args=(lanes[i:i + a.per_proc], port, str(folder),
                                                 public_hex, a, go, queue_go, storm_go, finish,
                                                 lq))
             for i in range(0, len(lanes), a.per_proc)]
    peak_rss: dict[int, float] = {}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            for w in workers:
                if w.pid:
                    peak_rss[w.pid] = max(peak_rss.get(w.pid, 0.0), rss_mb(w.pid))
            sampling.wait(0.25)

    def phase(name: str, timeout: float) -> list[dict[str, Any]]:
        got = [lq.get(timeout=timeout) for _ in procs]
        assert all(r["phase"] == name for r in got), got
        return got

    try:
        t0 = time.monotonic()
        for w in workers:
            w.start()
        for _ in workers:
            ready.get(timeout=180)
        central_ready_s = time.monotonic() - t0
        threading.Thread(target=sample, daemon=True).start()
        for p in procs:
            p.start()
        t1 = time.monotonic()
        warm = phase("warm", 1000)  # every lane connected, got its snapshot, one entry acked
        warm_s = time.monotonic() - t1
        wpids = [w.pid for w in workers if w.pid]
        steady0 = (cpu_s(wpids), cpu_s(pg_backends(db)))
        since = datetime.now(UTC)
        go.set()
        st = phase("steady", a.duration + 300)
        until = datetime.now(UTC)
        steady1 = (cpu_s(wpids), cpu_s(pg_backends(db)))
        rss_steady = max(peak_rss.values(), default=0.0)
        written = sum(r["written"] for r in st)
        n_lag, p50, p99, p99_fifths = lags_ms(db, since, until)
        queue_go.set()
        queued = sum(r["written"] for r in phase("queued", 3600))
        backends = pg_backends(db)
        cpu0 = (cpu_s(wpids), cpu_s(backends))
        window = drain_window(db, wpids, [p.pid for p in procs if p.pid], broker)
        window.start()
        spy = pyspy_start(wpids[0])
        storm_at = datetime.now(UTC)
        storm_go.set()
        drained = phase("drained", a.storm_timeout + 120)
        cpu1 = (cpu_s(wpids), cpu_s(backends))
        drain_cpu = window.stop()
        pyspy_stop(spy)
        rows, last, sizes = storm_rows(db, until)
        drain_s = None if last is None else (last - storm_at).total_seconds()
        finish.set()
        rss_peak = max(peak_rss.values(), default=0.0)
        stop.set()
        stats = [wq.get(timeout=60) for _ in workers]
        for p in (*procs, *workers):
            p.join(30)
        sampling.set()
        groups = sum(s["groups"] for s in stats)
        per_tx = max(1, round(sum(s["group_rows"] for s in stats) / max(groups, 1)))
        raw, raw_cpu, raw_s, raw_box = (raw_insert(db, rows, per_tx, a.workers) if rows
                                        else (None, None, None, None))
        rawv, rawv_cpu, _s, _b = (raw_insert(db, rows, per_tx, a.workers, "values") if rows
                                  else (None, None, None, None))
    finally:
        sampling.set()
        finish.set()
        stop.set()
        for p in (*procs, *workers):
            p.join(10)
            if p.is_alive():
                p.kill()
        if broker is not None:
            broker.stop()
        drop_database(db)
        shutil.rmtree(folder, ignore_errors=True)
    rate = None if not drain_s else len(rows) / drain_s
    out = {
        "lanes": a.lanes, "workers": a.workers, "broker": a.broker,
        "entries_per_s": percent(rate), "raw_insert_per_s": percent(raw),
        "ratio": None if rate is None or not raw else round(rate / raw, 2),
        "drain_s": None if drain_s is None else round(drain_s, 2),
        "lag_p50_ms": percent(p50), "lag_p99_ms": percent(p99),
        "lag_p99_by_fifth_ms": p99_fifths,
        "central_rss_mb": round(rss_peak, 1), "central_rss_steady_mb": round(rss_steady, 1),
        "entries_written": written, "entries_acked": n_lag,
        "steady_all_acked": all(r["acked"] for r in st),
        "storm_entries": queued, "storm_committed": len(rows),
        "storm_all_acked": all(r["acked"] for r in drained),
        "central_committed": sum(s.get("committed", 0) for s in stats),
        "central_duplicates": sum(s.get("duplicates", 0) for s in stats),
        "committed_per_worker": [s.get("committed", 0) for s in stats],
        "statuses_written": sum(s.get("status_written", 0) for s in stats),
        "statuses_unchanged": sum(s.get("status_unchanged", 0) for s in stats),
        # the transactions they took: one per status before STATUS_FLUSH_S, one per flush
        "status_flushes": sum(s.get("status_flushes", s.get("status_written", 0))
                              for s in stats),
        "rows_per_group": per_tx, **sizes,
        # CPU per storm entry, whatever the box's load: the workers' processes and their
        # PostgreSQL backends during the drain; psycopg alone and its backends for raw
        "central_cpu_ms_per_entry": ms_each(cpu1[0] - cpu0[0], len(rows)),
        "central_pg_cpu_ms_per_entry": ms_each(cpu1[1] - cpu0[1], len(rows)),
        "raw_cpu_ms_per_entry": ms_each(raw_cpu, len(rows)),
        # the same in steady traffic: one entry a batch, statuses, ticks (backends that
        # came and went in between are missed: a lower bound)
        "steady_cpu_ms_per_entry": ms_each(steady1[0] - steady0[0], written),
        "steady_pg_cpu_ms_per_entry": ms_each(steady1[1] - steady0[1], written),
        **drain_figures(drain_cpu, len(rows), raw_cpu, raw_s, raw_box),
        # psycopg alone with the multi-row VALUES statement central used before
        "raw_values_insert_per_s": percent(rawv),
        "raw_values_rows_per_cpu_s": None if not rawv_cpu else round(len(rows) / rawv_cpu, 1),
        "backlog_per_lane": a.backlog,
        "duration_s": a.duration, "rate_per_lane": a.rate,
        "broker_startup_s": round(getattr(broker, "startup_s", None) or 0.0, 1),
        "central_ready_s": round(central_ready_s, 1), "warm_s": round(warm_s, 1),
        "warm_all_acked": all(r["acked"] for r in warm),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    if a.json:
        print(json.dumps(out, sort_keys=True))
    else:
        for k, v in out.items():
            print(f"{k:>22}: {v}")
        if out["ratio"] is not None:
            print(f"central drained the storm at {out['ratio']}x psycopg's raw insert rate")
    good = (written == n_lag and len(rows) == queued
            and out["central_committed"] == written + queued + a.lanes)
    return 0 if good else 1


if __name__ == "__main__":
    raise SystemExit(main())
