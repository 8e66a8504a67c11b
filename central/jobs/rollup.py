"""The minute job that folds new ledger rows into the figure rollups (services.rollup).

Safe on several workers and after a restart: the fold runs under the mark row's lock and
moves the mark in the same transaction, so a second run finds nothing left to fold.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.exc import OperationalError

from central.services import rollup
from central.services.figures import default_period

if TYPE_CHECKING:
    from central.app import Central

log = logging.getLogger(__name__)


def run_rollup(c: Central, now: datetime | None = None) -> rollup.Marks:
    """Fold what was committed since the last run; returns the rows folded per table."""
    now = now or c.clock()
    ids = []
    try:
        for _col, table in rollup.TABLES:
            with c.tx() as s:
                ids.append(rollup.safe_id(s, table))
    except OperationalError:  # lock_timeout: a long writer; the next minute folds it
        log.info("rollup: %s busy, skipped", rollup.TABLES[len(ids)][1])
        return rollup.Marks()
    upto = rollup.Marks(*ids)
    with c.tx() as s:
        done = rollup.fold(s, c.rules, upto, now)
        # the overview's default period: its visit groups ready before anyone asks
        rollup.period_groups(s, *default_period(c.rules.tz, now), now)
        # the rows the lots' and members' triggers added: one per hour, one in all
        rollup.compact_expiry(s)
        rollup.compact_totals(s)
    if done != rollup.Marks():
        log.info("rollup: folded %d entries, %d purchases, %d redemptions", done.entries,
                 done.purchases, done.redemptions)
    return done
