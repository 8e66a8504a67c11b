"""Parking fee for one stay under one tariff: units, grace, steps, night, daily caps.

The stay is cut into billing units from the charge start; each unit is priced by the
moment it starts (night window or the step it falls in) and belongs to the cap period it
starts in. Units are counted per segment arithmetically, so a week-long per-minute stay
costs a handful of operations, not ten thousand. Rounding to 0.01 (half-up) happens once,
here, on the final fee.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from itertools import pairwise
from zoneinfo import ZoneInfo

from edge.pricing.bundle import Tariff
from edge.pricing.calendar import local_epoch

CENT = Decimal("0.01")
ZERO = Decimal(0)
NIL = Decimal("0.00")


def to_cents(x: Decimal) -> Decimal:
    """The one place money is rounded: half-up to 0.01."""
    return x.quantize(CENT, rounding=ROUND_HALF_UP)


def stay_minutes(entered: datetime, exited: datetime) -> int:
    """Whole minutes parked (seconds dropped); 0 if the clock says exit is before entry."""
    secs = (exited.astimezone(UTC) - entered.astimezone(UTC)).total_seconds()
    return max(0, int(secs // 60))


def units_billed(t: Tariff, minutes: int, *, grace: bool = True) -> tuple[int, int]:
    """(charge start minute, number of units) for a stay of ``minutes``."""
    if grace and minutes <= t.grace:
        return 0, 0
    cs = t.grace if (grace and t.from_grace_end) else 0
    billable = minutes - cs
    u = t.unit
    if t.rounding == "up":
        n = -(-billable // u)
    elif t.rounding == "down":
        n = billable // u
    else:
        n = (2 * billable + u) // (2 * u)
    return cs, n


def _count(a: int, b: int, base: int, step: int, n: int) -> int:
    """How many k in [0, n) have a <= base + k*step < b."""
    lo = max(0, -(-(a - base) // step))
    hi = min(n, -(-(b - base) // step))
    return hi - lo if hi > lo else 0


def stay_fee(
    t: Tariff, entered: datetime, minutes: int, tz: ZoneInfo, *, grace: bool = True
) -> Decimal:
    """Fee in yuan (rounded to 0.01) for ``minutes`` parked from ``entered``."""
    cs, n = units_billed(t, minutes, grace=grace)
    if n <= 0:
        return NIL
    e = int(entered.timestamp() // 1)
    u60 = t.unit * 60
    base = cs * 60
    end = base + (n - 1) * u60 + 1  # one past the last unit's start, in seconds from entry

    cuts = {base, end}
    step_offs = [base + m * 60 for m, _ in t.steps]
    if len(step_offs) > 1:
        cuts.update(o for o in step_offs[1:] if base < o < end)

    d0 = entered.astimezone(tz).date()
    days = (datetime.fromtimestamp(e + end, tz).date() - d0).days

    periods: list[int] = []
    if t.daily_cap is not None:
        if t.calendar_cap:
            for i in range(1, days + 1):
                periods.append(local_epoch(d0 + timedelta(days=i), 0, tz) - e)
        else:
            periods.extend(range(86400, end, 86400))
        cuts.update(p for p in periods if base < p < end)

    nights: list[tuple[int, int]] = []
    if t.night is not None:
        ns, ne, _, _ = t.night
        for i in range(-1, days + 1):
            d = d0 + timedelta(days=i)
            a = local_epoch(d, ns, tz) - e
            b = local_epoch(d + timedelta(days=1) if ne <= ns else d, ne, tz) - e
            if b > base and a < end:
                nights.append((a, b))
                cuts.update(x for x in (a, b) if base < x < end)

    sums: dict[int, Decimal] = {}
    flat_done: set[int] = set()
    pts = sorted(cuts)
    for a, b in pairwise(pts):
        k = _count(a, b, base, u60, n)
        if not k:
            continue
        period = bisect_right(periods, a)
        night_id = -1
        for j, (na, nb) in enumerate(nights):
            if na <= a < nb:
                night_id = j
                break
        if night_id >= 0:
            assert t.night is not None
            rate, flat = t.night[2], t.night[3]
            if rate is not None:
                amount = rate * k
            elif night_id in flat_done:
                continue
            else:
                flat_done.add(night_id)
                amount = flat if flat is not None else ZERO
        else:
            amount = t.steps[bisect_right(step_offs, a) - 1][1] * k
        sums[period] = sums.get(period, ZERO) + amount

    cap = t.daily_cap
    total = sum(((min(v, cap) if cap is not None else v) for v in sums.values()), ZERO)
    if t.fee_factor != 1:
        total *= t.fee_factor
    return to_cents(total)


@lru_cache(maxsize=256)
def zero_fee_minutes(t: Tariff, *, grace: bool = True) -> int | None:
    """Longest stay that is free under ``t`` whatever the entry time, if that is exact.

    Only exact when every billed unit costs more than zero; otherwise None and callers
    search with ``stay_fee``.
    """
    if not t.all_positive:
        return None
    m = t.grace if grace else 0
    while units_billed(t, m + 1, grace=grace)[1] == 0:
        m += 1
    return m
