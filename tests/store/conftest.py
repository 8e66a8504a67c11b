"""Fixtures: a real SQLite ledger file in tmp_path, a member with lots and coupons."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge.store import ExitRecord, Store

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=TZ)
PLATE = "沪A12345"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    s = Store.open(db, "X1")
    yield s
    s.close()


@pytest.fixture
def member(store: Store) -> str:
    """M1: 300 points expiring in 30 days, 500 that never expire, one 2-hour coupon."""
    store.upsert_member("M1", tier="gold", name="Li")
    store.set_lots("M1", [("L1", 300, T0 + timedelta(days=30), T0 - timedelta(days=300)),
                          ("L2", 500, None, None)])
    store.add_coupon("M1", "C1", "hours", Decimal("2"), T0 + timedelta(days=7))
    store.bind_plate(PLATE, "M1")
    return "M1"


def make_exit(**kw: Any) -> ExitRecord:
    base: dict[str, Any] = {
        "exit_event_id": "x1",
        "session_id": None,
        "plate": PLATE,
        "exited_at": T0 + timedelta(hours=3),
        "member_id": "M1",
        "rules_version": "r1",
        "fee": Decimal("15.00"),
        "payable": Decimal("0.00"),
        "points_deducted": 400,
        "lots_used": (("L1", 300), ("L2", 100)),
        "coupons_used": ("C1",),
        "points_earned": 10,
        "earned_expires_at": T0 + timedelta(days=365),
        "quote": {"discounts": [{"kind": "coupon", "ref": "C1", "points": 0, "amount": "10.00"},
                                {"kind": "points", "ref": "L1", "points": 300, "amount": "3.00"},
                                {"kind": "points", "ref": "L2", "points": 100, "amount": "1.00"}],
                  "fee": "15.00", "payable": "0.00"},
    }
    base.update(kw)
    return ExitRecord(**base)


@pytest.fixture
def exit_rec() -> Callable[..., ExitRecord]:
    return make_exit
