"""The lane state machine: pure transitions from events to actions, no I/O.

Entry and exit lanes share one machine; what differs (opening a session vs quoting and
deducting) happens in the runner's ``Decide`` step, which feeds a ``Decided`` event back.
Keeping the transitions pure lets every abnormal case be table-tested with plain values, and
keeps one rule obvious: the ledger is written (inside ``Decide`` / ``Open(manual)``) before the
barrier is ever pulsed.

Safety: the machine never asks to close an arm while any detector is occupied; it only emits
``CloseIfClear`` when the vehicle reversed away, and the runner re-reads the loops and the
photocell before pulsing. The barrier's own anti-crush logic stays in charge regardless.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Literal

from edge.barrier.interfaces import Colour, DisplayLine
from edge.lpr.source import PlateRead


class State(StrEnum):
    IDLE = "idle"
    WAIT_PLATE = "wait_plate"  # vehicle on the arming loop, no plate yet
    DECIDING = "deciding"  # plate handed to the runner (ledger + pricing)
    OPENING = "opening"  # open pulse sent, waiting for the arm to report up
    WAIT_PASS = "wait_pass"  # arm up, waiting for the vehicle to cross the closing loop
    WAIT_PAYMENT = "wait_payment"  # exit with an amount owed
    HOLD = "hold"  # needs the operator (unknown plate, no read, fault...)


Loop = Literal["arming", "closing", "photocell"]


# ---------------------------------------------------------------- events
@dataclass(frozen=True)
class LoopChanged:
    loop: Loop
    on: bool
    # the detectors went unseen for a while before this change (a late poll): a short pulse
    # of another loop may have been missed meanwhile (edge.barrier.loops.LoopEvent.late)
    late: bool = False


@dataclass(frozen=True)
class PlateSeen:
    read: PlateRead


@dataclass(frozen=True)
class Decision:
    """What the runner concluded for one plate (after the ledger commit)."""

    outcome: str  # e.g. entry_opened, exit_paid, exit_owed, unknown_plate, blacklisted, replayed
    lines: tuple[DisplayLine, ...]
    speak: str | None = None
    open_barrier: bool = False
    await_payment: bool = False
    session_id: str | None = None
    plate: str | None = None
    # what the ledger entry of a repeat opening references (the original exit or entry)
    detail: tuple[tuple[str, str], ...] = ()


#: Decisions that open again for a stay already recorded (the same car read again). The
#: decider wrote nothing new for them, so the machine records the opening (a lane event named
#: here) before the ``Open``: every barrier movement is in the ledger.
REPEAT_OPENINGS = {"replayed": "repeat_exit", "entry_replayed": "repeat_entry"}
REMEMBER_LEFT = 16  # exits whose vehicle was seen crossing, kept to refuse a repeat exit


@dataclass(frozen=True)
class Decided:
    decision: Decision


@dataclass(frozen=True)
class ArmConfirmed:
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class TimerFired:
    name: str


@dataclass(frozen=True)
class PaymentDone:
    session_id: str


@dataclass(frozen=True)
class OperatorOpen:
    reason: str
    operator: str = "operator"


@dataclass(frozen=True)
class DeviceChanged:
    device: str
    healthy: bool


Event = (
    LoopChanged
    | PlateSeen
    | Decided
    | ArmConfirmed
    | TimerFired
    | PaymentDone
    | OperatorOpen
    | DeviceChanged
)


# ---------------------------------------------------------------- actions
@dataclass(frozen=True)
class RequestPlate:
    """Tell the plate source a vehicle is there (on-box LPR starts reading frames)."""


@dataclass(frozen=True)
class StartTimer:
    name: str
    seconds: float


@dataclass(frozen=True)
class CancelTimer:
    name: str


@dataclass(frozen=True)
class Decide:
    read: PlateRead


@dataclass(frozen=True)
class Open:
    """Pulse the barrier open. ``manual`` opens write a MANUAL_OPEN ledger entry first."""

    reason: str
    manual: bool = False
    operator: str = ""
    session_id: str | None = None


@dataclass(frozen=True)
class CloseIfClear:
    """Pulse close only if every detector is still clear when re-read."""


@dataclass(frozen=True)
class Show:
    lines: tuple[DisplayLine, ...]
    speak: str | None = None


@dataclass(frozen=True)
class ShowIdle:
    pass


@dataclass(frozen=True)
class Record:
    """A lane event for the ledger (no_plate, tailgate, reversed, ...)."""

    event: str
    plate: str | None = None
    session_id: str | None = None
    detail: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class UndoDecision:
    """The vehicle reversed away after its plate was decided: undo it in the ledger."""

    session_id: str
    direction: Literal["entry", "exit"]


Action = (
    RequestPlate
    | StartTimer
    | CancelTimer
    | Decide
    | Open
    | CloseIfClear
    | Show
    | ShowIdle
    | Record
    | UndoDecision
)


# ---------------------------------------------------------------- state
@dataclass(frozen=True)
class Timeouts:
    plate_s: float = 10.0
    arm_s: float = 5.0
    pass_s: float = 60.0
    payment_s: float = 300.0
    stale_read_s: float = 15.0  # a plate seen before the loop is kept this long
    reverse_s: float = 3.0  # arming loop clear this long without a crossing = reversed away


@dataclass(frozen=True)
class Lane:
    """Everything the machine remembers between events."""

    direction: Literal["entry", "exit"]
    timeouts: Timeouts = field(default_factory=Timeouts)
    state: State = State.IDLE
    arming: bool = False
    closing: bool = False
    photocell: bool = False
    authorised: int = 0  # openings granted whose vehicle has not crossed yet
    crossed_this_opening: bool = False
    # the arming loop's clearing (the reverse timer running) was seen only after a late poll:
    # the vehicle may have crossed the closing loop unseen
    clear_unseen: bool = False
    pending_read: PlateRead | None = None  # plate pushed before the loop triggered
    current: Decision | None = None
    current_plate: str | None = None
    faults: frozenset[str] = frozenset()
    # sessions whose exit this lane opened and whose vehicle it then saw cross (newest last):
    # a "repeat exit" of one of them is not the same car still at the lane
    left: tuple[str, ...] = ()


def _lines(*texts: str, colour: Colour = Colour.RED) -> tuple[DisplayLine, ...]:
    return tuple(DisplayLine(t, colour) for t in texts)


MSG_NO_PLATE = _lines("未识别车牌", "请联系管理员", "No plate read", "Use intercom")
MSG_NOT_PASSED = _lines("请通行", "Please drive on", colour=Colour.YELLOW)
MSG_TAILGATE = _lines("跟车通行", "已记录", "Tailgating", "recorded")
MSG_FAULT = _lines("请稍候", "请使用对讲", "Please wait", "Use intercom")
MSG_PAYMENT_TIMEOUT = _lines("请缴费或", "联系管理员", "Please pay or", "use intercom")
MSG_ALREADY_LEFT = _lines("已出场", "请联系管理员", "Already exited", "Use intercom")


def step(lane: Lane, event: Event) -> tuple[Lane, list[Action]]:
    """Apply one event; return the new lane and the actions to run, in order."""
    if isinstance(event, LoopChanged):
        return _on_loop(lane, event)
    if isinstance(event, PlateSeen):
        return _on_plate(lane, event.read)
    if isinstance(event, Decided):
        return _on_decided(lane, event.decision)
    if isinstance(event, ArmConfirmed):
        return _on_arm(lane, event)
    if isinstance(event, TimerFired):
        return _on_timer(lane, event.name)
    if isinstance(event, PaymentDone):
        if lane.state is State.WAIT_PAYMENT and lane.current and (
            lane.current.session_id == event.session_id
        ):
            return _open(lane, "paid", session_id=event.session_id)
        return lane, []
    if isinstance(event, OperatorOpen):
        session = lane.current.session_id if lane.current else None
        return _open(
            lane, event.reason, manual=True, operator=event.operator, session_id=session
        )
    if isinstance(event, DeviceChanged):
        return _on_device(lane, event)
    raise TypeError(f"unknown event {event!r}")


def _open(
    lane: Lane,
    reason: str,
    *,
    manual: bool = False,
    operator: str = "",
    session_id: str | None = None,
) -> tuple[Lane, list[Action]]:
    lane = replace(
        lane, state=State.OPENING, authorised=lane.authorised + 1, crossed_this_opening=False,
        clear_unseen=False,
    )
    return lane, [
        CancelTimer("plate"),
        CancelTimer("payment"),
        Open(reason, manual=manual, operator=operator, session_id=session_id),
        StartTimer("arm", lane.timeouts.arm_s),
    ]


def _on_loop(lane: Lane, ev: LoopChanged) -> tuple[Lane, list[Action]]:
    if ev.loop == "arming":
        lane = replace(lane, arming=ev.on)
    elif ev.loop == "closing":
        lane = replace(lane, closing=ev.on)
    else:
        lane = replace(lane, photocell=ev.on)
    acts: list[Action] = []
    if ev.loop == "arming" and ev.on:
        if lane.state is State.IDLE:
            lane = replace(lane, state=State.WAIT_PLATE)
            acts += [RequestPlate(), StartTimer("plate", lane.timeouts.plate_s)]
            if lane.pending_read is not None:
                read = lane.pending_read
                lane = replace(lane, pending_read=None)
                acts.append(CancelTimer("stale"))
                more_lane, more = _on_plate(lane, read)
                return more_lane, acts + more
        return lane, acts
    if ev.loop == "closing" and ev.on:
        if lane.state in (State.WAIT_PASS, State.OPENING):
            lane = replace(lane, crossed_this_opening=True)
            acts.append(CancelTimer("reverse"))
        return lane, acts
    if ev.loop == "closing" and not ev.on:
        return _on_crossed(lane)
    if ev.loop == "arming" and not ev.on:
        return _on_arming_cleared(lane, late=ev.late)
    return lane, acts


def _on_crossed(lane: Lane) -> tuple[Lane, list[Action]]:
    """A vehicle left the closing loop: it has passed the barrier."""
    acts: list[Action] = []
    if lane.authorised > 0:
        lane = replace(lane, authorised=lane.authorised - 1)
        cur = lane.current
        if lane.direction == "exit" and cur is not None and cur.session_id:
            left = (*(x for x in lane.left if x != cur.session_id), cur.session_id)
            lane = replace(lane, left=left[-REMEMBER_LEFT:])
        if lane.state in (State.WAIT_PASS, State.OPENING) and lane.authorised == 0:
            acts += [CancelTimer("pass"), CancelTimer("arm")]
            lane = replace(lane, current=None, current_plate=None, crossed_this_opening=False)
            if lane.arming:  # the next vehicle is already waiting
                lane = replace(lane, state=State.WAIT_PLATE)
                acts += [RequestPlate(), StartTimer("plate", lane.timeouts.plate_s), ShowIdle()]
            else:
                lane = replace(lane, state=State.IDLE)
                acts.append(ShowIdle())
        return lane, acts
    # Nobody was let through, yet a vehicle crossed: tailgating (or a forced barrier).
    acts += [Record("tailgate", plate=lane.current_plate), Show(MSG_TAILGATE, "跟车通行")]
    return lane, acts


def _on_arming_cleared(lane: Lane, late: bool = False) -> tuple[Lane, list[Action]]:
    """The arming loop cleared. Before crossing, that means the vehicle reversed away, unless
    the loops went unseen for a while before it (``late``): then it may have driven through
    over the closing loop between two readings (``_crossing_unseen``)."""
    acts: list[Action] = []
    if lane.state is State.WAIT_PLATE:
        lane = replace(lane, state=State.IDLE)
        return lane, [CancelTimer("plate"), Record("left_before_read"), ShowIdle()]
    if lane.state in (State.HOLD, State.WAIT_PAYMENT):
        plate = lane.current_plate
        cur = lane.current
        acts += [CancelTimer("payment"), Record("reversed", plate=plate)]
        if cur and cur.session_id and lane.direction == "exit" and cur.outcome != "unknown_plate":
            acts.append(UndoDecision(cur.session_id, "exit"))
        lane = replace(lane, state=State.IDLE, current=None, current_plate=None)
        return lane, [*acts, ShowIdle()]
    if lane.state in (State.OPENING, State.WAIT_PASS) and not lane.crossed_this_opening:
        if lane.closing:  # already on the closing loop: still driving through
            return lane, acts
        # Between the loops, or backing off: decide when the reverse timer fires.
        lane = replace(lane, clear_unseen=late)
        return lane, [StartTimer("reverse", lane.timeouts.reverse_s)]
    return lane, acts


def _reversed_after_open(lane: Lane) -> tuple[Lane, list[Action]]:
    cur = lane.current
    acts: list[Action] = [
        CancelTimer("arm"),
        CancelTimer("pass"),
        Record("reversed", plate=lane.current_plate),
    ]
    if cur and cur.session_id:
        acts.append(UndoDecision(cur.session_id, lane.direction))
    acts += [CloseIfClear(), ShowIdle()]
    lane = replace(
        lane,
        state=State.IDLE,
        authorised=max(0, lane.authorised - 1),
        current=None,
        current_plate=None,
    )
    return lane, acts


def _crossing_unseen(lane: Lane) -> tuple[Lane, list[Action]]:
    """The arming loop cleared with no crossing seen, but the loops were read late just then:
    a car that drove through (closing loop on and off between two readings) and a car that
    backed off look the same. Undoing a decision for a car that has left would refund its
    fee and leave its session open with nobody inside; keeping it for a car that backed off
    costs nothing it did not owe (its repeat exit opens again, ``replayed``). So the decision
    stands, the lane records what it could not see, and frees itself. The session is not
    remembered as left (a repeat exit of it still opens)."""
    acts: list[Action] = [
        CancelTimer("arm"),
        CancelTimer("pass"),
        Record("crossing_unseen", plate=lane.current_plate,
               session_id=lane.current.session_id if lane.current else None),
        CloseIfClear(),
        ShowIdle(),
    ]
    lane = replace(
        lane,
        state=State.IDLE,
        authorised=max(0, lane.authorised - 1),
        current=None,
        current_plate=None,
        clear_unseen=False,
    )
    return lane, acts


def _on_plate(lane: Lane, read: PlateRead) -> tuple[Lane, list[Action]]:
    if lane.state is State.IDLE:
        if lane.arming:  # loop already occupied (e.g. after a restart): treat as arrival
            lane = replace(lane, state=State.WAIT_PLATE)
            return _on_plate(lane, read)
        # pushed before the loop triggered: keep it briefly for the arrival, never for the
        # next car (a read of a car that left unseen must not be charged to another)
        return replace(lane, pending_read=read), [StartTimer("stale", lane.timeouts.stale_read_s)]
    if lane.state is State.WAIT_PLATE:
        lane = replace(lane, state=State.DECIDING, current_plate=read.plate)
        return lane, [CancelTimer("plate"), Decide(read)]
    if lane.state is State.HOLD and lane.current is None:
        # a late read after "no plate": try again
        lane = replace(lane, state=State.DECIDING, current_plate=read.plate)
        return lane, [Decide(read)]
    # duplicate read of the vehicle being handled, or of the one behind it: ignored here;
    # the runner's de-duplication and the ledger's idempotency cover restarts.
    return lane, []


def _on_decided(lane: Lane, d: Decision) -> tuple[Lane, list[Action]]:
    if lane.state is not State.DECIDING:
        return lane, []
    if d.outcome in ("replayed", "replayed_owed") and d.session_id in lane.left:
        return _already_left(lane, d)
    lane = replace(lane, current=d, current_plate=d.plate or lane.current_plate)
    if not (lane.arming or lane.closing):
        # The vehicle backed off while the ledger was being written: undo, free the lane.
        acts: list[Action] = [Record("reversed", plate=lane.current_plate)]
        if d.session_id and d.outcome != "unknown_plate":
            acts.append(UndoDecision(d.session_id, lane.direction))
        lane = replace(lane, state=State.IDLE, current=None, current_plate=None)
        return lane, [*acts, ShowIdle()]
    acts = [Show(d.lines, d.speak)]
    if d.open_barrier:
        repeat = REPEAT_OPENINGS.get(d.outcome)
        if repeat is not None:  # ledger first: the runner writes it before the pulse
            acts.append(Record(repeat, plate=d.plate, session_id=d.session_id, detail=d.detail))
        lane, more = _open(lane, d.outcome, session_id=d.session_id)
        return lane, acts + more
    if d.await_payment:
        lane = replace(lane, state=State.WAIT_PAYMENT)
        return lane, [*acts, StartTimer("payment", lane.timeouts.payment_s)]
    return replace(lane, state=State.HOLD), acts


def _already_left(lane: Lane, d: Decision) -> tuple[Lane, list[Action]]:
    """A "repeat exit" of a stay whose vehicle this lane saw cross the barrier: not the same
    car still at the lane (a cloned plate, or a re-entry the lane has not heard of). It does
    not open; the operator decides. Its session is not this vehicle's, so nothing is undone
    if it backs away."""
    held = replace(d, outcome="repeat_exit_refused", open_barrier=False, await_payment=False,
                   session_id=None, lines=MSG_ALREADY_LEFT)
    record = Record("repeat_exit_refused", plate=d.plate, session_id=d.session_id,
                    detail=d.detail)
    if not (lane.arming or lane.closing):  # it backed off meanwhile: nothing to hold
        lane = replace(lane, state=State.IDLE, current=None, current_plate=None)
        return lane, [record, ShowIdle()]
    lane = replace(lane, state=State.HOLD, current=held, current_plate=d.plate)
    return lane, [record, Show(MSG_ALREADY_LEFT, "已出场 请联系管理员")]


def _on_arm(lane: Lane, ev: ArmConfirmed) -> tuple[Lane, list[Action]]:
    if lane.state is not State.OPENING:
        return lane, []
    if ev.ok:
        lane = replace(lane, state=State.WAIT_PASS)
        return lane, [CancelTimer("arm"), StartTimer("pass", lane.timeouts.pass_s)]
    lane = replace(lane, state=State.HOLD, authorised=max(0, lane.authorised - 1))
    return lane, [
        CancelTimer("arm"),
        Record("barrier_fault", plate=lane.current_plate, detail=(("detail", ev.detail),)),
        Show(MSG_FAULT, "请稍候"),
    ]


def _on_timer(lane: Lane, name: str) -> tuple[Lane, list[Action]]:
    if name == "stale":
        if lane.pending_read is None:
            return lane, []
        plate = lane.pending_read.plate
        return replace(lane, pending_read=None), [Record("read_without_vehicle", plate=plate)]
    if name == "plate" and lane.state is State.WAIT_PLATE:
        lane = replace(lane, state=State.HOLD, current=None)
        return lane, [Record("no_plate"), Show(MSG_NO_PLATE, "未识别车牌 请联系管理员")]
    if name == "arm" and lane.state is State.OPENING:
        return _on_arm(lane, ArmConfirmed(False, "arm did not reach up in time"))
    if name == "reverse" and lane.state in (State.OPENING, State.WAIT_PASS):
        if not (lane.crossed_this_opening or lane.arming or lane.closing):
            if lane.clear_unseen:
                return _crossing_unseen(lane)
            return _reversed_after_open(lane)
        return lane, []
    if name == "pass" and lane.state is State.WAIT_PASS:
        # The arm stays up (the barrier's own timer decides); record it and free the lane.
        lane = replace(
            lane, state=State.IDLE, authorised=0, current=None, current_plate=None
        )
        return lane, [Record("not_passed"), ShowIdle()]
    if name == "payment" and lane.state is State.WAIT_PAYMENT:
        lane = replace(lane, state=State.HOLD)
        return lane, [
            Record("payment_timeout", plate=lane.current_plate),
            Show(MSG_PAYMENT_TIMEOUT, "请缴费或联系管理员"),
        ]
    return lane, []  # stale timer


def _on_device(lane: Lane, ev: DeviceChanged) -> tuple[Lane, list[Action]]:
    before = lane.faults
    faults = before - {ev.device} if ev.healthy else before | {ev.device}
    lane = replace(lane, faults=frozenset(faults))
    acts: list[Action] = []
    if not ev.healthy and ev.device not in before:
        acts.append(Record("device_down", detail=(("device", ev.device),)))
    if ev.healthy and ev.device in before:
        acts.append(Record("device_recovered", detail=(("device", ev.device),)))
        if not lane.faults and lane.state is State.IDLE:
            acts.append(ShowIdle())
    if lane.faults and not before and lane.state is State.IDLE:
        acts.append(Show(MSG_FAULT, None))
    return lane, acts
