"""bench/lane_e2e.py end to end on a few cars and a small backlog: the real daemon reads each
car off the simulator's MJPEG video and opens, the uplink drains to the acking central
meanwhile, and the report has the keys the issue names (#15)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "lane_e2e.py"


def test_lane_e2e_reads_cars_while_the_backlog_drains() -> None:
    # central at 150 entries/s keeps a 1,500-entry backlog draining for ~10 s: the first
    # cars arrive while it does
    out = subprocess.run(
        [sys.executable, str(BENCH), "--n", "3", "--warmup", "0", "--backlog", "1500",
         "--central-rate", "150", "--gap", "0.3", "--json"],
        capture_output=True, text=True, timeout=300, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"p50_ms", "p95_ms", "p99_ms", "operator_share"} <= res.keys()
    assert res["n"] == 3 and res["opened"] >= 2, res
    assert 0 < res["p50_ms"] <= res["p95_ms"] <= res["p99_ms"] < 8000, res
    assert 0.0 <= res["operator_share"] <= 1.0
    assert res["draining_cars"] >= 1, "no car arrived while the backlog drained"
    # every entry, the backlog's and the cars', reached central and was acked
    assert res["backlog_at_end"] == 0, res
    assert res["central"]["refused"] == 0
    assert res["central"]["upto"] >= 1500 + res["opened"], res
    # where each car's time went, from the daemon's own per-read trace and transitions
    stages = res["stages_ms"]
    assert sum(stages["ended"].values()) == res["opened"], stages
    for key in ("loop", "read", "read_cpu", "publish", "decide", "open"):
        assert 0 <= stages[key]["p50"] <= stages[key]["max"], (key, stages)
    assert stages["frames"]["p50"] >= 1
    # the whole daemon's memory, with PP-OCR, its detector and the CRNN loaded
    rss = res["daemon_rss_mb"]
    assert 100 < rss["ready"] <= rss["peak"] and rss["steady"] <= rss["peak"], rss
