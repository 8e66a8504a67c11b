"""Loop detectors and photocell read as Modbus discrete inputs, debounced, as edge events.

Why: the lane reacts to a car arriving (arming loop) and leaving (closing loop), and must not
react to a relay chattering. A change is accepted only if a re-read ``debounce_ms`` later
still shows it. Loops wired in *pulse* mode give a brief pulse on enter and on leave; they
are turned into presence here, so the lane sees one model. Passages over the closing loop are
counted against plates read, which is the tailgating signal. The poll task never dies: every
failure is counted by the HealthTracker and polling goes on.

A poll can come late (a starved box, a busy bus) and a car's whole pulse over the closing loop
can fall between two reads. Two answers: every change confirmed after such a gap is marked
``late`` (the lane then does not take an arming loop clearing for a car backing off, see
``edge.lane.machine._crossing_unseen``); and where the IO module counts its inputs' rising
edges (the DI counter mode of most modules), ``counter_closing`` names the input register
holding the closing loop's count: a pulse the reads missed is still counted there, and is
published as the closing-loop on/off it was, in its place among the other changes. The
counter is trusted as it counts: set the module's input filter for counting above the loop
relay's bounce time (a bounce counted is a passage published).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from edge.aio import cancel_and_wait
from edge.barrier.health import HealthTracker
from edge.barrier.interfaces import DeviceError, Health, LoopInputs
from edge.barrier.modbus_hub import ModbusHub

log = logging.getLogger(__name__)

DETECTORS = ("arming", "closing", "photocell")
MODES = ("presence", "pulse")


@dataclass(frozen=True)
class LoopEvent:
    """A debounced change of one detector (``at`` is ``time.monotonic()``).

    ``late``: the inputs went unseen for longer than ``ModbusLoops.late_after_s`` before this
    change was confirmed (a poll came late: a loaded box, a busy bus, a module that did not
    answer), so a short pulse of another detector may have come and gone unseen meanwhile.
    ``blind_s`` is that time: from the previous poll's first read to this confirmation."""

    detector: str  # arming | closing | photocell
    on: bool
    at: float
    late: bool = False
    blind_s: float = 0.0


EventCallback = Callable[[LoopEvent], None]


class ModbusLoops:
    """Polls the three detector inputs of one IO module and publishes debounced edges."""

    def __init__(
        self,
        hub: ModbusHub,
        unit: int = 1,
        input_arming: int = 4,
        input_closing: int = 5,
        input_photocell: int = 6,
        mode: str = "presence",
        debounce_ms: int = 30,
        poll_ms: int = 50,
        *,
        name: str = "loops",
        down_after: int = 3,
        queue_max: int = 256,
        late_after_s: float | None = None,
        counter_closing: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"loops mode {mode!r} must be one of {MODES}")
        if counter_closing is not None and mode != "presence":
            raise ValueError("loops counter_closing needs mode 'presence' (a pulse-mode "
                             "detector gives two pulses per car, the counter cannot tell them)")
        if poll_ms <= 0 or debounce_ms < 0:
            raise ValueError(
                f"loops poll_ms must be > 0 and debounce_ms >= 0 (got {poll_ms}, {debounce_ms})"
            )
        self.hub = hub
        self.unit = unit
        self.inputs = (input_arming, input_closing, input_photocell)
        self.mode = mode
        self.debounce_s = debounce_ms / 1000.0
        self.poll_s = poll_ms / 1000.0
        # what a poll on time leaves unseen is one period plus the debounce re-reads; three
        # times that (a pulse of a real car over a loop is half a second and more) is late
        self.late_after_s = (
            late_after_s
            if late_after_s is not None
            else max(3 * self.poll_s, self.poll_s + 2 * self.debounce_s) + 0.03
        )
        self._prev_read_at: float | None = None  # when the last good poll's first read left
        self.late_polls = 0
        self.counter_closing = counter_closing
        self._counted: int | None = None  # closing-loop rises accounted for (counter value)
        self.missed_pulses = 0  # closing-loop pulses the reads missed and the counter had
        self.tracker = HealthTracker(name, log, down_after=down_after)
        self._state = {d: False for d in DETECTORS}  # logical presence
        self._raw_stable = {d: False for d in DETECTORS}  # debounced raw input level
        self._callbacks: list[EventCallback] = []
        self._queues: list[asyncio.Queue[LoopEvent]] = []
        self._queue_max = queue_max
        self._task: asyncio.Task[None] | None = None
        self.passages = 0
        self.plates = 0
        self.polls_total = 0

    @property
    def health(self) -> Health:
        return self.tracker.state

    # -- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll_forever(), name=f"{self.tracker.name}-poll")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None

    # -- Loops protocol ----------------------------------------------------------------------------
    async def read(self) -> LoopInputs:
        """Debounced presence; DeviceError while the inputs cannot be read."""
        if self._task is None:
            raw = await self._read_raw()  # not polling (tools, tests): one plain read
            return LoopInputs(**raw)
        if self.tracker.consecutive_failures:
            raise DeviceError(f"{self.tracker.name}: inputs unreadable: {self.tracker.last_error}")
        return LoopInputs(**self._state)

    # -- events ----------------------------------------------------------------
    def subscribe(self, callback: EventCallback) -> None:
        """``callback(event)`` runs in the poll task; it must not block (exceptions are logged)."""
        self._callbacks.append(callback)

    async def events(self) -> AsyncIterator[LoopEvent]:
        """Async stream of edges; a slow consumer loses the oldest events, never memory."""
        queue: asyncio.Queue[LoopEvent] = asyncio.Queue(self._queue_max)
        self._queues.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.remove(queue)

    def _emit(self, event: LoopEvent) -> None:
        if event.detector == "closing" and not event.on:
            self.passages += 1
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:
                log.exception("loop event callback failed")

    # -- tailgating ----------------------------------------------------------------
    def note_plate(self) -> None:
        """The lane read a plate for a vehicle now at the barrier."""
        self.plates += 1

    @property
    def tailgate_suspected(self) -> bool:
        return self.passages > self.plates

    def reset_counts(self) -> None:
        self.passages = 0
        self.plates = 0

    # -- polling ----------------------------------------------------------------
    async def _read_raw(self) -> dict[str, bool]:
        first = min(self.inputs)
        count = max(self.inputs) - first + 1
        bits = await self.hub.read_discrete_inputs(self.unit, first, count)
        return {d: bool(bits[i - first]) for d, i in zip(DETECTORS, self.inputs, strict=True)}

    async def _poll_forever(self) -> None:
        backoff = self.poll_s
        while True:
            try:
                await self.poll_once()
                backoff = self.poll_s
                await asyncio.sleep(self.poll_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a poll must never die: count it and keep trying
                if not isinstance(exc, DeviceError):
                    log.exception("unexpected error in loop poll")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    async def poll_once(self) -> None:
        """One poll: read, and confirm any change by re-reads over ``debounce_s``."""
        self.polls_total += 1
        sent = time.monotonic()
        try:
            # the counter before the levels: a rise counted is then already in the levels read
            count = (None if self.counter_closing is None else
                     (await self.hub.read_input_registers(self.unit, self.counter_closing))[0])
            raw = await self._read_raw()
            seen = [d for d in DETECTORS if raw[d] != self._raw_stable[d]]
            changed = seen
            # the change must hold: re-read half-way and at the end of the debounce time
            for _ in range(2 if changed and self.debounce_s > 0 else 0):
                await asyncio.sleep(self.debounce_s / 2)
                again = await self._read_raw()
                changed = [d for d in changed if again[d] == raw[d]]
        except DeviceError as exc:
            self.tracker.failure(exc)
            raise
        self.tracker.success()
        now = time.monotonic()
        # Blind time: from the previous good poll's first read to this confirmation. A pulse
        # shorter than it can have come and gone unseen (or been taken for chatter when the
        # re-reads came late); the events of this poll say so. A failed poll does not move
        # the mark, so the first changes after an outage are late too.
        # A poll that saw a change it could not confirm is no clean look either (its re-reads
        # may have come late and cut a real pulse short): the mark stays where it was.
        blind = 0.0 if self._prev_read_at is None else now - self._prev_read_at
        if len(changed) == len(seen):
            self._prev_read_at = sent
        late = blind > self.late_after_s
        if late and changed:
            self.late_polls += 1
            log.info("%s: inputs unseen for %.0f ms before this change (late poll)",
                     self.tracker.name, blind * 1000)
        # A poll that saw the closing loop (or another detector) change and could not confirm
        # it leaves the counter for the next one: its levels are stale by the end of the
        # re-reads, and the next poll places the missed pulse among the changes it confirms
        # (the arming loop clearing while the car was on the closing loop).
        missed = (0 if count is None else
                  self._missed(count, changed, raw, settle=len(changed) == len(seen)))
        if missed:
            self.missed_pulses += missed
            log.info("%s: %d closing-loop pulse(s) between two reads, from the counter",
                     self.tracker.name, missed)
            for d, on in self._with_missed(changed, raw, missed):
                self._set(d, on, now, late, blind)
            for d in changed:
                self._raw_stable[d] = raw[d]
            return
        for d in changed:
            self._raw_stable[d] = raw[d]
            if self.mode == "presence":
                self._set(d, raw[d], now, late, blind)
            elif raw[d]:  # pulse mode: each confirmed pulse toggles presence
                self._set(d, not self._state[d], now, late, blind)

    def _missed(self, count: int, changed: list[str], raw: dict[str, bool],
                settle: bool = True) -> int:
        """Closing-loop rises the counter has and the levels did not show (16-bit counter);
        ``settle`` False: account for a rise seen, leave the rest for the next poll."""
        if self._counted is None:
            self._counted = count
            return 0
        if "closing" in changed and raw["closing"]:
            self._counted = (self._counted + 1) & 0xFFFF  # a rise seen in the levels
        diff = (count - self._counted) & 0xFFFF
        if diff == 0 or not settle:
            return 0
        if diff >= 0x10000 - 2:
            # the levels showed a rise the counter read before them did not have yet: it
            # will; nothing missed
            return 0
        if diff > 4:
            # more cars over the closing loop between two reads than can drive: the module
            # restarted (counters back to 0) or someone reset it; start counting from here
            log.warning("%s: closing-loop counter jumped by %d: counting again from %d",
                        self.tracker.name, diff, count)
            self._counted = count
            return 0
        self._counted = count
        return diff

    def _with_missed(self, changed: list[str], raw: dict[str, bool],
                     missed: int) -> list[tuple[str, bool]]:
        """The confirmed changes with ``missed`` unseen closing-loop pulses put back: a car
        on the closing loop while the other detectors changed (the arming loop clearing
        behind it), then off it; further pulses after."""
        old = self._raw_stable["closing"]
        new = raw["closing"] if "closing" in changed else old
        others = [(d, raw[d]) for d in changed if d != "closing"]
        rises = missed + (1 if new and not old else 0)
        seq: list[tuple[str, bool]] = []
        level = old
        if level:  # on the loop when the others changed, then the unseen off and on
            seq, others = others, []
        while rises:
            if level:
                seq.append(("closing", False))
            seq.append(("closing", True))
            level = True
            rises -= 1
            seq, others = seq + others, []
        if level != new:
            seq.append(("closing", new))
        return seq + others

    def _set(self, detector: str, on: bool, now: float, late: bool = False,
             blind: float = 0.0) -> None:
        if self._state[detector] == on:
            return
        self._state[detector] = on
        self._emit(LoopEvent(detector, on, now, late, round(blind, 4)))
