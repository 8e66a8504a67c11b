"""Scheduled jobs: points expiry (daily) and monthly tier perks, in the site's time zone.

Both are safe to run twice, after a restart or on several workers at once: expiry works
member by member under the member's row lock and writes ``points_expired`` with the unique
key ``expire:<lot>``; perks insert coupons whose stable ids are primary keys. A ``job_runs``
row per run records what each did (for the operator, not for correctness).
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import IntegrityError

from central import metrics
from central.db.models import JobRun
from central.jobs.prepaid import EVERY as CLEAR_EVERY
from central.jobs.prepaid import run_clear_prepaid
from central.services import perks, points
from central.services.points import Expired

if TYPE_CHECKING:
    from central.app import Central

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExpiryReport:
    lots: int
    points: int
    members: int
    dry_run: bool
    items: tuple[Expired, ...]


def run_expiry(c: Central, now: datetime | None = None, *, dry_run: bool = False
               ) -> ExpiryReport:
    now = now or c.clock()
    with c.tx() as s:
        due = points.due_to_expire(s, now)
    if dry_run:
        return ExpiryReport(len(due), sum(x.points for x in due),
                            len({x.member_id for x in due}), True, tuple(due))
    done: list[Expired] = []
    for member_id in sorted({x.member_id for x in due}):
        try:
            with c.tx() as s:
                done.extend(points.expire_member(s, member_id, now))
        except IntegrityError:  # another worker wrote the same expire:<lot> first
            log.info("expiry of %s done by another worker", member_id)
    rep = ExpiryReport(len(done), sum(x.points for x in done),
                       len({x.member_id for x in done}), False, tuple(done))
    _note_run(c, "expiry", now, {"lots": rep.lots, "points": rep.points})
    metrics.POINTS_EXPIRED.inc(rep.points)
    return rep


def run_perks(c: Central, month: date | None = None, now: datetime | None = None, *,
              dry_run: bool = False) -> list[str]:
    now = now or c.clock()
    month = month or perks.perk_month(c.rules, now)
    try:
        with c.tx() as s:
            granted = perks.grant_monthly_perks(s, c.rules, month, now, dry_run=dry_run)
    except IntegrityError:  # a concurrent worker granted the same coupons: nothing to add
        granted = []
    if not dry_run:
        _note_run(c, "perks", now, {"month": f"{month:%Y-%m}", "coupons": len(granted)})
        metrics.PERK_COUPONS.inc(len(granted))
    return granted


def _note_run(c: Central, job: str, now: datetime, result: dict[str, object]) -> None:
    metrics.JOB_RUNS.labels(job).inc()
    log.info("job %s: %s", job, json.dumps(result))
    with c.tx() as s:
        s.add(JobRun(job=job, run_key=f"{job}:{now:%Y%m%dT%H%M%S}:{secrets.token_hex(4)}",
                     started_at=now, finished_at=c.clock(), result=json.dumps(result)))


def build_scheduler(c: Central) -> BackgroundScheduler:
    """APScheduler with expiry and perks at the configured site-local times, and the
    expired-prepayment clearing every ``CLEAR_EVERY`` (not started)."""
    tz = c.cfg.site.tz
    sched = BackgroundScheduler(timezone=tz)
    eh, em = (int(x) for x in c.cfg.jobs.expiry_at.split(":"))
    ph, pm = (int(x) for x in c.cfg.jobs.perks_at.split(":"))
    sched.add_job(run_expiry, CronTrigger(hour=eh, minute=em, timezone=tz), args=[c],
                  id="expiry", coalesce=True, max_instances=1, misfire_grace_time=3600)
    sched.add_job(run_perks, CronTrigger(day=c.cfg.jobs.perks_day, hour=ph, minute=pm,
                                         timezone=tz), args=[c], id="perks", coalesce=True,
                  max_instances=1, misfire_grace_time=24 * 3600)
    sched.add_job(run_clear_prepaid, IntervalTrigger(seconds=CLEAR_EVERY.total_seconds()),
                  args=[c], id="clear_prepaid", coalesce=True, max_instances=1)
    return sched
