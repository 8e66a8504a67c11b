"""``LaneSync``: one worker thread that owns the uplink and the downlink of a lane.

paho's thread only fills the inbox; this thread does all the SQLite work, in order, so the
store sees one writer from the sync. The lane itself never calls into here on its hot path
(``notify`` only sets an event): a dead network costs the lane nothing.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from edge import metrics
from edge.pricing import RuleBundle
from edge.store import Store
from edge.sync import codec, topics
from edge.sync.allowance import spend_limit
from edge.sync.downlink import Downlink
from edge.sync.link import LinkSettings, MqttLink, TlsFiles
from edge.sync.refusals import Refusals
from edge.sync.state import SyncState
from edge.sync.uplink import Uplink

log = logging.getLogger(__name__)
#: An online lane republishes its status at least this often even when nothing changed.
STATUS_HEARTBEAT_S = 60.0
#: Not a topic: where ``_answer_topic`` sends a ``prepaid_revoked`` from the snapshot topic.
REVOKED_ANSWER = "\0prepaid_revoked"
#: ... and a ``prepaid`` (a prepayment not refunded, not expired).
PREPAID_ANSWER = "\0prepaid"


class LaneSync:
    def __init__(self, store: Store, *, site: str, settings: LinkSettings, hmac_key: bytes,
                 public_key_hex: str = "", on_rules: Callable[[RuleBundle], Any] | None = None,
                 batch_max_entries: int = 200, batch_max_bytes: int = 65536, window: int = 4,
                 ack_timeout_s: float = 5.0, status_interval_s: float = 5.0,
                 stall_alert_s: float = 300.0, central_silence_s: float = 15.0,
                 wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if store.path is None:
            raise ValueError("store: LaneSync needs a file-backed Store")
        self.store, self.site, self.lane = store, site, store.lane_id
        self.state = SyncState(store.path, self.lane)
        self._wall = wallclock
        self._status_topic = topics.status(site, self.lane)
        acked = self.state.acked_seq()
        will = codec.encode_status(self.lane, "offline", max(0, self.state.last_seq() - acked),
                                   acked, wallclock())
        pk = codec.public_key_from_hex(public_key_hex) if public_key_hex else None
        self.refusals = Refusals()
        self._hmac_key = hmac_key
        self._mono = monotonic
        self.link = MqttLink(settings, [], will=(self._status_topic, will),
                             refusals=self.refusals)
        self.uplink = Uplink(store, self.state, self.link, site=site, key=hmac_key,
                             batch_max_entries=batch_max_entries,
                             batch_max_bytes=batch_max_bytes, window=window,
                             ack_timeout_s=ack_timeout_s, wallclock=wallclock)
        self.downlink = Downlink(store, self.state, self.link, site=site, public_key=pk,
                                 on_rules=on_rules, wallclock=wallclock,
                                 refusals=self.refusals)
        self.downlink.own_session_key = self.uplink.session_public_key
        self.link._subs = [topics.ack(site, self.lane), *self.downlink.subscriptions()]
        self._ack_topic = topics.ack(site, self.lane)
        self._snapshot_topic = topics.snapshot(site, self.lane)
        #: Central's answer to a full snapshot request also carries the lane roster and the
        #: rule bundle (docs/sync-protocol.md): a broker may not deliver their retained
        #: copies (RabbitMQ 3.10: per node, none through a wildcard; docs/brokers.md).
        #: And the prepayments and the revocations of the refunded ones not yet expired:
        #: a lane offline when one was published must still hear of it.
        self._answer_topics = {"lanes": topics.lanes(site), "rules": topics.rules(site),
                               "prepaid_revoked": REVOKED_ANSWER, "prepaid": PREPAID_ANSWER}
        self.status_interval_s = status_interval_s
        #: Central counts as unreachable once it owes an ack this long, whatever the lane's
        #: own MQTT link says: a site broker keeps that up through a cut.
        self.central_silence_s = central_silence_s
        self.bad_acks = 0
        #: Backlog alert: unacknowledged entries and no ack advanced for ``stall_alert_s``.
        self.stall_alert_s = stall_alert_s
        self.backlog_stalled = False
        metrics.SYNC_BACKLOG_STALLED.set(0)
        self._stall_checked_at = 0.0
        self._progress_at = monotonic()
        self._progress_seq = self.uplink.acked_seq
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_status: tuple[int, int, bool, bool] | None = None
        self._status_at = 0.0
        self._status_sent_at = 0.0

    @classmethod
    def from_config(cls, cfg: Any, store: Store, *, site: str,
                    on_rules: Callable[[RuleBundle], Any] | None = None) -> LaneSync:
        """Build from ``edge.config.models.SyncConfig`` (TLS when the URL is mqtts://)."""
        host, port, use_tls = cfg.broker
        tls = None
        if use_tls:
            if cfg.ca_file is None:
                raise ValueError("sync.ca_file: required for mqtts://")
            tls = TlsFiles(str(cfg.ca_file),
                           str(cfg.cert_file) if cfg.cert_file else None,
                           str(cfg.key_file) if cfg.key_file else None)
        settings = LinkSettings(
            host=host, port=port, client_id=cfg.client_id or store.lane_id,
            keepalive_s=cfg.keepalive_s, username=cfg.username or None,
            password=cfg.password.get() if cfg.password is not None else None, tls=tls)
        if cfg.hmac_key is None:
            raise ValueError("sync.hmac_key: required to sign ledger batches")
        pk = cfg.rules_public_key
        if pk and not pk.strip().isalnum():
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
            with open(pk, "rb") as f:
                key = serialization.load_pem_public_key(f.read())
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError(f"sync.rules_public_key: {pk} is not an Ed25519 key")
            pk = key.public_bytes(serialization.Encoding.Raw,
                                  serialization.PublicFormat.Raw).hex()
        return cls(store, site=site, settings=settings,
                   hmac_key=cfg.hmac_key.get().encode("utf-8"), public_key_hex=pk,
                   on_rules=on_rules, batch_max_entries=cfg.batch_max_entries,
                   batch_max_bytes=cfg.batch_max_bytes, window=cfg.window,
                   stall_alert_s=cfg.stall_alert_s,
                   central_silence_s=cfg.central_silence_s)

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.link.start()
        self._thread = threading.Thread(target=self._run, name=f"sync-{self.lane}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self.link.wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.link.stop(final=(self._status_topic, self._status("offline")))
        self.state.close()

    def notify(self) -> None:
        """The lane wrote entries: send soon (cheap, never blocks)."""
        self.link.wake.set()

    def spend_limit(self, member_id: str, *, overdraft: int = 0) -> int:
        """Points the lane may deduct from ``member_id`` now (offline: bounded by the
        allowance central granted this lane, see ``allowance``). 0 for an unknown account."""
        acct = self.state.account(member_id)
        if acct is None:
            return 0
        pending = self.state.pending_points(member_id, acct.applied_seq)
        return spend_limit(available=acct.central_balance + pending,
                           online=self.central_reachable(), allowance=acct.allowance,
                           overdraft=overdraft, unconfirmed_spent=-pending,
                           flagged=acct.flagged)

    def central_reachable(self) -> bool:
        """Online as far as spending goes: the link is up and central is not overdue with
        an ack (``central_silence_s``). An idle lane owes nothing and counts as online until
        its next batch goes unanswered."""
        return (self.link.connected.is_set()
                and self.uplink.central_silent_s() <= self.central_silence_s)

    def backlog(self) -> int:
        return self.uplink.backlog(self.state.last_seq())

    # ---------------------------------------------------------------- worker
    def _status(self, state: str) -> bytes:
        return codec.encode_status(self.lane, state, self.backlog(), self.uplink.acked_seq,
                                   self._wall(), self.backlog_stalled)

    def check_stall(self) -> bool:
        """Update ``backlog_stalled`` (gauge, log on each change): True while entries wait
        for central and no ack advanced for ``stall_alert_s`` (a batch central refuses for
        ever, a dead link, a central that stopped committing)."""
        backlog = self.backlog()
        now = self._mono()
        if backlog == 0 or self.uplink.acked_seq != self._progress_seq:
            self._progress_at, self._progress_seq = now, self.uplink.acked_seq
        stalled = backlog > 0 and now - self._progress_at >= self.stall_alert_s
        metrics.SYNC_BACKLOG.set(backlog)
        if stalled != self.backlog_stalled:
            self.backlog_stalled = stalled
            metrics.SYNC_BACKLOG_STALLED.set(1 if stalled else 0)
            if stalled:
                log.error("sync backlog stalled: %d entries unacknowledged, no ack for %.0f s "
                          "(last acked seq %d)", backlog, now - self._progress_at,
                          self.uplink.acked_seq)
            else:
                log.warning("sync backlog moving again (last acked seq %d)",
                            self.uplink.acked_seq)
        return stalled

    def _run(self) -> None:
        gen = 0
        while not self._stop.is_set():
            try:
                gen = self._once(gen)
            except Exception:  # a failing step must not end the sync thread
                log.exception("sync step failed; retrying")
                self.uplink.reset()
                time.sleep(0.5)

    def _once(self, gen: int) -> int:
        link = self.link
        if link.connected.is_set() and link.generation != gen:
            gen = link.generation
            self.uplink.reset()
            self.downlink.on_connect()
            self._publish_status(force=True)
        handled = 0
        acks: list[codec.Ack] = []
        while handled < 500:
            try:
                topic, payload = link.inbox.get_nowait()
            except queue.Empty:
                break
            handled += 1
            if topic == self._ack_topic:
                try:
                    ack = codec.parse_ack(payload, self._hmac_key)
                    bounded = self.uplink.bound_ack(ack, self.state.last_seq())
                    if bounded is not ack:
                        self.refusals("ack_beyond_sent", f"ack up to {ack.upto} "
                                      f"{list(ack.ranges)[:3]}, sent up to "
                                      f"{self.uplink.sent_max}: cut back")
                    acks.append(bounded)
                except codec.SyncMessageError as exc:
                    self.bad_acks += 1
                    self.refusals(exc.reason, f"{topic}: {exc.detail}")
            elif topic == self._snapshot_topic:
                target = self._answer_topic(payload)
                if target == REVOKED_ANSWER:
                    self.downlink.revoked_answer(payload)
                elif target == PREPAID_ANSWER:
                    self.downlink.prepaid_answer(payload)
                else:
                    self.downlink.handle(target, payload)
            else:
                self.downlink.handle(topic, payload)
        if acks:
            self.uplink.on_acks(acks)
        announced = self.uplink.announce()  # before the batch: the site's lanes first
        sent = self.uplink.step() or announced
        if self._mono() - self._stall_checked_at >= 1.0:  # it reads the ledger: once a second
            self._stall_checked_at = self._mono()
            self.check_stall()
        self._publish_status(force=False)
        if not sent and handled == 0:
            link.wake.wait(0.2)
            link.wake.clear()
        return gen

    def _answer_topic(self, payload: bytes) -> str:
        """The topic whose handler takes this message from the lane's ``snapshot`` topic:
        a ``lanes`` or ``rules`` message goes through the very checks of its retained copy
        (signature, site, serial); anything else is a snapshot."""
        if len(payload) <= codec.MAX_MESSAGE_BYTES:
            try:
                kind = json.loads(payload).get("type")
            except Exception:  # not JSON, not an object, too deep: the snapshot check says
                kind = None
            if isinstance(kind, str) and kind in self._answer_topics:
                return self._answer_topics[kind]
        return self._snapshot_topic

    def _publish_status(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._status_at < self.status_interval_s:
            return
        reachable = self.central_reachable()
        key = (self.uplink.acked_seq, self.state.last_seq(), self.backlog_stalled, reachable)
        # Unchanged, it is still sent every STATUS_HEARTBEAT_S: a central that subscribed
        # later may not get the retained copy (RabbitMQ 3.10: none through a wildcard).
        stale = now - self._status_sent_at >= STATUS_HEARTBEAT_S
        if (force or stale or key != self._last_status) and self.link.publish(
                self._status_topic, self._status("online" if reachable else "offline"),
                retain=True):
            self._last_status = key
            self._status_sent_at = now
        self._status_at = now
