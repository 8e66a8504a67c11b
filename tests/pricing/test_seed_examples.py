"""The seed document's worked examples, through the engine and through the CLI."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge.pricing import (
    MemberSnapshot,
    PointsLot,
    SessionInput,
    earn_for_purchase,
    load_bundle,
    quote_exit,
)

ROOT = Path(__file__).resolve().parents[2]
BASIC = ROOT / "config" / "rules.example.toml"
MALL = ROOT / "config" / "rules.mall.example.toml"
EXE = ROOT / ".venv" / "bin" / "parkedge"
SH = ZoneInfo("Asia/Shanghai")


def t(*a: int) -> datetime:
    return datetime(*a, tzinfo=SH)  # type: ignore[arg-type,misc]


@pytest.fixture(scope="module")
def basic():  # type: ignore[no-untyped-def]
    return load_bundle(BASIC)


@pytest.mark.parametrize(
    ("amount", "category", "when", "brand", "points", "fired"),
    [
        ("150.8", "retail", t(2026, 3, 2, 12), None, 150, ("base:purchase",)),  # 消费150.8元 → 150
        ("200", "dining", t(2026, 3, 7, 12), None, 600,
         ("base:purchase", "dining_x1.5", "weekend_x2")),  # 周六餐厅200元 → 600
        ("300", "dining", t(2023, 10, 28, 14, 30), None, 900,
         ("base:purchase", "dining_x1.5", "weekend_x2")),  # customer_A, 2023-10-28 Saturday
        ("150", "retail", t(2023, 10, 30, 10), None, 150, ("base:purchase",)),  # customer_B
        ("100", "retail", t(2026, 3, 3, 12), "brand-a", 300, ("base:purchase", "brand_x3")),
        ("49.99", "dining", t(2026, 3, 7, 12), None, 0, ("min_spend",)),  # 满50元才积分
        ("50", "retail", t(2026, 3, 2, 12), None, 50, ("base:purchase",)),
    ],
)
def test_purchase_examples(basic, amount, category, when, brand, points, fired):  # type: ignore[no-untyped-def]
    r = earn_for_purchase(Decimal(amount), category, when, None, basic, brand=brand)
    assert r.points == points
    assert r.rules_fired == fired


def test_points_deduction_example(basic):  # type: ignore[no-untyped-def]
    """500 points, 300 minutes at ¥0.5/min, 1 point = 10 minutes."""
    m = MemberSnapshot("A", "member", (PointsLot("L1", 500, None),))
    q = quote_exit(SessionInput(t(2026, 3, 2, 10), t(2026, 3, 2, 15)), m, basic, t(2026, 3, 2, 15))
    assert (q.fee, q.points_deducted, q.payable, q.balance_after) == (
        Decimal("150.00"), 30, Decimal("0.00"), 470)
    assert q.duration_minutes == 300
    assert q.rules_version == "seed-basic-1"
    assert q.explain_zh[-1] == "停车 5小时0分  费用 ¥150.00  积分抵扣 30分  应付 ¥0.00  余额 470分"


def test_exit_scenario_two(basic):  # type: ignore[no-untyped-def]
    """customer_A with 600 points parks 250 minutes: ¥125, 25 points, 575 left."""
    m = MemberSnapshot("A", "member", (PointsLot("L1", 600, None),))
    q = quote_exit(SessionInput(t(2026, 3, 2, 10), t(2026, 3, 2, 14, 10)), m, basic,
                   t(2026, 3, 2, 14, 10))
    assert (q.fee, q.points_deducted, q.payable, q.balance_after) == (
        Decimal("125.00"), 25, Decimal("0.00"), 575)


def test_short_balance_pays_rest(basic):  # type: ignore[no-untyped-def]
    m = MemberSnapshot("A", "member", (PointsLot("L1", 12, None),))
    q = quote_exit(SessionInput(t(2026, 3, 2, 10), t(2026, 3, 2, 15)), m, basic, t(2026, 3, 2, 15))
    assert (q.points_deducted, q.payable, q.balance_after) == (12, Decimal("90.00"), 0)
    assert "points_short" in q.flags


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_cli_quote_reproduces_example() -> None:
    p = _run("quote", "--rules", str(BASIC), "--entered", "2026-03-02T10:00:00+08:00",
             "--exited", "2026-03-02T15:00:00+08:00", "--points", "500", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["fee"] == "150.00"
    assert out["points_deducted"] == 30
    assert out["payable"] == "0.00"
    assert out["balance_after"] == 470
    assert out["points_earned"] == 0
    assert out["rules_version"] == "seed-basic-1"
    assert isinstance(out["explain"], list) and out["explain"]


def test_cli_earn_reproduces_examples() -> None:
    p = _run("earn", "--rules", str(BASIC), "--amount", "200", "--category", "dining",
             "--at", "2026-03-07T12:00:00+08:00", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["points"] == 600
    assert out["rules_fired"] == ["base:purchase", "dining_x1.5", "weekend_x2"]
    p = _run("earn", "--rules", str(BASIC), "--amount", "150.8", "--category", "retail",
             "--at", "2026-03-02T12:00:00+08:00", "--json")
    assert json.loads(p.stdout)["points"] == 150


@pytest.mark.parametrize(
    ("tier", "amount", "points", "minutes_for_one"),
    [("normal", "300", 3, 15), ("silver", "300", 6, 20), ("gold", "300", 10, 30)],
)
def test_three_tier_scheme(tier, amount, points, minutes_for_one):  # type: ignore[no-untyped-def]
    """普通 ¥100/分 15分钟, 银卡 ¥50/分 20分钟, 金卡 ¥30/分 30分钟 (a Tuesday, retail)."""
    mall = load_bundle(MALL)
    r = earn_for_purchase(Decimal(amount), "retail", t(2026, 3, 3, 11), None, mall, tier=tier)
    assert r.points == points
    assert mall.tiers[tier].minutes_per_point == minutes_for_one


def test_gold_monthly_coupons() -> None:
    from datetime import date

    from edge.pricing import monthly_perk_coupons

    mall = load_bundle(MALL)
    cs = monthly_perk_coupons(mall, "gold", "M9", date(2026, 3, 15))
    assert [(c.kind, c.value) for c in cs] == [("hours", Decimal(3))] * 2
    assert len({c.coupon_id for c in cs}) == 2
    assert all(c.valid_until == t(2026, 4, 1) for c in cs)
    assert monthly_perk_coupons(mall, "normal", "M9", date(2026, 3, 15)) == ()


@pytest.mark.parametrize(
    ("when", "points", "fired"),
    [
        # 2026-05-02: a Saturday in the Labour Day holiday. The seed gives x2 for "周五、周六或
        # 法定节假日" (Fri, Sat or a public holiday): one x2, so gold dining ¥300 = 300/30 = 10
        # x dining 1.5 x 2 = 30 (it was 60: holiday x2 and Labour Day x2 multiplied).
        (t(2026, 5, 2, 12), 30, ("base:purchase", "dining_x1.5", "weekend_holiday_x2")),
        (t(2026, 5, 5, 12), 30, ("base:purchase", "dining_x1.5", "weekend_holiday_x2")),
        (t(2026, 3, 7, 12), 30, ("base:purchase", "dining_x1.5", "weekend_holiday_x2")),
        (t(2026, 3, 3, 12), 15, ("base:purchase", "dining_x1.5")),  # a Tuesday
    ],
)
def test_labour_day_saturday_counts_the_day_once(when, points, fired):  # type: ignore[no-untyped-def]
    mall = load_bundle(MALL)
    r = earn_for_purchase(Decimal("300"), "dining", when, None, mall, tier="gold")
    assert (r.points, r.rules_fired) == (points, fired)
    if when.day == 2 and when.month == 5:
        assert any("labour_day_x2: x2 not stacked" in line for line in r.explain_en)


def test_labour_day_saturday_cli() -> None:
    p = _run("earn", "--rules", str(MALL), "--amount", "300", "--category", "dining",
             "--at", "2026-05-02T12:00:00+08:00", "--tier", "gold", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["points"] == 30
