"""Member cache: versions, lots and expiry, coupons, and the calendar-period sums in the zone."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge.store import ExitRecord, Store, StoreError

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=TZ)
Make = Callable[..., ExitRecord]


def test_upsert_ignores_stale_versions(store: Store) -> None:
    store.upsert_member("M1", tier="silver", version=3)
    store.upsert_member("M1", tier="bronze", version=2)  # older downlink arrives late
    m = store.get_member("M1")
    assert m is not None and m.tier == "silver" and m.version == 3
    store.upsert_member("M1", tier="gold", version=4, auto_deduct=False, blocked=True)
    m = store.get_member("M1")
    assert m is not None and (m.tier, m.auto_deduct, m.blocked) == ("gold", False, True)


def test_plate_binding(store: Store) -> None:
    with pytest.raises(StoreError, match="unknown member 'M404'"):
        store.bind_plate("沪A12345", "M404")
    store.upsert_member("M1", tier="gold")
    store.upsert_member("M2", tier="silver")
    store.bind_plate("沪A12345", "M1", version=2)
    store.bind_plate("沪A12345", "M2", version=1)  # stale
    assert store.member_for_plate("沪A12345").member_id == "M1"  # type: ignore[union-attr]
    store.bind_plate("沪A12345", "M2", version=5)
    assert store.member_for_plate("沪A12345").member_id == "M2"  # type: ignore[union-attr]
    store.unbind_plate("沪A12345")
    assert store.member_for_plate("沪A12345") is None


def test_balance_respects_expiry_exclusive(store: Store) -> None:
    exp = T0 + timedelta(days=1)
    store.upsert_member("M1", tier="gold")
    store.set_lots("M1", [("A", 100, exp, None), ("B", 50, None, None)])
    assert store.balance("M1", exp - timedelta(microseconds=1)) == 150
    assert store.balance("M1", exp) == 50  # expires_at is exclusive
    v = store.member_view("M1", exp, TZ)
    assert [lot.lot_id for lot in v.lots] == ["B"] and v.balance == 50
    assert store.get_member("M1").balance == 150  # type: ignore[union-attr]  # cache: all lots
    with pytest.raises(StoreError, match="unknown member"):
        store.balance("nobody", T0)


@pytest.mark.parametrize(
    ("lots", "match"),
    [
        ([("A", -1, None, None)], r"lots\[0\].points"),
        ([("A", 1, None, None), ("A", 2, None, None)], r"lots\[1\].lot_id"),
        ([("A", 1, datetime(2027, 1, 1), None)], r"lots\[0\].expires_at: naive"),
        ([("A", 1)], r"lots\[0\]: expected"),
    ],
)
def test_set_lots_validation(store: Store, lots: list[Any], match: str) -> None:
    store.upsert_member("M1", tier="gold")
    store.set_lots("M1", [("KEEP", 7, None, None)])
    with pytest.raises(StoreError, match=match):
        store.set_lots("M1", lots)
    assert store.balance("M1", T0) == 7  # refused snapshot changed nothing


def test_coupons_valid_unused_only(store: Store, member: str, exit_rec: Make) -> None:
    store.add_coupon("M1", "C2", "amount", Decimal("5.00"), T0 - timedelta(days=1))  # expired
    store.add_coupon("M1", "C3", "free", Decimal("0"), None)
    v = store.member_view("M1", T0, TZ)
    assert [c.coupon_id for c in v.coupons] == ["C1", "C3"]
    assert v.coupons[0].value == Decimal("2") and v.coupons[0].kind == "hours"
    s, _ = store.record_entry(plate="沪A12345", entered_at=T0, event_id="e1", member_id="M1")
    store.record_exit(exit_rec(session_id=s.session_id))
    with pytest.raises(StoreError, match="already used"):
        store.add_coupon("M1", "C1", "hours", Decimal("3"), None)
    with pytest.raises(StoreError, match="value"):
        store.add_coupon("M1", "C4", "amount", 1.5, None)  # type: ignore[arg-type]


def _exit_at(store: Store, make: Make, n: int, at: datetime, points: int, value: str,
             earned: int = 0) -> None:
    plate = f"沪A0{n:04d}"
    s, _ = store.record_entry(plate=plate, entered_at=at - timedelta(hours=1), event_id=f"e{n}",
                              member_id="M1")
    store.record_exit(make(
        session_id=s.session_id, plate=plate, exit_event_id=f"x{n}", exited_at=at,
        points_deducted=points, lots_used=(("BIG", points),) if points else (), coupons_used=(),
        points_earned=earned, earned_expires_at=None,
        quote={"discounts": [{"kind": "points", "ref": "BIG", "points": points,
                              "amount": value}]}))


def test_period_sums_follow_the_local_calendar(store: Store, exit_rec: Make) -> None:
    store.upsert_member("M1", tier="gold")
    store.set_lots("M1", [("BIG", 100_000, None, None)])
    # 2026-11-30 23:30 Shanghai is 15:30 UTC the same day; 2026-12-01 00:10 Shanghai is
    # still 30 November in UTC: it must count in December, by the car park's calendar.
    _exit_at(store, exit_rec, 1, datetime(2026, 10, 31, 23, 59, tzinfo=TZ), 100, "1.00")
    _exit_at(store, exit_rec, 2, datetime(2026, 11, 1, 0, 0, tzinfo=TZ), 200, "2.00", 5)
    _exit_at(store, exit_rec, 3, datetime(2026, 11, 30, 23, 30, tzinfo=TZ), 300, "3.00", 7)
    _exit_at(store, exit_rec, 4, datetime(2026, 12, 1, 0, 10, tzinfo=TZ), 400, "4.00", 11)

    nov = store.member_view("M1", datetime(2026, 11, 30, 23, 45, tzinfo=TZ), TZ)
    assert nov.redeemed_this_month_value == Decimal("5.00")  # exits 2 and 3
    assert nov.redeemed_today_points == 300
    assert nov.earned_today == 7

    dec = store.member_view("M1", datetime(2026, 12, 1, 8, 0, tzinfo=TZ), TZ)
    assert dec.redeemed_this_month_value == Decimal("4.00")
    assert dec.redeemed_today_points == 400
    assert dec.earned_today == 11

    # the same instants seen from UTC fall in other periods: the zone really matters
    utc = ZoneInfo("UTC")
    dec_utc = store.member_view("M1", datetime(2026, 12, 1, 8, 0, tzinfo=TZ), utc)
    assert dec_utc.redeemed_this_month_value == Decimal("0")
    assert dec_utc.redeemed_today_points == 0
    assert store.balance("M1", datetime(2026, 12, 2, tzinfo=TZ)) == 100_000 - 1000 + 23
