"""Canonical encodings used by the hash chain and the columns: pure, no I/O, no clock.

The hash must come out the same on any machine and any Python, so every value the chain
covers goes through one canonical JSON form (sorted keys, no spaces, UTF-8, Decimal as its
string, datetimes as fixed-width UTC ISO 8601). Fixed width also makes stored times sort
correctly as text, which the month/day range queries rely on.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from edge.store.types import StoreError

GENESIS = "0" * 64
_TS = "%Y-%m-%dT%H:%M:%S.%f+00:00"


def ts(dt: datetime, what: str = "datetime") -> str:
    """Timezone-aware datetime -> fixed-width UTC text. Naive datetimes are refused."""
    if not isinstance(dt, datetime):
        raise StoreError(f"{what}: expected a datetime, got {type(dt).__name__}")
    if dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None:
        raise StoreError(f"{what}: naive datetime {dt.isoformat()} (must be timezone-aware)")
    return dt.astimezone(UTC).strftime(_TS)


def ts_opt(dt: datetime | None, what: str = "datetime") -> str | None:
    return None if dt is None else ts(dt, what)


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def parse_ts_opt(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def money(value: Decimal | int | str, what: str = "amount") -> str:
    """Decimal -> canonical text; floats are refused (money is never binary floating point)."""
    if isinstance(value, float | bool):
        raise StoreError(f"{what}: {value!r} is a {type(value).__name__}; use Decimal")
    try:
        d = Decimal(value)
    except Exception as exc:
        raise StoreError(f"{what}: {value!r} is not a decimal amount") from exc
    if not d.is_finite():
        raise StoreError(f"{what}: {value!r} is not finite")
    return str(d)


def _default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return str(o)
    if isinstance(o, datetime):
        return ts(o)
    if isinstance(o, date):
        return o.isoformat()
    if isinstance(o, Enum):
        return o.value
    if isinstance(o, tuple | set | frozenset):
        return sorted(o) if isinstance(o, set | frozenset) else list(o)
    raise TypeError(f"cannot encode {type(o).__name__} in a ledger payload")


def canonical_json(obj: Any) -> str:
    """Sorted keys, compact separators, Decimal as string; NaN/Infinity refused."""
    try:
        return json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
            allow_nan=False, default=_default,
        )
    except (TypeError, ValueError) as exc:
        raise StoreError(f"payload: {exc}") from exc


def entry_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """sha256 over the previous hash followed by the canonical encoding of the other fields."""
    body = prev_hash + canonical_json(fields)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()
