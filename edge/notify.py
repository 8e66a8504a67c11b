"""Minimal sd_notify client: READY, STOPPING, STATUS and watchdog pings to systemd.

Written here (no dependency) because the protocol is one datagram per message to the
AF_UNIX socket named by ``$NOTIFY_SOCKET`` (``@name`` = abstract namespace). Every call is
a no-op returning False when not started by systemd, so the daemon runs the same on a bench.

``Watchdog`` pings only while the lane loop's heartbeat is fresh: if the loop hangs, the
pings stop and systemd (``WatchdogSec=``) kills and restarts the service. "Fresh" means younger
than one watchdog interval (``edge.app``; the lane loop stamps it at least every 0.5 s), and
the lane's ``alive()`` also says no when it sits in ``deciding`` (#12 item 3: a lane jammed
there was fed for ever because its loop kept turning).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def notify(message: str) -> bool:
    """Send one sd_notify message (e.g. ``READY=1``); True if it was delivered."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address[0] == "@" else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall(message.encode("utf-8"))
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", address, exc)
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    """Tell systemd start-up is complete (Type=notify)."""
    return notify("READY=1" + (f"\nSTATUS={status_text}" if status_text else ""))


def stopping() -> bool:
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """One-line status shown by ``systemctl status``."""
    return notify("STATUS=" + text.replace("\n", " "))


def watchdog_ping() -> bool:
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds systemd expects between pings, or None if the watchdog is off (or not ours)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


class Watchdog:
    """Pings systemd every ``interval/2`` while ``alive()`` is True, from a daemon thread.

    ``alive`` is typically ``Heartbeat.fresh``; a thread (not an asyncio task) is used so a
    blocked event loop cannot keep pinging, and a stale heartbeat stops the pings.
    """

    def __init__(self, alive: Callable[[], bool], interval_s: float | None = None) -> None:
        self._alive = alive
        self._interval = interval_s if interval_s is not None else watchdog_interval()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pings = 0
        self.skipped = 0

    @property
    def enabled(self) -> bool:
        return self._interval is not None

    def check_once(self) -> bool:
        """Ping if alive; returns whether a ping was sent (also used by tests)."""
        try:
            ok = self._alive()
        except Exception:
            log.exception("watchdog liveness check raised; not pinging")
            ok = False
        if not ok:
            self.skipped += 1
            log.warning("lane loop heartbeat is stale: withholding the watchdog ping")
            return False
        sent = watchdog_ping()
        self.pings += sent
        return sent

    def start(self) -> None:
        if self._interval is None or self._thread is not None:
            return
        period = self._interval / 2

        def run() -> None:
            while not self._stop.wait(period):
                self.check_once()

        self._thread = threading.Thread(target=run, name="sd-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class Heartbeat:
    """A monotonic timestamp the lane loop bumps each turn; ``fresh()`` feeds ``Watchdog``."""

    def __init__(self, max_age_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self._clock = clock
        self._last = clock()

    def beat(self) -> None:
        self._last = self._clock()

    def age(self) -> float:
        return self._clock() - self._last

    def fresh(self) -> bool:
        return self.age() <= self.max_age_s
