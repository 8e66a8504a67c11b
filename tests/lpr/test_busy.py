"""While a car is read (``edge.lpr.busy``), the uplink sends nothing new; it goes on once the
read is done, and a flag left set stops it for at most ``MAX_YIELD_S`` (#15)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edge.lpr import busy
from tests.sync.conftest import Broker, broker, make_store, make_sync, wait_until, write_events

__all__ = ["broker"]  # the sync tests' session broker (its own Mosquitto on a free port)


def test_the_uplink_waits_while_a_car_is_read(tmp_path: Path, broker: Broker) -> None:
    store = make_store(tmp_path, "entry-1")
    write_events(store, 30)
    sync = make_sync(store, broker.port, batch_max_entries=10, window=3)
    busy.start_reading()
    try:
        sync.start()
        assert wait_until(sync.link.connected.is_set, 10)
        time.sleep(1.0)  # the sync thread turns every 0.2 s at most: five chances to send
        assert sync.uplink.batches_sent == 0
        busy.done_reading()
        assert wait_until(lambda: sync.uplink.batches_sent > 0, 10)
    finally:
        busy.done_reading()
        sync.stop()


def test_a_flag_left_set_stops_nothing_for_long(monkeypatch: pytest.MonkeyPatch) -> None:
    busy.start_reading()
    try:
        assert busy.lane_busy()
        later = time.monotonic() + busy.MAX_YIELD_S + 0.1
        monkeypatch.setattr(busy.time, "monotonic", lambda: later)
        assert not busy.lane_busy()
    finally:
        busy.done_reading()
    monkeypatch.undo()
    assert not busy.lane_busy()
