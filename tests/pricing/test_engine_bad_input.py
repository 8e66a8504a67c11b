"""#13 "Bad input", the pure functions: NaN, Infinity, absurd amounts and dates at the ends
of the calendar raise a ValueError naming the value (never a traceback from deep inside, never
a computed number); negative period sums never widen a cap."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge.pricing import (
    Coupon,
    MemberSnapshot,
    PointsLot,
    RuleBundle,
    SessionInput,
    earn_for_purchase,
    earned_expiry,
    load_bundle,
    monthly_perk_coupons,
    quote_exit,
)
from edge.pricing.simulate import simulate_file

SH = ZoneInfo("Asia/Shanghai")
ROOT = Path(__file__).resolve().parents[2]
MALL = ROOT / "config" / "rules.mall.example.toml"
E = datetime(2026, 3, 2, 10, tzinfo=SH)  # a Monday
X = E + timedelta(hours=10)


@pytest.fixture(scope="module")
def mall() -> RuleBundle:
    return load_bundle(MALL)


def member(**kw) -> MemberSnapshot:  # type: ignore[no-untyped-def]
    lots = kw.pop("lots", (PointsLot("L", 100, None),))
    return MemberSnapshot("M1", kw.pop("tier", "gold"), lots, **kw)


@pytest.mark.parametrize(
    ("session", "at", "name"),
    [
        (SessionInput(datetime(1, 1, 1, tzinfo=UTC), X), X, "session.entered"),
        (SessionInput(E, datetime(9999, 12, 31, 23, 59, tzinfo=SH)),
         datetime(9999, 12, 31, 23, 59, tzinfo=SH), "session.exited"),
        (SessionInput(None, datetime(9999, 12, 31, 23, 59, tzinfo=SH)), X, "session.exited"),
        (SessionInput(E, X), datetime(9999, 12, 31, 23, 59, tzinfo=SH), "at"),
        (SessionInput(E, X, previous_exit=datetime(1, 1, 1, tzinfo=UTC)), X,
         "session.previous_exit"),
    ],
)
def test_quote_dates_at_the_ends_of_the_calendar(mall, session, at, name):  # type: ignore[no-untyped-def]
    """Was an OverflowError from date arithmetic (or a quote dated 9999 with no entry)."""
    with pytest.raises(ValueError, match=rf"^{name} .* outside the supported range"):
        quote_exit(session, member(), mall, at)


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"redeemed_this_month_value": Decimal("NaN")}, "member.redeemed_this_month_value"),
        ({"redeemed_this_month_value": Decimal("Infinity")},
         "member.redeemed_this_month_value"),
        ({"redeemed_this_month_value": 1.5}, "member.redeemed_this_month_value"),
        ({"coupons": (Coupon("C", "amount", Decimal("NaN")),)}, r"member.coupons\[0\].value"),
        ({"coupons": (Coupon("C", "hours", Decimal("1e400")),)}, r"member.coupons\[0\].value"),
        ({"earned_today": 1.5}, "member.earned_today"),
        ({"lots": (PointsLot("L", float("inf"), None),)}, r"member.lots\[0\].points"),  # type: ignore[arg-type]
    ],
)
def test_quote_member_bad_numbers(mall, kw, name):  # type: ignore[no-untyped-def]
    """NaN was a decimal.InvalidOperation from a comparison inside the points search."""
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        quote_exit(SessionInput(E, X), member(**kw), mall, X)


def test_quote_absurd_prepayment(mall):  # type: ignore[no-untyped-def]
    """Was decimal.InvalidOperation from rounding 1e400 to cents."""
    with pytest.raises(ValueError, match=r"^session.paid_amount must be between 0 and 1000"):
        quote_exit(SessionInput(E, X, paid_at=X, paid_amount=Decimal("1e400")), member(),
                   mall, X)


def test_negative_earned_today_does_not_widen_the_daily_cap(mall):  # type: ignore[no-untyped-def]
    """The ledger may sum to < 0 (a correction revoked earlier points): the cap stays 100."""
    r = earn_for_purchase(Decimal(6000), "retail", E, member(earned_today=-50), mall)
    assert r.points == 100 and "cap:daily_earn" in r.rules_fired  # 6000/30 = 200 -> 100
    q = quote_exit(SessionInput(E, X), member(earned_today=-50, tier="normal"), mall, X)
    ok = quote_exit(SessionInput(E, X), member(earned_today=0, tier="normal"), mall, X)
    assert q.points_earned == ok.points_earned


def test_negative_redemption_sums_do_not_widen_the_caps(bundle):  # type: ignore[no-untyped-def]
    lots = (PointsLot("L", 1000, None),)
    # 10 h at ¥0.5/min = ¥300; the monthly cap ¥200 must not become ¥300 after a -100 sum
    rb = bundle(redemption={"monthly_cap_value": "200"})
    q = quote_exit(SessionInput(E, X), MemberSnapshot(
        "M", "member", lots, redeemed_this_month_value=Decimal(-100)), rb, X)
    assert q.discount_total == Decimal(200) and "cap:monthly_redemption" in q.flags
    rb = bundle(redemption={"daily_cap_points": 10})
    q = quote_exit(SessionInput(E, X), MemberSnapshot("M", "member", lots,
                                                       redeemed_today_points=-10), rb, X)
    assert q.points_deducted == 10 and "cap:daily_redemption" in q.flags


@pytest.mark.parametrize("amount", [Decimal("1e400"), Decimal("NaN"), Decimal("100000000.01")])
def test_purchase_absurd_amounts(mall, amount):  # type: ignore[no-untyped-def]
    """1e400 earned 1e400 points; NaN was decimal.InvalidOperation."""
    with pytest.raises(ValueError, match=r"^amount must be"):
        earn_for_purchase(amount, "retail", E, None, mall)


@pytest.mark.parametrize(
    "call",
    [
        lambda rb: earn_for_purchase(Decimal(100), "retail",
                                     datetime(9999, 12, 31, 23, 59, tzinfo=SH), None, rb),
        lambda rb: earned_expiry(rb, datetime(9999, 6, 1, tzinfo=SH)),
        lambda rb: monthly_perk_coupons(rb, "gold", "M", date(9999, 12, 1)),
    ],
    ids=["earn_for_purchase", "earned_expiry", "monthly_perk_coupons"],
)
def test_other_entry_points_at_the_end_of_the_calendar(
        mall: RuleBundle, call: Callable[[RuleBundle], object]) -> None:
    """Were OverflowError (earn, expiry: year 10000) or an unclear 'year out of range'."""
    with pytest.raises(ValueError, match=r"(outside the supported range|must be a date in)"):
        call(mall)


def test_purchase_unknown_tier_is_named(mall):  # type: ignore[no-untyped-def]
    """Silently the default tier; now flagged, as quote_exit flags unknown_tier."""
    r = earn_for_purchase(Decimal(300), "retail", E, None, mall, tier="diamond")
    assert r.points == 3  # normal: ¥100 a point
    assert r.rules_fired[0] == "unknown_tier"
    assert r.explain_en[0] == "unknown tier 'diamond': normal"


def test_simulate_names_the_line_of_a_bad_record(tmp_path: Path) -> None:
    p = tmp_path / "s.jsonl"
    p.write_text('{"exited": "2026-03-02T12:00:00+08:00", "entered": null}\n'
                 '{"exited": "9999-12-31T23:59:00+08:00", "entered": null}\n', "utf-8")
    with pytest.raises(ValueError, match=r"^line 2: session.exited .* outside the supported"):
        simulate_file(p, MALL, workers=1)


def test_decades_long_stay_prices_in_reasonable_time(mall):  # type: ignore[no-untyped-def]
    """An entry time from a reset clock (decades ago) at a night-rate tariff: finding the night
    window of each segment was a linear scan, quadratic in days (a 56-year stay with points
    took ~5 CPU-minutes at the exit; 20 years ~35 s); now a bisection."""
    import time

    entered = datetime(2006, 3, 2, 10, tzinfo=SH)
    t0 = time.process_time()
    q = quote_exit(SessionInput(entered, X), member(lots=(PointsLot("L", 100000, None),)),
                   mall, X)
    assert time.process_time() - t0 < 10
    assert q.fee > 0 and q.points_deducted > 0
