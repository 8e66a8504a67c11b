"""The rule bundle in force, swapped atomically.

A lane quotes with exactly one bundle at a time. New bundles (a file reload on SIGHUP today,
signed bundles from central with the sync) are validated first; a bad one is rejected and the
current one stays. A bundle whose ``effective_from`` is in the future waits until then.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from edge.pricing import BundleError, RuleBundle, load_bundle

log = logging.getLogger(__name__)


class RulesHolder:
    def __init__(self, initial: RuleBundle, clock: Callable[[], datetime]) -> None:
        self._current = initial
        self._pending: list[RuleBundle] = []
        self._clock = clock
        self._lock = threading.Lock()

    def current(self) -> RuleBundle:
        """The bundle in force now (promoting a pending one whose time has come)."""
        with self._lock:
            if self._pending:
                now = self._clock()
                due = [b for b in self._pending if b.effective_from <= now]
                if due:
                    newest = max(due, key=lambda b: b.effective_from)
                    if newest.version != self._current.version:
                        log.info("rule bundle %s now in force", newest.version)
                    self._current = newest
                    self._pending = [b for b in self._pending if b.effective_from > now]
            return self._current

    def offer(self, bundle: RuleBundle) -> None:
        """Accept a validated bundle: in force now, or queued until its effective_from."""
        with self._lock:
            if bundle.version == self._current.version:
                return
            self._pending = [b for b in self._pending if b.version != bundle.version]
            self._pending.append(bundle)
        self.current()

    def reload_file(self, path: Path) -> bool:
        try:
            bundle = load_bundle(path)
        except (BundleError, OSError) as exc:
            log.error("rule bundle %s rejected, keeping %s: %s", path, self._current.version, exc)
            return False
        self.offer(bundle)
        return True
