"""``parkedge-sim demo`` end to end, as `make demo` runs it: the whole site (broker, central,
two lane daemons with their own ledgers reading plates from video) must finish with exit 0,
every lane entry at central exactly once, both hash chains intact, and the stays priced as
the rules say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_site_runs_end_to_end() -> None:
    r = subprocess.run([sys.executable, "-m", "parkedge_sim.cli", "demo"], capture_output=True,
                       text=True, timeout=420, cwd=ROOT)
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-3000:]
    for lane in ("E1", "X1"):
        assert f"lane {lane}: ledger verify OK" in out
    assert out.count("exactly once") == 2, out[-2000:]
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line and line[0] in "沪苏浙皖粤鲁豫闽京" and " | " not in line}
    # the gold member: 3-hour coupon then points, nothing left to pay
    assert rows["沪A12345"][6:9] == ["38.50", "5", "0.00"], rows["沪A12345"]
    # too few points: 3 points spent, the rest paid at the pay station
    assert rows["苏E9B7K2"][6:9] == ["26.50", "3", "20.50"], rows["苏E9B7K2"]
    assert rows["粤B12345"][6] == "0.00"  # monthly pass
    # plates read from the video stream reached the exit lane through MQTT
    assert "X1 out 闽D5K233" in out and "E1 REFUSED 粤B66666" in out
