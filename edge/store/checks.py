"""Input checks for the store's public methods: pure, and each error names the bad field."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from edge.store.codec import money
from edge.store.types import StoreError


def nonempty(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise StoreError(f"{what}: must be a non-empty string, got {value!r}")
    return value


def points(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StoreError(f"{what}: {value!r} must be an int >= 0")
    return value


def amount(value: Any, what: str) -> Decimal:
    """A non-negative Decimal; floats are refused (money is never binary floating point)."""
    if not isinstance(value, Decimal):
        raise StoreError(f"{what}: {value!r} must be a Decimal")
    d = Decimal(money(value, what))
    if d < 0:
        raise StoreError(f"{what}: {value} must not be negative")
    return d
