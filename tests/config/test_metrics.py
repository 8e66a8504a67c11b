"""Metrics: the shared registry is served over HTTP on a loopback address."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from edge import metrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_served_metrics_reflect_updates() -> None:
    server = metrics.start_metrics_server(f"127.0.0.1:{free_port()}")
    assert server is not None
    try:
        metrics.DEVICE_ERRORS.labels(device="barrier").inc()
        metrics.set_device_health("barrier", "degraded")
        metrics.BAD_INPUT.labels(source="camera").inc(2)
        metrics.set_lane_state("idle")
        metrics.set_lane_state("awaiting_plate")
        port = server.server_address[1]
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        text = body.decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'parkedge_device_errors_total{device="barrier"}' in text
    assert 'parkedge_device_health{device="barrier"} 1.0' in text
    assert 'parkedge_bad_input_total{source="camera"}' in text
    assert 'parkedge_lane_state{state="idle"} 0.0' in text
    assert 'parkedge_lane_state{state="awaiting_plate"} 1.0' in text


def test_empty_listen_is_off_and_bad_listen_raises() -> None:
    assert metrics.start_metrics_server("") is None
    with pytest.raises(ValueError):
        metrics.start_metrics_server("nonsense")
