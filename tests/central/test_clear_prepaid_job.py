"""The expired-prepayment clearing job (#13), on SQLite and PostgreSQL: scheduled every
10 minutes by ``build_scheduler`` and run by it, and cleared exactly once however many
workers (each its own engine, as separate processes would have) run it at the same time."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import func, select

from central.app import Central
from central.db.models import DownlinkOutbox, Prepayment
from central.jobs import build_scheduler
from central.jobs.prepaid import run_clear_prepaid
from central.services import prepay
from tests.central.staff_client import KEY

SITE = "mall-1"


def _pay(c: Any, n: int, *, start: int = 0) -> None:
    with c.tx() as s:
        for i in range(start, start + n):
            prepay.prepay(s, SITE, payment_id=f"p{i:04d}", amount=Decimal("5.00"),
                          paid_at=None, now=c.now, key=KEY, source="paystation:ps1",
                          plate=f"粤B{i:05d}")


def _cleared(c: Any) -> tuple[int, int]:
    """(prepayments marked cleared, empty retained publishes queued)."""
    with c.tx() as s:
        marked = s.scalar(select(func.count()).select_from(Prepayment).where(
            Prepayment.cleared_at.is_not(None)))
        empties = s.scalar(select(func.count()).select_from(DownlinkOutbox).where(
            DownlinkOutbox.payload == ""))
    return int(marked or 0), int(empties or 0)


def test_scheduled_every_ten_minutes_and_run_by_the_scheduler(central: Any) -> None:
    c = central
    _pay(c, 3)
    sched = build_scheduler(c)
    job = sched.get_job("clear_prepaid")
    assert job is not None and isinstance(job.trigger, IntervalTrigger)
    assert job.trigger.interval == timedelta(minutes=10)
    assert job.max_instances == 1 and job.coalesce
    c.now = c.now + prepay.TTL + timedelta(minutes=1)  # all three have expired
    sched.start()
    try:
        assert _cleared(c) == (0, 0)
        sched.get_job("clear_prepaid").modify(next_run_time=datetime.now(UTC))
        deadline = time.monotonic() + 20
        while _cleared(c) != (3, 3) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _cleared(c) == (3, 3)
    finally:
        sched.shutdown(wait=True)
    assert run_clear_prepaid(c) == 0  # again: nothing left to do
    assert _cleared(c) == (3, 3)


def test_several_workers_at_once_clear_each_payment_once(central: Any) -> None:
    c = central
    _pay(c, 60)
    c.now = c.now + timedelta(hours=1)
    _pay(c, 5, start=60)  # paid later: not expired yet when the job runs
    when = c.now + prepay.TTL - timedelta(minutes=30)
    workers = [Central.from_config(c.cfg) for _ in range(4)]
    done: list[int] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(len(workers))

    def work(w: Central) -> None:
        try:
            gate.wait()
            done.append(run_clear_prepaid(w, when))
        except BaseException as exc:  # the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for w in workers:
        w.close()
    assert errors == []
    assert sum(done) == 60 and len(done) == 4
    assert _cleared(c) == (60, 60)
    with c.tx() as s:
        topics = list(s.scalars(select(DownlinkOutbox.topic).where(
            DownlinkOutbox.payload == "")))
    assert len(set(topics)) == 60  # each expired payment's topic exactly once
