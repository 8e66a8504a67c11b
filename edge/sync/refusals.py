"""One place where the lane's sync counts and logs what it refused.

Why: every refusal (a forged ack, a member state that does not verify, a message over the
size limit ...) must be counted (a Prometheus series per reason and a Counter for tests and
the status) and logged, but a flood of forgeries must not become a flood of log lines: the
first of each reason is logged at once, later ones at most once a minute with how many were
refused meanwhile. Thread-safe: paho's thread and the sync worker both report here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from edge import metrics

log = logging.getLogger("edge.sync")


class Refusals:
    def __init__(self, *, log_every_s: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._logged_at: dict[str, float] = {}
        self._quiet: Counter[str] = Counter()
        self._every = log_every_s
        self._mono = monotonic

    def __call__(self, reason: str, detail: str) -> None:
        """Count one refusal of ``reason`` and log it (rate-limited per reason)."""
        now = self._mono()
        with self._lock:
            self.counts[reason] += 1
            last = self._logged_at.get(reason)
            if last is not None and now - last < self._every:
                self._quiet[reason] += 1
                quiet = -1
            else:
                self._logged_at[reason] = now
                quiet = self._quiet.pop(reason, 0)
        metrics.SYNC_REFUSED.labels(reason=reason).inc()
        metrics.BAD_INPUT.labels(source="sync").inc()
        if quiet >= 0:
            more = f" (+{quiet} more since the last line)" if quiet else ""
            log.warning("sync message refused (%s): %s%s", reason, detail[:300], more)
