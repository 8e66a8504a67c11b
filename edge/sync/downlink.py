"""What comes down (or across) to a lane: accounts, bindings, other lanes' sessions, rules.

Every message is validated by ``codec`` first and applied idempotently: a member version not
newer than the cached one is ignored, a session event is keyed by its event id, a rule bundle
by its serial. A bad message is counted by reason, logged once per reason, and dropped; the
lane keeps what it had.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge import metrics
from edge.pricing import BundleError, RuleBundle, parse_bundle
from edge.store import Store, StoreError
from edge.store.codec import ts
from edge.sync import codec, topics
from edge.sync.codec import SyncMessageError
from edge.sync.link import MqttLink
from edge.sync.state import CachedAccount, SyncState

log = logging.getLogger(__name__)
CENTRAL_LOT = "central"


class Downlink:
    def __init__(self, store: Store, state: SyncState, link: MqttLink, *, site: str,
                 public_key: Ed25519PublicKey | None,
                 on_rules: Callable[[RuleBundle], Any] | None = None,
                 wallclock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store, self.state, self.link, self.site = store, state, link, site
        self.lane = store.lane_id
        self.public_key = public_key
        self.on_rules = on_rules
        self._wall = wallclock
        self.rejected: Counter[str] = Counter()
        self.applied: Counter[str] = Counter()
        self._logged: set[str] = set()
        self._t_rules = topics.rules(site)
        self._t_snapshot = topics.snapshot(site, self.lane)
        self._p_members = topics.members_all(site)[:-1]
        self._p_sessions = topics.sessions_all(site)[:-1]

    def subscriptions(self) -> list[str]:
        return [self._t_rules, self._t_snapshot, topics.members_all(self.site),
                topics.sessions_all(self.site)]

    def on_connect(self) -> None:
        """After every (re)connect: deltas may have been missed, ask for everything."""
        self.link.publish(topics.snapshot_request(self.site),
                          codec.encode_snapshot_request(self.lane, None, "reconnect"))

    def _reject(self, reason: str, detail: str) -> None:
        self.rejected[reason] += 1
        metrics.BAD_INPUT.labels(source="sync").inc()
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning("sync message dropped (%s): %s", reason, detail)
        else:
            log.debug("sync message dropped (%s): %s", reason, detail)

    def handle(self, topic: str, payload: bytes) -> None:
        """Apply one inbound message; never raises."""
        try:
            if topic == self._t_rules:
                self._rules(payload)
            elif topic == self._t_snapshot:
                for m in codec.parse_snapshot(payload):
                    self._member(m, from_snapshot=True)
            elif topic.startswith(self._p_members):
                m = codec.parse_member(payload)
                if topic != topics.member(self.site, m.member_id):
                    raise SyncMessageError("schema", f"member {m.member_id!r} on {topic}")
                self._member(m, from_snapshot=False)
            elif topic.startswith(self._p_sessions):
                self._session(codec.parse_session(payload))
            else:
                self._reject("unknown_topic", topic)
        except SyncMessageError as exc:
            self._reject(exc.reason, f"{topic}: {exc.detail}")
        except StoreError as exc:
            self._reject("store_refused", f"{topic}: {exc}")
        except Exception as exc:  # the daemon outlives any message
            log.exception("unexpected failure handling %s", topic)
            self._reject("internal", f"{topic}: {exc!r}")

    # ---------------------------------------------------------------- accounts
    def _member(self, m: codec.MemberState, *, from_snapshot: bool) -> None:
        cached = self.state.account(m.member_id)
        if cached is not None and m.version <= cached.version:
            self.applied["member_stale"] += 1
            return
        gap = (not from_snapshot and cached is not None and m.prev_version != cached.version)
        applied_seq = int(m.applied.get(self.lane, 0))
        self.store.upsert_member(m.member_id, tier=m.tier, name=m.name, version=m.version,
                                 auto_deduct=m.auto_deduct, blocked=m.blocked or m.flagged)
        available = m.balance + self.state.pending_points(m.member_id, applied_seq)
        self.store.set_lots(m.member_id, [(CENTRAL_LOT, max(0, available), None, None)])
        for plate in m.plates:
            self.store.bind_plate(plate, m.member_id, m.version)
        for plate in set(self.state.plates_of(m.member_id)) - set(m.plates):
            self.store.unbind_plate(plate)  # central removed the binding
        for cp in m.coupons:
            try:
                self.store.add_coupon(m.member_id, cp.coupon_id, cp.kind, cp.value,
                                      cp.valid_until)
            except StoreError:  # already used here: central learns it from our ledger
                self.applied["coupon_already_used"] += 1
        self.state.put_account(CachedAccount(m.member_id, m.version, m.balance, applied_seq,
                                             m.allowance, m.flagged))
        self.applied["member"] += 1
        if gap:
            self.applied["member_gap"] += 1
            self.link.publish(topics.snapshot_request(self.site),
                              codec.encode_snapshot_request(self.lane, [m.member_id], "gap"))

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

    # ---------------------------------------------------------------- rules
    def _rules(self, payload: bytes) -> None:
        if self.public_key is None:
            raise SyncMessageError("no_public_key", "sync.rules_public_key is not set")
        signed = codec.parse_rules(payload, self.public_key)
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
