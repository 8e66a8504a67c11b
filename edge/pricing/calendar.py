"""Site-local calendar facts: day tags, local midnights, month arithmetic for expiry.

All instants handed out are UTC-aware so that subtracting them never silently ignores a DST
change (Python subtracts same-tzinfo datetimes as wall-clock times).
"""

from __future__ import annotations

import calendar as _cal
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from edge.pricing.schema import DAY_NAMES


def local_instant(d: date, minute_of_day: int, tz: ZoneInfo) -> datetime:
    """The UTC instant of a local wall-clock time.

    A time inside a spring-forward gap resolves with the offset before the change (so it
    lands just after the gap); an ambiguous autumn time is its first occurrence (fold=0).
    """
    naive = datetime(d.year, d.month, d.day) + timedelta(minutes=minute_of_day)
    return naive.replace(tzinfo=tz).astimezone(UTC)


@lru_cache(maxsize=8192)
def local_epoch(d: date, minute_of_day: int, tz: ZoneInfo) -> int:
    """``local_instant`` as whole POSIX seconds, memoised: the tariff's hot path."""
    return int(local_instant(d, minute_of_day, tz).timestamp())


@lru_cache(maxsize=4096)
def day_tags(
    d: date,
    weekend_days: frozenset[int],
    holidays: frozenset[date],
    extra_workdays: frozenset[date],
) -> frozenset[str]:
    """Tags a campaign's ``days`` can name: the weekday, weekend/workday, holiday."""
    tags = {DAY_NAMES[d.weekday()]}
    if d in holidays:
        tags.add("holiday")
    elif d.weekday() in weekend_days and d not in extra_workdays:
        tags.add("weekend")
    else:
        tags.add("workday")
    return frozenset(tags)


def add_months(d: date, months: int) -> date:
    """Same day ``months`` later, clamped to the month's last day."""
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, _cal.monthrange(year, month)[1]))


def end_of_local_day(d: date, tz: ZoneInfo) -> datetime:
    """The first instant after local date ``d`` (expiry instants are exclusive)."""
    return local_instant(d + timedelta(days=1), 0, tz)
