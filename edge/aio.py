"""Small asyncio helpers shared by the drivers and the lane."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], timeout_s: float = 5.0) -> None:
    """Cancel tasks and wait until they have really ended.

    On Python 3.11 ``asyncio.wait_for`` can swallow a cancellation that arrives just as its
    inner call completes, leaving a task "cancelling" but still running; awaiting such a task
    once would hang a shutdown forever. So the cancel is repeated until the task is done, and
    the whole wait is bounded.
    """
    pending = {t for t in tasks if not t.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pending and loop.time() < deadline:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.2)
    for t in pending:
        log.error("task %s did not stop within %.1f s", t.get_name(), timeout_s)
    for t in tasks:
        if t.done() and not t.cancelled():
            with contextlib.suppress(Exception):
                t.result()
