"""Smoke run of bench/site_scale.py (#16): a few lanes with the real sync code against central's
ingest on PostgreSQL, on each broker (RabbitMQ: the workers' AMQP queue needs its AMQP port)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", ["mosquitto", "rabbitmq"])
def test_site_scale_smoke(kind: str, request: pytest.FixtureRequest) -> None:
    """On the session's brokers (a RabbitMQ node takes seconds to start)."""
    node: Any = request.getfixturevalue("broker" if kind == "mosquitto" else "rabbitmq")
    out = subprocess.run([sys.executable, str(REPO / "bench/site_scale.py"), "--smoke",
                          "--json", "--broker", kind, "--port", str(node.port),
                          *(["--amqp-port", str(node.amqp_port)] if kind == "rabbitmq" else [])],
                         capture_output=True, text=True,
                         timeout=240, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["lanes"] == 8 and r["workers"] == 1 and r["broker"] == kind
    assert r["entries_acked"] == r["entries_written"] > 0
    assert r["central_committed"] == r["entries_written"] + r["storm_entries"] + r["lanes"]
    assert r["entries_per_s"] > 0 and r["lag_p50_ms"] <= r["lag_p99_ms"]
