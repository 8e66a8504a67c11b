"""The expired-prepayment clearing job: every few minutes, an empty retained publish for
each prepayment past its ``expires_at`` (central/services/prepay.py ``clear_expired``), so
the broker forgets it and a lane connecting later never sees it; and the gauge of refunded
prepayments a lane used anyway (``central_prepaid_refund_conflicts``) is counted again.

Safe on several workers at once: PostgreSQL hands each expired row to one worker
(``FOR UPDATE SKIP LOCKED``) and ``cleared_at`` marks it done in the same transaction;
SQLite serialises the transactions (``BEGIN IMMEDIATE``), so the second finds nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from central import metrics
from central.services import prepay, refunds

if TYPE_CHECKING:
    from central.app import Central

log = logging.getLogger(__name__)
EVERY = timedelta(minutes=10)
BATCH = 1000


def run_clear_prepaid(c: Central, now: datetime | None = None) -> int:
    """Clear every expired prepayment not yet cleared, in batches; returns how many."""
    now = now or c.clock()
    total = 0
    while True:
        with c.tx() as s:
            n = prepay.clear_expired(s, c.cfg.site.site_id, now, limit=BATCH)
        total += n
        if n < BATCH:
            break
    with c.tx() as s:  # the desk's gauge: refunded prepayments a lane used anyway
        refunds.conflicts(s, now)
    metrics.JOB_RUNS.labels("clear_prepaid").inc()
    if total:
        log.info("job clear_prepaid: %d expired prepayments cleared", total)
    return total
