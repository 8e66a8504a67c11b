"""Table tests of the lane state machine: every normal and abnormal path, plain values only."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from edge.barrier.interfaces import DisplayLine
from edge.lane import machine as m
from edge.lpr.source import PlateRead

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def read(plate: str = "沪A12345", event: str = "ev1") -> PlateRead:
    return PlateRead(plate=plate, confidence=0.98, at=T0, source="test", event_id=event)


def decided(outcome: str, *, open_: bool = False, pay: bool = False, sid: str = "S1") -> m.Decided:
    return m.Decided(
        m.Decision(outcome, (DisplayLine(outcome),), None, open_barrier=open_, await_payment=pay,
                   session_id=sid, plate="沪A12345")
    )


ON = {name: m.LoopChanged(name, True) for name in ("arming", "closing", "photocell")}  # type: ignore[arg-type]
OFF = {name: m.LoopChanged(name, False) for name in ("arming", "closing", "photocell")}  # type: ignore[arg-type]


def run(direction: str, events: list[m.Event]) -> tuple[m.Lane, list[m.Action]]:
    lane = m.Lane(direction=direction)  # type: ignore[arg-type]
    actions: list[m.Action] = []
    for ev in events:
        lane, acts = m.step(lane, ev)
        actions += acts
    return lane, actions


def kinds(actions: list[m.Action]) -> list[str]:
    return [type(a).__name__ for a in actions if not isinstance(a, m.StartTimer | m.CancelTimer)]


def records(actions: list[m.Action]) -> list[str]:
    return [a.event for a in actions if isinstance(a, m.Record)]


# A car covers both loops at once on a normal lane: closing on before arming off.
DRIVE_THROUGH = [m.ArmConfirmed(True), ON["closing"], OFF["arming"], OFF["closing"]]

CASES = [
    # (name, direction, events, final state, expected actions (non-timer), expected records)
    (
        "entry happy path",
        "entry",
        [ON["arming"], m.PlateSeen(read()), decided("entry_opened", open_=True), *DRIVE_THROUGH],
        m.State.IDLE,
        ["RequestPlate", "Decide", "Show", "Open", "ShowIdle"],
        [],
    ),
    (
        "exit paid by points",
        "exit",
        [ON["arming"], m.PlateSeen(read()), decided("exit_paid", open_=True), *DRIVE_THROUGH],
        m.State.IDLE,
        ["RequestPlate", "Decide", "Show", "Open", "ShowIdle"],
        [],
    ),
    (
        "exit owed then paid",
        "exit",
        [ON["arming"], m.PlateSeen(read()), decided("exit_owed", pay=True),
         m.PaymentDone("S1"), *DRIVE_THROUGH],
        m.State.IDLE,
        ["RequestPlate", "Decide", "Show", "Open", "ShowIdle"],
        [],
    ),
    (
        "payment for another session ignored",
        "exit",
        [ON["arming"], m.PlateSeen(read()), decided("exit_owed", pay=True), m.PaymentDone("S9")],
        m.State.WAIT_PAYMENT,
        ["RequestPlate", "Decide", "Show"],
        [],
    ),
    (
        "exit owed, driver reverses away: deduction undone",
        "exit",
        [ON["arming"], m.PlateSeen(read()), decided("exit_owed", pay=True), OFF["arming"]],
        m.State.IDLE,
        ["RequestPlate", "Decide", "Show", "Record", "UndoDecision", "ShowIdle"],
        ["reversed"],
    ),
    (
        "unknown plate held for the operator",
        "exit",
        [ON["arming"], m.PlateSeen(read()), decided("unknown_plate", sid="")],
        m.State.HOLD,
        ["RequestPlate", "Decide", "Show"],
        [],
    ),
    (
        "unknown plate, operator opens",
        "exit",
        [ON["arming"], m.PlateSeen(read()), decided("unknown_plate", sid=""),
         m.OperatorOpen("no entry record, ticket shown"), *DRIVE_THROUGH],
        m.State.IDLE,
        ["RequestPlate", "Decide", "Show", "Open", "ShowIdle"],
        [],
    ),
    (
        "no plate read at all",
        "entry",
        [ON["arming"], m.TimerFired("plate")],
        m.State.HOLD,
        ["RequestPlate", "Record", "Show"],
        ["no_plate"],
    ),
    (
        "no plate, vehicle leaves",
        "entry",
        [ON["arming"], m.TimerFired("plate"), OFF["arming"]],
        m.State.IDLE,
        ["RequestPlate", "Record", "Show", "Record", "ShowIdle"],
        ["no_plate", "reversed"],
    ),
    (
        "vehicle leaves before any read",
        "entry",
        [ON["arming"], OFF["arming"]],
        m.State.IDLE,
        ["RequestPlate", "Record", "ShowIdle"],
        ["left_before_read"],
    ),
    (
        "entry reversed after the barrier opened: session undone, close if clear",
        "entry",
        [ON["arming"], m.PlateSeen(read()), decided("entry_opened", open_=True),
         m.ArmConfirmed(True), OFF["arming"], m.TimerFired("reverse")],
        m.State.IDLE,
        ["RequestPlate", "Decide", "Show", "Open", "Record", "UndoDecision", "CloseIfClear",
         "ShowIdle"],
        ["reversed"],
    ),
    (
        "gap between the loops is not a reversal",
        "exit",
        [ON["arming"], m.PlateSeen(read()), decided("exit_paid", open_=True),
         m.ArmConfirmed(True), OFF["arming"], ON["closing"], m.TimerFired("reverse"),
         OFF["closing"]],
        m.State.IDLE,
        ["RequestPlate", "Decide", "Show", "Open", "ShowIdle"],
        [],
    ),
    (
        "vehicle leaves while the ledger is written",
        "exit",
        [ON["arming"], m.PlateSeen(read()), OFF["arming"], decided("exit_paid", open_=True)],
        m.State.IDLE,
        ["RequestPlate", "Decide", "Record", "UndoDecision", "ShowIdle"],
        ["reversed"],
    ),
    (
        "tailgating: a second vehicle crosses on one opening",
        "entry",
        [ON["arming"], m.PlateSeen(read()), decided("entry_opened", open_=True),
         *DRIVE_THROUGH, ON["closing"], OFF["closing"]],
        m.State.IDLE,
        ["RequestPlate", "Decide", "Show", "Open", "ShowIdle", "Record", "Show"],
        ["tailgate"],
    ),
    (
        "next vehicle already waiting when the first crosses",
        "entry",
        [ON["arming"], m.PlateSeen(read()), decided("entry_opened", open_=True),
         m.ArmConfirmed(True), ON["closing"], OFF["closing"]],
        m.State.WAIT_PLATE,
        ["RequestPlate", "Decide", "Show", "Open", "RequestPlate", "ShowIdle"],
        [],
    ),
    (
        "plate pushed before the loop triggers",
        "entry",
        [m.PlateSeen(read()), ON["arming"]],
        m.State.DECIDING,
        ["RequestPlate", "Decide"],
        [],
    ),
    (
        "a read with no car on the loop expires; the next car is not charged for it",
        "entry",
        [m.PlateSeen(read()), m.TimerFired("stale"), ON["arming"]],
        m.State.WAIT_PLATE,
        ["Record", "RequestPlate"],
        ["read_without_vehicle"],
    ),
    (
        "duplicate read while deciding is ignored",
        "exit",
        [ON["arming"], m.PlateSeen(read()), m.PlateSeen(read(event="ev2"))],
        m.State.DECIDING,
        ["RequestPlate", "Decide"],
        [],
    ),
    (
        "arm never reaches up: barrier fault, operator needed",
        "entry",
        [ON["arming"], m.PlateSeen(read()), decided("entry_opened", open_=True),
         m.TimerFired("arm")],
        m.State.HOLD,
        ["RequestPlate", "Decide", "Show", "Open", "Record", "Show"],
        ["barrier_fault"],
    ),
    (
        "vehicle never passes the open barrier",
        "entry",
        [ON["arming"], m.PlateSeen(read()), decided("entry_opened", open_=True),
         m.ArmConfirmed(True), m.TimerFired("pass")],
        m.State.IDLE,
        ["RequestPlate", "Decide", "Show", "Open", "Record", "ShowIdle"],
        ["not_passed"],
    ),
    (
        "payment timeout",
        "exit",
        [ON["arming"], m.PlateSeen(read()), decided("exit_owed", pay=True),
         m.TimerFired("payment")],
        m.State.HOLD,
        ["RequestPlate", "Decide", "Show", "Record", "Show"],
        ["payment_timeout"],
    ),
    (
        "stale timer ignored",
        "exit",
        [m.TimerFired("payment"), m.TimerFired("plate"), m.TimerFired("arm")],
        m.State.IDLE,
        [],
        [],
    ),
    (
        "device down then recovered",
        "entry",
        [m.DeviceChanged("barrier", False), m.DeviceChanged("barrier", False),
         m.DeviceChanged("barrier", True)],
        m.State.IDLE,
        ["Record", "Show", "Record", "ShowIdle"],
        ["device_down", "device_recovered"],
    ),
    (
        "manual open with no vehicle",
        "exit",
        [m.OperatorOpen("fire drill")],
        m.State.OPENING,
        ["Open"],
        [],
    ),
]


@pytest.mark.parametrize(
    ("name", "direction", "events", "state", "expected", "recs"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_transitions(
    name: str,
    direction: str,
    events: list[m.Event],
    state: m.State,
    expected: list[str],
    recs: list[str],
) -> None:
    lane, actions = run(direction, events)
    assert lane.state is state
    assert kinds(actions) == expected
    assert records(actions) == recs


def test_manual_open_is_recorded_as_manual() -> None:
    _, actions = run("exit", [m.OperatorOpen("ambulance", "guard-7")])
    opens = [a for a in actions if isinstance(a, m.Open)]
    assert opens == [m.Open("ambulance", manual=True, operator="guard-7", session_id=None)]


def test_open_always_follows_decide_and_show() -> None:
    """Ledger first: the Open comes only after the decision was made (and committed)."""
    _, actions = run(
        "exit", [ON["arming"], m.PlateSeen(read()), decided("exit_paid", open_=True)]
    )
    names = kinds(actions)
    assert names.index("Decide") < names.index("Open")


def test_never_closes_on_an_occupied_loop() -> None:
    """A reversal while the vehicle is already on the closing loop is not a reversal."""
    lane, actions = run(
        "entry",
        [ON["arming"], m.PlateSeen(read()), decided("entry_opened", open_=True),
         m.ArmConfirmed(True), ON["closing"], OFF["arming"]],
    )
    assert not any(isinstance(a, m.CloseIfClear) for a in actions)
    assert lane.state is m.State.WAIT_PASS


def test_every_event_in_every_state_is_handled() -> None:
    """No (state, event) pair raises: the machine is total."""
    events: list[m.Event] = [
        *ON.values(), *OFF.values(), m.PlateSeen(read()), decided("x", open_=True),
        decided("y", pay=True), decided("z"), m.ArmConfirmed(True), m.ArmConfirmed(False),
        m.TimerFired("plate"), m.TimerFired("arm"), m.TimerFired("pass"),
        m.TimerFired("reverse"), m.TimerFired("stale"),
        m.TimerFired("payment"), m.PaymentDone("S1"), m.OperatorOpen("r"),
        m.DeviceChanged("display", False), m.DeviceChanged("display", True),
    ]
    for direction in ("entry", "exit"):
        for state in m.State:
            for ev in events:
                lane = m.Lane(direction=direction, state=state, arming=True)  # type: ignore[arg-type]
                new, acts = m.step(lane, ev)
                assert isinstance(new.state, m.State)
                assert all(isinstance(a, m.Action.__args__) for a in acts)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- repeat openings (#12 item 7)
def test_a_repeat_exit_is_recorded_before_the_barrier_opens() -> None:
    """The same car read again (restart, not through the first time): the decider wrote
    nothing new, so the machine records the opening; the Record comes before the Open."""
    d = m.Decision("replayed", (DisplayLine("x"),), None, open_barrier=True, session_id="S1",
                   plate="沪A12345", detail=(("exit_event_id", "ev0"),))
    lane, acts = run("exit", [ON["arming"], m.PlateSeen(read()), m.Decided(d)])
    assert lane.state is m.State.OPENING
    names = kinds(acts)
    assert names.index("Record") < names.index("Open")
    rec = next(a for a in acts if isinstance(a, m.Record))
    assert (rec.event, rec.session_id, rec.detail) == (
        "repeat_exit", "S1", (("exit_event_id", "ev0"),))


def test_a_repeat_entry_is_recorded_before_the_barrier_opens() -> None:
    lane, acts = run("entry", [ON["arming"], m.PlateSeen(read()),
                               decided("entry_replayed", open_=True)])
    assert lane.state is m.State.OPENING
    assert records(acts) == ["repeat_entry"]
    assert kinds(acts).index("Record") < kinds(acts).index("Open")


def test_a_first_opening_writes_no_extra_record() -> None:
    for direction, outcome in (("entry", "entry_opened"), ("exit", "exit_paid")):
        _, acts = run(direction, [ON["arming"], m.PlateSeen(read()),
                                  decided(outcome, open_=True)])
        assert records(acts) == []


def test_the_lane_remembers_exits_whose_car_crossed() -> None:
    lane, _ = run("exit", [ON["arming"], m.PlateSeen(read()), decided("exit_paid", open_=True),
                           *DRIVE_THROUGH])
    assert lane.left == ("S1",)
    # a car that did not pass (the pass timer fired) is not remembered as gone
    lane, _ = run("exit", [ON["arming"], m.PlateSeen(read()), decided("exit_paid", open_=True),
                           m.ArmConfirmed(True), m.TimerFired("pass")])
    assert lane.left == ()


def test_a_repeat_exit_of_a_car_seen_leaving_holds_and_undoes_nothing() -> None:
    """Same plate within the replay window after its car crossed: another vehicle (a cloned
    plate, a re-entry the lane has not heard of). No opening; the operator decides."""
    events: list[m.Event] = [
        ON["arming"], m.PlateSeen(read()), decided("exit_paid", open_=True), *DRIVE_THROUGH,
        ON["arming"], m.PlateSeen(read(event="ev2")), decided("replayed", open_=True),
    ]
    lane, acts = run("exit", events)
    assert lane.state is m.State.HOLD
    assert kinds(acts).count("Open") == 1  # the first car's only
    assert records(acts) == ["repeat_exit_refused"]
    lane, more = m.step(lane, OFF["arming"])  # it drives away from the hold
    assert not any(isinstance(a, m.UndoDecision) for a in more)  # the real exit stays
    assert lane.state is m.State.IDLE
    # owed or not: never a payment wait for it either
    lane, acts = run("exit", [*events[:-1], decided("replayed_owed", pay=True)])
    assert lane.state is m.State.HOLD and records(acts) == ["repeat_exit_refused"]
