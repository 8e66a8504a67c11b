"""Services without HTTP, on SQLite and PostgreSQL: members, points lots, POS purchases
under the seed's rules, rewards within the monthly cap, expiry and perks jobs, figures."""

from __future__ import annotations

import threading
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from central.db.models import Coupon, Member, Plate, PointsEntry, PointsLot, Purchase
from central.jobs import run_expiry, run_perks
from central.services import members, points, purchases, rewards
from central.services.errors import Forbidden, Invalid, NotFound, Refused
from central.services.figures import figures
from central.services.purchases import PosLimits, PurchaseIn
from tests.central.helpers import at

TUE = "2026-03-03"  # a workday
SAT = "2026-03-07"


def enrol(c: Any, member_id: str = "m1", tier: str = "member", **kw: Any) -> None:
    with c.tx() as s:
        members.enrol(s, c.rules, member_id=member_id, phone=kw.pop("phone", None),
                      name=kw.pop("name", ""), tier=tier, now=c.now, **kw)


def shop(c: Any, shop_id: str = "cafe", category: str = "dining") -> str:
    with c.tx() as s:
        return purchases.add_shop(s, shop_id, shop_id, category)


def buy(c: Any, amount: str, when: str, *, key: str, shop_id: str = "cafe",
        member_id: str = "m1", brand: str | None = None) -> purchases.PurchaseResult:
    t = at(when)
    c.now = t
    with c.tx() as s:
        return purchases.record_purchase(
            s, c.rules, PurchaseIn(shop_id, key, member_id, Decimal(amount), t, brand), t)


def sums(c: Any, member_id: str = "m1") -> tuple[int, int, int]:
    with c.tx() as s:
        return points.ledger_sums(s, member_id)


# --------------------------------------------------------------------------- members
def test_enrol_bind_unbind(central: Any) -> None:
    enrol(central, "m1", phone="13800000001", plates=("粤B·12345",))
    with central.tx() as s:
        assert members.plates_of(s, "m1") == ["粤B12345"]
        members.bind_plate(s, "m1", "ab 123", central.now)
    enrol(central, "m2")
    with pytest.raises(Refused, match="another member"), central.tx() as s:
        members.bind_plate(s, "m2", "AB123", central.now)
    with central.tx() as s:
        members.unbind_plate(s, "m1", "AB123")
        members.bind_plate(s, "m2", "AB123", central.now)
        assert members.plates_of(s, "m2") == ["AB123"]
    for kw, field in [({"member_id": "m1"}, "member_id"), ({"tier": "platinum"}, "tier"),
                      ({"phone": "13800000001"}, "phone"), ({"phone": "call me"}, "phone"),
                      ({"member_id": "bad id!"}, "member_id"),
                      ({"plates": ("<script>",)}, "plate")]:
        args: dict[str, Any] = {"member_id": "m9", "phone": None, "name": "", "tier": "member",
                                "now": central.now, **kw}
        with pytest.raises((Invalid, Refused)) as ei, central.tx() as s:
            members.enrol(s, central.rules, **args)
        assert ei.value.field == field
    with central.tx() as s:
        assert s.scalar(select(func.count()).select_from(Member)) == 2


def test_csv_import_all_or_nothing(central: Any) -> None:
    good = "member_id,phone,name,tier,plates\na1,13900000001,Ann,member,AB1 AB2\n" \
           "a2,,Bo,gold,\n"
    with central.tx() as s:
        assert members.import_members(s, central.rules, good, central.now) == 2
    bad = "member_id,phone,name,tier,plates\nb1,,X,member,\nb2,,Y,diamond,\n"
    with pytest.raises(Invalid) as ei, central.tx() as s:
        members.import_members(s, central.rules, bad, central.now)
    assert ei.value.field == "line 3: tier"
    with central.tx() as s:
        assert s.get(Member, "b1") is None  # nothing half-applied
        assert sorted(s.scalars(select(Plate.plate))) == ["AB1", "AB2"]
    with pytest.raises(Invalid, match="header"), central.tx() as s:
        members.import_members(s, central.rules, "id,tier\nx,member\n", central.now)


# --------------------------------------------------------------------------- purchases
@pytest.mark.parametrize(("amount", "when", "category", "brand", "expected"), [
    ("99.90", f"{TUE} 12:00", "retail", None, 99),     # ¥1 = 1 point, fractions dropped
    ("60", f"{TUE} 12:00", "dining", None, 90),        # dining x1.5
    ("50", f"{SAT} 12:00", "retail", None, 100),       # weekend x2
    ("40", f"{SAT} 12:00", "dining", None, 0),         # under the ¥50 minimum
    ("60", f"{TUE} 12:00", "retail", "brand-a", 100),  # brand x3 = 180, daily cap 100
    ("50", "2026-05-01 12:00", "retail", None, 100),   # holiday x2
])
def test_purchase_earns_by_the_seeds_rules(central: Any, amount: str, when: str,
                                           category: str, brand: str | None,
                                           expected: int) -> None:
    enrol(central)
    shop(central, "s", category)
    r = buy(central, amount, when, key="k1", shop_id="s", brand=brand)
    assert r.points == expected
    assert sums(central) == (expected,) * 3


def test_daily_cap_is_per_site_day(central: Any) -> None:
    enrol(central)
    shop(central, "shop", "retail")
    assert buy(central, "80", f"{TUE} 10:00", key="a", shop_id="shop").points == 80
    assert buy(central, "80", f"{TUE} 23:59", key="b", shop_id="shop").points == 20
    # 00:30 local on Wednesday is still Tuesday in UTC: a new site day all the same
    assert buy(central, "80", "2026-03-04 00:30", key="c", shop_id="shop").points == 80


def test_purchase_idempotency_key(central: Any) -> None:
    enrol(central)
    shop(central)
    first = buy(central, "60", f"{TUE} 12:00", key="till-1:0001")
    again = buy(central, "60", f"{TUE} 12:00", key="till-1:0001")
    assert (again.points, again.replayed, again.purchase_id) == (90, True, first.purchase_id)
    with pytest.raises(Refused) as ei:
        buy(central, "61", f"{TUE} 12:00", key="till-1:0001")
    assert ei.value.field == "idempotency_key"
    with central.tx() as s:
        assert s.scalar(select(func.count()).select_from(Purchase)) == 1
        assert s.scalar(select(func.count()).select_from(PointsLot)) == 1
    assert sums(central) == (90, 90, 90)


def test_purchase_bad_input_names_the_field(central: Any) -> None:
    enrol(central)
    key = shop(central)
    now = at(f"{TUE} 12:00")
    cases = [(Decimal("NaN"), now, "amount"), (Decimal("Infinity"), now, "amount"),
             (Decimal("-5"), now, "amount"), (Decimal("0"), now, "amount"),
             (Decimal("1E+400"), now, "amount"), (Decimal("1.001"), now, "amount"),
             (Decimal("60"), now + timedelta(days=1), "at"),
             (Decimal("60"), now - timedelta(days=400), "at")]
    for amount, when, field in cases:
        with pytest.raises(Invalid) as ei, central.tx() as s:
            purchases.record_purchase(s, central.rules, PurchaseIn("cafe", "k", "m1", amount,
                                                                   when), now)
        assert ei.value.field == field, (amount, when)
    with pytest.raises(NotFound) as nf, central.tx() as s:
        purchases.record_purchase(s, central.rules,
                                  PurchaseIn("cafe", "k", "nobody", Decimal(60), now), now)
    assert nf.value.field == "member_id"
    with pytest.raises(NotFound) as nf, central.tx() as s:
        purchases.record_purchase(s, central.rules,
                                  PurchaseIn("nowhere", "k", "m1", Decimal(60), now), now)
    assert nf.value.field == "shop_id"
    shop(central, "other", "retail")
    with central.tx() as s:
        mine = purchases.shop_for_key(s, key)
        assert mine is not None and mine.shop_id == "cafe"
        with pytest.raises(Forbidden):
            purchases.record_purchase(s, central.rules, PurchaseIn(
                "other", "k", "m1", Decimal(60), now), now, shop=mine, limits=PosLimits())
    assert sums(central) == (0, 0, 0)


# --------------------------------------------------------------------------- lots
def test_lots_expire_under_the_bundle_and_spend_soonest_first(central: Any) -> None:
    enrol(central)
    shop(central, "shop", "retail")
    old = buy(central, "60", "2025-12-20 12:00", key="old", shop_id="shop")
    new = buy(central, "70", "2026-01-06 12:00", key="new", shop_id="shop")
    assert old.expires_at == at("2026-04-01 00:00")  # 31 March of the next year, site time
    assert new.expires_at == at("2027-04-01 00:00")
    central.now = at("2026-03-10 10:00")
    with central.tx() as s:
        m = points.lock_member(s, "m1")
        taken = points.spend(s, m, old.points + 10, central.now, kind="points_spent",
                             ref="t")
    assert taken == [(f"purchase:{old.purchase_id}", old.points),
                     (f"purchase:{new.purchase_id}", 10)]
    assert sums(central) == (60,) * 3


def test_expiry_job_dry_run_and_idempotent_across_workers(central: Any) -> None:
    enrol(central, "m1")
    enrol(central, "m2")
    shop(central, "shop", "retail")
    buy(central, "60", "2025-06-03 12:00", key="a", shop_id="shop")
    buy(central, "55", "2025-06-03 12:00", key="b", shop_id="shop", member_id="m2")
    buy(central, "70", "2026-01-06 12:00", key="c", shop_id="shop")
    after = at("2026-04-01 00:10")
    dry = run_expiry(central, after, dry_run=True)
    assert (dry.lots, dry.points, dry.members) == (2, 115, 2)
    assert sums(central, "m1") == (130,) * 3  # dry run wrote nothing
    assert run_expiry(central, at("2026-03-31 23:59"), dry_run=True).lots == 0
    reports: list[Any] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            reports.append(run_expiry(central, after))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sum(r.points for r in reports) == 115  # written off once in all
    assert run_expiry(central, after).lots == 0  # a restart finds nothing left
    assert sums(central, "m1") == (70,) * 3 and sums(central, "m2") == (0,) * 3
    with central.tx() as s:
        assert s.scalar(select(func.count()).select_from(PointsEntry).where(
            PointsEntry.kind == "points_expired")) == 2


def test_monthly_perks_once_per_member_and_month(central: Any) -> None:
    enrol(central, "g1", tier="gold")
    enrol(central, "n1", tier="member")
    enrol(central, "g2", tier="gold")
    with central.tx() as s:
        s.get(Member, "g2").blocked = True
    march = date(2026, 3, 1)
    assert run_perks(central, march, dry_run=True) == ["perk:g1:2026-03:0:0",
                                                        "perk:g1:2026-03:0:1"]
    assert len(run_perks(central, march)) == 2
    assert run_perks(central, march) == []  # restart / second worker: nothing new
    assert len(run_perks(central, date(2026, 4, 1))) == 2
    with central.tx() as s:
        rows = s.scalars(select(Coupon).order_by(Coupon.coupon_id)).all()
    assert [(c.member_id, c.kind, c.value) for c in rows] == [("g1", "hours", "3")] * 4
    assert rows[0].valid_until == at("2026-04-01 00:00")


# --------------------------------------------------------------------------- rewards
def test_redemption_monthly_cap_by_site_month(central: Any) -> None:
    enrol(central)
    shop(central, "shop", "retail")
    for i, day in enumerate(["2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"]):
        buy(central, "99", f"{day} 12:00", key=f"p{i}", shop_id="shop")
    with central.tx() as s:
        rewards.put_reward(s, reward_id="voucher150", kind="discount", name="¥150 voucher",
                           points=100, value=Decimal("150"))
        rewards.put_reward(s, reward_id="park3h", kind="parking_hours", name="3 hours",
                           points=50, value=Decimal("15"), hours=3)
    central.now = at("2026-03-20 10:00")
    with central.tx() as s:
        r = rewards.redeem(s, central.rules, member_id="m1", reward_id="voucher150",
                           redemption_key="r1", now=central.now)
    assert r.coupon_id == "redeem:r1" and r.points == 100
    with pytest.raises(Refused, match="monthly redemption cap") as ei, central.tx() as s:
        rewards.redeem(s, central.rules, member_id="m1", reward_id="voucher150",
                       redemption_key="r2", now=at("2026-03-31 23:30"))
    assert ei.value.field == "reward_id"
    with central.tx() as s:  # ¥15 more fits under ¥200
        rewards.redeem(s, central.rules, member_id="m1", reward_id="park3h",
                       redemption_key="r3", now=central.now)
        assert s.get(Coupon, "redeem:r3").kind == "hours"  # type: ignore[union-attr]
    with central.tx() as s:  # 00:30 on 1 April at the site is a new month (UTC: March)
        rewards.redeem(s, central.rules, member_id="m1", reward_id="voucher150",
                       redemption_key="r4", now=at("2026-04-01 00:30"))
    with central.tx() as s:  # a retry of r4 changes nothing
        again = rewards.redeem(s, central.rules, member_id="m1", reward_id="voucher150",
                               redemption_key="r4", now=at("2026-04-01 00:31"))
    assert again.replayed
    assert sums(central) == (396 - 250,) * 3
    with central.tx() as s:
        rewards.put_reward(s, reward_id="tv", kind="merchandise", name="TV", points=500,
                           value=Decimal("0"))
    with pytest.raises(Refused, match="not enough points"), central.tx() as s:
        rewards.redeem(s, central.rules, member_id="m1", reward_id="tv",
                       redemption_key="r5", now=at("2026-05-02 10:00"))
    with pytest.raises(NotFound), central.tx() as s:
        rewards.redeem(s, central.rules, member_id="m1", reward_id="yacht",
                       redemption_key="r6", now=central.now)


# --------------------------------------------------------------------------- figures
def test_figures_group_by_site_month_with_configured_cost(central: Any) -> None:
    enrol(central)
    enrol(central, "m2")
    shop(central, "shop", "retail")
    buy(central, "60", "2026-03-31 12:00", key="a", shop_id="shop")
    buy(central, "70", "2026-04-01 00:30", key="b", shop_id="shop")  # UTC: 31 March
    with central.tx() as s:
        f = figures(s, central.cfg.site.tz, Decimal("0.10"))
    assert f["points_issued_per_month"] == {"2026-03": 60, "2026-04": 70}
    assert f["points_issued"] == 130 and f["members"] == 2
    assert f["cost_of_points_issued"] == "13.00"
    assert f["average_points_per_member"] == "65.00"
    assert f["purchases_per_month"]["2026-04"] == {"count": 1, "amount": "70.00"}


def test_concurrent_retries_of_one_purchase_earn_once(central: Any) -> None:
    enrol(central)
    shop(central)
    t = at(f"{TUE} 12:00")
    got: list[tuple[str, purchases.PurchaseResult]] = []
    errors: list[BaseException] = []

    def post(key: str) -> None:
        try:
            with central.tx() as s:
                got.append((key, purchases.record_purchase(
                    s, central.rules, PurchaseIn("cafe", key, "m1", Decimal("60"), t), t)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=post, args=(k,))
               for k in ["same"] * 4 + ["other1", "other2"]]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors
    results = [r for _k, r in got]
    same = [r for k, r in got if k == "same"]
    assert len({r.purchase_id for r in same}) == 1  # every retry got the first answer
    assert len({r.points for r in same}) == 1
    with central.tx() as s:
        keys = sorted(s.scalars(select(Purchase.idempotency_key)))
    assert keys == ["other1", "other2", "same"]
    # three purchases of 90 each under the daily cap of 100: 90 + 10 + 0, in some order
    assert sorted(r.points for r in results if not r.replayed) == [0, 10, 90]
    assert sum(1 for r in results if r.replayed) == 3
    assert sums(central) == (100, 100, 100)


def test_scheduler_runs_jobs_at_site_times(central: Any) -> None:
    from datetime import datetime

    from central.jobs import build_scheduler

    sched = build_scheduler(central)
    jobs = {j.id: j for j in sched.get_jobs()}
    assert set(jobs) == {"expiry", "perks", "clear_prepaid"}  # see test_clear_prepaid_job
    base = at("2026-03-31 23:00")
    nxt = jobs["expiry"].trigger.get_next_fire_time(None, base)
    assert nxt == at("2026-04-01 00:10")
    nxt = jobs["perks"].trigger.get_next_fire_time(None, base)
    assert nxt == at("2026-04-01 00:20")
    assert isinstance(nxt, datetime) and nxt.utcoffset() == timedelta(hours=8)
