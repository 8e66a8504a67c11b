"""Offline exposure at the lane: a deduction never exceeds what the sync allows for the
account, and the points spent are still the soonest-expiring ones."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.lane.decide import Decider, LanePolicy, cap_lots
from edge.lpr.source import PlateRead
from edge.pricing import PointsLot, load_bundle
from edge.store import EntryKind, Store

REPO = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 17, 10, 0, tzinfo=TZ)


def exit_with_limit(tmp: Path, limit: int | None) -> tuple[Store, Decider]:
    store = Store.open(tmp / "lane.db", "X1")
    store.upsert_member("M1", tier="member")
    store.set_lots("M1", [
        ("late", 400, T0 + timedelta(days=300), T0 - timedelta(days=5)),
        ("soon", 100, T0 + timedelta(days=10), T0 - timedelta(days=50)),
    ])
    store.bind_plate("沪A12345", "M1")
    store.record_entry(plate="沪A12345", entered_at=T0, event_id="in", member_id="M1",
                       lane_id="E1")
    bundle = load_bundle(REPO / "config" / "rules.example.toml")
    decider = Decider(store, lambda: bundle, LanePolicy("X1", "exit", TZ),
                      spend_limit=None if limit is None else (lambda _m: limit))
    read = PlateRead("沪A12345", 0.99, T0 + timedelta(minutes=300), "test", "out-1")
    decider.decide(read, read.at)
    return store, decider


def deducted(store: Store) -> list[tuple[str, int]]:
    entries = [e for e in store.entries(0, 100) if e.kind == EntryKind.POINTS_DEDUCTED]
    return [(str(k), int(v)) for e in entries for k, v in e.payload["lots"]]


def test_without_a_limit_the_fee_is_covered(tmp_path: Path) -> None:
    store, _ = exit_with_limit(tmp_path, None)  # 300 min at ¥0.5 = ¥150 = 30 points
    assert sorted(deducted(store)) == [("soon", 30)]
    assert store.list_sessions()[0].payable == Decimal("0.00")


def test_offline_allowance_bounds_the_deduction_and_the_rest_is_payable(tmp_path: Path) -> None:
    store, _ = exit_with_limit(tmp_path, 12)
    assert deducted(store) == [("soon", 12)]
    s = store.list_sessions()[0]
    assert s.points_deducted == 12
    assert s.payable == Decimal("90.00")  # 18 points' worth (¥5 each) left to pay
    assert store.balance("M1", T0 + timedelta(hours=6)) == 488


def test_flagged_account_spends_nothing(tmp_path: Path) -> None:
    store, _ = exit_with_limit(tmp_path, 0)
    assert deducted(store) == []
    assert store.list_sessions()[0].payable == Decimal("150.00")


LOTS = st.lists(
    st.tuples(st.integers(1, 500), st.one_of(st.none(), st.integers(0, 1000))),
    min_size=0, max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(LOTS, st.integers(-5, 3000))
def test_cap_lots_never_exceeds_the_limit_and_keeps_the_soonest(
    raw: list[tuple[int, int | None]], limit: int
) -> None:
    lots = tuple(
        PointsLot(f"l{i}", pts, None if d is None else T0 + timedelta(days=d))
        for i, (pts, d) in enumerate(raw)
    )
    capped = cap_lots(lots, limit)
    total = sum(x.points for x in lots)
    assert sum(x.points for x in capped) == min(total, max(0, limit))
    assert all(x.points > 0 for x in capped)
    # everything kept expires no later than anything dropped entirely
    kept = {x.lot_id for x in capped}
    far = T0 + timedelta(days=10_000)
    dropped = [x for x in lots if x.lot_id not in kept]
    if capped and dropped:
        assert max(x.expires_at or far for x in capped) <= min(x.expires_at or far
                                                               for x in dropped)
