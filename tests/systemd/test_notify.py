"""sd_notify over a real AF_UNIX datagram socket, as systemd's NOTIFY_SOCKET is."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge import notify
from edge.notify import Heartbeat, Watchdog


class Listener:
    """The systemd side: a bound datagram socket collecting every message."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def texts(self) -> list[str]:
        return [m for _, m in self.messages]

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    path = tmp_path / "n.sock"
    if len(str(path)) > 100:  # AF_UNIX path limit is 108 bytes
        pytest.skip(f"tmp_path too long for an AF_UNIX socket: {path}")
    lst = Listener(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield lst
    lst.close()


def test_messages_arrive_verbatim(listener: Listener) -> None:
    assert notify.ready("lane X1 up")
    assert notify.status("exit lane: idle\nsecond line")
    assert notify.watchdog_ping()
    assert notify.stopping()
    listener.wait_for(4)
    assert listener.texts() == [
        "READY=1\nSTATUS=lane X1 up",
        "STATUS=exit lane: idle second line",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_abstract_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"parkedge-test-{uuid.uuid4().hex}"
    lst = Listener("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify.notify("READY=1")
        lst.wait_for(1)
        assert lst.texts() == ["READY=1"]
    finally:
        lst.close()


def test_without_systemd_is_a_quiet_no_op(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    assert notify.watchdog_ping() is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert notify.watchdog_ping() is False  # logged, not raised


def test_watchdog_interval_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert notify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert notify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert notify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert notify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("WATCHDOG_USEC", "garbage")
    assert notify.watchdog_interval() is None


def test_watchdog_pings_only_while_alive(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # 0.2 s → ping every 0.1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    alive = threading.Event()
    alive.set()
    dog = Watchdog(alive.is_set)
    assert dog.enabled
    dog.start()
    try:
        listener.wait_for(3)
        assert listener.texts()[:3] == ["WATCHDOG=1"] * 3
        alive.clear()  # the lane loop hangs
        time.sleep(0.15)  # let an in-flight ping land
        count = len(listener.messages)
        time.sleep(0.5)
        assert len(listener.messages) == count, "pinged while the lane loop was dead"
        assert dog.skipped >= 3
        alive.set()  # recovered before systemd acted
        listener.wait_for(count + 1)
        assert len(listener.messages) > count
    finally:
        dog.stop()
    gaps = [b[0] - a[0] for a, b in zip(listener.messages, listener.messages[1:3], strict=False)]
    assert all(0.05 < g < 0.4 for g in gaps), gaps


def test_watchdog_disabled_without_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    dog = Watchdog(lambda: True)
    assert not dog.enabled
    dog.start()  # a no-op, must not start a thread
    dog.stop()


def test_liveness_callback_that_raises_stops_pings(listener: Listener) -> None:
    def broken() -> bool:
        raise RuntimeError("lane state unreadable")

    dog = Watchdog(broken, interval_s=1.0)
    assert dog.check_once() is False
    assert listener.texts() == []


def test_heartbeat_goes_stale() -> None:
    now = [100.0]
    beat = Heartbeat(max_age_s=5.0, clock=lambda: now[0])
    assert beat.fresh()
    now[0] += 5.0
    assert beat.fresh()
    now[0] += 0.1
    assert not beat.fresh()
    beat.beat()
    assert beat.fresh() and beat.age() == 0.0


CHILD = """
import asyncio, os, sys
from edge import notify
from edge.notify import Heartbeat, Watchdog

async def lane_loop(beat):
    for _ in range(8):
        beat.beat()
        await asyncio.sleep(0.05)
    import time
    time.sleep(1.5)  # a blocking call hangs the event loop: pings must stop

beat = Heartbeat(max_age_s=0.2)
dog = Watchdog(beat.fresh)
notify.ready()
dog.start()
asyncio.run(lane_loop(beat))
notify.stopping()
"""


def test_hung_event_loop_in_a_real_process_stops_pings(listener: Listener) -> None:
    env = dict(os.environ, WATCHDOG_USEC="200000")
    env.pop("WATCHDOG_PID", None)
    subprocess.run([sys.executable, "-c", CHILD], env=env, check=True, timeout=30)
    listener.wait_for(1)
    texts = listener.texts()
    assert texts[0] == "READY=1" and texts[-1] == "STOPPING=1"
    pings = [t for t, m in listener.messages if m == "WATCHDOG=1"]
    assert len(pings) >= 2, texts
    stop_at = listener.messages[-1][0]
    # The heartbeat goes stale 0.2 s into the 1.5 s hang: no ping in its last second.
    late = [t for t in pings if t > stop_at - 1.0]
    assert late == [], (pings, stop_at)
