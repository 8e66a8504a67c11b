"""``parkedge-central serve`` with ``ingest.enabled`` (#13), as an operator runs it: one
process serving the web API and running an ingest worker against a real Mosquitto of the
test's own, on SQLite and PostgreSQL. A lane's batches are committed and acked; a pay
station's prepayment posted over HTTP reaches the exit lane as a signed message through
the worker's outbox; SIGTERM stops the web server, the scheduler and the worker cleanly
(exit 0, the worker's closing line, nothing half-done)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from parkedge_sim.broker import MosquittoBroker, free_port
from sqlalchemy import select

from central.app import Central
from central.config import parse_config
from central.db.models import Lane, Prepayment
from central.services import paystations
from edge.store import prepayments as lane_prepaid
from tests.central.test_ingest_mqtt import (
    REPO,
    broker,  # noqa: F401  (the fixture)
    committed,
    lane,
    site_config,
    to_toml,
    wait_until,
    write_events,
)


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


def _post(url: str, body: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json",
                                          "x-api-key": key})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serve_runs_ingest_and_sigterm_stops_both(tmp_path: Path, db_url: str,
                                                  broker: MosquittoBroker,  # noqa: F811
                                                  ) -> None:
    d, pub = site_config(tmp_path, db_url, broker.port)
    port = free_port()
    d["web"] = {"listen": "127.0.0.1", "port": port}
    d["logging"] = {"level": "INFO"}
    cfg = tmp_path / "central.toml"
    cfg.write_text(to_toml(d))
    c = Central.from_config(parse_config(d))
    with c.tx() as s:
        key = paystations.add(s, "ps1", "Lobby", c.clock())
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "central", "serve", "-c", str(cfg)],
                            cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    entry_store, entry_sync = lane(tmp_path, "entry-1", broker.port, pub)
    exit_store, exit_sync = lane(tmp_path, "exit-1", broker.port, pub)
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: _get(f"{base}/healthz") == 200, 60), log.read_text()
        with c.tx() as s:  # the worker inside serve registered the configured lanes
            assert wait_until(lambda: len(list(s.scalars(select(Lane)))) == 2, 20)
        for sy in (entry_sync, exit_sync):
            sy.start()
        write_events(entry_store, 25)
        entry_sync.notify()
        want = {e.entry_id for e in entry_store.entries(0, 1000)}
        assert wait_until(lambda: want <= set(committed(c)) and entry_sync.backlog() == 0,
                          60), (len(committed(c)), entry_sync.backlog(), log.read_text())
        # a pay station pays over HTTP; the worker's outbox sends it to the exit lane
        status, out = _post(f"{base}/api/paystation/prepayments", {
            "payment_id": "ps1-0001", "plate": "粤B12345", "amount": "30.00"}, key)
        assert status == 201, out
        assert wait_until(lambda: [p["payment_id"] for p in lane_prepaid.list_all(exit_store)]
                          == ["ps1-0001"], 30), log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for sy in (entry_sync, exit_sync):
            sy.stop()
        entry_store.close()
        exit_store.close()
    text = log.read_text()
    assert "Traceback" not in text, text
    assert "ingest: stopping; committed" in text, text  # the worker stopped, not killed
    assert _get(f"{base}/healthz") == 0  # the web server is gone too
    # nothing half-done: every entry once, the prepayment recorded once
    assert sorted(committed(c)) == sorted(set(committed(c)))
    with c.tx() as s:
        assert [p.payment_id for p in s.scalars(select(Prepayment))] == ["ps1-0001"]
    c.close()
