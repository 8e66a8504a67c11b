"""A car is being read: background work of the same process yields until it is done.

Why: a lane box has one or two cores, and a driver waits on the plate read. The uplink
sending a backlog to central (``edge.sync.uplink``: reading pages of the ledger, signing
batches and session notices, recording acks) takes the CPU, the interpreter and the SQLite
file from the reading thread; it loses nothing by waiting the second a read takes
(bench/lane_e2e.py, docs/lpr.md). ``OnBoxPlateSource`` sets ``READING`` while it reads a car;
the uplink sends nothing new while it is set, for at most ``MAX_YIELD_S`` at a time (a read
is bounded by its own timeout; this bound keeps a stuck flag from stopping the uplink).
Pure standard library: importing it pulls in no OpenCV.
"""

from __future__ import annotations

import threading
import time

MAX_YIELD_S = 6.0

READING = threading.Event()
_since = [0.0]


def start_reading() -> None:
    _since[0] = time.monotonic()
    READING.set()


def done_reading() -> None:
    READING.clear()


def lane_busy() -> bool:
    """A read is in progress, and has not been for longer than ``MAX_YIELD_S``."""
    return READING.is_set() and time.monotonic() - _since[0] < MAX_YIELD_S
