"""Per-device health with de-duplicated logging.

The first failure is logged at ERROR, repeats at DEBUG until a success resets it (the way
Home Assistant's Modbus hub does), so a dead device cannot flood the journal. Every failure
is still counted, for metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from edge import metrics
from edge.barrier.interfaces import Health

Listener = Callable[[str, Health, Health], None]


class HealthTracker:
    """Tracks one device: consecutive failures decide DEGRADED then DOWN."""

    def __init__(
        self,
        name: str,
        logger: logging.Logger,
        *,
        down_after: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._log = logger
        self._down_after = max(1, down_after)
        self._clock = clock
        self.state = Health.OK
        self.consecutive_failures = 0
        self.failures_total = 0
        self.successes_total = 0
        self.last_error: str | None = None
        self.since = clock()
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """``listener(name, old, new)`` is called on every state change."""
        self._listeners.append(listener)

    def success(self) -> None:
        self.successes_total += 1
        if self.consecutive_failures and self.state is not Health.OK:
            self._log.warning(
                "%s recovered after %d failed attempts", self.name, self.consecutive_failures
            )
        self.consecutive_failures = 0
        self.last_error = None
        self._set(Health.OK)

    def failure(self, error: BaseException | str) -> None:
        self.failures_total += 1
        metrics.DEVICE_ERRORS.labels(device=self.name).inc()
        self.consecutive_failures += 1
        text = str(error) or type(error).__name__
        if self.consecutive_failures == 1:
            self._log.error("%s failed: %s", self.name, text)
        else:
            self._log.debug("%s still failing (%d): %s", self.name, self.consecutive_failures, text)
        self.last_error = text
        new = Health.DOWN if self.consecutive_failures >= self._down_after else Health.DEGRADED
        self._set(new)

    def _set(self, new: Health) -> None:
        old = self.state
        if new is old:
            return
        self.state = new
        self.since = self._clock()
        metrics.set_device_health(self.name, new.value)
        for listener in list(self._listeners):
            try:
                listener(self.name, old, new)
            except Exception:  # a listener must never break the driver
                self._log.exception("health listener failed for %s", self.name)
