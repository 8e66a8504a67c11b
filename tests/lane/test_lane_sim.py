"""Entry and exit lanes end to end against the simulator, every part real (see rig.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from rig import TZ, Rig, make_rig

from edge.barrier.interfaces import DisplayLine
from edge.lane import machine as m
from edge.store import EntryKind

T_IN = datetime(2026, 11, 17, 10, 0, tzinfo=TZ)


def kinds(rig: Rig) -> list[str]:
    return [str(e.kind) for e in rig.store.entries(0, 10_000)]


def lane_events(rig: Rig) -> list[str]:
    return [
        str(e.payload.get("event"))
        for e in rig.store.entries(0, 10_000)
        if e.kind == EntryKind.LANE_EVENT
    ]


def seed_member(rig: Rig, plate: str, points: int, member_id: str = "M1") -> None:
    rig.store.upsert_member(member_id, tier="member")
    rig.store.set_lots(member_id, [(f"{member_id}-lot", points, None, T_IN - timedelta(days=9))])
    rig.store.bind_plate(plate, member_id)


def screen(rig: Rig) -> str:
    return " | ".join(rig.board.screen)


def run(coro_fn):  # type: ignore[no-untyped-def]
    return asyncio.run(coro_fn())


def test_entry_member_opens_and_greets(tmp_path: Path) -> None:
    async def go() -> None:
        rig = await make_rig(tmp_path, "entry")
        try:
            seed_member(rig, "沪A12345", 500)
            await rig.arrive("沪A12345", T_IN)
            assert await rig.until(lambda: "积分余额 500分" in rig.board.screen), screen(rig)
            assert await rig.until(lambda: any("欢迎光临" in x for x in rig.board.spoken))
            assert await rig.drive_through(), f"state {rig.state}"
            s = rig.store.find_open_session("沪A12345")
            assert s is not None and s.member_id == "M1" and s.entered_at == T_IN
            assert await rig.until(lambda: "欢迎光临" in rig.board.screen[0])  # idle again
            assert rig.sim.stats.opens == 1
            assert rig.sim.stats.latched == []
            assert rig.state is m.State.IDLE
        finally:
            await rig.close()

    run(go)


def test_exit_seed_example_points_cover_the_fee(tmp_path: Path) -> None:
    """The seed: 500 points, 300 minutes at ¥0.5, 1 point = 10 min → 30 points, ¥0, 470 left."""

    async def go() -> None:
        rig = await make_rig(tmp_path, "exit")
        try:
            seed_member(rig, "沪A12345", 500)
            rig.store.record_entry(plate="沪A12345", entered_at=T_IN, event_id="in-1",
                                   member_id="M1", lane_id="E1")
            await rig.arrive("沪A12345", T_IN + timedelta(minutes=300))
            assert await rig.drive_through(), f"state {rig.state}, screen {screen(rig)}"
            s = rig.store.get_session(rig.store.list_sessions()[0].session_id)
            assert s is not None
            assert s.status == "closed"
            assert s.fee == Decimal("150.00") and s.payable == Decimal("0.00")
            assert s.points_deducted == 30
            assert rig.store.balance("M1", T_IN + timedelta(hours=6)) == 470
            assert rig.sim.stats.opens == 1
            assert rig.sim.stats.latched == []
        finally:
            await rig.close()

    run(go)


def test_exit_open_coil_is_answered_before_the_screen_is_written(tmp_path: Path) -> None:
    """The coil first, the board after: the decision screen starts only once the open coil
    has been acknowledged (the display's serial thread would otherwise delay the coil)."""

    async def go() -> None:
        rig = await make_rig(tmp_path, "exit")
        order: list[str] = []
        write_coil, show = rig.hub.write_coil, rig.runner.display.show

        async def coil(unit: int, addr: int, value: bool) -> None:
            await write_coil(unit, addr, value)
            if value:
                order.append("coil on acked")

        async def screen_start(lines: list[DisplayLine]) -> None:
            order.append("screen " + " ".join(x.text for x in lines))
            await show(lines)

        rig.hub.write_coil = coil  # type: ignore[method-assign]
        rig.runner.display.show = screen_start  # type: ignore[method-assign]
        try:
            seed_member(rig, "沪A12345", 500)
            rig.store.record_entry(plate="沪A12345", entered_at=T_IN, event_id="in-1",
                                   member_id="M1", lane_id="E1")
            await rig.arrive("沪A12345", T_IN + timedelta(minutes=300))
            assert await rig.until(lambda: "coil on acked" in order), order
            assert await rig.until(lambda: any("应付" in x for x in order)), order
            decision = next(i for i, x in enumerate(order) if "应付" in x)
            assert order.index("coil on acked") < decision, order
            assert await rig.drive_through(), f"state {rig.state}, screen {screen(rig)}"
        finally:
            await rig.close()

    run(go)


def test_lane_checkpoints_the_wal_after_the_pulse_not_in_the_exit(tmp_path: Path) -> None:
    """The runner defers SQLite's checkpoint and runs it once the barrier has its command."""

    async def go() -> None:
        rig = await make_rig(tmp_path, "exit")
        try:
            auto = rig.store._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0]
            assert auto == 0  # no checkpoint inside an exit's commit
            seed_member(rig, "沪A12345", 500)
            rig.store.record_entry(plate="沪A12345", entered_at=T_IN, event_id="in-1",
                                   member_id="M1", lane_id="E1")
            rig.store.defer_checkpoints(every=1)  # due after the exit's one write
            rig.store.checkpoint()  # (the seeding's writes would trip the safety net)
            await rig.arrive("沪A12345", T_IN + timedelta(minutes=300))
            assert await rig.until(lambda: rig.sim.stats.opens == 1)
            assert await rig.until(lambda: not rig.store.checkpoint_due, 1.0)
            assert await rig.drive_through(), f"state {rig.state}, screen {screen(rig)}"
        finally:
            await rig.close()

    run(go)


def test_exit_owed_waits_for_payment_then_opens(tmp_path: Path) -> None:
    async def go() -> None:
        rig = await make_rig(tmp_path, "exit")
        try:
            rig.store.record_entry(plate="浙B5T6Q8", entered_at=T_IN, event_id="in-2",
                                   lane_id="E1")
            await rig.arrive("浙B5T6Q8", T_IN + timedelta(minutes=85))
            assert await rig.until(lambda: rig.state is m.State.WAIT_PAYMENT)
            await asyncio.sleep(0.3)
            assert rig.sim.stats.opens == 0 and rig.sim.arm_down  # nothing opens while owed
            assert await rig.until(lambda: any("42.50" in x for x in rig.board.screen))
            sid = rig.runner.lane.current.session_id  # type: ignore[union-attr]
            assert sid
            assert rig.runner.status()["current"]["owed"] == "42.50"  # what the pay station asks
            rig.runner.payment(sid, Decimal("42.50"), "qr", "pay-1")
            assert await rig.drive_through()
            s = rig.store.get_session(sid)
            assert s is not None and s.status == "closed" and s.paid == Decimal("42.50")
        finally:
            await rig.close()

    run(go)


def test_unknown_plate_held_then_operator_opens_with_a_ledger_entry(tmp_path: Path) -> None:
    async def go() -> None:
        rig = await make_rig(tmp_path, "exit")
        try:
            await rig.arrive("京N8P5X3", T_IN)
            assert await rig.until(lambda: rig.state is m.State.HOLD)
            assert await rig.until(lambda: "无入场记录" in rig.board.screen)
            assert rig.sim.stats.opens == 0
            rig.runner.operator_open("ticket shown at the booth", "guard-2")
            assert await rig.drive_through()
            manual = [e for e in rig.store.entries(0, 1000) if e.kind == EntryKind.MANUAL_OPEN]
            assert len(manual) == 1
            assert manual[0].payload.get("reason") == "ticket shown at the booth"
            assert "unknown_plate" in lane_events(rig)
        finally:
            await rig.close()

    run(go)


def test_duplicate_reads_never_deduct_twice(tmp_path: Path) -> None:
    async def go() -> None:
        rig = await make_rig(tmp_path, "exit")
        try:
            seed_member(rig, "沪A12345", 500)
            rig.store.record_entry(plate="沪A12345", entered_at=T_IN, event_id="in-3",
                                   member_id="M1", lane_id="E1")
            await rig.arrive("沪A12345", T_IN + timedelta(minutes=100))
            for _ in range(3):  # the camera pushes again, the operator types it too
                rig.plates.submit("沪A12345", T_IN + timedelta(minutes=100), "test")
            assert await rig.drive_through()
            # the same car read again after it left (a repeat push) replays, never re-deducts
            await rig.arrive("沪A12345", T_IN + timedelta(minutes=101))
            assert await rig.drive_through()
            deducted = [e for e in rig.store.entries(0, 1000)
                        if e.kind == EntryKind.POINTS_DEDUCTED]
            assert len(deducted) == 1
            assert rig.store.balance("M1", T_IN + timedelta(hours=3)) == 490
            assert rig.store.verify().ok
        finally:
            await rig.close()

    run(go)


def test_reverse_away_while_owing_gives_the_points_back(tmp_path: Path) -> None:
    async def go() -> None:
        rig = await make_rig(tmp_path, "exit")
        try:
            seed_member(rig, "苏E9B7K2", 3)
            rig.store.record_entry(plate="苏E9B7K2", entered_at=T_IN, event_id="in-4",
                                   member_id="M1", lane_id="E1")
            await rig.arrive("苏E9B7K2", T_IN + timedelta(minutes=120))
            assert await rig.until(lambda: rig.state is m.State.WAIT_PAYMENT)
            assert rig.store.balance("M1", T_IN + timedelta(hours=3)) == 0
            rig.sim.set_loop("arming", False)
            assert await rig.until(lambda: rig.state is m.State.IDLE)
            assert await rig.until(
                lambda: rig.store.balance("M1", T_IN + timedelta(hours=3)) == 3
            )
            assert rig.store.find_open_session("苏E9B7K2") is not None
            assert "reversed" in lane_events(rig)
        finally:
            await rig.close()

    run(go)


def test_no_plate_read_holds_and_says_so(tmp_path: Path) -> None:
    async def go() -> None:
        rig = await make_rig(tmp_path, "entry", timeouts=m.Timeouts(plate_s=0.3))
        try:
            await rig.arrive(None, T_IN)
            assert await rig.until(lambda: rig.state is m.State.HOLD)
            assert await rig.until(lambda: "未识别车牌" in rig.board.screen)
            assert "no_plate" in lane_events(rig)
            assert rig.sim.stats.opens == 0
        finally:
            await rig.close()

    run(go)


def test_stuck_arm_is_a_barrier_fault(tmp_path: Path) -> None:
    async def go() -> None:
        rig = await make_rig(tmp_path, "entry", timeouts=m.Timeouts(arm_s=0.5))
        try:
            rig.sim.set_fault("stuck_arm")
            await rig.arrive("沪A12345", T_IN)
            assert await rig.until(lambda: rig.state is m.State.HOLD)
            assert "barrier_fault" in lane_events(rig)
            assert await rig.until(lambda: "请使用对讲" in rig.board.screen)
            assert rig.sim.stats.latched == []
        finally:
            await rig.close()

    run(go)


@pytest.mark.timeout(60)
def test_dead_io_module_degrades_the_lane_and_it_recovers(tmp_path: Path) -> None:
    async def go() -> None:
        rig = await make_rig(tmp_path, "entry")
        try:
            rig.sim.set_fault("no_answer")
            assert await rig.until(lambda: "loops" in rig.runner.lane.faults, 8.0)
            assert await rig.until(lambda: "请使用对讲" in rig.board.screen, 3.0)
            assert "device_down" in lane_events(rig)
            rig.sim.set_fault("no_answer", on=False)
            assert await rig.until(lambda: not rig.runner.lane.faults, 8.0)
            assert "device_recovered" in lane_events(rig)
            # and the lane works again without a restart
            await rig.arrive("沪A12345", T_IN)
            assert await rig.drive_through()
            assert rig.store.find_open_session("沪A12345") is not None
        finally:
            await rig.close()

    run(go)
