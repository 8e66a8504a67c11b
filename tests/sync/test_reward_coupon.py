"""A catalogue reward redeemed at ``parkedge-central`` becomes a coupon at the lane within
seconds, and comes back used (ported from the bench central's web tests: its pages went
with it; central's own pages are tested in tests/central/test_pages*.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from central.db.models import Coupon
from central.services.errors import ServiceError
from central.services.figures import figures
from edge.store import ExitRecord
from tests.sync.conftest import (
    Broker,
    example_bundle,
    make_central,
    make_store,
    make_sync,
    wait_until,
)

TZ = ZoneInfo("Asia/Shanghai")


def test_reward_catalogue_coupon_reaches_the_lane_and_comes_back_used(
        tmp_path: Path, own_broker: Broker) -> None:
    central = make_central(tmp_path, own_broker.port, rules_bundle=example_bundle("v1"))
    central.start()
    lane = make_store(tmp_path, "exit-1")
    sync = make_sync(lane, own_broker.port)
    sync.start()
    try:
        assert wait_until(lambda: central.connected.is_set() and sync.link.subscribed.is_set())
        now = datetime.now(UTC).replace(microsecond=0)
        central.add_member("M1", balance=150, plates=("粤B12345",), when=now)
        central.add_reward("2h", "parking_hours", "2 hours parking", 100, Decimal("2"),
                           hours=2)
        central.add_reward("mug", "merchandise", "Mall mug", 40, Decimal("25"))
        t = datetime.now(UTC)
        first = central.redeem("r1", "M1", "2h", now)
        assert first.coupon_id == "redeem:r1" and not first.replayed
        again = central.redeem("r1", "M1", "2h", now)
        assert again.replayed and again.coupon_id == first.coupon_id  # nothing twice
        with pytest.raises(ServiceError):
            central.redeem("r2", "M1", "2h", now)  # 50 left
        assert central.redeem("r3", "M1", "mug", now).coupon_id is None  # desk reward

        def coupon_here() -> bool:
            if sync.state.account("M1") is None:
                return False
            v = lane.member_view("M1", now, TZ)
            return [c.coupon_id for c in v.coupons] == ["redeem:r1"] and v.balance == 10
        assert wait_until(coupon_here, 10)
        assert datetime.now(UTC) - t < timedelta(seconds=5)  # "within seconds"
        cp = lane.member_view("M1", now, TZ).coupons[0]
        assert (cp.kind, cp.value) == ("hours", Decimal("2"))
        lane.record_exit(ExitRecord(
            exit_event_id="x-1", session_id=None, plate="粤B12345",
            exited_at=now + timedelta(hours=1), member_id="M1", rules_version="v1",
            fee=Decimal("30.00"), payable=Decimal("0.00"), points_deducted=0, lots_used=(),
            coupons_used=("redeem:r1",), points_earned=0, earned_expires_at=None, quote={}))
        sync.notify()
        assert wait_until(lambda: sync.backlog() == 0, 10)
        st = central.db.member_state("M1", {}, 0)
        assert st is not None and st.coupons == () and st.balance == 10
        with central.tx() as s:
            used = s.scalar(select(Coupon.used_at).where(Coupon.coupon_id == "redeem:r1"))
            f = figures(s, TZ, Decimal("0.05"))
        assert used is not None
        assert dict((k, v) for k, v in f["popular_reward_types"]) == {
            "parking_hours": 1, "merchandise": 1}
        assert f["points_redeemed"] == 140  # 140 spent of the 150 the member had
    finally:
        sync.stop()
        central.stop()
