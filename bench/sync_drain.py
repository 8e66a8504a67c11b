"""Drain a lane's unacked backlog to the bench central server through a real Mosquitto.

Builds a lane ledger with ``--n`` unacked entries, starts Mosquitto on a free loopback port
and the central server in its own process, then measures how fast ``LaneSync`` gets every
entry committed *and acknowledged*, and how much this (lane) process's RSS grows meanwhile.
In the same run it publishes the same bytes (the same batch payloads) with a bare paho
client at QoS 1 and waits for every PUBACK: the transport's ceiling for comparison.

    .venv/bin/python bench/sync_drain.py --n 100000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.store import EntryKind, Store
from edge.store import ledger as _ledger
from edge.store.engine import make_engine
from edge.sync import codec, topics
from edge.sync.link import LinkSettings
from edge.sync.service import LaneSync

SITE, LANE, KEY = "bench", "lane-1", "bench-key"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


def build_backlog(db: Path, n: int) -> None:
    """``n`` realistic entries in one transaction (setup speed; the lane writes one by one)."""
    Store.open(db, LANE).close()
    engine = make_engine(db)
    t0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    with engine.begin() as c:
        for i in range(n):
            at = t0 + timedelta(seconds=i)
            _ledger.append(c, lane_id=LANE, kind=EntryKind.SESSION_OPENED, at=at, recorded=at,
                           session_id=f"{LANE}-{i:012x}", plate=f"粤B{i % 100000:05d}",
                           rules_version="seed-basic-1",
                           payload={"event_id": f"ev-{i}", "vehicle_class": "small",
                                    "entry_lane": "elsewhere", "detail": {"conf": "0.97"}})
    engine.dispose()


def drain(db: Path, port: int, n: int, batch: int, nbytes: int, window: int) -> dict[str, float]:
    store = Store.open(db, LANE)
    sync = LaneSync(store, site=SITE,
                    settings=LinkSettings(host="127.0.0.1", port=port, client_id=LANE),
                    hmac_key=KEY.encode(), batch_max_entries=batch, batch_max_bytes=nbytes,
                    window=window, ack_timeout_s=10.0)
    peak = [rss_mb()]
    base = peak[0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.monotonic()
    sync.start()
    deadline = t + max(120.0, n / 500)
    while sync.backlog() > 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    elapsed = time.monotonic() - t
    left = sync.backlog()
    stop.set()
    sampler.join()
    resends = sync.uplink.resends
    sync.stop()
    store.close()
    if left:
        raise RuntimeError(f"{left} entries still unacked after {elapsed:.1f} s")
    return {"entries_per_s": n / elapsed, "drain_s": elapsed, "rss_growth_mb": peak[0] - base,
            "resends": resends}


def raw_publish(db: Path, port: int, n: int, batch: int, nbytes: int) -> dict[str, float]:
    """The same entries as the same signed batch payloads, bare paho QoS 1, all PUBACKed."""
    store = Store.open(db, LANE)
    payloads: list[bytes] = []
    budget = nbytes - codec.batch_overhead(SITE, LANE)
    after = 0
    while True:
        page = store.entries(after, batch)
        if not page:
            break
        parts: list[bytes] = []
        used, first = 0, page[0].seq
        for e in page:
            enc = codec.encode_entry(e)
            if parts and used + len(enc) + 1 > budget:
                break
            parts.append(enc)
            used += len(enc) + 1
            after = e.seq
        payloads.append(codec.encode_batch(SITE, LANE, parts, first, after, KEY.encode(),
                                           datetime.now(UTC)))
    store.close()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-bench")
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    topic = f"{topics.ROOT}/{SITE}/raw/{LANE}"
    t = time.monotonic()
    infos = [c.publish(topic, p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(timeout=60)
    elapsed = time.monotonic() - t
    c.loop_stop()
    c.disconnect()
    return {"raw_per_s": n / elapsed, "raw_s": elapsed, "batches": len(payloads),
            "bytes": sum(len(p) for p in payloads)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="unacked entries to drain")
    ap.add_argument("--batch", type=int, default=500, help="sync.batch_max_entries")
    ap.add_argument("--bytes", type=int, default=262_144, help="sync.batch_max_bytes")
    ap.add_argument("--window", type=int, default=8, help="sync.window")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sync-drain-") as tmp:
        d = Path(tmp)
        port = free_port()
        conf = d / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "set_tcp_nodelay true\n")  # small acks must not wait for Nagle
        procs: list[subprocess.Popen[bytes]] = []
        try:
            procs.append(subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(port)
            t = time.monotonic()
            build_backlog(d / "lane.db", a.n)
            setup_s = time.monotonic() - t
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "parkedge_sim.central", "--broker", f"127.0.0.1:{port}",
                 "--site", SITE, "--db", f"sqlite:///{d / 'central.db'}",
                 "--lane-key", f"{LANE}={KEY}", "--signing-key", str(d / "rules.key")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(1.5)  # central connects and subscribes
            res = drain(d / "lane.db", port, a.n, a.batch, a.bytes, a.window)
            res.update(raw_publish(d / "lane.db", port, a.n, a.batch, a.bytes))
            res["ratio_to_raw"] = res["entries_per_s"] / res["raw_per_s"]
            res["n"] = a.n
            res["setup_s"] = setup_s
        finally:
            for p in reversed(procs):
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
    if a.json:
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v
                          for k, v in res.items()}))
    else:
        for k, v in res.items():
            print(f"{k:>14}: {v:,.2f}" if isinstance(v, float) else f"{k:>14}: {v}")
        ok = (res["entries_per_s"] >= 10_000 and res["ratio_to_raw"] >= 0.5
              and res["rss_growth_mb"] < 20)
        print("goal (>= 10,000/s, >= 0.5x raw, < 20 MB):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
