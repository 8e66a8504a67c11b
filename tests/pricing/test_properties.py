"""Property-based checks of the engine's invariants over random tariffs, stays and members."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.pricing import (
    MemberSnapshot,
    PointsLot,
    RuleBundle,
    SessionInput,
    parse_bundle,
    quote_exit,
)

ZONES = ["Asia/Shanghai", "Europe/Berlin", "America/New_York"]
money = st.decimals(min_value=Decimal("0.05"), max_value=Decimal("20"), places=2)


@st.composite
def tariffs(draw: st.DrawFn) -> dict[str, Any]:
    t: dict[str, Any] = {
        "grace_minutes": draw(st.sampled_from([0, 0, 10, 15, 30])),
        "charge_from": draw(st.sampled_from(["entry", "grace_end"])),
        "unit_minutes": draw(st.sampled_from([1, 15, 30, 60])),
        "rounding": draw(st.sampled_from(["up", "up", "down", "nearest"])),
        "cap_period": draw(st.sampled_from(["calendar_day", "rolling_24h"])),
        "fee_factor": draw(st.sampled_from(["1", "1", "0.5", "0.8"])),
    }
    if draw(st.booleans()):
        t["rate"] = str(draw(money))
    else:
        t["steps"] = [{"from_minute": 0, "rate": str(draw(money))},
                      {"from_minute": draw(st.sampled_from([30, 60, 120])),
                       "rate": str(draw(money))}]
    night = draw(st.sampled_from([None, "rate", "flat"]))
    if night:
        t["night"] = {"start": draw(st.sampled_from(["22:00", "20:30", "00:00"])),
                      "end": draw(st.sampled_from(["07:00", "06:15"])),
                      night: str(draw(money))}
    if draw(st.booleans()):
        t["daily_cap"] = str(draw(st.decimals(min_value=1, max_value=200, places=2)))
    return t


@st.composite
def bundles(draw: st.DrawFn) -> RuleBundle:
    by_minutes = draw(st.booleans())
    tier: dict[str, Any] = ({"redeem": "minutes", "minutes_per_point":
                             draw(st.sampled_from([5, 10, 15, 30]))} if by_minutes else
                            {"redeem": "money", "yuan_per_point": str(draw(money))})
    redemption: dict[str, Any] = {
        "order": draw(st.sampled_from(["coupons_first", "points_first"])),
        "min_points": draw(st.sampled_from([1, 1, 5])),
    }
    for key, strat in (("max_points_per_visit", st.integers(1, 50)),
                       ("monthly_cap_value", st.integers(0, 300)),
                       ("daily_cap_points", st.integers(1, 60))):
        if draw(st.booleans()):
            redemption[key] = draw(strat)
    return parse_bundle({
        "version": "prop", "effective_from": "2026-01-01T00:00:00+00:00",
        "timezone": draw(st.sampled_from(ZONES)), "default_tier": "m",
        "tariffs": {"small": draw(tariffs())}, "tiers": {"m": tier}, "redemption": redemption,
    })


entries = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31),
                       timezones=st.just(UTC)).map(lambda d: d.replace(second=d.second))
durations = st.integers(min_value=0, max_value=5 * 1440)


def days_touched(rb: RuleBundle, entered: datetime, exited: datetime) -> int:
    t = rb.tariffs["small"]
    if t.calendar_cap:
        a = entered.astimezone(rb.tz).date()
        b = exited.astimezone(rb.tz).date()
        return (b - a).days + 1
    return max(1, math.ceil((exited - entered) / timedelta(days=1)))


@settings(max_examples=300, deadline=None)
@given(rb=bundles(), entered=entries, d1=durations, extra=st.integers(0, 3000))
def test_fee_non_negative_monotone_and_capped(rb: RuleBundle, entered: datetime, d1: int,
                                              extra: int) -> None:
    a = SessionInput(entered, entered + timedelta(minutes=d1))
    b = SessionInput(entered, entered + timedelta(minutes=d1 + extra))
    fa = quote_exit(a, None, rb, a.exited).fee
    fb = quote_exit(b, None, rb, b.exited).fee
    assert Decimal(0) <= fa <= fb
    t = rb.tariffs["small"]
    if t.daily_cap is not None:
        bound = t.daily_cap * days_touched(rb, entered, b.exited) * t.fee_factor
        assert fb <= bound + Decimal("0.005")


@st.composite
def members(draw: st.DrawFn, at: datetime) -> MemberSnapshot:
    lots = tuple(
        PointsLot(f"L{i}", draw(st.integers(0, 120)),
                  draw(st.sampled_from([None, at, at + timedelta(days=3),
                                        at - timedelta(seconds=1), at + timedelta(seconds=1)])))
        for i in range(draw(st.integers(0, 3)))
    )
    return MemberSnapshot(
        "M", "m", lots,
        redeemed_this_month_value=Decimal(draw(st.integers(0, 250))),
        redeemed_today_points=draw(st.integers(0, 40)),
    )


@settings(max_examples=300, deadline=None)
@given(rb=bundles(), entered=entries, d=durations, data=st.data())
def test_spending_invariants(rb: RuleBundle, entered: datetime, d: int,
                             data: st.DataObject) -> None:
    s = SessionInput(entered, entered + timedelta(minutes=d))
    at = s.exited
    mem = data.draw(members(at))
    q = quote_exit(s, mem, rb, at)
    spendable = sum(x.points for x in mem.lots if x.expires_at is None or at < x.expires_at)
    assert q.balance_before == spendable
    assert q.payable == q.fee - q.discount_total >= 0
    assert 0 <= q.points_deducted <= spendable
    assert sum(p for _, p in q.lots_used) == q.points_deducted
    if rb.max_points_per_visit is not None:
        assert q.points_deducted <= rb.max_points_per_visit
    if rb.daily_cap_points is not None:
        assert q.points_deducted <= max(0, rb.daily_cap_points - mem.redeemed_today_points)
    points_value = sum((x.amount for x in q.discounts if x.kind == "points"), Decimal(0))
    if rb.monthly_cap_value is not None and q.points_deducted:
        assert points_value <= rb.monthly_cap_value - mem.redeemed_this_month_value
    if q.points_deducted:
        assert q.points_deducted >= rb.min_points
        # minimality: one point fewer would leave more to pay
        fewer = MemberSnapshot("M", "m", (PointsLot("F", q.points_deducted - 1, None),),
                               redeemed_this_month_value=mem.redeemed_this_month_value,
                               redeemed_today_points=mem.redeemed_today_points)
        assert quote_exit(s, fewer, rb, at).payable > q.payable
    elif q.fee > 0 and spendable >= max(rb.min_points, 1) and not any(
            f.startswith("cap:") for f in q.flags):
        # nothing deducted although points were available: only if points could not help
        one_more = MemberSnapshot("M", "m", (PointsLot("X", spendable, None),))
        assert quote_exit(s, one_more, rb, at).payable == q.payable


