"""A tiny bench/site_scale.py run (#16): 4 lanes, 1 worker, seconds, on its own Mosquitto
and a fresh PostgreSQL database: every entry of both phases committed exactly once, and
every figure of the --json line present and sane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.central.conftest import _pg_reachable

REPO = Path(__file__).resolve().parents[2]
KEYS = ("lanes", "workers", "broker", "entries_per_s", "raw_insert_per_s", "drain_s",
        "lag_p50_ms", "lag_p99_ms", "central_rss_mb")
#: Storm entries per lane: enough that the drain's PostgreSQL backend CPU is several clock
#: ticks (10 ms) now that a row costs it ~0.03 ms: with 30 (120 rows) it was read as 0.00 s.
BACKLOG = 500


def test_site_scale_tiny_run_commits_everything_once() -> None:
    if not _pg_reachable():
        pytest.skip("no PostgreSQL server at 127.0.0.1:5432")
    out = subprocess.run([sys.executable, str(REPO / "bench/site_scale.py"), "--json",
                          "--lanes", "4", "--per-proc", "2", "--workers", "1",
                          "--rate", "1", "--duration", "3", "--backlog", str(BACKLOG)],
                         capture_output=True, text=True, timeout=240, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(r[k] is not None for k in KEYS), r
    assert (r["lanes"], r["workers"], r["broker"]) == (4, 1, "mosquitto")
    assert r["entries_written"] == r["entries_acked"] > 0 and r["steady_all_acked"]
    assert r["storm_entries"] == r["storm_committed"] == 4 * BACKLOG and r["storm_all_acked"]
    assert r["central_committed"] == r["entries_written"] + r["storm_entries"] + 4  # warm-ups
    assert r["central_duplicates"] >= 0 and r["committed_per_worker"] == [r["central_committed"]]
    assert 0 <= r["lag_p50_ms"] <= r["lag_p99_ms"] < 60_000
    assert r["drain_s"] > 0 and r["entries_per_s"] > 0 and r["raw_insert_per_s"] > 0
    assert r["ratio"] == pytest.approx(r["entries_per_s"] / r["raw_insert_per_s"], abs=0.01)
    assert r["central_rss_mb"] > 10
    # where the cores went during the drain: every part counted, none more than the box
    parts = ("cpu_central_s", "cpu_pg_s", "cpu_pg_rest_s", "cpu_broker_s", "cpu_lanes_s",
             "cpu_bench_s", "cpu_other_s")
    assert all(r[k] >= 0 for k in parts), r
    assert r["cpu_central_s"] > 0 and r["cpu_lanes_s"] > 0 and r["cpu_pg_s"] > 0
    assert r["cpu_window_s"] >= r["drain_s"] * 0.9
    assert r["cpu_capacity_s"] == pytest.approx(r["cpu_window_s"] * (os.cpu_count() or 1),
                                                abs=0.05)
    ours = sum(r[k] for k in parts[:-1])
    assert ours <= r["cpu_box_busy_s"] + 0.1 + 0.02 * r["cpu_window_s"]  # jiffies, rounding
    assert r["cpu_box_busy_s"] <= r["cpu_capacity_s"] * 1.05 + 0.1
    assert r["cpu_raw_s"] > 0 and r["raw_s"] > 0 and r["raw_values_insert_per_s"] > 0
    cen = r["cpu_central_s"] + r["cpu_pg_s"]  # each rounded to 0.01 s
    n = r["storm_committed"]
    assert n / (cen + 0.01) <= r["central_entries_per_cpu_s"] <= n / max(cen - 0.01, 1e-3)
    assert r["cpu_ratio"] == pytest.approx(
        r["central_entries_per_cpu_s"] / r["raw_rows_per_cpu_s"], abs=0.002)
