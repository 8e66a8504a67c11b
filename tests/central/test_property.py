"""Property: any sequence of operations, accepted or refused, leaves every member's cached
balance equal to the sum of their entries and to what is left in their lots (no lot below 0),
on both backends."""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from central.db.models import PointsLot, Shop
from central.jobs import run_expiry, run_perks
from central.services import members, points, purchases, rewards
from central.services.errors import ServiceError
from central.services.purchases import PurchaseIn
from tests.central.helpers import at

_run = itertools.count()

op = st.one_of(
    st.tuples(st.just("buy"), st.integers(0, 2), st.sampled_from(["cafe", "shop"]),
              st.decimals(min_value=-10, max_value=400, places=2, allow_nan=False),
              st.sampled_from([None, "brand-a"])),
    st.tuples(st.just("redeem"), st.integers(0, 2), st.sampled_from(["v50", "v150", "p2h"])),
    st.tuples(st.just("adjust"), st.integers(0, 2), st.integers(-80, 80)),
    st.tuples(st.just("expire")),
    st.tuples(st.just("perks")),
    st.tuples(st.just("wait"), st.integers(1, 200)),  # days
)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=25))
def test_balances_equal_entries_and_lots(central: Any, ops: list[tuple[Any, ...]]) -> None:
    run = next(_run)
    ids = [f"p{run}m{i}" for i in range(3)]
    now = at("2025-11-01 10:00")
    with central.tx() as s:
        if s.get(Shop, "cafe") is None:  # first example on this backend's database
            purchases.add_shop(s, "cafe", "Cafe", "dining")
            purchases.add_shop(s, "shop", "Shop", "retail")
            rewards.put_reward(s, reward_id="v50", kind="discount", name="v50", points=40,
                               value=Decimal("50"))
            rewards.put_reward(s, reward_id="v150", kind="merchandise", name="v150",
                               points=120, value=Decimal("150"))
            rewards.put_reward(s, reward_id="p2h", kind="parking_hours", name="2h",
                               points=20, value=Decimal("10"), hours=2)
        for i, mid in enumerate(ids):
            members.enrol(s, central.rules, member_id=mid, phone=None, name="",
                          tier="gold" if i == 0 else "member", now=now)
    for n, o in enumerate(ops, start=1):
        now += timedelta(hours=7)
        try:
            with central.tx() as s:
                if o[0] == "buy":
                    purchases.record_purchase(s, central.rules, PurchaseIn(
                        o[2], f"k{run}-{n}", ids[o[1]], o[3], now, o[4]), now)
                elif o[0] == "redeem":
                    rewards.redeem(s, central.rules, member_id=ids[o[1]], reward_id=o[2],
                                   redemption_key=f"r{run}-{n}", now=now)
                elif o[0] == "adjust" and o[2] != 0:
                    points.adjust(s, central.rules, ids[o[1]], o[2], now, reason="test",
                                  ref=f"a{run}-{n}")
                elif o[0] == "wait":
                    now += timedelta(days=o[1])
        except ServiceError:
            pass  # refused: must have changed nothing (checked below)
        if o[0] == "expire":
            run_expiry(central, now)
        elif o[0] == "perks":
            run_perks(central, now=now)
        for mid in ids:
            with central.tx() as s:
                bal, entries, lots = points.ledger_sums(s, mid)
                assert bal == entries == lots, (mid, o)
                assert s.scalar(select(func.count()).select_from(PointsLot).where(
                    PointsLot.member_id == mid, PointsLot.remaining < 0)) == 0
                assert 0 <= points.spendable(s, mid, now) <= bal


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                          max_leaves=6)
FIELDS = ["shop_id", "idempotency_key", "member_id", "amount", "at", "brand", "extra"]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(FIELDS), json_value, max_size=3),
       drop=st.sets(st.sampled_from(FIELDS[:5]), max_size=2))
def test_pos_feed_never_fails_with_5xx(central: Any, changes: dict[str, Any],
                                       drop: set[str]) -> None:
    """Any mutation of a good purchase gets 2xx or 4xx (never a 5xx or a traceback) and the
    member's balance stays the sum of their entries and lots."""
    import json as _json

    from fastapi.testclient import TestClient

    from central.web import create_app

    central.now = at("2026-03-03 12:00")
    with central.tx() as s:
        if s.get(Shop, "cafe") is None:
            central.pos_key = purchases.add_shop(s, "cafe", "Cafe", "dining")
            members.enrol(s, central.rules, member_id="m1", phone=None, name="",
                          tier="member", now=central.now)
    if not hasattr(central, "client"):
        central.client = TestClient(create_app(central), base_url="https://testserver")
    body: dict[str, Any] = {"shop_id": "cafe", "idempotency_key": f"k{next(_run)}",
                            "member_id": "m1", "amount": "60.00",
                            "at": "2026-03-03T11:30:00+08:00"}
    body.update(changes)
    for k in drop:
        body.pop(k, None)
    r = central.client.post("/api/pos/purchases", content=_json.dumps(body).encode(),
                            headers={"X-API-Key": central.pos_key,
                                     "Content-Type": "application/json"})
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert r.json()["field"], r.text
    with central.tx() as s:
        bal, entries, lots = points.ledger_sums(s, "m1")
    assert bal == entries == lots
