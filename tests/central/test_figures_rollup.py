"""The overview from the rollups equals the overview summed from the raw ledger, on both
backends: before any fold (all tail), after a fold, with an unfolded tail on top (a new
visit on a folded day, a new member, an adjustment), across the site's month boundaries
(a site-local 1 February 00:30 is still 31 January in UTC), folded twice or by two workers
at once (nothing counted twice)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from central.db.models import (
    FiguresDaily,
    MemberDay,
    MemberMonth,
    RollupMark,
    VisitGroup,
    VisitGroupPeriod,
)
from central.jobs.rollup import run_rollup
from central.services import members, points, purchases, rewards
from central.services.figures import overview, overview_raw
from central.services.purchases import PurchaseIn
from central.services.rollup import Marks, read_marks, tail_size
from tests.central.helpers import at
from tests.central.pages_seed import seed

PERIODS = [("2025-09", "2026-03"), ("2026-01", "2026-01"), ("2026-02", "2026-03"),
           ("2025-12", "2026-02")]
COST = Decimal("0.05")


@pytest.fixture
def mall(central: Any) -> Iterator[Any]:
    c = central
    c.now = at("2026-03-03 12:00")
    seed(c, 24)
    with c.tx() as s:
        m = points.lock_member(s, "M001")
        # the site's month boundary: 1 Feb 00:30 +08:00 is 31 Jan 16:30 UTC
        points.accrue(s, c.rules, m, 70, at("2026-02-01 00:30"), lot_id="edge:feb",
                      source="parking")
        points.accrue(s, c.rules, m, 11, at("2026-01-31 23:59"), lot_id="edge:jan",
                      source="parking")
        points.adjust(s, c.rules, "M002", 25, at("2026-02-14 10:00"), reason="goodwill",
                      ref="a1")
        points.adjust(s, c.rules, "M002", -5, at("2026-02-15 10:00"), reason="typo",
                      ref="a2")
    yield c


def same(c: Any) -> None:
    """Every period's overview from the rollups equals the raw one."""
    with c.tx() as s:
        for first, last in PERIODS:
            raw = overview_raw(s, c.rules, COST, first, last, c.now)
            assert overview(s, c.rules, COST, first, last, c.now) == raw, (first, last)


def marks_of(s: Any, c: Any) -> Marks:
    m = read_marks(s, c.rules.tz)
    assert m is not None
    return m


def counts(c: Any) -> tuple[int, ...]:
    with c.tx() as s:
        return tuple(int(s.scalar(select(func.coalesce(func.sum(col), 0))) or 0)
                     for col in (FiguresDaily.points, FiguresDaily.n, MemberDay.earned,
                                 MemberDay.visits, MemberMonth.visit_days,
                                 VisitGroup.members, VisitGroup.points))


def add_tail(c: Any) -> None:
    """Rows after the fold: a second accrual on a day M001 already visited (no new visit
    day), a visit on a new day, a new member, a purchase, a redemption, an adjustment."""
    with c.tx() as s:
        m = points.lock_member(s, "M001")
        points.accrue(s, c.rules, m, 9, at("2026-02-01 08:00"), lot_id="tail:1",
                      source="parking")
        points.accrue(s, c.rules, m, 13, at("2026-03-02 22:00"), lot_id="tail:2",
                      source="parking")
        members.enrol(s, c.rules, member_id="N1", phone="13900000001", name="新会员",
                      tier="gold", now=at("2026-03-01 09:00"), plates=("粤B77777",))
        purchases.record_purchase(s, c.rules, PurchaseIn(
            "cafe-1", "tail-k", "N1", Decimal("128"), at("2026-03-02 12:00")),
            at("2026-03-02 12:01"))
        points.adjust(s, c.rules, "M003", 40, at("2026-03-01 10:00"), reason="survey",
                      ref="a3")
        rewards.redeem(s, c.rules, member_id="M001", reward_id="park-1h",
                       redemption_key="tail-r", now=at("2026-03-02 23:00"))


def test_rollups_equal_raw_before_after_and_with_a_tail(mall: Any) -> None:
    c = mall
    same(c)  # nothing folded yet: the raw ledger
    done = run_rollup(c)
    assert done.entries > 100 and done.purchases > 10 and done.redemptions > 0
    with c.tx() as s:
        assert tail_size(s, marks_of(s, c)) == 0
    same(c)
    with c.tx() as s:  # the job's default period and the ones the pages asked for, kept
        assert s.scalar(select(func.count()).select_from(VisitGroupPeriod)) == len(PERIODS) + 1
    folded = counts(c)
    add_tail(c)
    with c.tx() as s:
        assert tail_size(s, marks_of(s, c)) > 0
    same(c)  # rollups + the unfolded tail
    assert counts(c) == folded  # reading never writes the rollups
    run_rollup(c)
    same(c)  # the kept periods' visit groups moved by the fold
    after = counts(c)
    assert after != folded
    assert run_rollup(c) == Marks()  # a second run finds nothing left
    assert counts(c) == after
    with c.tx() as s:
        f = overview(s, c.rules, COST, "2026-01", "2026-02", c.now)
        raw = overview_raw(s, c.rules, COST, "2026-01", "2026-02", c.now)
    # the boundary pair landed in their site months (not the UTC ones)
    assert f == raw and f["issued"]["parking"][1] >= 70 + 9


def test_two_workers_fold_once(mall: Any) -> None:
    c = mall
    errors: list[BaseException] = []

    def work() -> None:
        try:
            run_rollup(c)
        except BaseException as e:  # reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    same(c)
    once = counts(c)
    run_rollup(c)
    assert counts(c) == once


def test_another_time_zone_rebuilds(mall: Any) -> None:
    """Rollups made in one zone are not read in another, and the next fold rebuilds them."""
    c = mall
    run_rollup(c)
    c.rules = dataclasses.replace(c.rules, tz=ZoneInfo("America/New_York"))
    with c.tx() as s:
        assert read_marks(s, c.rules.tz) is None  # not these rollups
    same(c)  # the tail is everything again (raw-equal)
    done = run_rollup(c)
    assert done.entries > 100  # all of it, in the new zone
    with c.tx() as s:
        assert tail_size(s, marks_of(s, c)) == 0
    same(c)


def test_a_long_fold_does_not_hold_the_page(mall: Any) -> None:
    """While a fold holds the mark (the first fold of a large ledger takes minutes), the
    overview waits LOCK_WAIT at most, then sums the raw ledger (PostgreSQL; SQLite's writer
    lock does not stop its readers)."""
    c = mall
    if c.engine.dialect.name != "postgresql":
        pytest.skip("row locks: PostgreSQL")
    run_rollup(c)
    add_tail(c)
    with c.tx() as holder:
        holder.scalars(select(RollupMark).with_for_update()).all()
        t0 = time.monotonic()
        same(c)  # both readers: the rollup one falls back after the wait
        assert time.monotonic() - t0 < 4 * 2 + 10
