"""The drain benchmark runs end to end (a small --n) and reports what it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench/sync_drain.py"


def test_bench_quick_run_reports_the_three_keys() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--n", "400", "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["n"] == 400 and res["resends"] == 0
    assert res["entries_per_s"] > 0 and res["raw_per_s"] > 0
    assert res["rss_growth_mb"] < 20
