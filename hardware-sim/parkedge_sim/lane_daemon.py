"""A ``parkedge run`` daemon as a child process, driven through its control socket.

Why here: the demo and the integration tests start lane daemons against simulated lanes and
need the same few things: start, wait until it is up (and, say, idle with healthy devices),
send it operator commands, read its ledger file, stop it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.control import request


class LaneProcess:
    """One daemon: ``config`` written by ``lane_config.write_lane_config`` (ledger beside it)."""

    def __init__(self, lane_id: str, config: Path, log: Path) -> None:
        self.lane_id = lane_id
        self.config = config
        self.log = log
        self.db = config.parent / f"{lane_id}.db"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(self.config)],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )

    def control(self, payload: dict[str, Any]) -> dict[str, Any]:
        from edge.config import load_config

        cfg = load_config(self.config)
        return request(Path(cfg.lane.control_socket), payload)

    def wait_ready(self, timeout: float = 60.0,
                   until: Callable[[dict[str, Any]], bool] = lambda st: True) -> None:
        """Until the control socket answers with a status ``until`` accepts (e.g. idle with
        every device healthy); RuntimeError with the log's tail if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"lane {self.lane_id} exited: {self.log_tail()}")
            with contextlib.suppress(ConnectionError, OSError, ValueError):
                st = self.control({"cmd": "status"})
                if st.get("ok") and until(st):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"lane {self.lane_id} did not come up: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return f"{self.log}:\n" + self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return str(self.log)

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read the lane's ledger file (read-only; the daemon is the only writer)."""
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(sql, args).fetchall()
        except sqlite3.OperationalError:  # not created yet
            return []
        finally:
            con.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
