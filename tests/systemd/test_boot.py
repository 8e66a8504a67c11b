"""The unit under a real systemd as PID 1 (bench/systemd_boot.py: systemd-nspawn -b, Debian 12).

Slow (1.5-2 min, plus ~5 min and network for the first debootstrap) and needs root and
systemd-nspawn/debootstrap, so it runs only when asked: PARKEDGE_SYSTEMD_BOOT=1 (and
optionally PARKEDGE_SYSTEMD_TREE=/var/lib/machines/...). docs/deploy.md shows a run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "systemd_boot.py"


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.skipif(os.environ.get("PARKEDGE_SYSTEMD_BOOT") != "1",
                    reason="boots a container (root, network once): PARKEDGE_SYSTEMD_BOOT=1")
def test_unit_under_systemd_as_pid1() -> None:
    cmd = [sys.executable, str(SCRIPT), "--json"]
    if os.environ.get("PARKEDGE_SYSTEMD_TREE"):
        cmd += ["--tree", os.environ["PARKEDGE_SYSTEMD_TREE"]]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=2300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    summary = json.loads(next(line for line in reversed(done.stdout.splitlines())
                              if line.startswith("{")))
    assert summary["ready"]["status"].startswith("lane E1")
    assert summary["serial"]["car"] == "passed"
    assert summary["watchdog"]["restarts"] >= 1
    assert summary["watchdog"]["new_pid"] != summary["watchdog"]["stopped_pid"]
    shipped = summary["devices"]["shipped_unit"]
    assert shipped["/dev/lanedev/ttyS6"] == "ENXIO"  # allowed (no UART behind the node)
    assert shipped["/dev/lanedev/misc-watchdog"] == "EPERM"  # refused by the device cgroup
    assert summary["devices"]["ttyAMA0_dropin"]["/dev/lanedev/ttyAMA0"] == "ENXIO"
    # Resolved at start: a node that appears later is refused until the unit restarts.
    assert summary["devices"]["plugged_late"] == "EPERM"
    assert summary["devices"]["plugged_late_after_restart"] == "ENXIO"
    for status in ("2", "65"):
        assert summary[f"exit_{status}"]["NRestarts"] == "0"
        assert summary[f"exit_{status}"]["ExecMainStatus"] == status
