"""The lane runner: feeds device events into the pure machine and performs its actions.

One asyncio task consumes events one at a time, so the machine never sees two events at
once; slow devices never block it: the display has its own writer task (latest screen wins),
the barrier pulse is awaited only for the barrier, and the plate decision (ledger + pricing,
a few milliseconds of SQLite) runs inline so that its result is committed before anything
acts on it. Every device call is wrapped: a failing device is logged once, its health goes
to the machine as an event, and the lane goes on.

A ledger that cannot be written (disk full, I/O error) puts the lane **out of service**: the
plate's decision becomes a hold with the out-of-service screen (use the intercom), the
operator's manual open still pulses (its record waits in ``PendingRecords``), an alert is
raised (metrics, log, ``status()``), and a probe retries every ``StorageWatch.probe_s`` until a
write succeeds; then the lane serves cars by itself again. The same task warns when free space
falls below ``min_free_bytes`` and keeps the high-water mark (``edge.store.guard``) current.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from edge import metrics
from edge.aio import cancel_and_wait
from edge.barrier.interfaces import (
    ArmState,
    Barrier,
    Colour,
    Display,
    DisplayLine,
    Health,
    LoopInputs,
    Loops,
)
from edge.lane import machine as m
from edge.lane import messages
from edge.lane.decide import Decider
from edge.lpr.source import PlateRead, PlateSource
from edge.store import EntryKind, StorageUnavailable, Store
from edge.store.guard import HighWater, write_hwm
from edge.store.pending import PendingRecords

log = logging.getLogger(__name__)

MSG_OUT_OF_SERVICE = (
    DisplayLine("暂停服务", Colour.RED),
    DisplayLine("请按对讲", Colour.RED),
    DisplayLine("Out of service", Colour.RED),
    DisplayLine("Use intercom", Colour.RED),
)
SPEAK_OUT_OF_SERVICE = "暂停服务 请按对讲"
# a decision takes milliseconds; a lane in `deciding` this long is stuck (watchdog)
STUCK_DECIDING_S = 30.0


@dataclass(frozen=True)
class StorageWatch:
    """What the runner watches of the ledger's filesystem (``[storage]`` in the config)."""

    min_free_bytes: int = 0  # warn below this (0: never)
    probe_s: float = 5.0  # free-space check, high-water mark, retry while out of service
    high_water: bool = True  # keep ``<ledger>.<lane>.hwm`` (edge.store.guard)

# longest a screen waits for the open command queued with it to be answered (a slow or dead
# barrier must not keep the board blank)
COMMAND_FIRST_S = 0.1


class EventClock:
    """Wall clock, or (bench/demo) the plate events' own timestamps advanced by elapsed time."""

    def __init__(self, tz: Any, use_events: bool = False) -> None:
        self.tz = tz
        self.use_events = use_events
        self._base: datetime | None = None
        self._mono = 0.0

    def observe(self, at: datetime) -> None:
        if self.use_events:
            self._base, self._mono = at, time.monotonic()

    def now(self) -> datetime:
        from datetime import timedelta

        if self.use_events and self._base is not None:
            return self._base + timedelta(seconds=time.monotonic() - self._mono)
        return datetime.now(self.tz)


def _screen_last(action: m.Action) -> bool:
    """Sort key: screens after every other action (a stable sort keeps the rest in order)."""
    return isinstance(action, m.Show | m.ShowIdle)


@dataclass
class LaneStats:
    plates: int = 0
    duplicates: int = 0
    decisions: dict[str, int] = field(default_factory=dict)
    device_errors: int = 0
    opens: int = 0


class LaneRunner:
    def __init__(
        self,
        *,
        lane: m.Lane,
        decider: Decider,
        store: Store,
        barrier: Barrier,
        loops: Loops,
        display: Display,
        plates: PlateSource,
        clock: EventClock,
        idle_lines: list[str],
        loop_poll_s: float = 0.02,
        on_decision: Callable[[m.Decision, PlateRead], None] | None = None,
        pending: PendingRecords | None = None,
        storage: StorageWatch | None = None,
    ) -> None:
        self.lane = lane
        self.decider = decider
        self.store = store
        self.barrier = barrier
        self.loops = loops
        self.display = display
        self.plates = plates
        self.clock = clock
        self.idle_lines = idle_lines
        self.loop_poll_s = loop_poll_s
        self.on_decision = on_decision
        self.stats = LaneStats()
        self.heartbeat = time.monotonic()
        self._events: asyncio.Queue[m.Event] = asyncio.Queue()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._screen: asyncio.Queue[tuple[tuple[DisplayLine, ...] | None, str | None]] = (
            asyncio.Queue(maxsize=1)
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._open_answered: asyncio.Event | None = None  # the latest open's command answered
        self._background: set[asyncio.Task[None]] = set()
        self._health: dict[str, Health] = {}
        self._loop_state = LoopInputs()
        self._stopping = False
        self.history: list[dict[str, Any]] = []  # recent transitions, for the bench page
        self.pending = pending if pending is not None else PendingRecords(None, store.lane_id)
        self.storage = storage or StorageWatch()
        self.out_of_service: str | None = None  # why the ledger cannot be written, if it cannot
        self._oos_since: datetime | None = None
        self._held_read: PlateRead | None = None  # the read decided out of service
        self.free_bytes: int | None = None
        self.storage_low = False
        self._state_since = time.monotonic()
        self._hwm_written: tuple[int, str, int] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        try:
            self.store.defer_checkpoints()
        except StorageUnavailable as exc:
            self._storage_failed(exc)
        if len(self.pending):
            self._try_recover(startup=True)
        self._tasks = [
            asyncio.create_task(self._consume(), name="lane-events"),
            asyncio.create_task(self._watch_loops(), name="lane-loops"),
            asyncio.create_task(self._watch_plates(), name="lane-plates"),
            asyncio.create_task(self._watch_health(), name="lane-health"),
            asyncio.create_task(self._write_display(), name="lane-display"),
            asyncio.create_task(self._watch_storage(), name="lane-storage"),
        ]
        self._show(None, None)

    async def stop(self) -> None:
        self._stopping = True
        for h in self._timers.values():
            h.cancel()
        await cancel_and_wait([*self._tasks, *self._background])
        self._tasks = []

    def alive(self, max_age_s: float = 10.0) -> bool:
        """For the systemd watchdog: the lane loop is making progress.

        Its consumer stamps ``heartbeat`` at least every half second, so a stale stamp means
        the loop is blocked; and a lane sitting in ``deciding`` (milliseconds when healthy) for
        ``STUCK_DECIDING_S`` is jammed even though the loop turns.
        """
        consumer = self._tasks[0] if self._tasks else None
        now = time.monotonic()
        if consumer is None or consumer.done() or now - self.heartbeat >= max_age_s:
            return False
        return not (self.lane.state is m.State.DECIDING
                    and now - self._state_since > STUCK_DECIDING_S)

    def post(self, event: m.Event) -> None:
        self._events.put_nowait(event)

    # ------------------------------------------------------------------ operator
    def operator_open(self, reason: str, operator: str = "operator") -> None:
        if not reason.strip():
            raise ValueError("a manual open needs a reason")
        self.post(m.OperatorOpen(reason.strip(), operator))

    def payment(self, session_id: str, amount: Decimal, method: str, idem_key: str) -> None:
        """Payment taken at a pay station or by the operator: ledger first, then the lane.

        With the ledger unwritable the payment is refused (the caller is told): money is never
        taken without its record."""
        try:
            self.store.record_payment(session_id, amount, method, self.clock.now(), idem_key)
        except StorageUnavailable as exc:
            self._storage_failed(exc)
            raise
        self.post(m.PaymentDone(session_id))

    def status(self) -> dict[str, Any]:
        cur = self.lane.current
        return {
            "state": str(self.lane.state),
            "direction": self.lane.direction,
            "loops": {
                "arming": self.lane.arming,
                "closing": self.lane.closing,
                "photocell": self.lane.photocell,
            },
            "faults": sorted(self.lane.faults),
            "current": None
            if cur is None
            else {
                "outcome": cur.outcome,
                "session_id": cur.session_id,
                "plate": cur.plate,
                "owed": str(self._owed(cur.session_id)),
            },
            "health": {k: str(v) for k, v in self._health.items()},
            "out_of_service": self.out_of_service is not None,
            "storage": {
                "writable": self.out_of_service is None,
                "error": self.out_of_service,
                "since": None if self._oos_since is None else self._oos_since.isoformat(),
                "free_bytes": self.free_bytes,
                "low": self.storage_low,
                "pending_records": len(self.pending),
            },
            "alerts": self.alerts(),
            "plates": self.stats.plates,
            "decisions": dict(self.stats.decisions),
        }

    def alerts(self) -> list[str]:
        out = []
        if self.out_of_service is not None:
            out.append(f"out of service: {self.out_of_service}")
        if self.storage_low:
            out.append(f"low disk space: {self.free_bytes} bytes free "
                       f"(< {self.storage.min_free_bytes})")
        if len(self.pending):
            out.append(f"{len(self.pending)} record(s) waiting to be written to the ledger")
        return out

    def _owed(self, session_id: str | None) -> Decimal:
        """What the pay station must collect for the car at the lane (0.00 if nothing)."""
        s = self.store.get_session(session_id) if session_id else None
        if s is None or s.status != "owed":
            return Decimal("0.00")
        return max(Decimal("0.00"), (s.payable or Decimal(0)) - (s.paid or Decimal(0)))

    # ------------------------------------------------------------------ event loop
    async def _consume(self) -> None:
        while True:
            try:
                async with asyncio.timeout(0.5):
                    event = await self._events.get()
            except TimeoutError:
                self.heartbeat = time.monotonic()
                continue
            self.heartbeat = time.monotonic()
            try:
                await self._handle(event)
            except Exception:  # one bad event must never stop the lane
                log.exception("lane event %r failed", event)

    async def _handle(self, event: m.Event) -> None:
        before = self.lane.state
        self.lane, actions = m.step(self.lane, event)
        if self.lane.state is not before:
            self._state_since = time.monotonic()
            log.info(
                "lane %s -> %s on %s",
                before,
                self.lane.state,
                type(event).__name__,
                extra={"lane_state": str(self.lane.state)},
            )
        # The barrier before the board: a Show only queues a screen, but the writer it wakes
        # would run (and take the serial thread) before a pulse task created after it.
        for action in sorted(actions, key=_screen_last):
            await self._do(action)

    async def _do(self, a: m.Action) -> None:
        if isinstance(a, m.Decide):
            self._decide(a.read)
        elif isinstance(a, m.Open):
            await self._open(a)
        elif isinstance(a, m.Show):
            self._show(a.lines, a.speak)
        elif isinstance(a, m.ShowIdle):
            self._show(None, None)
        elif isinstance(a, m.StartTimer):
            self._start_timer(a.name, a.seconds)
        elif isinstance(a, m.CancelTimer):
            h = self._timers.pop(a.name, None)
            if h:
                h.cancel()
        elif isinstance(a, m.RequestPlate):
            try:
                self.plates.trigger()
            except Exception:
                log.exception("plate source trigger failed")
        elif isinstance(a, m.Record):
            now = self.clock.now()
            try:
                self.store.record_lane_event(
                    a.event, now, plate=a.plate, session_id=a.session_id, detail=dict(a.detail)
                )
            except StorageUnavailable as exc:
                self._storage_failed(exc)
                self.pending.add(EntryKind.LANE_EVENT, now,
                                 {"event": a.event, "detail": dict(a.detail)},
                                 session_id=a.session_id, plate=a.plate)
                metrics.PENDING_RECORDS.set(len(self.pending))
        elif isinstance(a, m.UndoDecision):
            try:
                self._undo(a)
            except StorageUnavailable as exc:
                # the corrections are computed from the ledger's state: they cannot wait in
                # the pending file; the reversal itself is recorded there (Record above)
                self._storage_failed(exc)
                log.error("vehicle reversed away but its %s %s could not be undone in the "
                          "ledger (disk): correct it by hand", a.direction, a.session_id)
        elif isinstance(a, m.CloseIfClear):
            await self._close_if_clear()

    def _decide(self, read: PlateRead) -> None:
        # the passage time: the camera's own timestamp on a bench clock, else ours
        now = read.at if self.clock.use_events else self.clock.now()
        try:
            decision = self.decider.decide(read, now)
        except StorageUnavailable as exc:
            decision = self._out_of_service_decision(read, exc)
        except Exception as exc:
            log.exception("decision for %s failed", read.plate)
            lines = (
                DisplayLine(read.plate),
                *m.MSG_FAULT[:3],
            )
            decision = m.Decision("error", tuple(lines), "请稍候 请使用对讲", plate=read.plate)
            try:
                self.store.record_lane_event(
                    "decision_failed", now, plate=read.plate, detail={"error": str(exc)[:200]}
                )
            except StorageUnavailable as exc2:
                decision = self._out_of_service_decision(read, exc2)
            except Exception:  # the lane must leave `deciding` whatever the ledger says
                log.exception("recording the failed decision for %s failed", read.plate)
        self.stats.decisions[decision.outcome] = self.stats.decisions.get(decision.outcome, 0) + 1
        self.history.append(
            {
                "at": now.isoformat(),
                "plate": read.plate,
                "outcome": decision.outcome,
                "session_id": decision.session_id,
            }
        )
        del self.history[:-50]
        if self.on_decision:
            self.on_decision(decision, read)
        self.post(m.Decided(decision))

    async def _open(self, a: m.Open) -> None:
        now = self.clock.now()
        if a.manual:
            # ledger first: the abnormal-raise record exists even if the pulse fails
            try:
                self.store.record_manual_open(a.reason, a.operator, now,
                                              session_id=a.session_id)
            except StorageUnavailable as exc:
                # The operator's override must work with a full disk; its record waits in
                # the pending file and reaches the ledger when a write succeeds again.
                self._storage_failed(exc)
                self.pending.add(EntryKind.MANUAL_OPEN, now,
                                 {"reason": a.reason, "operator": a.operator},
                                 session_id=a.session_id)
                metrics.PENDING_RECORDS.set(len(self.pending))
        # The pulse (relay on, hold, off) runs beside the event loop, so the lane keeps
        # handling its detectors meanwhile; the arm feedback is watched at the same time.
        self._open_answered = asyncio.Event()
        self._spawn(self._pulse_open(self._open_answered), "lane-pulse-open")
        self._spawn(self._confirm_up(), "lane-confirm-up")

    async def _pulse_open(self, answered: asyncio.Event) -> None:
        try:
            await self.barrier.pulse_open(on_answered=answered.set)
            self.stats.opens += 1
        except Exception as exc:
            self.stats.device_errors += 1
            self.post(m.ArmConfirmed(False, f"open pulse failed: {exc}"))
        finally:
            answered.set()  # whatever happened, a screen waiting on it goes on
        await self._checkpoint()
        await asyncio.to_thread(self._write_high_water)

    async def _checkpoint(self) -> None:
        """The WAL checkpoint the store deferred (``Store.defer_checkpoints``), once the
        barrier has its command: in a worker thread, while the vehicle drives through."""
        if not self.store.checkpoint_due:
            return
        try:
            await asyncio.to_thread(self.store.checkpoint_if_due)
        except Exception as exc:
            log.warning("WAL checkpoint failed: %s", exc)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _open_commanded(self) -> None:
        """Wait (at most ``COMMAND_FIRST_S``) until the open just issued was answered.

        The coil goes first, the board follows: the display's serial I/O runs in a worker
        thread, and started while the Modbus request is in flight it competes with the reply
        for the interpreter (measured: decided -> coil acked p50 1.0 -> 0.57 ms, p99 5.0 ->
        0.83 ms on the lane bench). The driver says when its command was answered
        (``Barrier.pulse_open``'s ``on_answered``), before a relay's hold.
        """
        answered = self._open_answered
        if answered is None or answered.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(COMMAND_FIRST_S):
                await answered.wait()

    async def _confirm_up(self) -> None:
        deadline = time.monotonic() + self.lane.timeouts.arm_s
        while time.monotonic() < deadline:
            try:
                state = await self.barrier.read_state()
            except Exception:
                state = ArmState.UNKNOWN
            if state is ArmState.UP:
                self.post(m.ArmConfirmed(True))
                return
            if state is ArmState.FAULT:
                self.post(m.ArmConfirmed(False, "barrier reports a fault"))
                return
            await asyncio.sleep(0.02)
        # the machine's own "arm" timer reports the timeout

    async def _close_if_clear(self) -> None:
        try:
            inputs = await self.loops.read()
            if not inputs.any:
                await self.barrier.pulse_close()
        except Exception as exc:
            log.warning("close after reversal skipped: %s", exc)

    def _undo(self, a: m.UndoDecision) -> None:
        now = self.clock.now()
        if a.direction == "exit":
            self.store.reverse_exit(a.session_id, now, "vehicle reversed away")
        else:
            self.store.cancel_entry(a.session_id, now, "vehicle reversed away")

    def _start_timer(self, name: str, seconds: float) -> None:
        old = self._timers.pop(name, None)
        if old:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[name] = loop.call_later(seconds, self.post, m.TimerFired(name))

    # ------------------------------------------------------------------ inputs
    async def _watch_loops(self) -> None:
        """Detector edges into the machine: the driver's own debounced events when it
        publishes them, otherwise polling ``read()``."""
        subscribe = getattr(self.loops, "subscribe", None)
        if callable(subscribe):
            subscribe(self._on_loop_event)
            while True:  # the initial state (a vehicle may be standing there after a restart)
                try:
                    self._diff_loops(await self.loops.read())
                    return
                except Exception:
                    await asyncio.sleep(0.2)
        # as the Modbus driver does: a change read after the detectors went unseen for three
        # periods (a late or failed read) may hide a short pulse of another loop
        late_after = 3 * self.loop_poll_s + 0.03
        last_read: float | None = None
        while True:
            sent = time.monotonic()
            try:
                inputs = await self.loops.read()
            except Exception:
                await asyncio.sleep(max(self.loop_poll_s, 0.2))
                continue
            late = last_read is not None and time.monotonic() - last_read > late_after
            last_read = sent
            self._diff_loops(inputs, late)
            await asyncio.sleep(self.loop_poll_s)

    def _on_loop_event(self, event: Any) -> None:
        name, on = event.detector, bool(event.on)
        if name in ("arming", "closing", "photocell") and getattr(self._loop_state, name) != on:
            self._loop_state = replace(self._loop_state, **{name: on})
            self.post(m.LoopChanged(name, on, late=bool(getattr(event, "late", False))))

    def _diff_loops(self, inputs: LoopInputs, late: bool = False) -> None:
        prev = self._loop_state
        for name in ("arming", "closing", "photocell"):
            now_on = getattr(inputs, name)
            if now_on != getattr(prev, name):
                self.post(m.LoopChanged(name, now_on, late=late))
        self._loop_state = inputs

    async def _watch_plates(self) -> None:
        while True:
            try:
                read = await self.plates.get()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("plate source failed")
                await asyncio.sleep(0.5)
                continue
            if read.event_id in self._seen:
                self.stats.duplicates += 1
                continue
            self._seen[read.event_id] = None
            while len(self._seen) > 256:
                self._seen.popitem(last=False)
            self.stats.plates += 1
            metrics.PLATES_READ.inc()  # accepted (not a duplicate), decided or not
            self.clock.observe(read.at)
            self.post(m.PlateSeen(read))

    async def _watch_health(self) -> None:
        devices: dict[str, Barrier | Loops | Display | PlateSource] = {
            "barrier": self.barrier,
            "loops": self.loops,
            "display": self.display,
            "camera": self.plates,
        }
        while True:
            for name, dev in devices.items():
                h = dev.health
                old = self._health.get(name, Health.OK)
                if h != old:
                    self._health[name] = h
                    self.post(m.DeviceChanged(name, h is not Health.DOWN))
                    if name == "display" and h is Health.OK:
                        self._show(None, None)  # repaint after a board came back
                else:
                    self._health.setdefault(name, h)
            await asyncio.sleep(0.5)

    # ------------------------------------------------------------------ display
    def _show(self, lines: tuple[DisplayLine, ...] | None, speak: str | None) -> None:
        """Queue a screen; a newer screen replaces one not yet written."""
        with contextlib.suppress(asyncio.QueueEmpty):
            self._screen.get_nowait()
        self._screen.put_nowait((lines, speak))

    async def _write_display(self) -> None:
        while True:
            lines, speak = await self._screen.get()
            await self._open_commanded()
            try:
                if lines is None:
                    if self.out_of_service is not None:
                        await self.display.show(list(MSG_OUT_OF_SERVICE))
                    elif self.lane.faults - {"display"}:
                        await self.display.show(list(m.MSG_FAULT))
                    else:
                        await self.display.show(messages.idle(self.idle_lines))
                else:
                    await self.display.show(list(lines))
                    if speak:
                        await self.display.speak(speak)
            except Exception as exc:
                self.stats.device_errors += 1
                log.debug("display write failed: %s", exc)

    # ------------------------------------------------------------------ storage
    def _out_of_service_decision(self, read: PlateRead, exc: StorageUnavailable) -> m.Decision:
        """Nothing was written for this car: hold it with the out-of-service screen."""
        self._storage_failed(exc)
        self._held_read = read
        return m.Decision("out_of_service", (DisplayLine(read.plate), *MSG_OUT_OF_SERVICE[:3]),
                          SPEAK_OUT_OF_SERVICE, plate=read.plate)

    def _storage_failed(self, exc: Exception) -> None:
        metrics.STORAGE_WRITE_FAILURES.inc()
        if self.out_of_service is not None:
            return
        self.out_of_service = str(exc)[:300]
        self._oos_since = self.clock.now()
        metrics.STORAGE_WRITABLE.set(0)
        log.error("ledger cannot be written, lane OUT OF SERVICE (manual open still works; "
                  "retrying every %.1f s): %s", self.storage.probe_s, exc)
        if self.lane.state is m.State.IDLE:
            self._show(None, None)

    def _try_recover(self, startup: bool = False) -> bool:
        """The retry probe: write what is pending, then a ``storage_recovered`` event."""
        try:
            n = self.pending.flush(self.store)
            if self.out_of_service is not None:
                self.store.record_lane_event(
                    "storage_recovered", self.clock.now(),
                    detail={"since": self._oos_since.isoformat() if self._oos_since else "",
                            "error": self.out_of_service, "deferred_records": n})
        except StorageUnavailable as exc:
            metrics.PENDING_RECORDS.set(len(self.pending))
            self._storage_failed(exc)
            return False
        metrics.PENDING_RECORDS.set(0)
        if n:
            log.warning("%d record(s) kept while the ledger was unwritable are now in it", n)
        if self.out_of_service is None:
            return True
        log.warning("ledger writable again: lane back in service (out of service since %s)",
                    self._oos_since)
        self.out_of_service, self._oos_since = None, None
        metrics.STORAGE_WRITABLE.set(1)
        if not startup:
            self._resume_held_car()
        return True

    def _resume_held_car(self) -> None:
        """The car held out of service and still on the loop is decided again, by itself."""
        cur, read = self.lane.current, self._held_read
        self._held_read = None
        if (self.lane.state is m.State.HOLD and cur is not None
                and cur.outcome == "out_of_service" and read is not None and self.lane.arming):
            # the machine has no "retry" event: put it back where the read left it
            self.lane = replace(self.lane, state=m.State.DECIDING, current=None,
                                current_plate=read.plate)
            self._state_since = time.monotonic()
            self._decide(read)
        elif self.lane.state is m.State.IDLE:
            self._show(None, None)

    def _write_high_water(self) -> None:
        """Replace ``<ledger>.<lane>.hwm`` if this lane's tail moved (a worker thread)."""
        if not self.storage.high_water or self.store.path is None:
            return
        try:
            tail = self.store.tail()
            if tail == self._hwm_written or tail[0] == 0:
                return
            write_hwm(self.store.path, HighWater(self.store.lane_id, tail[0], tail[1], tail[2]))
            self._hwm_written = tail
        except Exception as exc:  # disk full: the old mark stays, still a valid lower bound
            log.warning("high-water mark not updated: %s", exc)

    def _check_free_space(self) -> None:
        if self.store.path is None:
            return
        try:
            free = shutil.disk_usage(Path(self.store.path).parent).free
        except OSError as exc:
            log.warning("cannot stat the ledger's filesystem: %s", exc)
            return
        self.free_bytes = free
        metrics.STORAGE_FREE_BYTES.set(free)
        low = free < self.storage.min_free_bytes  # 0 = never (free is never < 0)
        if low and not self.storage_low:
            log.warning("low disk space for the ledger: %d bytes free under %s (threshold "
                        "%d): the lane goes out of service when it is full", free,
                        Path(self.store.path).parent, self.storage.min_free_bytes)
        elif self.storage_low and not low:
            log.info("ledger disk space back above the threshold: %d bytes free", free)
        self.storage_low = low
        metrics.STORAGE_LOW.set(1 if low else 0)

    async def _watch_storage(self) -> None:
        metrics.STORAGE_WRITABLE.set(0 if self.out_of_service else 1)
        while True:
            self._check_free_space()
            if self.out_of_service is not None or len(self.pending):
                self._try_recover()
            else:
                await asyncio.to_thread(self._write_high_water)
            await asyncio.sleep(self.storage.probe_s)
