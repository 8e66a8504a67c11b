"""Parking fee for one stay under one tariff: units, grace, steps, night, daily caps.

The stay is cut into billing units from the charge start; each unit is priced by the
moment it starts (night window or the step it falls in) and belongs to the cap period it
starts in. Units are counted per segment arithmetically, so a week-long per-minute stay
costs a handful of operations, not ten thousand. Rounding to 0.01 (half-up) happens once,
here, on the final fee.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import UTC, date, datetime, timedelta
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


@lru_cache(maxsize=8192)
def _midnights(tz: ZoneInfo, d0: date, days: int) -> tuple[int, ...]:
    """POSIX seconds of the local midnights ending each of ``days`` days after ``d0``."""
    return tuple(local_epoch(d0 + timedelta(days=i), 0, tz) for i in range(1, days + 1))


@lru_cache(maxsize=8192)
def _nights(tz: ZoneInfo, start: int, end: int, d0: date, days: int
            ) -> tuple[tuple[int, int], ...]:
    """POSIX (start, end) of the night windows that begin on d0-1 .. d0+days."""
    out = []
    for i in range(-1, days + 1):
        d = d0 + timedelta(days=i)
        out.append((local_epoch(d, start, tz),
                    local_epoch(d + timedelta(days=1) if end <= start else d, end, tz)))
    return tuple(out)


class StayFee:
    """Fee as a function of minutes charged, for one tariff and one entry instant.

    Built once per quote: the points search evaluates it several times for the same entry.
    """

    __slots__ = ("d0", "e", "grace", "t", "tz")

    def __init__(self, t: Tariff, entered: datetime, tz: ZoneInfo, grace: bool) -> None:
        self.t = t
        self.tz = tz
        self.grace = grace
        self.e = int(entered.timestamp() // 1)
        self.d0 = entered.astimezone(tz).date()

    def __call__(self, minutes: int) -> Decimal:
        t = self.t
        cs, n = units_billed(t, minutes, grace=self.grace)
        if n <= 0:
            return NIL
        e = self.e
        tz = self.tz
        d0 = self.d0
        u60 = t.unit * 60
        base = cs * 60
        end = base + (n - 1) * u60 + 1  # one past the last unit's start, seconds from entry
        cuts = [base, end]
        steps = t.steps
        step_offs = [base + m * 60 for m, _ in steps]
        for o in step_offs[1:]:
            if base < o < end:
                cuts.append(o)
        days = 0
        if t.night is not None or t.daily_cap is not None:
            days = (datetime.fromtimestamp(e + end, tz).date() - d0).days

        periods: list[int] = []
        if t.daily_cap is not None:
            if t.calendar_cap:
                periods = [m - e for m in _midnights(tz, d0, days)]
            else:
                periods = list(range(86400, end, 86400))
            for p in periods:
                if base < p < end:
                    cuts.append(p)

        nights: list[tuple[int, int]] = []
        night = t.night
        if night is not None:
            for a, b in _nights(tz, night[0], night[1], d0, days):
                a -= e
                b -= e
                if b > base and a < end:
                    nights.append((a, b))
                    if base < a < end:
                        cuts.append(a)
                    if base < b < end:
                        cuts.append(b)

        night_starts = [na for na, _ in nights]
        sums: dict[int, Decimal] = {}
        flat_done: set[int] = set()
        cuts.sort()
        for a, b in pairwise(cuts):
            if a == b:
                continue
            lo = -(-(a - base) // u60)
            if lo < 0:
                lo = 0
            hi = -(-(b - base) // u60)
            if hi > n:
                hi = n
            k = hi - lo
            if k <= 0:
                continue
            period = bisect_right(periods, a) if periods else 0
            # the night window holding a: windows are disjoint and in order, so bisect (a
            # linear scan made a decades-long stay, e.g. an entry time from a reset clock,
            # quadratic: minutes of CPU at the exit)
            night_id = -1
            if nights:
                j = bisect_right(night_starts, a) - 1
                if j >= 0 and a < nights[j][1]:
                    night_id = j
            if night_id >= 0:
                assert night is not None
                rate, flat = night[2], night[3]
                if rate is not None:
                    amount = rate * k
                elif night_id in flat_done:
                    continue
                else:
                    flat_done.add(night_id)
                    amount = flat if flat is not None else ZERO
            elif len(steps) == 1:
                amount = steps[0][1] * k
            else:
                amount = steps[bisect_right(step_offs, a) - 1][1] * k
            sums[period] = sums.get(period, ZERO) + amount

        cap = t.daily_cap
        if cap is None:
            total = sum(sums.values(), ZERO)
        else:
            total = sum((v if v < cap else cap for v in sums.values()), ZERO)
        if t.fee_factor != 1:
            total *= t.fee_factor
        return to_cents(total)


def stay_fee(t: Tariff, entered: datetime, minutes: int, tz: ZoneInfo, *,
             grace: bool = True) -> Decimal:
    """Fee in yuan (rounded to 0.01) for ``minutes`` parked from ``entered``."""
    return StayFee(t, entered, tz, grace)(minutes)


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
