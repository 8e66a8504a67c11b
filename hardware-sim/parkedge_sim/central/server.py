"""``CentralServer``: the bench central of a site, over a real MQTT broker.

It consumes every lane's ledger batches, verifies their HMAC, commits them exactly once
(``CentralDB.commit_batch``), acks what it has committed, and publishes what lanes need:
member accounts (retained, versioned), snapshots on request, signed rule bundles and the
signed roster of the site's lanes. Everything it sends down is authenticated (#12 item 5):
acks MACed with the lane's key, everything else Ed25519-signed for this site.
An entry central cannot take as it is gets recorded, flagged and acked (#12 item 2); a lane
whose backlog stops moving is reported (``stalled_lanes``).
A POS feed earns points with the same ``edge.pricing`` engine the lanes use.
One paho network thread fills a bounded queue; one worker thread does all database work.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from edge.config.secret import read_secret_file
from edge.fields import check_id, check_plate
from edge.pricing import MemberSnapshot, earn_for_purchase, parse_bundle
from edge.sync import codec, topics
from parkedge_sim.central.db import CentralDB, CommitResult

log = logging.getLogger(__name__)


class _Marks:
    """Per-lane committed seqs: contiguous watermark plus a set above it."""

    def __init__(self) -> None:
        self.upto = 0
        self.above: set[int] = set()

    def add(self, seqs: list[int]) -> None:
        for s in seqs:
            if s > self.upto:
                self.above.add(s)
        while self.upto + 1 in self.above:
            self.upto += 1
            self.above.discard(self.upto)

    def ranges(self) -> list[tuple[int, int]]:
        return codec.ranges_of(sorted(self.above))[: codec.MAX_ACK_RANGES]


class CentralServer:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 1883, site: str,
                 lane_keys: Mapping[str, bytes], db_url: str = "sqlite:///central.db",
                 signing_key: Ed25519PrivateKey | None = None, allowance: int = 100,
                 client_id: str = "central", rules_bundle: dict[str, Any] | None = None,
                 max_queue: int = 2000,
                 tls: tuple[str, str | None, str | None] | None = None,
                 username: str | None = None, password: str | None = None,
                 stall_alert_s: float = 300.0) -> None:
        self.site = site
        self.lane_keys = dict(lane_keys)
        self.db = CentralDB(db_url)
        if signing_key is None:  # lanes refuse unsigned states: sign with a key of the run
            log.warning("central: no signing key given, using a new one for this run")
            signing_key = Ed25519PrivateKey.generate()
        self.signing_key = signing_key
        self.stall_alert_s = stall_alert_s
        self._progress: dict[str, tuple[int, float]] = {}  # lane -> (acked upto, since)
        self._stalled: set[str] = set()
        # Lanes compare roster serials: a newer start publishes a higher one.
        self._roster_serial = int(time.time())
        self.allowance = allowance
        self.stats: Counter[str] = Counter()
        self.lane_status: dict[str, dict[str, Any]] = {}
        self._logged_at: dict[str, float] = {}
        self._marks: dict[str, _Marks] = {}
        for lane, seqs in self.db.lane_seqs().items():
            self._marks.setdefault(lane, _Marks()).add(seqs)
        serial, stored = self.db.last_rules()
        self._rules_serial = serial
        self._bundle: dict[str, Any] | None = rules_bundle or stored
        self._host, self._port = host, port
        self._q: queue.Queue[tuple[str, bytes]] = queue.Queue(max_queue)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()
        self.connected = threading.Event()
        self._sub_mid: int | None = None
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(100_000)
        c.reconnect_delay_set(min_delay=1, max_delay=4)
        if username:
            c.username_pw_set(username, password)
        if tls is not None:  # (ca_file, cert_file, key_file)
            if tls[2]:  # the private key follows the rule of every secret file
                read_secret_file(tls[2], key="central TLS key_file")
            c.tls_set(ca_certs=tls[0], certfile=tls[1], keyfile=tls[2])
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self._client = c

    # ---------------------------------------------------------------- paho thread
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        try:
            if rc.is_failure:
                return
            sock = client.socket()
            if isinstance(sock, socket.socket):  # no Nagle: acks are small and must not wait ~40 ms
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _rc, self._sub_mid = client.subscribe([(topics.all_ledgers(self.site), 1),
                                                   (topics.snapshot_request(self.site), 1),
                                                   (topics.all_statuses(self.site), 1)])
            client.publish(topics.lanes(self.site), self.lane_roster(), qos=1, retain=True)
        except Exception:
            log.exception("central on_connect failed")

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, _codes: Any, _p: Any) -> None:
        if mid == self._sub_mid:
            self.connected.set()  # "connected" = subscribed: nothing sent now is missed

    def _on_disconnect(self, *_a: Any) -> None:
        self.connected.clear()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._q.put_nowait((msg.topic, bytes(msg.payload)))
        except queue.Full:
            self.stats["dropped_queue_full"] += 1  # the lane resends after its timeout
        except Exception:
            log.exception("central on_message failed")

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._client.connect_async(self._host, self._port, keepalive=15)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="central", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._client.disconnect()
        self._client.loop_stop()
        self.db.close()

    def lane_roster(self) -> bytes:
        """The signed list of the site's lanes and their session-signing public keys."""
        keys = {lane: codec.public_hex_of(codec.lane_session_key(k, lane))
                for lane, k in sorted(self.lane_keys.items())}
        return codec.encode_lanes(self.site, self._roster_serial, keys, self.signing_key)

    def stalled_lanes(self) -> list[str]:
        """Lanes with entries waiting (their status says backlog > 0, or says stalled) whose
        committed watermark has not moved for ``stall_alert_s``; logged when one starts or
        stops, counted in ``stats['lanes_stalled']``."""
        now = time.monotonic()
        out = []
        for lane, st in list(self.lane_status.items()):
            upto = self._marks[lane].upto if lane in self._marks else 0
            prev = self._progress.get(lane)
            backlog = int(st.get("backlog", 0)) if st.get("state") == "online" else 0
            if prev is None or prev[0] != upto or backlog == 0:
                self._progress[lane] = (upto, now)
                prev = self._progress[lane]
            if (backlog > 0 and now - prev[1] >= self.stall_alert_s) or st.get(
                    "backlog_stalled") is True:
                out.append(lane)
        for lane in set(out) - self._stalled:
            log.error("central: lane %s backlog stalled (backlog %s, committed up to %d)",
                      lane, self.lane_status[lane].get("backlog"),
                      self._marks[lane].upto if lane in self._marks else 0)
        for lane in self._stalled - set(out):
            log.warning("central: lane %s backlog moving again", lane)
        self._stalled = set(out)
        self.stats["lanes_stalled"] = len(out)
        return sorted(out)

    def _run(self) -> None:
        checked = 0.0
        while not self._stop.is_set():
            if time.monotonic() - checked >= 1.0:
                checked = time.monotonic()
                with self._lock:
                    self.stalled_lanes()
            try:
                first = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            msgs = [first]
            while len(msgs) < 32:  # whatever else is waiting: one group commit for batches
                try:
                    msgs.append(self._q.get_nowait())
                except queue.Empty:
                    break
            try:
                with self._lock:
                    self._handle(msgs)
            except Exception:
                self.stats["internal_error"] += 1
                log.exception("central failed on a group of %d messages", len(msgs))

    def _handle(self, msgs: list[tuple[str, bytes]]) -> None:
        batches: list[codec.Batch] = []
        for topic, payload in msgs:
            if topic.endswith("/ledger"):
                try:
                    batches.append(self._parse_batch(topic, payload))
                except codec.SyncMessageError as exc:
                    self._reject(exc.reason, f"{topic}: {exc.detail}")
            else:
                self._dispatch(topic, payload)
        if not batches:
            return
        results: list[CommitResult | None]
        try:
            results = list(self.db.commit_batches(batches))
        except codec.SyncMessageError:
            results = []
            for b in batches:  # someone in the group is refused: find out who, alone
                try:
                    results.append(self.db.commit_batch(b))
                except codec.SyncMessageError as exc:
                    self._reject(exc.reason, f"{b.batch_id}: {exc.detail}")
                    results.append(None)
        self._committed([(b, r) for b, r in zip(batches, results, strict=True) if r])

    def _reject(self, reason: str, detail: str) -> None:
        """Count and log (once a minute per reason). A bad MAC or a seq/hash conflict is
        forgery or a restored lane: logged as an error (an alert), never acked."""
        self.stats[f"rejected_{reason}"] += 1
        now = time.monotonic()
        if now - self._logged_at.get(reason, -1e9) >= 60.0:
            self._logged_at[reason] = now
            level = logging.ERROR if reason in ("bad_hmac", "seq_conflict") else logging.WARNING
            log.log(level, "central refused a message (%s, %d so far): %s", reason,
                    self.stats[f"rejected_{reason}"], detail[:300])

    def _dispatch(self, topic: str, payload: bytes) -> None:
        try:
            if topic == topics.snapshot_request(self.site):
                lane, wanted, _reason = codec.parse_snapshot_request(payload)
                self._snapshot(lane, wanted)
            elif topic.endswith("/status") and payload:
                st = codec.parse_status(payload)
                if st["lane"] not in self.lane_keys or topics.lane_of(topic) != st["lane"]:
                    raise codec.SyncMessageError("unknown_lane", f"status of {st['lane']!r}")
                self.lane_status[str(st["lane"])] = st
        except codec.SyncMessageError as exc:
            self._reject(exc.reason, f"{topic}: {exc.detail}")

    # ---------------------------------------------------------------- ledger
    def _parse_batch(self, topic: str, payload: bytes) -> codec.Batch:
        b = codec.parse_batch(payload, self.lane_keys.get)
        if topics.lane_of(topic) != b.lane or b.site != self.site:
            raise codec.SyncMessageError("topic_mismatch", f"{b.lane}@{b.site} on {topic}")
        return b

    def _committed(self, done: list[tuple[codec.Batch, CommitResult]]) -> None:
        """After the commit: count and advance every lane's marks first, then ack, then
        publish the accounts that moved, so each published balance and its ``applied``
        marks describe the same committed state."""
        changed: set[str] = set()
        for b, res in done:
            self.stats["batches"] += 1
            self.stats["committed"] += res.inserted
            self.stats["duplicates"] += res.duplicates
            if res.flagged:
                self.stats["flagged"] += res.flagged
                self._reject_flagged(b)
            self._marks.setdefault(b.lane, _Marks()).add([e["seq"] for e in b.entries])
            changed.update(res.members_changed)
        for b, _res in done:
            marks = self._marks[b.lane]
            self._client.publish(topics.ack(self.site, b.lane), codec.encode_ack(
                b.lane, marks.upto, marks.ranges(), b.batch_id, self.lane_keys[b.lane]), qos=1)
        for mid in sorted(changed):
            self._publish_member(mid)

    def _reject_flagged(self, b: codec.Batch) -> None:
        now = time.monotonic()
        if now - self._logged_at.get("flagged", -1e9) >= 60.0:
            self._logged_at["flagged"] = now
            seq, why = b.flagged[0]
            log.warning("central recorded %d flagged entries of %s (first %s:%d: %s); "
                        "%d flagged so far", len(b.flagged), b.lane, b.lane, seq, why,
                        self.stats["flagged"])

    def applied(self) -> dict[str, int]:
        return {lane: m.upto for lane, m in self._marks.items()}

    # ---------------------------------------------------------------- members
    def _publish_member(self, member_id: str) -> None:
        m = self.db.member_state(member_id, self.applied(), self.allowance)
        if m is not None:
            self._client.publish(topics.member(self.site, member_id),
                                 codec.encode_member(m, self.site, self.signing_key),
                                 qos=1, retain=True)

    def _snapshot(self, lane: str, wanted: tuple[str, ...] | None) -> None:
        ids = list(wanted) if wanted is not None else self.db.member_ids()
        if wanted is None:
            # A full request (every reconnect) also gets the roster and the rule bundle, on
            # the lane's own topic: a broker may not deliver the retained copies (RabbitMQ
            # 3.10 keeps them per node; docs/brokers.md), and the lane must not depend on it.
            self._client.publish(topics.snapshot(self.site, lane), self.lane_roster(), qos=1)
            with self._lock:  # the bundle as published (signed) under that serial
                serial, bundle = self.db.last_rules()
            if serial > 0 and bundle is not None:
                self._client.publish(topics.snapshot(self.site, lane), codec.sign_rules(
                    bundle, serial, self.signing_key, self.site), qos=1)
        applied = self.applied()
        for i in range(0, max(len(ids), 1), 500):
            ms = [codec.signed_member(m, self.site, self.signing_key) for mid in ids[i:i + 500]
                  if (m := self.db.member_state(mid, applied, self.allowance)) is not None]
            self._client.publish(topics.snapshot(self.site, lane), codec.encode_snapshot(ms),
                                 qos=1)
        self.stats["snapshots"] += 1

    def add_member(self, member_id: str, *, tier: str = "member", name: str | None = None,
                   balance: int = 0, plates: tuple[str, ...] = (),
                   auto_deduct: bool = True) -> None:
        """Create or update a member; its id and plates must be what every lane accepts
        (``edge.fields``), or the lanes would refuse its state (ValueError here)."""
        check_id(member_id, "member_id")
        topics.member(self.site, member_id)  # one topic level on every broker (no ".")
        for p in plates:
            check_plate(p)
        with self._lock:
            self.db.upsert_member(member_id, tier=tier, name=name, balance=balance,
                                  plates=plates, auto_deduct=auto_deduct)
            self._publish_member(member_id)

    def settle(self, member_id: str, points: int) -> None:
        with self._lock:
            self.db.settle(member_id, points)
            self._publish_member(member_id)

    def add_reward(self, reward_id: str, kind: str, name: str, points: int,
                   value: Decimal) -> None:
        self.db.add_reward(reward_id, kind, name, points, value)

    def redeem(self, redemption_id: str, member_id: str, reward_id: str,
               when: datetime) -> str | None:
        """Redeem a catalogue reward; the new balance and any coupon go to the lanes now."""
        with self._lock:
            cid = self.db.redeem(redemption_id, member_id, reward_id, when)
            self._publish_member(member_id)
        return cid

    # ---------------------------------------------------------------- POS and rules
    def purchase(self, purchase_id: str, member_id: str, amount: Decimal, category: str,
                 when: datetime, *, brand: str | None = None) -> int:
        """A POS sale: points by the current bundle, credited and published. Idempotent."""
        if self._bundle is None:
            raise ValueError("no rule bundle: publish_rules() or rules_bundle= first")
        rules = parse_bundle(self._bundle)
        with self._lock:
            st = self.db.member_state(member_id, {}, 0)
            snap = None if st is None else MemberSnapshot(member_id, st.tier, (),
                                                          blocked=st.blocked)
            earned = earn_for_purchase(amount, category, when, snap, rules, brand=brand)
            if self.db.record_purchase(purchase_id, member_id, amount, category, when,
                                       earned.points):
                self._publish_member(member_id)
        return earned.points

    def current_rules(self) -> tuple[int, dict[str, Any] | None]:
        """The last published serial and the bundle in force at central (for editing)."""
        with self._lock:
            return self._rules_serial, self._bundle

    def publish_rules(self, bundle: dict[str, Any], serial: int | None = None) -> int:
        """Validate, sign and publish (retained) ``bundle``; returns its serial."""
        parsed = parse_bundle(bundle)
        with self._lock:
            s = serial if serial is not None else self._rules_serial + 1
            self.db.save_rules(s, parsed.version, bundle)
            self._rules_serial = s
            self._bundle = bundle
            info = self._client.publish(topics.rules(self.site),
                                        codec.sign_rules(bundle, s, self.signing_key,
                                                         self.site),
                                        qos=1, retain=True)
        info.wait_for_publish(timeout=5)
        return s
