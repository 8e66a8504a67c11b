"""The outbox sender: the ledger table is the outbox, the central's ack is the only 'done'.

State in RAM is bounded by the window: at most ``window`` batches in flight plus one page of
rows read ahead. The backlog itself stays in SQLite and is read in pages, so 100,000 unsent
entries cost no memory. Every reconnect (and every start) forgets what was in flight and
resends from the first unacked row: duplicates are expected and removed by central.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from edge.lpr.busy import lane_busy
from edge.store import EntryKind, Store
from edge.sync import codec, topics
from edge.sync.link import MqttLink
from edge.sync.state import SyncState, WireEntry

log = logging.getLogger(__name__)
PEER = "central"


@dataclass
class _InFlight:
    first: int
    last: int
    payload: bytes
    deadline: float
    tries: int


class Uplink:
    def __init__(self, store: Store, state: SyncState, link: MqttLink, *, site: str, key: bytes,
                 batch_max_entries: int = 200, batch_max_bytes: int = 65536, window: int = 4,
                 ack_timeout_s: float = 5.0, max_backoff_s: float = 60.0,
                 ack_save_s: float = 0.1,
                 monotonic: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        if not key:
            raise ValueError("hmac_key: an uplink needs a non-empty key")
        self.store, self.link, self.site, self.lane = store, link, site, store.lane_id
        self.state = state
        self._key = key
        self._session_key = codec.lane_session_key(key, self.lane)
        self.session_public_key = self._session_key.public_key()
        self.batch_max_entries = batch_max_entries
        self.batch_max_bytes = batch_max_bytes
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        self.max_backoff_s = max_backoff_s
        self.ack_save_s = ack_save_s
        self._unsaved: list[codec.Ack] = []  # received, not yet recorded in the store
        self._saved_at = monotonic()
        self._mono = monotonic
        self._wall = wallclock
        self._topic = topics.ledger(site, self.lane)
        self._inflight: deque[_InFlight] = deque()
        self._page: deque[WireEntry] = deque()
        self._cursor: int | None = None  # highest seq handed to a batch (None = recompute)
        #: Highest seq whose session notice went out (or needs none): its own cursor, apart
        #: from the batches', so the site's lanes hear of sessions while central's acks do
        #: not come and the window is full (docs/network_faults.md). A restart announces
        #: again what central has not acknowledged; the notices are idempotent.
        self._announced = state.acked_seq(PEER)
        #: Since when central owes an ack and none came (monotonic; None: nothing owed).
        self._owed_since: float | None = None
        # How this lane's own openings read in the stored payload (the store's compact
        # canonical JSON): a cheap filter before parsing a payload to announce it.
        self._opened_here = '"entry_lane":' + json.dumps(self.lane, ensure_ascii=False)
        self.acked_seq = state.acked_seq(PEER)
        #: Highest seq this lane has put in a batch since it started (or acknowledged
        #: before): an ack can never acknowledge more than that (#12 item 5).
        self.sent_max = self.acked_seq
        self.batches_sent = 0
        self.resends = 0

    # ---------------------------------------------------------------- events
    def reset(self) -> None:
        """After a (re)connect or restart: everything unacked goes again, from disk."""
        self._inflight.clear()
        self._page.clear()
        self._cursor = None

    def bound_ack(self, ack: codec.Ack, last_seq: int) -> codec.Ack:
        """An authenticated ack as far as it can be believed: for this lane, and never
        beyond what this lane has sent. One beyond anything the lane ever wrote is refused
        (``ack_beyond_written``); one beyond what it sent since it started is cut back to
        that (``ack_beyond_sent`` counted by the caller): the rest goes again."""
        if ack.lane != self.lane:
            raise codec.SyncMessageError("ack_wrong_lane", f"ack for {ack.lane!r}")
        top = max([ack.upto, *(hi for _lo, hi in ack.ranges)])
        if top > last_seq:
            raise codec.SyncMessageError("ack_beyond_written", f"ack up to {top}, the ledger "
                                                               f"ends at {last_seq}")
        if top <= self.sent_max:
            return ack
        lim = self.sent_max
        ranges = tuple((lo, min(hi, lim)) for lo, hi in ack.ranges if lo <= lim)
        return codec.Ack(ack.lane, min(ack.upto, lim), ranges, ack.batch_id)

    def on_acks(self, acks: list[codec.Ack]) -> None:
        """Apply acks (already through ``bound_ack``): the window frees at once; the
        durable write is grouped (see ``flush_acks``)."""
        mine = [a for a in acks if a.lane == self.lane]
        if not mine:
            return
        self._unsaved.extend(mine)
        for a in mine:
            self._release(a)
        self.flush_acks(force=not self._inflight)

    def flush_acks(self, *, force: bool = False) -> None:
        """Record the acks received so far in the store, at most every ``ack_save_s`` while
        batches are in flight (and at once when none is). A crash loses at most that much
        acknowledgement, which costs only a resend that central drops as a duplicate; it
        saves a durable write per ack, which competes with the lane's own writes."""
        if not self._unsaved or (not force and self._mono() - self._saved_at < self.ack_save_s):
            return
        acks, self._unsaved = self._unsaved, []
        upto = max(a.upto for a in acks)
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted(r for a in acks for r in a.ranges if r[1] > upto):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        self.store.mark_acked(PEER, upto, merged)
        self.acked_seq = max(self.acked_seq, upto)
        self._saved_at = self._mono()

    def on_ack(self, ack: codec.Ack) -> None:
        """Apply one ack and record it in the store now."""
        if ack.lane != self.lane:
            return
        self._unsaved.append(ack)
        self._release(ack)
        self.flush_acks(force=True)

    def _release(self, ack: codec.Ack) -> None:
        """Free the window of what ``ack`` covers (``acked_seq`` moves when it is saved)."""

        def done(b: _InFlight) -> bool:
            if b.last <= ack.upto:
                return True
            return any(lo <= max(b.first, ack.upto + 1) and b.last <= hi
                       for lo, hi in ack.ranges)

        self._inflight = deque(b for b in self._inflight if not done(b))
        self._owed_since = self._mono() if self._inflight else None  # central answered

    def central_silent_s(self) -> float:
        """How long central has owed this lane an ack without one coming (0: nothing owed).
        Behind a site broker this, not the lane's own MQTT link, says central is reachable."""
        since = self._owed_since
        return 0.0 if since is None else max(0.0, self._mono() - since)

    # ---------------------------------------------------------------- work
    def step(self) -> bool:
        """Fill the window and resend overdue batches; True if something was published.
        Nothing while the lane reads a car's plate (``edge.lpr.busy``): the backlog waits
        that second, the driver does not."""
        if lane_busy():
            return False
        self.flush_acks()
        if not self.link.connected.is_set():
            return False
        did = False
        now = self._mono()
        for b in self._inflight:
            if now >= b.deadline:
                if not self.link.publish(self._topic, b.payload):
                    return did
                b.tries += 1
                self.resends += 1
                b.deadline = now + min(self.ack_timeout_s * 2 ** b.tries, self.max_backoff_s)
                did = True
        while len(self._inflight) < self.window:
            batch = self._next_batch()
            if batch is None:
                if not self._inflight:
                    self._owed_since = None  # nothing sent waits for an ack
                break
            if not self.link.publish(self._topic, batch.payload):
                self.reset()  # lost the link while sending: start over from disk
                break
            sent_at = self._mono()
            batch.deadline = sent_at + self.ack_timeout_s
            if self._owed_since is None:
                self._owed_since = sent_at
            self.sent_max = max(self.sent_max, batch.last)
            self._inflight.append(batch)
            self.batches_sent += 1
            did = True
        return did

    def _first_unacked(self) -> int:
        rows = self.store.unacked(limit=1, peer=PEER)
        return rows[0].seq - 1 if rows else self.state.last_seq()

    def _next_batch(self) -> _InFlight | None:
        if self._cursor is None:
            self.flush_acks(force=True)  # resend from what is really acknowledged
            self._cursor = self._first_unacked()
        if not self._page:
            self._page.extend(self.state.wire_page(self._cursor, self.batch_max_entries))
            if not self._page:
                return None
        budget = self.batch_max_bytes - codec.batch_overhead(self.site, self.lane)
        parts: list[bytes] = []
        used = 0
        first = self._page[0].seq
        last = first
        while self._page and len(parts) < self.batch_max_entries:
            e = self._page[0]
            enc = e.wire
            if parts and used + len(enc) + 1 > budget:
                break
            self._page.popleft()
            parts.append(enc)
            used += len(enc) + 1
            last = e.seq
        self._cursor = last
        payload = codec.encode_batch(self.site, self.lane, parts, first, last, self._key,
                                     self._wall())
        return _InFlight(first, last, payload, 0.0, 0)

    def announce(self, limit: int = 200) -> bool:
        """Publish the session notices of up to ``limit`` entries written since the last
        call, whatever the uplink window; True if something was published."""
        if not self.link.connected.is_set() or lane_busy():
            return False
        did = False
        for e in self.state.wire_page(self._announced, limit):
            sent = self._announce(e)
            if sent is False:
                return did  # the link went: this entry again next time
            self._announced = e.seq
            did = did or bool(sent)
        return did

    def _announce(self, e: WireEntry) -> bool | None:
        """Tell the other lanes about a session this lane opened or closed (idempotent):
        None if ``e`` needs no notice, else whether the link took it."""
        if e.kind not in (EntryKind.SESSION_OPENED, EntryKind.SESSION_CLOSED):
            return None
        if e.kind == EntryKind.SESSION_OPENED and self._opened_here not in e.payload_text:
            return None  # opened on another lane (most of a backlog): no need to parse it
        try:
            payload = json.loads(e.payload_text)
            at = datetime.fromisoformat(e.at)
            if e.kind == EntryKind.SESSION_OPENED and payload.get("entry_lane") == self.lane:
                msg = codec.encode_session_opened(codec.SessionOpened(
                    self.lane, str(payload.get("event_id")), e.plate or "", at,
                    str(payload.get("vehicle_class", "small")), e.member_id, e.rules_version,
                    e.session_id), self.site, self._session_key)
                return self.link.publish(topics.sessions_opened(self.site), msg)
            elif e.kind == EntryKind.SESSION_CLOSED and e.session_id and e.plate:
                s = self.store.get_session(e.session_id)
                msg = codec.encode_session_closed(codec.SessionClosed(
                    self.lane, s.entry_event_id if s else None, e.plate, at,
                    str(payload.get("exit_event_id")), e.session_id), self.site,
                    self._session_key)
                return self.link.publish(topics.sessions_closed(self.site), msg)
        except Exception:  # an announcement is best effort; the ledger still goes up
            log.exception("session announcement for %s:%d failed", self.lane, e.seq)
        return None

    def backlog(self, last_seq: int) -> int:
        return max(0, last_seq - self.acked_seq)

    @property
    def in_flight(self) -> int:
        return len(self._inflight)
