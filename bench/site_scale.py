"""N lanes with the real sync code against the bench central, on Mosquitto or RabbitMQ (#16).

Skeleton of the chain bench of issue #16: ``--lanes`` lanes (``LaneSync``, each with its own
SQLite ledger, HMAC key, paho client and client id), ``--per-proc`` of them per process so
that hundreds fit on this box, each writing one ledger entry per vehicle at a Poisson pace of
``--rate`` vehicles per second (default one every 10 s), through a broker of the bench's own
(``--broker mosquitto|rabbitmq``) to the bench central (its own process, SQLite). Lag = from
the lane's commit of an entry to the lane seeing central's ack that covers it (central's
commit plus the ack's way back: an upper bound of commit-to-commit), polled every 10 ms.

Not yet here (issue #16): the mall's morning and evening peaks, the backlog storm and
``drain_s``, the raw psycopg insert rate, PostgreSQL and several central workers (the bench
central has one; ``workers`` is 1), session events (entries are lane events, so no
sessions fan out to the other lanes of the site).

    .venv/bin/python bench/site_scale.py --smoke --json    # 8 lanes for 5 s
    .venv/bin/python bench/site_scale.py --lanes 200 --broker rabbitmq --json
"""

from __future__ import annotations

import argparse
import heapq
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hardware-sim"))

SITE = "chain"


def lane_ids(n: int) -> list[str]:
    return [f"lane-{i:04d}" for i in range(n)]


def key_of(lane: str) -> bytes:
    return f"key-{lane}".encode()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_central(port: int, lanes: list[str], db: str, seed: bytes, ready: Any, stop: Any,
                out: Any) -> None:
    """The bench central in its own process; reports its counters when told to stop."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from parkedge_sim.central import CentralServer

    c = CentralServer(host="127.0.0.1", port=port, site=SITE,
                      lane_keys={lane: key_of(lane) for lane in lanes},
                      db_url=f"sqlite:///{db}", client_id="central-bench",
                      signing_key=Ed25519PrivateKey.from_private_bytes(seed))
    c.start()
    if c.connected.wait(170):
        ready.set()
    stop.wait()
    out.put(dict(c.stats))
    c.stop()


def run_lanes(lanes: list[str], port: int, folder: str, public_hex: str, rate: float,
              duration: float, go: Any, out: Any) -> None:
    """``lanes`` lanes in one process: one writer thread, one ack poller, real LaneSync."""
    from edge.store import Store
    from edge.sync.link import LinkSettings
    from edge.sync.service import LaneSync

    syncs: dict[str, LaneSync] = {}
    stores: dict[str, Store] = {}
    for lane in lanes:
        stores[lane] = Store.open(Path(folder) / f"{lane}.db", lane)
        syncs[lane] = LaneSync(stores[lane], site=SITE, settings=LinkSettings(
            host="127.0.0.1", port=port, client_id=lane, keepalive_s=15),
            hmac_key=key_of(lane), public_key_hex=public_hex, status_interval_s=5.0)
        syncs[lane].start()
    written: dict[str, list[tuple[int, float]]] = {lane: [] for lane in lanes}
    lags: list[float] = []
    lock = threading.Lock()
    done = threading.Event()

    def poll() -> None:
        pos = dict.fromkeys(lanes, 0)
        while not done.is_set() or any(pos[lane] < len(written[lane]) for lane in lanes):
            now = time.monotonic()
            for lane in lanes:
                acked = syncs[lane].uplink.acked_seq
                with lock:
                    w = written[lane]
                    while pos[lane] < len(w) and w[pos[lane]][0] <= acked:
                        lags.append(now - w[pos[lane]][1])
                        pos[lane] += 1
            if done.is_set() and time.monotonic() > end + 60:
                break  # what is still unacked a minute after the end counts as not acked
            time.sleep(0.01)

    go.wait()
    start = time.monotonic()
    end = start + duration
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    rng = random.Random(hash(lanes[0]))
    due = [(start + rng.expovariate(rate), lane) for lane in lanes]
    heapq.heapify(due)
    n = 0
    while due and due[0][0] < end:
        at, lane = heapq.heappop(due)
        time.sleep(max(0.0, at - time.monotonic()))
        e = stores[lane].record_lane_event("vehicle", datetime.now(UTC),
                                           plate=f"粤B{n % 99999:05d}")
        with lock:
            written[lane].append((e.seq, time.monotonic()))
        syncs[lane].notify()
        n += 1
        heapq.heappush(due, (at + rng.expovariate(rate), lane))
    done.set()
    poller.join()
    for lane in lanes:
        syncs[lane].stop()
        stores[lane].close()
    out.put({"written": n, "lags": lags})


def percentile(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lanes", type=int, default=200)
    ap.add_argument("--per-proc", type=int, default=50, help="lanes per process")
    ap.add_argument("--broker", choices=("mosquitto", "rabbitmq"), default="mosquitto")
    ap.add_argument("--port", type=int, default=None,
                    help="use the --broker already listening on 127.0.0.1:PORT")
    ap.add_argument("--rate", type=float, default=0.1, help="vehicles per lane per second")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of traffic")
    ap.add_argument("--smoke", action="store_true",
                    help="8 lanes, 4 per process, 1 vehicle/s each for 5 s (make test)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.smoke:
        a.lanes, a.per_proc, a.rate, a.duration = 8, 4, 1.0, 5.0
    from parkedge_sim.broker import MosquittoBroker
    from parkedge_sim.rabbitmq import RabbitMQBroker

    folder = Path(tempfile.mkdtemp(prefix="site-scale-"))
    broker: MosquittoBroker | RabbitMQBroker | None = None
    port = a.port
    if port is None:
        broker = MosquittoBroker(folder) if a.broker == "mosquitto" else RabbitMQBroker(folder)
        broker.start()
        port = broker.port
    ctx = mp.get_context("spawn")
    lanes = lane_ids(a.lanes)
    seed = os.urandom(32)  # central's Ed25519 key; the lanes verify with its public half
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    public_hex = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw).hex()
    ready, stop, go = ctx.Event(), ctx.Event(), ctx.Event()
    cq: Any = ctx.Queue()
    lq: Any = ctx.Queue()
    central = ctx.Process(target=run_central, args=(port, lanes,
                                                    str(folder / "central.db"), seed, ready,
                                                    stop, cq))
    procs = [ctx.Process(target=run_lanes, args=(lanes[i:i + a.per_proc], port,
                                                 str(folder), public_hex, a.rate, a.duration,
                                                 go, lq))
             for i in range(0, len(lanes), a.per_proc)]
    try:
        t0 = time.monotonic()
        central.start()
        if not ready.wait(180):
            raise RuntimeError("central did not subscribe within 180 s")
        central_ready_s = time.monotonic() - t0
        for p in procs:
            p.start()
        time.sleep(2.0)  # lanes connect (and fetch their snapshots) before the traffic
        go.set()
        results = [lq.get(timeout=a.duration + 180) for _ in procs]
        central_rss = rss_mb(central.pid) if central.pid else 0.0
        stop.set()
        stats = cq.get(timeout=30)
        for p in (*procs, central):
            p.join(30)
    finally:
        for p in (*procs, central):
            if p.is_alive():
                p.kill()
        if broker is not None:
            broker.stop()
        shutil.rmtree(folder, ignore_errors=True)
    lags = [x for r in results for x in r["lags"]]
    written = sum(r["written"] for r in results)
    p50, p99 = percentile(lags, 50), percentile(lags, 99)
    out = {
        "lanes": a.lanes, "workers": 1, "broker": a.broker,
        "entries_written": written, "entries_acked": len(lags),
        "entries_per_s": round(len(lags) / a.duration, 1),
        "lag_p50_ms": None if p50 is None else round(p50 * 1000, 1),
        "lag_p99_ms": None if p99 is None else round(p99 * 1000, 1),
        "central_committed": stats.get("committed", 0),
        "central_rss_mb": round(central_rss, 1),
        "raw_insert_per_s": None, "drain_s": None,  # not yet (see the docstring)
        "duration_s": a.duration, "rate_per_lane": a.rate,
        "broker_startup_s": round(getattr(broker, "startup_s", None) or 0.0, 1),
        "central_ready_s": round(central_ready_s, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    if a.json:
        print(json.dumps(out, sort_keys=True))
    else:
        for k, v in out.items():
            print(f"{k:>18}: {v}")
    return 0 if written == len(lags) else 1


if __name__ == "__main__":
    raise SystemExit(main())
