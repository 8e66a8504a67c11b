"""Canonical encodings: stable hashes and timestamps that sort as text (the range queries
and the hash chain both rely on it)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.store import StoreError
from edge.store.codec import canonical_json, entry_hash, money, parse_ts, ts

zones = st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5)),
                         timezone(timedelta(hours=5, minutes=45))])
aware = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31),
                     timezones=zones)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=12,
)


@given(aware, aware)
def test_timestamps_sort_as_text_like_instants(a: datetime, b: datetime) -> None:
    sa, sb = ts(a), ts(b)
    assert len(sa) == len(sb) == len("2026-11-23T01:00:00.000000+00:00")
    assert (sa < sb) == (a < b) and (sa == sb) == (a == b)
    assert parse_ts(sa) == a


@given(json_values)
def test_canonical_json_is_a_fixed_point(v: object) -> None:
    once = canonical_json(v)
    assert canonical_json(json.loads(once)) == once


@given(st.dictionaries(st.text(max_size=5), st.integers(), max_size=6))
def test_key_order_does_not_change_the_hash(d: dict[str, int]) -> None:
    reordered = dict(reversed(list(d.items())))
    assert entry_hash("0" * 64, d) == entry_hash("0" * 64, reordered)


def test_known_vector() -> None:
    """Hand-checkable: sha256 of the genesis hash + '{"a":"1.50","b":[1,"x"]}'."""
    import hashlib

    body = "0" * 64 + '{"a":"1.50","b":[1,"x"]}'
    assert canonical_json({"b": (1, "x"), "a": Decimal("1.50")}) == '{"a":"1.50","b":[1,"x"]}'
    assert entry_hash("0" * 64, {"b": (1, "x"), "a": Decimal("1.50")}) == \
        hashlib.sha256(body.encode()).hexdigest()
    assert canonical_json({"z": "沪A"}) == '{"z":"沪A"}'  # UTF-8, not \\u escapes


@pytest.mark.parametrize("bad", [1.5, float("nan"), True, "abc", Decimal("Infinity")])
def test_money_refuses_non_decimals(bad: object) -> None:
    with pytest.raises(StoreError):
        money(bad)  # type: ignore[arg-type]
    assert money(Decimal("12.30")) == "12.30"


def test_naive_datetime_refused() -> None:
    with pytest.raises(StoreError, match="naive"):
        ts(datetime(2026, 1, 1))
