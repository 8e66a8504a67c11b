"""Repeat exits, end to end with every part real (rig.py): every barrier movement is in the
ledger, and a repeat opening is only for the car of that exit still at the lane (#12 item 7).

Before: the same plate within 15 minutes of its exit replayed the recorded exit and opened the
barrier with nothing written, whether or not that car had already left, and even when the
plate had entered again since (a new stay, left open and unpaid).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

from rig import TZ, Rig, make_rig

from edge.lane import machine as m
from edge.lpr.source import PlateRead
from edge.store import EntryKind, LedgerEntry

T_IN = datetime(2026, 11, 17, 10, 0, tzinfo=TZ)
PLATE = "沪A12345"


def lane_events(rig: Rig, name: str) -> list[LedgerEntry]:
    return [e for e in rig.store.entries(0, 10_000)
            if e.kind == EntryKind.LANE_EVENT and e.payload.get("event") == name]


def opening_entries(rig: Rig) -> list[LedgerEntry]:
    """The entries that record a barrier opening at an exit lane."""
    return [e for e in rig.store.entries(0, 10_000)
            if e.kind in (EntryKind.SESSION_CLOSED, EntryKind.MANUAL_OPEN)
            or (e.kind == EntryKind.LANE_EVENT and e.payload.get("event") == "repeat_exit")]


def watch_pulses(rig: Rig) -> list[str]:
    """At each open pulse, the newest ledger entry's kind/event (what was written before)."""
    seen: list[str] = []
    pulse = rig.runner.barrier.pulse_open

    async def observed(**kw):  # type: ignore[no-untyped-def]
        last = rig.store.entries(0, 10_000)[-1]
        seen.append(str(last.payload.get("event") or last.kind))
        return await pulse(**kw)

    rig.runner.barrier.pulse_open = observed  # type: ignore[method-assign]
    return seen


def seed(rig: Rig, points: int = 500) -> None:
    rig.store.upsert_member("M1", tier="member")
    rig.store.set_lots("M1", [("M1-lot", points, None, T_IN - timedelta(days=9))])
    rig.store.bind_plate(PLATE, "M1")
    rig.store.record_entry(plate=PLATE, entered_at=T_IN, event_id="in-1", member_id="M1",
                           lane_id="E1")


def test_a_car_that_did_not_get_through_is_let_out_again_with_a_ledger_entry(
        tmp_path: Path) -> None:
    async def go() -> None:
        rig = await make_rig(tmp_path, "exit", timeouts=m.Timeouts(arm_s=2.0, pass_s=0.5))
        pulses = watch_pulses(rig)
        try:
            seed(rig)
            await rig.arrive(PLATE, T_IN + timedelta(minutes=100))
            assert await rig.until(lambda: rig.sim.stats.opens == 1)
            # the car stays on the arming loop; the pass timer gives up (not_passed)
            assert await rig.until(lambda: rig.state is m.State.IDLE, 3.0)
            assert lane_events(rig, "not_passed")
            # read again while it is still there: the recorded exit, shown and opened again
            rig.plates.submit(PLATE, T_IN + timedelta(minutes=102), "test")
            assert await rig.until(lambda: rig.sim.stats.opens == 2), rig.state
            assert await rig.drive_through()
            repeat = lane_events(rig, "repeat_exit")
            assert len(repeat) == 1
            exit_ = rig.store.list_sessions()[0]
            closed = [e for e in rig.store.entries(0, 10_000)
                      if e.kind == EntryKind.SESSION_CLOSED]
            assert repeat[0].session_id == exit_.session_id and repeat[0].plate == PLATE
            detail = repeat[0].payload["detail"]
            assert detail["exit_event_id"] == exit_.exit_event_id
            assert detail["exit_entry_id"] == closed[0].entry_id
            assert detail["read_event_id"] != exit_.exit_event_id
            # each pulse came after the entry that records it
            assert len(pulses) == 2 and pulses[1] == "repeat_exit"
            assert len(opening_entries(rig)) == rig.sim.stats.opens == 2
            assert len([e for e in rig.store.entries(0, 10_000)
                        if e.kind == EntryKind.POINTS_DEDUCTED]) == 1
            assert rig.store.verify().ok
        finally:
            await rig.close()

    asyncio.run(go())


def test_the_same_plate_after_its_car_left_is_held_not_let_out(tmp_path: Path) -> None:
    async def go() -> None:
        rig = await make_rig(tmp_path, "exit")
        try:
            seed(rig)
            await rig.arrive(PLATE, T_IN + timedelta(minutes=100))
            assert await rig.drive_through()
            assert rig.sim.stats.opens == 1
            # five minutes later a vehicle with that plate is at the exit again
            await rig.arrive(PLATE, T_IN + timedelta(minutes=105))
            assert await rig.until(lambda: rig.state is m.State.HOLD), rig.state
            await asyncio.sleep(0.3)
            assert rig.sim.stats.opens == 1
            refused = lane_events(rig, "repeat_exit_refused")
            assert len(refused) == 1 and refused[0].plate == PLATE
            assert refused[0].payload["detail"]["exit_event_id"]
            assert any("已出场" in line for line in rig.board.screen)
            # the operator decides: a manual open is recorded, then pulsed
            rig.runner.operator_open("checked at the intercom", "g7")
            assert await rig.until(lambda: rig.sim.stats.opens == 2)
            assert len(opening_entries(rig)) == rig.sim.stats.opens
            # the real exit was not undone
            assert not [e for e in rig.store.entries(0, 10_000) if e.kind == EntryKind.CORRECTION]
        finally:
            await rig.close()

    asyncio.run(go())


def test_a_stay_that_began_after_the_exit_is_charged_not_replayed(tmp_path: Path) -> None:
    async def go() -> None:
        rig = await make_rig(tmp_path, "exit")
        try:
            seed(rig)
            await rig.arrive(PLATE, T_IN + timedelta(minutes=100))
            assert await rig.drive_through()
            first = rig.store.list_sessions()[0]
            # it came back in five minutes later and leaves again ten minutes after that
            again, _ = rig.store.record_entry(plate=PLATE, entered_at=T_IN + timedelta(minutes=105),
                                              event_id="in-2", member_id="M1", lane_id="E1")
            await rig.arrive(PLATE, T_IN + timedelta(minutes=112))
            assert await rig.drive_through(), rig.state
            s = rig.store.get_session(again.session_id)
            assert s is not None and s.status == "closed", s
            assert s.exited_at == T_IN + timedelta(minutes=112)
            assert s.exit_event_id != first.exit_event_id
            assert rig.store.find_open_session(PLATE) is None
            assert lane_events(rig, "repeat_exit") == []
        finally:
            await rig.close()

    asyncio.run(go())


def test_after_a_restart_a_repeat_exit_opens_and_is_recorded(tmp_path: Path) -> None:
    """A restarted lane cannot know whether the car of its last exit got out (the daemon may
    have died between the commit and the pulse): the repeat opens, and is written first."""

    async def go() -> None:
        rig = await make_rig(tmp_path, "exit")
        try:
            seed(rig)
            await rig.arrive(PLATE, T_IN + timedelta(minutes=100))
            assert await rig.drive_through()
        finally:
            await rig.close()
        rig = await make_rig(tmp_path, "exit")  # the same ledger, a fresh lane
        pulses = watch_pulses(rig)
        try:
            await rig.arrive(PLATE, T_IN + timedelta(minutes=103))
            assert await rig.until(lambda: rig.sim.stats.opens == 1), rig.state
            assert pulses == ["repeat_exit"]
            assert len(lane_events(rig, "repeat_exit")) == 1
            assert await rig.drive_through()
        finally:
            await rig.close()

    asyncio.run(go())


def test_an_entry_read_again_after_a_restart_opens_again_with_a_ledger_entry(
        tmp_path: Path) -> None:
    """The camera re-sends the entry's read after a restart (same event id): no second
    session, and the second opening is written before its pulse."""

    async def go() -> None:
        rig = await make_rig(tmp_path, "entry")
        try:
            read = PlateRead(plate=PLATE, confidence=0.97, at=T_IN, source="camera",
                             event_id="cam-881")
            first = rig.runner.decider.decide(read, T_IN)
            again = rig.runner.decider.decide(read, T_IN + timedelta(seconds=40))
            assert (first.outcome, again.outcome) == ("entry_opened", "entry_replayed")
            assert again.session_id == first.session_id and again.open_barrier
            assert dict(again.detail)["entry_event_id"] == "cam-881"
            # through the machine and the runner: recorded, then pulsed
            pulses = watch_pulses(rig)
            rig.sim.set_loop("arming", True)
            assert await rig.until(lambda: rig.runner.lane.arming)
            rig.runner.post(m.PlateSeen(read))
            assert await rig.until(lambda: rig.sim.stats.opens == 1), rig.state
            assert pulses == ["repeat_entry"]
            kinds = [str(e.kind) for e in rig.store.entries(0, 100)]
            assert kinds == ["session_opened", "lane_event"]
            assert len(rig.store.list_sessions()) == 1
        finally:
            await rig.close()

    asyncio.run(go())
