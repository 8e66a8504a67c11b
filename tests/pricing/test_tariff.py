"""Table-driven fees for every tariff feature and its edges (grace ±1, units, midnight, caps,
DST both ways, night windows, class factor, special cases)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge.pricing import SessionInput, quote_exit

SH = ZoneInfo("Asia/Shanghai")
BER = ZoneInfo("Europe/Berlin")


def t(y: int, mo: int, d: int, h: int = 0, mi: int = 0, tz: ZoneInfo = SH) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=tz)


def m(minutes: int) -> tuple[datetime, datetime]:
    start = t(2026, 3, 3, 9)
    return start, start + timedelta(minutes=minutes)


PER_MIN = {"rate": "1"}
GRACE = {"grace_minutes": 15, "rate": "1"}
GRACE_END = {"grace_minutes": 15, "charge_from": "grace_end", "rate": "1"}
U15 = {"unit_minutes": 15, "rate": "3"}
STEPS = {"unit_minutes": 60, "steps": [{"from_minute": 0, "rate": "5"},
                                       {"from_minute": 60, "rate": "3"}]}
NIGHT_RATE = {"unit_minutes": 60, "rate": "10",
              "night": {"start": "22:00", "end": "07:00", "rate": "2"}}
NIGHT_FLAT = {"unit_minutes": 60, "rate": "10",
              "night": {"start": "22:00", "end": "07:00", "flat": "25"}}
CAP60 = {"rate": "1", "daily_cap": "60"}

CASES: list[tuple[str, dict[str, Any], datetime, datetime, str]] = [
    ("grace: inside", GRACE, *m(14), "0.00"),
    ("grace: boundary", GRACE, *m(15), "0.00"),
    ("grace: +1 charged from 0", GRACE, *m(16), "16.00"),
    ("grace_end: boundary", GRACE_END, *m(15), "0.00"),
    ("grace_end: +1", GRACE_END, *m(16), "1.00"),
    ("grace_end: -1", GRACE_END, *m(14), "0.00"),
    ("zero minutes", PER_MIN, *m(0), "0.00"),
    ("seconds dropped", PER_MIN, t(2026, 3, 3, 9), t(2026, 3, 3, 9, 1) + timedelta(seconds=59),
     "1.00"),
    ("unit 15 up: 1 min", U15, *m(1), "3.00"),
    ("unit 15 up: 15", U15, *m(15), "3.00"),
    ("unit 15 up: 16", U15, *m(16), "6.00"),
    ("unit 15 down: 14", {**U15, "rounding": "down"}, *m(14), "0.00"),
    ("unit 15 down: 29", {**U15, "rounding": "down"}, *m(29), "3.00"),
    ("unit 15 nearest: 7", {**U15, "rounding": "nearest"}, *m(7), "0.00"),
    ("unit 15 nearest: 8", {**U15, "rounding": "nearest"}, *m(8), "3.00"),
    ("unit 15 nearest: 22", {**U15, "rounding": "nearest"}, *m(22), "3.00"),
    ("unit 15 nearest: 23", {**U15, "rounding": "nearest"}, *m(23), "6.00"),
    ("unit 60 up: 61", {"unit_minutes": 60, "rate": "10"}, *m(61), "20.00"),
    ("unit 30 up: 30", {"unit_minutes": 30, "rate": "4"}, *m(30), "4.00"),
    ("steps: first hour", STEPS, *m(60), "5.00"),
    ("steps: 61 min", STEPS, *m(61), "8.00"),
    ("steps: 3 h", STEPS, *m(180), "11.00"),
    ("steps: 3 h 1 min", STEPS, *m(181), "14.00"),
    ("night rate across midnight", NIGHT_RATE, t(2026, 3, 3, 20), t(2026, 3, 4, 2), "28.00"),
    ("night rate + calendar cap", {**NIGHT_RATE, "daily_cap": "15"}, t(2026, 3, 3, 20),
     t(2026, 3, 4, 2), "19.00"),
    ("night window starts at 22:00 sharp", NIGHT_RATE, t(2026, 3, 3, 21), t(2026, 3, 3, 23),
     "12.00"),
    ("night ends 07:00 sharp", NIGHT_RATE, t(2026, 3, 4, 6), t(2026, 3, 4, 8), "12.00"),
    ("night flat one night", NIGHT_FLAT, t(2026, 3, 3, 20), t(2026, 3, 4, 2), "45.00"),
    ("night flat two nights", NIGHT_FLAT, t(2026, 3, 3, 20), t(2026, 3, 4, 23, 30), "220.00"),
    ("cap: 59 min", CAP60, *m(59), "59.00"),
    ("cap: boundary 60", CAP60, *m(60), "60.00"),
    ("cap: 61", CAP60, *m(61), "60.00"),
    ("cap: three calendar days", CAP60, t(2026, 3, 2, 10), t(2026, 3, 4, 10), "180.00"),
    ("cap: 30 min into day three", CAP60, t(2026, 3, 2, 10), t(2026, 3, 4, 0, 30), "150.00"),
    ("cap: midnight splits days", CAP60, t(2026, 3, 2, 23, 30), t(2026, 3, 3, 0, 30), "60.00"),
    ("cap: calendar vs 25 h", {"rate": "1", "daily_cap": "100"}, t(2026, 3, 2, 22),
     t(2026, 3, 3, 23), "200.00"),
    ("cap: rolling 24 h", {"rate": "1", "daily_cap": "100", "cap_period": "rolling_24h"},
     t(2026, 3, 2, 22), t(2026, 3, 3, 23), "160.00"),
    ("new-energy factor", {"rate": "0.5", "fee_factor": "0.5"}, *m(61), "15.25"),
    ("factor rounds half-up once", {"rate": "0.35", "fee_factor": "0.5"}, *m(3), "0.53"),
    # DST (Europe/Berlin): spring forward 2026-03-29 02:00->03:00, back 2026-10-25 03:00->02:00
    ("DST spring: 3 wall hours = 2 h", PER_MIN, t(2026, 3, 29, 1, tz=BER),
     t(2026, 3, 29, 4, tz=BER), "120.00"),
    ("DST autumn: 3 wall hours = 4 h", PER_MIN, t(2026, 10, 25, 1, tz=BER),
     t(2026, 10, 25, 4, tz=BER), "240.00"),
    ("DST spring night is 8 h", {"rate": "1", "night": {"start": "22:00", "end": "07:00",
                                                         "rate": "0.5"}},
     t(2026, 3, 28, 21, tz=BER), t(2026, 3, 29, 8, tz=BER), "360.00"),
    ("DST autumn night is 10 h", {"rate": "1", "night": {"start": "22:00", "end": "07:00",
                                                          "rate": "0.5"}},
     t(2026, 10, 24, 21, tz=BER), t(2026, 10, 25, 8, tz=BER), "420.00"),
    ("DST spring day has 23 h under a cap", {"rate": "1", "daily_cap": "2000"},
     t(2026, 3, 29, 0, tz=BER), t(2026, 3, 30, 0, tz=BER), "1380.00"),
    ("DST autumn day has 25 h, capped per day", {"rate": "1", "daily_cap": "1450"},
     t(2026, 10, 25, 0, tz=BER), t(2026, 10, 26, 0, tz=BER), "1450.00"),
]


@pytest.mark.parametrize(("name", "tariff", "entered", "exited", "fee"), CASES,
                         ids=[c[0] for c in CASES])
def test_fee(bundle, name, tariff, entered, exited, fee):  # type: ignore[no-untyped-def]
    tz = "Europe/Berlin" if entered.tzinfo is BER else "Asia/Shanghai"
    rb = bundle(timezone=tz, tariffs={"small": tariff})
    q = quote_exit(SessionInput(entered, exited), None, rb, exited)
    assert q.fee == Decimal(fee), name
    assert q.payable == Decimal(fee)


def test_vehicle_classes_have_their_own_tariff(bundle):  # type: ignore[no-untyped-def]
    rb = bundle(tariffs={"small": {"rate": "1"}, "large": {"rate": "2"},
                         "motorcycle": {"rate": "0.1"}})
    e, x = m(30)
    fees = {c: quote_exit(SessionInput(e, x, c), None, rb, x).fee for c in rb.vehicle_classes}
    assert fees == {"small": Decimal("30.00"), "large": Decimal("60.00"),
                    "motorcycle": Decimal("3.00")}
    q = quote_exit(SessionInput(e, x, "tank"), None, rb, x)
    assert q.fee == Decimal("30.00") and "unknown_vehicle_class" in q.flags


def test_no_entry_record_flat_fee(bundle):  # type: ignore[no-untyped-def]
    rb = bundle(billing={"no_entry_fee": "30"})
    q = quote_exit(SessionInput(None, t(2026, 3, 3, 12)), None, rb, t(2026, 3, 3, 12))
    assert (q.fee, q.payable, q.duration_minutes) == (Decimal("30.00"), Decimal("30.00"), 0)
    assert "no_entry_record" in q.flags


def test_whitelist_until_and_blacklist(bundle):  # type: ignore[no-untyped-def]
    rb = bundle(lists={"whitelist": [{"plate": "粤B12345", "until": t(2026, 4, 1)}],
                       "blacklist": [{"plate": "粤B66666"}]})
    e, x = m(120)
    q = quote_exit(SessionInput(e, x, plate="粤B12345"), None, rb, x)
    assert q.fee == 0 and q.payable == 0 and "whitelist" in q.flags
    later = SessionInput(t(2026, 4, 1, 9), t(2026, 4, 1, 11), plate="粤B12345")
    q = quote_exit(later, None, rb, later.exited)
    assert q.fee == Decimal("60.00") and "whitelist" not in q.flags
    q = quote_exit(SessionInput(e, x, plate="粤B66666"), None, rb, x)
    assert "blacklist" in q.flags and q.fee == Decimal("60.00")
    assert rb.is_blacklisted("粤B66666") and not rb.is_blacklisted("粤B12345")


@pytest.mark.parametrize(("leave_after_pay", "fee", "payable", "flag"),
                         [(15, "60.00", "0.00", False), (16, "68.00", "8.00", True)])
def test_pay_station_grace(bundle, leave_after_pay, fee, payable, flag):  # type: ignore[no-untyped-def]
    rb = bundle(billing={"pay_grace_minutes": 15})
    paid_at = t(2026, 3, 3, 12)
    s = SessionInput(t(2026, 3, 3, 10), paid_at + timedelta(minutes=leave_after_pay),
                     paid_at=paid_at, paid_amount=Decimal("60.00"))
    q = quote_exit(s, None, rb, s.exited)
    assert (q.fee, q.payable, q.prepaid) == (Decimal(fee), Decimal(payable), Decimal("60.00"))
    assert ("pay_grace_exceeded" in q.flags) is flag


@pytest.mark.parametrize(("basis", "fee"), [("entry", "48.00"), ("exit", "60.00")])
def test_tariff_in_effect_at_entry(bundle, basis, fee):  # type: ignore[no-untyped-def]
    rb = bundle(effective_from=t(2026, 3, 1), billing={"tariff_basis": basis},
                tariffs={"small": {"rate": "0.5"}},
                previous_tariffs=[{"until": t(2026, 3, 1), "tariffs": {"small": {"rate": "0.4"}}}])
    s = SessionInput(t(2026, 2, 28, 23), t(2026, 3, 1, 1))
    assert quote_exit(s, None, rb, s.exited).fee == Decimal(fee)


@pytest.mark.parametrize(("gap", "fee", "merged"), [(30, "10.00", True), (31, "0.00", False)])
def test_reentry_within_window_gets_no_new_grace(bundle, gap, fee, merged):  # type: ignore[no-untyped-def]
    rb = bundle(billing={"reentry_merge_minutes": 30},
                tariffs={"small": {"grace_minutes": 15, "rate": "1"}})
    e = t(2026, 3, 3, 10)
    s = SessionInput(e, e + timedelta(minutes=10), previous_exit=e - timedelta(minutes=gap))
    q = quote_exit(s, None, rb, s.exited)
    assert q.fee == Decimal(fee)
    assert ("merged_reentry" in q.flags) is merged


def test_naive_datetime_is_a_clear_error(bundle):  # type: ignore[no-untyped-def]
    rb = bundle()
    with pytest.raises(ValueError, match=r"session\.entered must be a timezone-aware"):
        quote_exit(SessionInput(datetime(2026, 3, 3, 9), t(2026, 3, 3, 10)), None, rb,
                   t(2026, 3, 3, 10))


def test_exit_before_entry_costs_nothing(bundle):  # type: ignore[no-untyped-def]
    rb = bundle()
    q = quote_exit(SessionInput(t(2026, 3, 3, 10), t(2026, 3, 3, 9)), None, rb, t(2026, 3, 3, 9))
    assert q.fee == 0 and q.duration_minutes == 0


@pytest.mark.parametrize(("paid", "ok"), [(0, True), ("12.5", True), (Decimal("-1"), False),
                                          (1.5, False), (Decimal("NaN"), False),
                                          ("ten", False)])
def test_paid_amount_types(bundle, paid, ok):  # type: ignore[no-untyped-def]
    rb = bundle()
    s = SessionInput(t(2026, 3, 3, 10), t(2026, 3, 3, 11), paid_at=t(2026, 3, 3, 10, 55),
                     paid_amount=paid)
    if ok:
        q = quote_exit(s, None, rb, s.exited)
        assert q.payable == max(Decimal(0), Decimal("27.50") - Decimal(paid))
    else:
        with pytest.raises(ValueError, match="paid_amount"):
            quote_exit(s, None, rb, s.exited)


def test_missing_exit_time_is_a_clear_error(bundle):  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"session\.exited must be a timezone-aware"):
        quote_exit(SessionInput(t(2026, 3, 3, 9), None), None, bundle(),
                   t(2026, 3, 3, 10))
