"""What comes down (or across) to a lane: accounts, bindings, other lanes' sessions, rules.

Nothing that comes down the broker is believed (#12 item 5): every message is authenticated
and range-checked by ``codec`` first (member states, snapshots, rules and the lane roster
signed by central for this site; session events signed by a lane of the site's roster),
session events are sanity-checked against what the lane knows and rate-bounded per origin,
and a member state is applied in one store transaction. Then it is applied idempotently: a
member version not newer than the cached one is ignored, a session event is keyed by its
event id, a rule bundle by its serial. A refused message is counted by reason, logged
(rate-limited) and dropped; the lane keeps what it had.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.pricing import BundleError, RuleBundle, parse_bundle
from edge.store import Store, StoreError
from edge.store import members as store_members
from edge.store import prepayments as store_prepaid
from edge.store.codec import ts
from edge.sync import codec, topics
from edge.sync.codec import SyncMessageError
from edge.sync.link import MqttLink
from edge.sync.refusals import Refusals
from edge.sync.state import PUT_ACCOUNT_SQL, SyncState

log = logging.getLogger(__name__)
CENTRAL_LOT = "central"
#: A session event's time may be ahead of this lane's clock by at most this much.
MAX_CLOCK_SKEW = timedelta(seconds=120)
#: A remote entry may replace a known open session of the same plate (a missed exit) only
#: when that session is older than this; a younger one would move a known stay later
#: (a forged "entered now" made a 4-hour stay free).
SUPERSEDE_AFTER = timedelta(hours=24)
#: New session events accepted per origin lane: a burst, then a steady rate. A real lane sees
#: a vehicle every few seconds; a lane back from an outage re-announces its whole unacked
#: backlog at once, so the burst covers a busy entry lane's day (~300 an hour at peak), not an
#: hour: dropping a real arrival sends its car to the exit's no-entry policy. Events already
#: known here (the same ``event_id``, re-sent after a reconnect) take no token.
SESSION_BURST = 5000
SESSION_RATE_PER_S = 2.0
#: A member version may jump at most this far past the cached one (central adds 1 a change).
MAX_VERSION_JUMP = 1_000_000


class _Bucket:
    """Token bucket: ``take()`` is False once the burst is spent faster than the rate."""

    def __init__(self, burst: float, rate: float, now: float) -> None:
        self.tokens, self.burst, self.rate, self.at = burst, burst, rate, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Downlink:
    def __init__(self, store: Store, state: SyncState, link: MqttLink, *, site: str,
                 public_key: Ed25519PublicKey | None,
                 on_rules: Callable[[RuleBundle], Any] | None = None,
                 wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 refusals: Refusals | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store, self.state, self.link, self.site = store, state, link, site
        self.lane = store.lane_id
        self.public_key = public_key
        self.on_rules = on_rules
        self._wall = wallclock
        self._mono = monotonic
        self.refuse = refusals or Refusals()
        self.rejected: Counter[str] = self.refuse.counts
        self.applied: Counter[str] = Counter()
        self._buckets: dict[str, _Bucket] = {}
        serial, keys = state.lane_roster()
        self._roster_serial = serial
        self._lane_keys = {lane: codec.public_key_from_hex(k) for lane, k in keys.items()}
        #: This lane's own session key (set by ``LaneSync``): its own events, echoed by the
        #: broker, verify before any roster arrived (and are then skipped).
        self.own_session_key: Ed25519PublicKey | None = None
        self._t_lanes = topics.lanes(site)
        self._t_rules = topics.rules(site)
        self._t_snapshot = topics.snapshot(site, self.lane)
        self._p_members = topics.members_all(site)[:-1]
        self._p_sessions = topics.sessions_all(site)[:-1]
        self._p_prepaid = topics.prepaid_all(site)[:-1]

    def subscriptions(self) -> list[str]:
        return [self._t_lanes, self._t_rules, self._t_snapshot, topics.members_all(self.site),
                topics.sessions_all(self.site), topics.prepaid_all(self.site)]

    def on_connect(self) -> None:
        """After every (re)connect: deltas may have been missed, ask for everything."""
        self.link.publish(topics.snapshot_request(self.site),
                          codec.encode_snapshot_request(self.lane, None, "reconnect"))

    def _reject(self, reason: str, detail: str) -> None:
        self.refuse(reason, detail)

    def _session_key_of(self, lane: str) -> Ed25519PublicKey | None:
        if lane == self.lane and self.own_session_key is not None:
            return self.own_session_key
        return self._lane_keys.get(lane)

    def handle(self, topic: str, payload: bytes) -> None:
        """Apply one inbound message; never raises."""
        with self._refusing(topic):
            if topic == self._t_rules:
                self._rules(payload)
            elif topic == self._t_lanes:
                self._roster(payload)
            elif topic == self._t_snapshot:
                for m in codec.parse_snapshot(payload, self.site, self.public_key):
                    try:
                        self._member(m, from_snapshot=True)
                    except SyncMessageError as exc:
                        self._reject(exc.reason, f"{topic}: {exc.detail}")
            elif topic.startswith(self._p_members):
                m = codec.parse_member(payload, self.site, self.public_key)
                if topic != topics.member(self.site, m.member_id):
                    raise SyncMessageError("schema", f"member {m.member_id!r} on {topic}")
                self._member(m, from_snapshot=False)
            elif topic.startswith(self._p_sessions):
                s = codec.parse_session(payload, self.site, self._session_key_of)
                if s.origin != self.lane:
                    self._session_sane(s)
                self._session(s)
            elif topic.startswith(self._p_prepaid):
                self._prepaid(topic, payload)
            else:
                self._reject("unknown_topic", topic)

    # ---------------------------------------------------------------- accounts
    def _member(self, m: codec.MemberState, *, from_snapshot: bool) -> None:
        cached = self.state.account(m.member_id)
        if cached is not None and m.version <= cached.version:
            self.applied["member_stale"] += 1
            return
        if cached is not None and m.version - cached.version > MAX_VERSION_JUMP:
            raise SyncMessageError("version_jump", f"member {m.member_id!r} version "
                                                   f"{m.version} after {cached.version}")
        gap = (not from_snapshot and cached is not None and m.prev_version != cached.version)
        applied_seq = int(m.applied.get(self.lane, 0))
        available = m.balance + self.state.pending_points(m.member_id, applied_seq)
        self._apply_member(m, applied_seq, available)
        self.applied["member"] += 1
        if gap:
            self.applied["member_gap"] += 1
            self.link.publish(topics.snapshot_request(self.site),
                              codec.encode_snapshot_request(self.lane, [m.member_id], "gap"))

    def _apply_member(self, m: codec.MemberState, applied_seq: int, available: int) -> None:
        """Member, points, bindings, coupons and the cached version in ONE store transaction:
        a state either applies whole or not at all (a balance that could not be stored used
        to leave the member half-applied)."""
        with self.store._write() as c:  # the store's own single-writer transaction
            store_members.upsert_member(c, m.member_id, tier=m.tier, name=m.name,
                                        version=m.version, auto_deduct=m.auto_deduct,
                                        blocked=m.blocked or m.flagged)
            store_members.set_lots(c, m.member_id,
                                   [(CENTRAL_LOT, max(0, available), None, None)])
            keep = set(m.plates)
            for (plate,) in c.execute("SELECT plate FROM plate_bindings WHERE member_id = :m",
                                      {"m": m.member_id}).fetchall():
                if plate not in keep:  # central removed the binding
                    c.execute("DELETE FROM plate_bindings WHERE plate = :p", {"p": plate})
            for plate in m.plates:
                c.execute("INSERT INTO plate_bindings (plate, member_id, version) VALUES "
                          "(:p, :m, :v) ON CONFLICT (plate) DO UPDATE SET member_id = :m, "
                          "version = :v WHERE excluded.version >= plate_bindings.version",
                          {"p": plate, "m": m.member_id, "v": m.version})
            for cp in m.coupons:
                try:
                    store_members.add_coupon(c, m.member_id, cp.coupon_id, cp.kind, cp.value,
                                             cp.valid_until)
                except StoreError:  # already used here (checked before any write)
                    self.applied["coupon_already_used"] += 1
            c.execute(PUT_ACCOUNT_SQL, {"m": m.member_id, "v": m.version, "b": m.balance,
                                        "s": applied_seq, "a": m.allowance,
                                        "f": int(m.flagged)})

    # ---------------------------------------------------------------- lane roster
    def _roster(self, payload: bytes) -> None:
        r = codec.parse_lanes(payload, self.site, self.public_key)
        if r.serial < self._roster_serial:
            raise SyncMessageError("older", f"lane roster serial {r.serial} < "
                                            f"{self._roster_serial}")
        keys = {lane: codec.public_key_from_hex(k) for lane, k in r.keys.items()}
        if r.serial > self._roster_serial:
            self.state.put_lane_roster(r.serial, dict(r.keys))
            self.applied["lanes"] += 1
        self._roster_serial, self._lane_keys = r.serial, keys

    # ---------------------------------------------------------------- session checks
    def _session_sane(self, s: codec.SessionOpened | codec.SessionClosed) -> None:
        """What an authenticated session event from another lane may still not do: come
        faster than a lane can see vehicles, be in the future, move a known stay's entry
        later, or close a stay before it began."""
        now = self._mono()
        if isinstance(s, codec.SessionOpened) and self.store.knows_entry_event(s.event_id):
            return  # a replay changes nothing here (idempotent on event_id): no token, no check
        b = self._buckets.get(s.origin)
        if b is None:
            b = self._buckets[s.origin] = _Bucket(SESSION_BURST, SESSION_RATE_PER_S, now)
        if not b.take(now):
            raise SyncMessageError("session_rate", f"lane {s.origin!r} over "
                                                   f"{SESSION_RATE_PER_S}/s")
        when = s.entered_at if isinstance(s, codec.SessionOpened) else s.exited_at
        if when > self._wall() + MAX_CLOCK_SKEW:
            raise SyncMessageError("future", f"session event from {s.origin!r} at "
                                             f"{when.isoformat()}")
        known = self.store.find_open_session(s.plate)
        if known is None:
            return
        if isinstance(s, codec.SessionOpened):
            if (known.entry_event_id != s.event_id and known.entered_at < s.entered_at
                    and s.entered_at - known.entered_at < SUPERSEDE_AFTER):
                raise SyncMessageError("session_moves_later", f"{s.origin!r} would move the "
                                       f"open stay of {s.plate} from "
                                       f"{known.entered_at.isoformat()} to "
                                       f"{s.entered_at.isoformat()}")
        elif s.exited_at < known.entered_at and s.entry_event_id in (None,
                                                                     known.entry_event_id):
            raise SyncMessageError("close_before_entry", f"{s.origin!r} closes the stay of "
                                   f"{s.plate} entered {known.entered_at.isoformat()} at "
                                   f"{s.exited_at.isoformat()}")

    # ---------------------------------------------------------------- sessions
    def _session(self, s: codec.SessionOpened | codec.SessionClosed) -> None:
        if s.origin == self.lane:
            return
        if isinstance(s, codec.SessionOpened):
            if self.state.late_entry_recorded(s.event_id):
                self.applied["session_dup"] += 1
                return
            late = self.state.exited_without_entry(s.plate, ts(s.entered_at))
            if late is not None:
                # The vehicle already left here with no entry record (no-entry policy
                # applied): document the real entry for central to settle, keep it closed.
                self.store.record_correction(
                    "late_entry", self._wall(), session_id=late, plate=s.plate,
                    member_id=s.member_id,
                    reason=f"entry event from lane {s.origin} arrived after the exit",
                    detail={"event_id": s.event_id, "entered_at": s.entered_at.isoformat(),
                            "entry_lane": s.origin, "vehicle_class": s.vehicle_class})
                self.applied["late_entry"] += 1
                return
            if s.session_id is not None:
                # one stay, one session: kept under the entry lane's id, no ledger entry here
                _, new = self.store.cache_session(
                    session_id=s.session_id, plate=s.plate, entered_at=s.entered_at,
                    event_id=s.event_id, entry_lane=s.origin, vehicle_class=s.vehicle_class,
                    member_id=s.member_id, rules_version=s.rules_version)
            else:  # a lane from before session ids were sent: its old behaviour
                _, new = self.store.record_entry(
                    plate=s.plate, entered_at=s.entered_at, event_id=s.event_id,
                    vehicle_class=s.vehicle_class, member_id=s.member_id,
                    rules_version=s.rules_version, lane_id=s.origin,
                    detail={"via": "sync", "origin": s.origin})
            self.applied["session_opened" if new else "session_dup"] += 1
            return
        target = self.store.get_session(s.session_id) if s.session_id is not None else None
        if target is None:
            # an older lane's message, or an exit with no entry record there: the plate's
            # open stay here, if it is the one that lane saw
            target = self.store.find_open_session(s.plate)
            if target is None or (s.entry_event_id is not None
                                  and target.entry_event_id not in (None, s.entry_event_id)):
                self.applied["session_closed_unknown"] += 1
                return
        # the exit lane's ledger has the exit; here the stay just ends (a state change, not a
        # correction: corrections are for real corrections)
        closed = self.store.close_cached(target.session_id, s.origin)
        self.applied["session_closed" if closed is not None else "session_closed_dup"] += 1

    # ---------------------------------------------------------------- prepayments
    def _prepaid(self, topic: str, payload: bytes) -> None:
        """A payment made at central for a stay here: verified, range-checked, kept with a
        ledger entry (``edge.store.prepayments``), settled by the exit of that stay."""
        if not payload:  # central cleared the retained copy (expired or refunded)
            self.applied["prepaid_cleared"] += 1
            return
        p = codec.parse_prepaid_topic(payload, self.site, self.public_key)
        if topic != topics.prepaid(self.site, p.payment_id):
            raise SyncMessageError("schema", f"prepayment {p.payment_id!r} on {topic}")
        if isinstance(p, codec.PrepaidRevoked):
            self._revoked(p)
            return
        self._take_prepaid(p)

    def prepaid_answer(self, payload: bytes) -> None:
        """A prepayment in central's answer to this lane's reconnect snapshot request: every
        one of the site not refunded and not expired, because a lane offline when it was
        published may get no copy from the broker (RabbitMQ gives no retained copy through
        ``prepaid/+``; docs/brokers.md). The same checks as its own topic's copy; one held
        already counts as a duplicate. Never raises."""
        self._answer_item("prepayment", lambda: self._take_prepaid(
            codec.parse_prepaid(payload, self.site, self.public_key)))

    def _answer_item(self, what: str, apply: Callable[[], None]) -> None:
        """Apply one prepayment message of a snapshot answer; a refusal is counted and
        logged as ``snapshot <what>``, never raised (the rest of the answer still counts)."""
        with self._refusing(f"snapshot {what}"):
            apply()

    @contextmanager
    def _refusing(self, where: str) -> Iterator[None]:
        """Whatever the block raises becomes a counted, logged refusal named ``where``: one
        guard for a message and for each item of a snapshot answer."""
        try:
            yield
        except SyncMessageError as exc:
            self._reject(exc.reason, f"{where}: {exc.detail}")
        except StoreError as exc:
            self._reject("store_refused", f"{where}: {exc}")
        except Exception as exc:  # the daemon outlives any message
            log.exception("unexpected failure handling %s", where)
            self._reject("internal", f"{where}: {exc!r}")

    def _take_prepaid(self, p: codec.Prepaid) -> None:
        now = self._wall()
        if p.paid_at > now + MAX_CLOCK_SKEW:
            raise SyncMessageError("future", f"prepayment {p.payment_id!r} paid at "
                                             f"{p.paid_at.isoformat()}")
        if p.expires_at < now:  # an old retained copy: nothing to settle any more
            self.applied["prepaid_expired"] += 1
            return
        try:
            new = store_prepaid.receive(self.store, p, now)
        except StoreError as exc:
            if str(exc).startswith("payment_id:"):
                raise SyncMessageError("prepaid_conflict", str(exc)) from None
            if str(exc).startswith("revoked:"):  # a replay of a payment central refunded
                raise SyncMessageError("prepaid_revoked", str(exc)) from None
            raise
        self.applied["prepaid" if new else "prepaid_dup"] += 1

    def revoked_answer(self, payload: bytes) -> None:
        """A revocation in central's answer to this lane's reconnect snapshot request: the
        revocations of every refunded prepayment not yet expired, because a lane offline
        when one was published gets no copy from the broker (it is not retained: the
        payment's retained copy is cleared instead, and RabbitMQ gives no retained copy
        through a wildcard anyway; docs/brokers.md). A lane that never held the payment
        keeps its id without a refusal (a replay of it is refused later). Never raises."""
        self._answer_item("revocation", lambda: self._revoked(
            codec.parse_prepaid_revoked(payload, self.site, self.public_key)))

    def _revoked(self, r: codec.PrepaidRevoked) -> None:
        """Central refunded a prepayment: drop it unused, or record the conflict if an exit
        here already let the car out on it (``edge.store.prepayments.revoke``)."""
        now = self._wall()
        if r.revoked_at > now + MAX_CLOCK_SKEW:
            raise SyncMessageError("future", f"revocation of {r.payment_id!r} at "
                                             f"{r.revoked_at.isoformat()}")
        outcome = store_prepaid.revoke(self.store, store_prepaid.Revocation(
            r.payment_id, r.plate, r.amount, r.paid_at, r.revoked_at, r.expires_at), now)
        if outcome == "unknown":
            # never held here (away when it was paid, or the reconnect list, which names
            # every refund): its id is kept, so a replay of the payment is refused here too
            self.applied["prepaid_revoked_not_held"] += 1
            return
        if outcome == "mismatch":
            raise SyncMessageError("revoke_mismatch", f"revocation of {r.payment_id!r} "
                                   "names another plate, amount or time than the one held")
        if outcome == "used":
            log.warning("prepayment %s was refunded at central after this lane let the car "
                        "out on it: recorded for the desk", r.payment_id)
        self.applied[{"revoked": "prepaid_revoked", "used": "prepaid_revoked_after_use",
                      "dup": "prepaid_revoked_dup"}[outcome]] += 1

    # ---------------------------------------------------------------- rules
    def _rules(self, payload: bytes) -> None:
        if self.public_key is None:
            raise SyncMessageError("no_public_key", "sync.rules_public_key is not set")
        signed = codec.parse_rules(payload, self.public_key, self.site)
        serial, version = self.state.rules_serial()
        if signed.serial < serial or (signed.serial == serial
                                      and signed.bundle.get("version") != version):
            raise SyncMessageError("older", f"rules serial {signed.serial} <= current {serial}")
        try:
            bundle = parse_bundle(signed.bundle)
        except BundleError as exc:
            raise SyncMessageError("bad_bundle", f"serial {signed.serial}: {exc}") from None
        if self.on_rules is not None:
            self.on_rules(bundle)
        if signed.serial == serial:  # the retained copy after a restart: offer, no news
            self.applied["rules_same"] += 1
            return
        self.state.put_rules_serial(signed.serial, bundle.version)
        self.applied["rules"] += 1
        log.info("rule bundle %s (serial %d) accepted", bundle.version, signed.serial)
