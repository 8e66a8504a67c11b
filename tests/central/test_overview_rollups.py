"""The overview's two rollups of migration 0009 equal what they replace, on both backends.

* ``lot_expiry_hours`` (points outstanding by expiry hour, kept by triggers on the lots):
  after accruals, spending across lots, the expiry job, corrections both ways, a purchase
  refunded and a lot deleted, its hours sum to the lots' ``remaining`` computed from
  scratch, before and after the job merges them; and the points expiring in 30/60/90 days
  read from it equal the scan of the lots at instants on, just before and just after the
  hour boundaries and the lots' own expiry instants.
* ``member_totals`` (members and the points held, kept by triggers on the members): equal
  to the scan of the members after every kind of balance change and the job's merge.
* ``month_packs`` (the visit groups of a period not grouped yet): equal to the GROUP BY of
  ``member_months`` they replace, for every period, after the first fold and after a fold
  of new rows (a new member, a new visit day).
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, select, text, update

from central.db.models import (
    LotExpiryHour,
    Member,
    MemberMonth,
    MemberTotal,
    MonthPack,
    PointsLot,
)
from central.jobs.rollup import run_rollup
from central.services import members, points
from central.services.figures import (
    EXPIRING_DAYS,
    expiring,
    expiring_raw,
    month_range,
    totals_raw,
)
from central.services.rollup import (
    VISIT_BUCKETS,
    bucket_of,
    compact_expiry,
    compact_totals,
    expiry_hour,
    hour_start,
    member_totals,
    pack_groups,
    period_groups,
)
from tests.central.helpers import at
from tests.central.pages_seed import seed


def hours_from_scratch(s: Any) -> dict[int, int]:
    """Hour -> remaining points of the live lots, from the lots themselves."""
    out: Counter[int] = Counter()
    for rem, exp in s.execute(select(PointsLot.remaining, PointsLot.expires_at)):
        if rem > 0 and exp is not None:
            out[expiry_hour(exp)] += int(rem)
    return {h: p for h, p in out.items() if p}


def hours_rolled(s: Any) -> dict[int, int]:
    out = {int(h): int(p) for h, p in s.execute(
        select(LotExpiryHour.hour, func.sum(LotExpiryHour.points))
        .group_by(LotExpiryHour.hour))}
    return {h: p for h, p in out.items() if p}


def instants(s: Any, now: Any) -> list[Any]:
    """``now`` and the instants where a window's edge meets an hour boundary or a lot."""
    out = [now, hour_start(expiry_hour(now)), hour_start(expiry_hour(now) + 1)]
    for (exp,) in s.execute(select(PointsLot.expires_at).where(PointsLot.remaining > 0)
                            .limit(40)):
        for d in EXPIRING_DAYS:
            out.append(exp - timedelta(days=d))  # the lot sits on the window's far edge
        out.append(exp)  # ... on its near edge (not counted: expired at that instant)
    return [t + dt for t in out for dt in (timedelta(0), timedelta(microseconds=1),
                                           -timedelta(microseconds=1), timedelta(hours=1))]


def check_expiry(c: Any) -> None:
    with c.tx() as s:
        assert hours_rolled(s) == hours_from_scratch(s)
        for t in instants(s, c.now):
            assert expiring(s, t) == expiring_raw(s, t), t


def test_expiry_hours_follow_every_lot_change(central: Any) -> None:
    c = central
    c.now = at("2026-03-03 12:00")
    seed(c, 12)
    check_expiry(c)  # the seed's accruals, spending and redemptions, through the triggers
    with c.tx() as s:
        # lots expiring on hour boundaries, a microsecond either side, and mid-hour
        m = points.lock_member(s, "M001")
        base = hour_start(expiry_hour(c.now) + 24 * 31)
        for i, exp in enumerate((base, base - timedelta(microseconds=1), base
                                 + timedelta(minutes=30), base + timedelta(days=29))):
            points.accrue(s, c.rules, m, 10 + i, c.now, lot_id=f"edge:{i}", source="parking")
            s.flush()
            s.execute(update(PointsLot).where(PointsLot.lot_id == f"edge:{i}")
                      .values(expires_at=exp))  # moves the lot to another hour
    check_expiry(c)
    with c.tx() as s:  # spending across several lots, soonest-expiring first
        m = points.lock_member(s, "M001")
        points.spend(s, m, points.spendable(s, "M001", c.now) - 3, c.now, kind="points_spent",
                     ref="lane X1")
    check_expiry(c)
    with c.tx() as s:  # corrections: one spends, one adds a lot
        points.adjust(s, c.rules, "M002", -7, c.now, reason="typo", ref="c1")
        points.adjust(s, c.rules, "M003", 25, c.now, reason="goodwill", ref="c2")
    check_expiry(c)
    with c.tx() as s:  # the expiry job a year on: every lot of M004 dead
        later = c.now + timedelta(days=400)
        assert points.expire_member(s, "M004", later)
        check_instants = [later]
    check_expiry(c)
    with c.tx() as s:  # a lot deleted (a purchase's lot taken back by hand)
        s.execute(delete(PointsLot).where(PointsLot.lot_id == "edge:3"))
        for t in check_instants:
            assert expiring(s, t) == expiring_raw(s, t)
    check_expiry(c)
    with c.tx() as s:
        before = int(s.scalar(select(func.count()).select_from(LotExpiryHour)) or 0)
        left = compact_expiry(s)
        assert left < before  # every lot change had added a row
        assert left == len(hours_rolled(s))  # one row per hour, none that sums to 0
    check_expiry(c)
    with c.tx() as s:  # and what the page shows changed with the lots
        assert expiring(s, base - timedelta(days=30)) != {str(d): 0 for d in EXPIRING_DAYS}


def test_job_merges_the_hours(central: Any) -> None:
    c = central
    c.now = at("2026-03-03 12:00")
    seed(c, 6)
    run_rollup(c)
    with c.tx() as s:
        n = s.scalar(select(func.count()).select_from(LotExpiryHour))
        assert n == len(hours_rolled(s)) == len(hours_from_scratch(s)) > 0


def grouped(s: Any, first: str, last: str) -> dict[int, list[int]]:
    """The GROUP BY of member_months the packs replace (the reference)."""
    totals: dict[str, list[int]] = {}
    for mid, e, v in s.execute(select(MemberMonth.member_id, MemberMonth.earned,
                                      MemberMonth.visit_days)
                               .where(MemberMonth.month >= first, MemberMonth.month <= last)):
        t = totals.setdefault(mid, [0, 0])
        t[0] += int(e)
        t[1] += int(v)
    out: dict[int, list[int]] = {}
    for e, v in totals.values():
        g = out.setdefault(bucket_of(v), [0, 0])
        g[0] += 1
        g[1] += e
    return out


def check_packs(c: Any) -> None:
    with c.tx() as s:
        months = [m for (m,) in s.execute(select(MemberMonth.month).distinct()
                                          .order_by(MemberMonth.month))]
        assert months == list(s.scalars(select(MonthPack.month).order_by(MonthPack.month)))
        span = [*month_range(months[0], months[-1]), "2099-01"]
        for i, first in enumerate(span):
            for last in span[i:]:
                assert pack_groups(s, first, last) == grouped(s, first, last), (first, last)


def test_month_packs_equal_the_grouping(central: Any) -> None:
    c = central
    c.now = at("2026-03-03 12:00")
    seed(c, 12)
    run_rollup(c)
    check_packs(c)
    with c.tx() as s:  # a new member, a new visit day for an old one, a second in a day
        members.enrol(s, c.rules, member_id="N1", phone="13900000001", name="新会员",
                      tier="gold", now=at("2026-03-01 09:00"), plates=("粤B77777",))
        for mid, when, lot in (("N1", "2026-03-02 10:00", "n:1"),
                               ("M001", "2026-03-02 11:00", "n:2"),
                               ("M001", "2026-03-02 18:00", "n:3"),
                               ("M002", "2026-01-15 10:00", "n:4")):  # a late upload
            points.accrue(s, c.rules, points.lock_member(s, mid), 30, at(when), lot_id=lot,
                          source="parking")
    run_rollup(c)
    check_packs(c)
    with c.tx() as s:  # what a render of a new period keeps equals the packs
        s.execute(text("DELETE FROM visit_groups"))
        s.execute(text("DELETE FROM visit_group_periods"))
        g = period_groups(s, "2025-12", "2026-03", c.now)
        assert g == grouped(s, "2025-12", "2026-03")
        assert g and sum(n for n, _p in g.values()) > 10
        assert period_groups(s, "2025-12", "2026-03", c.now) == g  # now kept
        assert set(g) <= {-1, *range(len(VISIT_BUCKETS))}


def check_totals(c: Any) -> None:
    with c.tx() as s:
        assert member_totals(s) == totals_raw(s)


def test_member_totals_follow_every_balance(central: Any) -> None:
    """Members and the points held in positive balances: the triggers' rows equal the scan
    of the members after enrolments, accruals, spending, corrections, a debt (a negative
    balance holds nothing), the expiry job, and the job's merge."""
    c = central
    c.now = at("2026-03-03 12:00")
    check_totals(c)
    seed(c, 8)
    check_totals(c)
    with c.tx() as s:
        members.enrol(s, c.rules, member_id="N1", phone="13900000001", name="新会员",
                      tier="gold", now=c.now, plates=("粤B77777",))
        points.adjust(s, c.rules, "M002", -5, c.now, reason="typo", ref="c1")
        points.adjust(s, c.rules, "N1", 30, c.now, reason="welcome", ref="c2")
    check_totals(c)
    with c.tx() as s:  # a balance pushed below zero and back (an exit paid on credit)
        s.execute(update(Member).where(Member.member_id == "M003").values(balance=-40))
    check_totals(c)
    with c.tx() as s:
        s.execute(update(Member).where(Member.member_id == "M003").values(balance=15))
        assert points.expire_member(s, "M004", c.now + timedelta(days=800))
    check_totals(c)
    with c.tx() as s:
        assert int(s.scalar(select(func.count()).select_from(MemberTotal)) or 0) > 1
    run_rollup(c)
    with c.tx() as s:
        assert s.scalar(select(func.count()).select_from(MemberTotal)) == 1
    check_totals(c)
    with c.tx() as s:
        n, held = member_totals(s)
        assert n == 9 and held > 0


def test_writers_and_merges_at_once(central: Any) -> None:
    """Lanes' transactions changing lots and balances while the job merges the rows
    (PostgreSQL; SQLite has one writer at a time): nothing lost, nothing counted twice."""
    c = central
    if c.engine.dialect.name != "postgresql":
        pytest.skip("concurrent writers: PostgreSQL")
    c.now = at("2026-03-03 12:00")
    seed(c, 8)
    errors: list[BaseException] = []
    stop = threading.Event()

    def lane(mid: str) -> None:
        try:
            for i in range(15):
                with c.tx() as s:
                    m = points.lock_member(s, mid)
                    points.accrue(s, c.rules, m, 10 + i, c.now + timedelta(minutes=i),
                                  lot_id=f"w:{mid}:{i}", source="parking")
                    points.spend(s, m, 7, c.now + timedelta(minutes=i), kind="points_spent",
                                 ref="lane X1")
        except BaseException as e:  # reported by the assert below
            errors.append(e)

    def job() -> None:
        try:
            while not stop.is_set():
                with c.tx() as s:
                    compact_expiry(s)
                    compact_totals(s)
        except BaseException as e:
            errors.append(e)

    merger = threading.Thread(target=job)
    merger.start()
    lanes = [threading.Thread(target=lane, args=(f"M00{i}",)) for i in range(1, 5)]
    for t in lanes:
        t.start()
    for t in lanes:
        t.join()
    stop.set()
    merger.join()
    assert not errors
    check_expiry(c)
    check_totals(c)
