"""Spending points and coupons at the exit, caps, lots and expiry; earning for a stay."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge.pricing import (
    Coupon,
    MemberSnapshot,
    PointsLot,
    SessionInput,
    earned_expiry,
    load_bundle,
    quote_exit,
)
from edge.pricing.explain import columns

SH = ZoneInfo("Asia/Shanghai")
MALL = Path(__file__).resolve().parents[2] / "config" / "rules.mall.example.toml"


def t(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=SH)


E = t(2026, 3, 3, 9)  # a Tuesday


def stay(minutes: int, **kw) -> SessionInput:  # type: ignore[no-untyped-def]
    return SessionInput(E, E + timedelta(minutes=minutes), **kw)


def member(*lots: PointsLot, tier: str = "member", **kw) -> MemberSnapshot:  # type: ignore[no-untyped-def]
    return MemberSnapshot("M1", tier, lots, **kw)


def lot(lot_id: str, points: int, expires: datetime | None = None) -> PointsLot:
    return PointsLot(lot_id, points, expires)


def q_(rb, minutes: int, mem, at: datetime | None = None, **kw):  # type: ignore[no-untyped-def]
    s = stay(minutes, **{k: v for k, v in kw.items() if k != "spend_points"})
    return quote_exit(s, mem, rb, at or s.exited, spend_points=kw.get("spend_points", True))


# ------------------------------------------------------------------ lots and expiry
def test_soonest_expiring_lot_first(bundle):  # type: ignore[no-untyped-def]
    rb = bundle()
    mem = member(lot("A", 100, t(2026, 4, 1)), lot("C", 100), lot("B", 20, t(2026, 3, 10)))
    q = q_(rb, 300, mem)
    assert q.lots_used == (("B", 20), ("A", 10))
    assert [(d.ref, d.points, d.amount) for d in q.discounts] == [
        ("B", 20, Decimal("100.00")), ("A", 10, Decimal("50.00"))]
    assert q.balance_before == 220 and q.balance_after == 190


@pytest.mark.parametrize(("offset_s", "spendable"), [(0, False), (-1, False), (1, True)])
def test_lot_expiring_at_exact_instant(bundle, offset_s, spendable):  # type: ignore[no-untyped-def]
    rb = bundle()
    at = E + timedelta(minutes=100)
    mem = member(lot("X", 50, at + timedelta(seconds=offset_s)))
    q = q_(rb, 100, mem, at=at)
    assert q.balance_before == (50 if spendable else 0)
    assert q.points_deducted == (10 if spendable else 0)


# ------------------------------------------------------------------ caps
@pytest.mark.parametrize(
    ("redemption", "mem_kw", "points", "payable", "flag"),
    [
        ({"monthly_cap_value": "200"}, {"redeemed_this_month_value": Decimal("190")}, 2,
         "140.00", "cap:monthly_redemption"),
        ({"monthly_cap_value": "200"}, {"redeemed_this_month_value": Decimal("200")}, 0,
         "150.00", "cap:monthly_redemption"),
        ({"monthly_cap_value": "200"}, {"redeemed_this_month_value": Decimal("50")}, 30,
         "0.00", None),
        ({"monthly_cap_value": "150"}, {}, 30, "0.00", None),  # exactly at the cap
        ({"daily_cap_points": 20}, {"redeemed_today_points": 15}, 5, "125.00",
         "cap:daily_redemption"),
        ({"max_points_per_visit": 10}, {}, 10, "100.00", "cap:per_visit"),
        ({"max_hours_per_visit": 1}, {}, 6, "120.00", "cap:per_visit"),
        ({"min_points": 50}, {}, 0, "150.00", "cap:min_redemption"),
        ({"min_points": 30}, {}, 30, "0.00", None),
    ],
)
def test_redemption_caps(bundle, redemption, mem_kw, points, payable, flag):  # type: ignore[no-untyped-def]
    rb = bundle(redemption=redemption)
    q = q_(rb, 300, member(lot("L", 500), **mem_kw))
    assert q.fee == Decimal("150.00")
    assert (q.points_deducted, q.payable) == (points, Decimal(payable))
    if flag:
        assert flag in q.flags
    else:
        assert not [f for f in q.flags if f.startswith("cap:")]


def test_money_mode_fewest_points_never_more_value_than_fee(bundle):  # type: ignore[no-untyped-def]
    rb = bundle(tiers={"member": {"redeem": "money", "yuan_per_point": "0.5"}},
                tariffs={"small": {"rate": "0.41"}})
    q = q_(rb, 25, member(lot("L", 100)))  # fee 10.25
    assert q.fee == Decimal("10.25")
    assert (q.points_deducted, q.payable) == (21, Decimal("0.00"))
    assert q.discount_total == Decimal("10.25")


def test_minutes_mode_is_minimal_with_coarse_units(bundle):  # type: ignore[no-untyped-def]
    """Unit 60 min: with 5 points the best reachable is ¥20, and 1 point already reaches it."""
    rb = bundle(tariffs={"small": {"unit_minutes": 60, "rate": "10"}})
    q = q_(rb, 125, member(lot("L", 5)))
    assert q.fee == Decimal("30.00")
    assert (q.points_deducted, q.payable) == (1, Decimal("20.00"))


def test_points_cover_down_to_the_free_period(bundle):  # type: ignore[no-untyped-def]
    rb = bundle(tariffs={"small": {"grace_minutes": 15, "rate": "1"}})
    q = q_(rb, 100, member(lot("L", 50)))
    assert (q.fee, q.points_deducted, q.payable) == (Decimal("100.00"), 9, Decimal("0.00"))


# ------------------------------------------------------------------ coupons
def cp(cid: str, kind: str, value: str = "0", until: datetime | None = None) -> Coupon:
    return Coupon(cid, kind, Decimal(value), until)  # type: ignore[arg-type]


def test_hours_coupon_then_points(bundle):  # type: ignore[no-untyped-def]
    rb = bundle()
    q = q_(rb, 200, member(lot("L", 100), coupons=(cp("C3", "hours", "3"),)))
    assert q.coupons_used == ("C3",)
    assert [(d.kind, d.ref, d.amount) for d in q.discounts] == [
        ("coupon", "C3", Decimal("90.00")), ("points", "L", Decimal("10.00"))]
    assert (q.points_deducted, q.payable) == (2, Decimal("0.00"))


def test_points_first_order(bundle):  # type: ignore[no-untyped-def]
    rb = bundle(redemption={"order": "points_first"})
    q = q_(rb, 200, member(lot("L", 100), coupons=(cp("C3", "hours", "3"),)))
    assert q.coupons_used == () and q.points_deducted == 20 and q.payable == 0


@pytest.mark.parametrize(
    ("minutes", "coupons", "used", "payable"),
    [
        (100, [("H1", "hours", "1"), ("H3", "hours", "3")], ("H3",), "0.00"),
        (50, [("H3", "hours", "3"), ("H1", "hours", "1")], ("H1",), "0.00"),
        (50, [("F", "free", "0"), ("H1", "hours", "1")], ("H1",), "0.00"),
        (100, [("A20", "amount", "20")], ("A20",), "30.00"),
        (100, [("F", "free", "0")], ("F",), "0.00"),
        (400, [("H1", "hours", "1"), ("H3", "hours", "3")], ("H3",), "110.00"),
    ],
)
def test_coupon_choice_one_per_visit(bundle, minutes, coupons, used, payable):  # type: ignore[no-untyped-def]
    rb = bundle()
    q = q_(rb, minutes, member(coupons=tuple(cp(*c) for c in coupons)))
    assert q.coupons_used == used
    assert q.payable == Decimal(payable)


def test_two_coupons_each_once(bundle):  # type: ignore[no-untyped-def]
    rb = bundle(redemption={"max_coupons_per_visit": 3})
    q = q_(rb, 400, member(coupons=(cp("H1", "hours", "1"), cp("H3", "hours", "3"))))
    assert sorted(q.coupons_used) == ["H1", "H3"]
    assert q.payable == Decimal("80.00")  # 400 - 240 = 160 minutes


def test_expired_coupon_not_used(bundle):  # type: ignore[no-untyped-def]
    rb = bundle()
    s = stay(60)
    q = quote_exit(s, member(coupons=(cp("H", "hours", "3", s.exited),)), rb, s.exited)
    assert q.coupons_used == () and q.payable == Decimal("30.00")


# ------------------------------------------------------------------ opt-outs
@pytest.mark.parametrize(
    ("mem_kw", "spend", "flag"),
    [({"auto_deduct": False}, True, "auto_deduct_off"),
     ({"blocked": True}, True, "member_blocked"),
     ({}, False, "points_not_spent")],
)
def test_nothing_deducted(bundle, mem_kw, spend, flag):  # type: ignore[no-untyped-def]
    rb = bundle()
    q = q_(rb, 100, member(lot("L", 100), coupons=(cp("F", "free"),), **mem_kw),
           spend_points=spend)
    assert (q.fee, q.payable, q.points_deducted, q.coupons_used) == (
        Decimal("50.00"), Decimal("50.00"), 0, ())
    assert flag in q.flags


def test_non_member_pays_fee_earns_nothing() -> None:
    rb = load_bundle(MALL)
    q = quote_exit(stay(200), None, rb, E + timedelta(minutes=200))
    assert q.points_earned == 0 and q.points_deducted == 0 and q.payable == q.fee
    assert q.balance_after == 0 and not q.is_member


# ------------------------------------------------------------------ earning at the lane
@pytest.mark.parametrize(
    ("tier", "minutes", "kw", "earned_today", "points", "rules"),
    [
        ("gold", 190, {}, 0, 11,
         ("base:parking", "gold_parking_x2", "first_visit_bonus", "long_stay_bonus")),
        ("gold", 190, {}, 95, 5,
         ("base:parking", "gold_parking_x2", "first_visit_bonus", "long_stay_bonus",
          "cap:daily_earn")),
        ("normal", 120, {"lane_id": "E1"}, 0, 5,
         ("base:parking", "first_visit_bonus", "east_gate_x1.5")),
        ("normal", 59, {}, 0, 0, ()),
        ("normal", 120, {"previous_exit": E - timedelta(minutes=10)}, 0, 2,
         ("base:parking",)),  # merged re-entry: no per-visit bonus
        ("normal", 120, {"previous_exit": E - timedelta(hours=3)}, 0, 2,
         ("base:parking",)),  # second visit of the day
        ("normal", 120, {"previous_exit": E - timedelta(days=1)}, 0, 4,
         ("base:parking", "first_visit_bonus")),
        ("normal", 600, {"vehicle_class": "new_energy"}, 0, 29,
         ("base:parking", "green_car_x1.5", "first_visit_bonus", "long_stay_bonus")),
    ],
)
def test_stay_earning(tier, minutes, kw, earned_today, points, rules):  # type: ignore[no-untyped-def]
    rb = load_bundle(MALL)
    q = q_(rb, minutes, member(tier=tier, earned_today=earned_today), **kw)
    assert q.points_earned == points
    assert q.earned_rules == rules
    if points:
        assert q.earned_expires_at == t(2027, 4, 1)


def test_weekend_parking_double_on_friday() -> None:
    rb = load_bundle(MALL)
    e = t(2026, 3, 6, 10)  # a Friday: this mall's weekend is Fri/Sat
    q = quote_exit(SessionInput(e, e + timedelta(hours=2)), member(tier="normal"), rb,
                   e + timedelta(hours=2))
    assert q.points_earned == 6 and "weekend_holiday_x2" in q.earned_rules


def test_gold_coupon_and_points_on_mall_tariff() -> None:
    rb = load_bundle(MALL)
    mem = member(lot("L", 100, t(2027, 4, 1)), tier="gold", coupons=(cp("G1", "hours", "3"),))
    q = q_(rb, 240, mem)
    assert q.fee == Decimal("28.00")
    assert [(d.kind, d.amount) for d in q.discounts] == [
        ("coupon", Decimal("18.00")), ("points", Decimal("10.00"))]
    assert (q.points_deducted, q.payable) == (2, Decimal("0.00"))


# ------------------------------------------------------------------ expiry rules
@pytest.mark.parametrize(
    ("expiry", "earned", "expires"),
    [
        ({"mode": "annual"}, t(2026, 12, 31, 23, 59), t(2027, 4, 1)),
        ({"mode": "annual"}, t(2026, 1, 1, 0, 0), t(2027, 4, 1)),
        ({"mode": "annual", "annual_month": 2, "annual_day": 31}, t(2027, 5, 5), t(2028, 3, 1)),
        ({"mode": "rolling", "rolling_months": 12}, t(2026, 1, 31, 15), t(2027, 1, 31)),
        ({"mode": "rolling", "rolling_months": 12}, t(2028, 2, 29, 8), t(2029, 2, 28)),
        ({"mode": "rolling", "rolling_months": 1}, t(2026, 1, 31, 8), t(2026, 2, 28)),
        ({"mode": "none"}, t(2026, 1, 31, 8), None),
    ],
)
def test_earned_expiry(bundle, expiry, earned, expires):  # type: ignore[no-untyped-def]
    assert earned_expiry(bundle(expiry=expiry), earned) == expires


# ------------------------------------------------------------------ display
@pytest.mark.parametrize("minutes", [0, 5, 155, 1439, 1440 * 3 + 7, 1440 * 45 + 61])
def test_display_lines_fit_the_board(minutes: int) -> None:
    rb = load_bundle(MALL)
    for mem in (None, member(lot("L", 123456)), member(lot("L", 3), tier="gold")):
        q = q_(rb, minutes, mem)
        lines = q.display_lines_zh()
        assert 1 <= len(lines) <= 4
        assert all(columns(x) <= 16 for x in lines), lines


def test_display_lines_content(bundle):  # type: ignore[no-untyped-def]
    rb = bundle()
    q = q_(rb, 155, member(lot("L", 600)))
    assert q.display_lines_zh() == ["停车 2小时35分", "费用 77.50元", "积分抵扣 16分",
                                    "应付0.00元 余584"]


# ------------------------------------------------------------------ multiplier groups (#13)
def _grouped(make, stacking: str, group_stacking: str):  # type: ignore[no-untyped-def]
    day = {"stacking": group_stacking}
    return make(
        calendar={"weekend_days": ["sat", "sun"], "holidays": ["2026-05-02"]},
        earn={"stacking": stacking, "groups": {"day": day}},
        campaigns=[
            {"name": "dining_x1.5", "applies_to": "purchase", "categories": ["dining"],
             "multiplier": "1.5"},
            {"name": "weekend_x2", "applies_to": "purchase", "days": ["weekend", "holiday"],
             "multiplier": "2", "group": "day"},
            {"name": "holiday_x3", "applies_to": "purchase", "days": ["holiday"],
             "multiplier": "3", "group": "day"},
        ],
    )


@pytest.mark.parametrize(
    ("stacking", "group_stacking", "points", "fired"),
    [
        ("multiply", "max", 450, ("dining_x1.5", "holiday_x3")),  # 100 x 1.5 x max(2, 3)
        ("multiply", "multiply", 900, ("dining_x1.5", "weekend_x2", "holiday_x3")),  # x1.5x2x3
        ("max", "max", 300, ("dining_x1.5", "holiday_x3")),  # max(1.5, max(2, 3))
        ("max", "multiply", 600, ("dining_x1.5", "weekend_x2", "holiday_x3")),  # max(1.5, 6)
    ],
)
def test_multiplier_group_stacking(bundle, stacking, group_stacking, points, fired):  # type: ignore[no-untyped-def]
    from edge.pricing import earn_for_purchase

    rb = _grouped(bundle, stacking, group_stacking)
    r = earn_for_purchase(Decimal(100), "dining", t(2026, 5, 2, 12), None, rb)
    assert r.points == points
    assert r.rules_fired == ("base:purchase", *fired)
