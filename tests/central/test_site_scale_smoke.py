"""A tiny bench/site_scale.py run (#16): 4 lanes, 1 worker, seconds, on its own Mosquitto
and a fresh PostgreSQL database: every entry of both phases committed exactly once, and
every figure of the --json line present and sane."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.central.conftest import _pg_reachable

REPO = Path(__file__).resolve().parents[2]
KEYS = ("lanes", "workers", "broker", "entries_per_s", "raw_insert_per_s", "drain_s",
        "lag_p50_ms", "lag_p99_ms", "central_rss_mb")


def test_site_scale_tiny_run_commits_everything_once() -> None:
    if not _pg_reachable():
        pytest.skip("no PostgreSQL server at 127.0.0.1:5432")
    out = subprocess.run([sys.executable, str(REPO / "bench/site_scale.py"), "--json",
                          "--lanes", "4", "--per-proc", "2", "--workers", "1",
                          "--rate", "1", "--duration", "3", "--backlog", "30"],
                         capture_output=True, text=True, timeout=240, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(r[k] is not None for k in KEYS), r
    assert (r["lanes"], r["workers"], r["broker"]) == (4, 1, "mosquitto")
    assert r["entries_written"] == r["entries_acked"] > 0 and r["steady_all_acked"]
    assert r["storm_entries"] == r["storm_committed"] == 4 * 30 and r["storm_all_acked"]
    assert r["central_committed"] == r["entries_written"] + r["storm_entries"] + 4  # warm-ups
    assert r["central_duplicates"] >= 0 and r["committed_per_worker"] == [r["central_committed"]]
    assert 0 <= r["lag_p50_ms"] <= r["lag_p99_ms"] < 60_000
    assert r["drain_s"] > 0 and r["entries_per_s"] > 0 and r["raw_insert_per_s"] > 0
    assert r["ratio"] == pytest.approx(r["entries_per_s"] / r["raw_insert_per_s"], abs=0.01)
    assert r["central_rss_mb"] > 10
