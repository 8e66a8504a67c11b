"""Drain a lane's unacked backlog to ``parkedge-central`` through a real Mosquitto.

Builds a lane ledger with ``--n`` unacked entries, starts Mosquitto on a free loopback port
and one ``parkedge-central ingest`` worker (SQLite, ``parkedge_sim.central_node``) in its
own process, then measures how fast ``LaneSync`` gets every entry committed *and
acknowledged*, and how much this (lane) process's RSS grows meanwhile.
In the same run it sends the same bytes (the same signed batch payloads) with bare paho
clients at QoS 1 through the same broker to a subscriber process that receives every one,
with the lane's window of messages in flight: the transport's ceiling for comparison. It
also reports the CPU each process (lane, central, broker; raw publisher, subscriber, broker)
spent per entry, to say where the time goes.

    .venv/bin/python bench/sync_drain.py --n 100000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from parkedge_sim.central_node import CentralNode, NodeLane

from edge.store import EntryKind, Store
from edge.store import ledger as _ledger
from edge.store.engine import make_engine
from edge.sync import codec, topics
from edge.sync.link import LinkSettings
from edge.sync.service import LaneSync

SITE, LANE, KEY = "bench", "lane-1", "bench-key"
ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_us_per_entry(pids: dict[str, int], before: dict[str, float], n: int) -> dict[str, float]:
    return {f"{name}_cpu_us": (cpu_s(pid) - before[name]) / n * 1e6
            for name, pid in pids.items()}


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
        last = None
        for i in range(n):
            at = t0 + timedelta(seconds=i)
            last = _ledger.append(
                c, lane_id=LANE, kind=EntryKind.SESSION_OPENED, at=at, recorded=at,
                session_id=f"{LANE}-{i:012x}", plate=f"粤B{i % 100000:05d}",
                rules_version="seed-basic-1", after=last,
                payload={"event_id": f"ev-{i}", "vehicle_class": "small",
                         "entry_lane": "elsewhere", "detail": {"conf": "0.97"}})
    engine.dispose()


def wait_central(port: int, timeout: float = 60) -> None:
    """Until central answers a snapshot request, i.e. it is subscribed to the lanes' topics
    (a batch published before that is lost and waits a whole ack timeout)."""
    answered = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-probe")
    c.on_message = lambda *_a: answered.set()
    # central answers a configured lane only: the probe asks as the lane, before it starts
    c.on_connect = lambda cl, *_a: cl.subscribe(topics.snapshot(SITE, LANE), qos=1)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        end = time.monotonic() + timeout
        while not answered.wait(0.3):
            if time.monotonic() > end:
                raise RuntimeError(f"central did not answer within {timeout} s")
            c.publish(topics.snapshot_request(SITE),
                      codec.encode_snapshot_request(LANE, [], "bench"), qos=1)
    finally:
        c.loop_stop()
        c.disconnect()


def _last_seq(db: Path) -> int:
    with sqlite3.connect(db) as c:
        return int(c.execute("SELECT COALESCE(MAX(seq), 0) FROM ledger_entries").fetchone()[0])


def drain(db: Path, port: int, n: int, batch: int, nbytes: int, window: int,
          pids: dict[str, int]) -> dict[str, float]:
    """Time to get all ``n`` entries committed and acked, RSS growth of this (the lane's)
    process, and the CPU each process spent per entry meanwhile (``pids``: name -> pid)."""
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
    pids = {"lane": os.getpid(), **pids}
    before = {name: cpu_s(pid) for name, pid in pids.items()}
    t = time.monotonic()
    sync.start()
    deadline = t + max(120.0, n / 500)
    while sync.uplink.acked_seq < n and time.monotonic() < deadline:
        time.sleep(0.02)  # a plain attribute: polling must not load the lane's database
    elapsed = time.monotonic() - t
    cpu = cpu_us_per_entry(pids, before, n)
    left = sync.backlog()
    stop.set()
    sampler.join()
    resends = sync.uplink.resends
    sync.stop()
    store.close()
    if left:
        raise RuntimeError(f"{left} entries still unacked after {elapsed:.1f} s")
    return {"entries_per_s": n / elapsed, "drain_s": elapsed, "rss_growth_mb": peak[0] - base,
            "resends": resends, **cpu}


def batch_payloads(db: Path, n: int, batch: int, nbytes: int) -> list[bytes]:
    """The backlog cut into signed batches exactly as the uplink cuts them."""
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
    return payloads


RAW_TOPIC = f"{topics.ROOT}/{SITE}/raw/{LANE}"


def raw_subscriber(port: int, count: int) -> int:
    """Child process: subscribe at QoS 1, say ``ready``, receive ``count`` messages, then
    print the monotonic time of the last one and the bytes received (one JSON line)."""
    done = threading.Event()
    got = [0, 0, 0.0]  # messages, bytes, time of the last one

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        got[0] += 1
        got[1] += len(msg.payload)
        if got[0] >= count:
            got[2] = time.monotonic()
            done.set()

    def on_subscribe(*_a: object) -> None:
        print("ready", flush=True)

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-sub")
    c.on_message = on_message
    c.on_subscribe = on_subscribe
    def on_connect(cl: mqtt.Client, *_a: object) -> None:
        _nodelay(cl)
        cl.subscribe(RAW_TOPIC, qos=1)

    c.on_connect = on_connect
    c.connect("127.0.0.1", port)
    c.loop_start()
    ok = done.wait(300)
    c.loop_stop()
    print(json.dumps({"messages": got[0], "bytes": got[1], "last_at": got[2], "ok": ok}),
          flush=True)
    return 0 if ok else 1


def _nodelay(client: mqtt.Client) -> None:
    sock = client.socket()
    if isinstance(sock, socket.socket):  # as the lane and central do
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def raw_publish(db: Path, port: int, n: int, batch: int, nbytes: int, window: int,
                broker_pid: int) -> dict[str, float]:
    """The transport's ceiling, like for like: the same signed batch payloads, QoS 1, through
    the same broker to a subscriber (its own process, as central is) that receives every
    one; at most ``window`` unacknowledged (PUBACK) messages in flight, as the lane keeps at
    most ``window`` batches awaiting central's ack. Time: first publish to last received."""
    payloads = batch_payloads(db, n, batch, nbytes)
    sub = subprocess.Popen([sys.executable, __file__, "--raw-subscriber", str(port),
                            "--n", str(len(payloads))], stdout=subprocess.PIPE, text=True)
    try:
        assert sub.stdout is not None
        if sub.stdout.readline().strip() != "ready":
            raise RuntimeError("raw subscriber did not subscribe")
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-bench")
        c.max_inflight_messages_set(window)
        c.max_queued_messages_set(0)
        c.on_connect = lambda cl, *_a: _nodelay(cl)
        c.connect("127.0.0.1", port)
        c.loop_start()
        pids = {"raw_pub": os.getpid(), "raw_sub": sub.pid, "raw_broker": broker_pid}
        before = {name: cpu_s(pid) for name, pid in pids.items()}
        t = time.monotonic()
        infos = [c.publish(RAW_TOPIC, p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(timeout=60)
        got = json.loads(sub.stdout.readline())
        cpu = cpu_us_per_entry(pids, before, n)
        c.loop_stop()
        c.disconnect()
        sub.wait(10)
    finally:
        if sub.poll() is None:
            sub.kill()
    if not got["ok"] or got["bytes"] != sum(len(p) for p in payloads):
        raise RuntimeError(f"raw subscriber received {got}")
    elapsed = got["last_at"] - t
    return {"raw_per_s": n / elapsed, "raw_s": elapsed, "batches": len(payloads),
            "bytes": sum(len(p) for p in payloads), **cpu}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="unacked entries to drain")
    ap.add_argument("--batch", type=int, default=500, help="sync.batch_max_entries")
    ap.add_argument("--bytes", type=int, default=262_144, help="sync.batch_max_bytes")
    ap.add_argument("--window", type=int, default=8, help="sync.window")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--backlog", type=Path,
                    help="reuse this prebuilt lane ledger of --n entries (built if missing)")
    ap.add_argument("--raw-subscriber", type=int, metavar="PORT", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.raw_subscriber is not None:
        return raw_subscriber(a.raw_subscriber, a.n)
    with tempfile.TemporaryDirectory(prefix="sync-drain-") as tmp:
        d = Path(tmp)
        port = free_port()
        conf = d / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "set_tcp_nodelay true\n")  # small acks must not wait for Nagle
        procs: list[subprocess.Popen[bytes]] = []
        node: CentralNode | None = None
        try:
            procs.append(subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(port)
            t = time.monotonic()
            if a.backlog is not None:
                if not a.backlog.exists() or _last_seq(a.backlog) != a.n:
                    a.backlog.unlink(missing_ok=True)
                    build_backlog(a.backlog, a.n)
                shutil.copyfile(a.backlog, d / "lane.db")
            else:
                build_backlog(d / "lane.db", a.n)
            setup_s = time.monotonic() - t
            # keys go to central in files, never in argv (central_node writes them 0600)
            (d / "central").mkdir()
            node = CentralNode(d / "central", SITE, port, (NodeLane(LANE, "entry", KEY),),
                               ROOT / "config" / "rules.example.toml")
            node.start(web=False)
            wait_central(port)
            res = drain(d / "lane.db", port, a.n, a.batch, a.bytes, a.window,
                        {"central": node.procs["ingest"].pid, "broker": procs[0].pid})
            if res["resends"]:  # a batch waited a full ack timeout: say why if central knows
                sys.stderr.write(node.log_tail("ingest", 4000))
            res.update(raw_publish(d / "lane.db", port, a.n, a.batch, a.bytes, a.window,
                                   procs[0].pid))
            res["ratio_to_raw"] = res["entries_per_s"] / res["raw_per_s"]
            res["n"] = a.n
            res["setup_s"] = setup_s
        finally:
            if node is not None:
                node.stop()
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
