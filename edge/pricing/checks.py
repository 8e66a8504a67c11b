"""Guards on what enters the engine: a bad value raises a ValueError naming it, never computes.

Why: the engine is called with values that crossed a boundary (a lane's ledger, central's POS
feed, the command line). NaN compares by raising ``decimal.InvalidOperation``, Infinity or
1e400 makes 1e400 points, a date at the calendar's end overflows ``date + 1 day``. Each of
those must be a clear error at the door, not a traceback (or a number) from deep inside.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from edge.pricing.types import MemberSnapshot

# Instants the engine prices: days, nights and caps need the day after; annual and rolling
# expiry need up to ten years after. Far inside datetime's range, far outside any real stay.
MIN_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
MAX_INSTANT = datetime(9000, 1, 1, tzinfo=UTC)
# Largest amount of money taken (a purchase, a prepayment, a coupon, a month's redemptions):
# the same bound as a bundle's money fields (12 digits, 4 of them decimals).
MAX_MONEY = Decimal("100000000")


def check_instant(name: str, v: Any, *, required: bool = True) -> None:
    """``v`` is a timezone-aware datetime in [MIN_INSTANT, MAX_INSTANT) (or None if allowed)."""
    if v is None and not required:
        return
    if not isinstance(v, datetime) or v.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {v!r}")
    if not MIN_INSTANT <= v < MAX_INSTANT:
        raise ValueError(f"{name} {v.isoformat()} is outside the supported range "
                         f"{MIN_INSTANT:%Y-%m-%d} .. {MAX_INSTANT:%Y-%m-%d} (UTC)")


def check_money(name: str, v: Any) -> Decimal:
    """``v`` as a finite Decimal in [0, MAX_MONEY]; int and decimal strings are accepted."""
    if isinstance(v, bool) or not isinstance(v, (Decimal, int, str)):
        raise ValueError(f"{name} must be a Decimal amount, got {v!r}")
    try:
        d = Decimal(v)
    except ArithmeticError:
        raise ValueError(f"{name} is not an amount: {v!r}") from None
    if not d.is_finite():
        raise ValueError(f"{name} must be a finite amount, got {v!r}")
    if d < 0 or d > MAX_MONEY:
        raise ValueError(f"{name} must be between 0 and {MAX_MONEY}, got {v!r}")
    return d


def check_count(name: str, v: Any) -> int:
    """``v`` is an int (not a bool, not a float); negative is allowed (ledger corrections)."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{name} must be an integer, got {v!r}")
    return v


def check_member(m: MemberSnapshot) -> None:
    """Every number in a member snapshot is one the engine can compute with.

    Negative period sums are allowed (a correction can revoke earlier points); the caps treat
    them as 0, so they never widen a cap.
    """
    if not isinstance(m, MemberSnapshot):
        raise ValueError(f"member must be a MemberSnapshot, got {type(m).__name__}")
    month = m.redeemed_this_month_value
    if isinstance(month, bool) or not isinstance(month, (Decimal, int)):
        raise ValueError(f"member.redeemed_this_month_value must be a Decimal, got {month!r}")
    if not Decimal(month).is_finite() or abs(Decimal(month)) > MAX_MONEY:
        raise ValueError(
            f"member.redeemed_this_month_value must be a finite amount of at most {MAX_MONEY}, "
            f"got {month!r}")
    check_count("member.redeemed_today_points", m.redeemed_today_points)
    check_count("member.earned_today", m.earned_today)
    for i, lot in enumerate(m.lots):
        check_count(f"member.lots[{i}].points", lot.points)
        _aware_or_none(f"member.lots[{i}].expires_at", lot.expires_at)
    for i, c in enumerate(m.coupons):
        if c.kind not in ("hours", "amount", "free"):
            raise ValueError(f"member.coupons[{i}].kind must be hours, amount or free, "
                             f"got {c.kind!r}")
        check_money(f"member.coupons[{i}].value", c.value)
        _aware_or_none(f"member.coupons[{i}].valid_until", c.valid_until)


def _aware_or_none(name: str, v: Any) -> None:
    """Only compared with the quote time, so any aware instant will do."""
    if v is not None and (not isinstance(v, datetime) or v.utcoffset() is None):
        raise ValueError(f"{name} must be a timezone-aware datetime or None, got {v!r}")
