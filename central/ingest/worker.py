"""An ingest worker: one MQTT connection, one database thread.

Every worker takes lane batches from the shared subscription
``$share/<group>/parkedge/<site>/lane/+/ledger`` (the broker hands each message to one of
them), verifies the lane's HMAC, group-commits (``Committer``) and acks from the committed
watermark read back from the database (true whichever worker committed the rest). Snapshot
requests come through a shared subscription too; lane statuses (retained) reach every
worker and are upserted into ``lane_status``.

One worker at a time is the **leader** (a PostgreSQL advisory lock held by its session, a
file lock next to a SQLite file): it publishes the signed roster and rule bundle (retained)
when it becomes leader and at every reconnect, every member state whose version moved (from
any source: lane entries, POS, redemptions, staff), in one ordered stream, and drains
``downlink_outbox``. A leader killed with SIGKILL loses its lock with its connection; the
next worker to poll takes over. Nothing a peer sends can raise out of a callback.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Connection, Engine, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from central import metrics
from central.config import CentralConfig, SecretError
from central.db.models import DownlinkOutbox, Lane, LaneStatus
from central.ingest import answer, state
from central.ingest.commit import CommitResult, Committer
from central.services import refunds
from central.services.campaign_publish import lock, site_bundle
from edge.pricing import RuleBundle
from edge.secret_files import secret_file_problem
from edge.sync import codec, topics

log = logging.getLogger(__name__)

#: PostgreSQL advisory lock key of the ingest leader ("parkedge" in ASCII, truncated).
LEADER_LOCK = 0x7061726B65646765 & 0x7FFFFFFFFFFFFFFF
#: A lane status equal to the last one the leader wrote (state, backlog, acked seq, stall
#: flag) is written again only after this long: ``last_seen_at`` stays well inside the
#: pages' 180 s (``central.services.ops.STATUS_STALE_S``).
STATUS_REWRITE_S = 30.0
#: The leader writes the lane statuses that came in at most this often, the newest of each
#: lane, all in one statement (and on stop): in a storm every lane's backlog moves with each
#: status, and a transaction per status was the leader's biggest cost after the batches.
STATUS_FLUSH_S = 1.0
#: The leader's stall check, at most this often (or every ``stall_alert_s`` if shorter).
STALL_CHECK_S = 10.0


def _nodelay(client: mqtt.Client) -> None:
    """No Nagle: a small ack behind another small packet waits ~40 ms otherwise."""
    try:
        sock = client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        log.debug("TCP_NODELAY not set", exc_info=True)


@dataclass
class Deps:
    """What a worker needs from the composition root (central.app builds it)."""

    cfg: CentralConfig
    engine: Engine
    sessions: sessionmaker[Session]
    rules: RuleBundle
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @contextlib.contextmanager
    def tx(self) -> Iterator[Session]:
        with self.sessions.begin() as s:
            yield s


class IngestWorker:
    """``start()`` / ``stop()``; ``run()`` blocks until ``stop()`` (the CLI's way)."""

    def __init__(self, central: Deps, *, client_id: str | None = None,
                 max_queue: int = 2000) -> None:
        cfg = central.cfg
        self.central = central
        self.site = cfg.site.site_id
        self.icfg = cfg.ingest
        if self.icfg.signing_key is None:
            raise ValueError("ingest.signing_key: required to sign what goes to the lanes")
        self.signing_key = state.load_signing_key(self.icfg.signing_key.get())
        self.lane_keys: dict[str, bytes] = {
            lane.id: self.icfg.lane_key(lane).get().encode("utf-8") for lane in self.icfg.lanes}
        self.committer = Committer(central.engine, central.sessions, central.rules,
                                   central.clock)
        # the roster and rules of a full snapshot answer, signed once per change
        self.answers = answer.Answers(self.site, self.lane_keys, self.signing_key,
                                      cfg.rules.bundle)
        self.stats: Counter[str] = Counter()
        self.marks: dict[str, state.Marks] = {}
        self._logged_at: dict[str, float] = {}
        self._q: queue.Queue[tuple[str, bytes]] = queue.Queue(max_queue)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()  # connected and subscribed
        self._sub_mid: int | None = None
        self._reconnected = threading.Event()
        self.is_leader = False
        self._leader_conn: Connection | None = None
        self._leader_file: IO[str] | None = None
        self._stalls_checked = 0.0
        self._stalled: set[str] = set()
        self._progress: dict[str, tuple[int, float]] = {}
        self._statuses: dict[str, dict[str, Any]] = {}  # each lane's newest status
        self._status_written: dict[str, tuple[tuple[Any, ...], float]] = {}
        self._status_dirty: set[str] = set()  # lanes whose newest status is not written
        self._status_flushed = -1e9  # monotonic time of the last flush
        mq = cfg.mqtt
        cid = client_id or mq.client_id or f"central-{socket.gethostname()}-{os.getpid()}"
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid[:64], clean_session=True)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(100_000)
        c.reconnect_delay_set(min_delay=1, max_delay=4)
        if mq.username:
            c.username_pw_set(mq.username, mq.password.get() if mq.password else None)
        if mq.key_file is not None:  # the TLS private key: the rule of every secret file
            problem = secret_file_problem(mq.key_file)
            if problem:
                raise SecretError(f"mqtt.key_file: {problem}")
        if mq.ca_file is not None:
            c.tls_set(ca_certs=str(mq.ca_file),
                      certfile=None if mq.cert_file is None else str(mq.cert_file),
                      keyfile=None if mq.key_file is None else str(mq.key_file),
                      cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self._client = c

    # ---------------------------------------------------------------- paho thread
    def subscriptions(self) -> list[str]:
        g = self.icfg.share_group
        share = f"$share/{g}/" if g else ""  # "": one worker, any broker
        return [f"{share}{topics.all_ledgers(self.site)}",
                f"{share}{topics.snapshot_request(self.site)}",
                topics.all_statuses(self.site)]  # every worker: the next leader has them

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        try:
            if rc.is_failure:
                log.warning("ingest: MQTT connect refused: %s", rc)
                return
            _nodelay(client)
            _rc, self._sub_mid = client.subscribe([(t, 1) for t in self.subscriptions()])
            self._reconnected.set()
            self._wake.set()
        except Exception:
            log.exception("ingest on_connect failed")

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, codes: Any, _p: Any) -> None:
        try:
            if mid == self._sub_mid:
                if any(getattr(rc, "is_failure", False) for rc in codes):
                    log.error("ingest: subscription refused (ACL?): %s", codes)
                self.connected.set()
        except Exception:
            log.exception("ingest on_subscribe failed")

    def _on_disconnect(self, *_a: Any) -> None:
        self.connected.clear()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            if len(msg.payload) > codec.MAX_MESSAGE_BYTES:
                self._refuse("too_large", f"{msg.topic[:120]}: {len(msg.payload)} bytes")
                return
            self._q.put_nowait((msg.topic, bytes(msg.payload)))
        except queue.Full:
            self._refuse("queue_full", msg.topic[:120])  # the lane resends after its timeout
        except Exception:
            log.exception("ingest on_message failed")

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._upsert_lanes()
        host, port = self.central.cfg.mqtt.host_port
        self._client.connect_async(host, port, keepalive=self.central.cfg.mqtt.keepalive_s)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()

    def run(self) -> None:
        self.start()
        log.info("ingest: worker started (%d lanes, site %s)", len(self.lane_keys), self.site)
        try:
            while not self._stop.is_set():
                self._stop.wait(1.0)
        finally:
            self.stop()

    def request_stop(self) -> None:
        """Make ``run()`` return (safe from a signal handler)."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        log.info("ingest: stopping; committed %d entries in %d batches (%d duplicates)",
                 self.stats["committed"], self.stats["batches"], self.stats["duplicates"])
        if self.is_leader:
            try:  # the statuses still coalescing: the last of each lane is written
                self._flush_statuses(force=True)
            except Exception:
                log.exception("ingest: writing the lane statuses on stop failed")
        self._client.disconnect()
        self._client.loop_stop()
        self._release_leader()

    # ---------------------------------------------------------------- worker thread
    def _run(self) -> None:
        last_tick = last_wake = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            full = now - last_tick >= self.icfg.publish_interval_s
            # a commit wakes the member publisher, at most every 0.1 s (the states of a
            # busy member coalesce; the lanes need the newest, not each one)
            woken = self._wake.is_set() and now - last_wake >= 0.1
            if full or woken:
                self._wake.clear()
                last_wake = now
                if full:
                    last_tick = now
                try:
                    self._tick(full=full)
                except Exception:
                    self.stats["internal_error"] += 1
                    log.exception("ingest: periodic work failed")
            if self._status_dirty:
                try:
                    self._flush_statuses()
                except Exception:
                    self.stats["internal_error"] += 1
                    log.exception("ingest: writing the lane statuses failed")
            try:
                first = self._q.get(timeout=0.05)
            except queue.Empty:
                continue
            msgs = [first]
            while len(msgs) < self.icfg.group_max:
                try:
                    msgs.append(self._q.get_nowait())
                except queue.Empty:
                    break
            try:
                self._handle(msgs)
            except Exception:
                # nothing acked: the lanes resend, a later group commits it
                self.stats["internal_error"] += 1
                log.exception("ingest failed on a group of %d messages", len(msgs))

    def _handle(self, msgs: list[tuple[str, bytes]]) -> None:
        batches: list[codec.Batch] = []
        for topic, payload in msgs:
            if topic.endswith("/ledger"):
                try:
                    batches.append(self._parse_batch(topic, payload))
                except codec.SyncMessageError as exc:
                    self._refuse(exc.reason, f"{topic}: {exc.detail}")
            else:
                self._dispatch(topic, payload)
        if not batches:
            return
        out = self.committer.commit(batches)
        metrics.INGEST_GROUPS.labels(out.path).inc()
        if out.retries:
            metrics.INGEST_RETRIES.inc(out.retries)
        done: list[tuple[codec.Batch, CommitResult]] = []
        for b, r in zip(batches, out.results, strict=True):
            if isinstance(r, codec.SyncMessageError):
                self._refuse(r.reason, f"{b.batch_id}: {r.detail}")
            else:
                done.append((b, r))
        self._committed(done)

    def _parse_batch(self, topic: str, payload: bytes) -> codec.Batch:
        b = codec.parse_batch(payload, self.lane_keys.get)
        if topics.lane_of(topic) != b.lane or b.site != self.site:
            raise codec.SyncMessageError("topic_mismatch", f"{b.lane}@{b.site} on {topic}")
        return b

    def _committed(self, done: list[tuple[codec.Batch, CommitResult]]) -> None:
        """Count, read every touched lane's watermark back from the database, ack."""
        for b, r in done:
            self.stats["batches"] += 1
            self.stats["committed"] += r.inserted
            self.stats["duplicates"] += r.duplicates
            metrics.INGEST_BATCHES.inc()
            if r.inserted:
                metrics.INGEST_ENTRIES.labels(b.lane).inc(r.inserted)
            if r.duplicates:
                metrics.INGEST_DUPLICATES.inc(r.duplicates)
            if r.flagged:
                self.stats["flagged"] += r.flagged
                metrics.INGEST_FLAGGED.inc(r.flagged)
                self._log_once("flagged", logging.WARNING, f"recorded {r.flagged} flagged "
                               f"entries of {b.lane} (first {b.flagged[0]})")
            if r.lag_s is not None:
                metrics.INGEST_LAG.labels(b.lane).set(r.lag_s)
                metrics.INGEST_LAG_HIST.observe(r.lag_s)
        lanes = {b.lane for b, _r in done}
        for attempt in range(2):
            try:
                with self.central.engine.connect() as c:  # one query for the group's lanes
                    state.refresh_marks(c, self.marks, lanes)
                break
            except DBAPIError as exc:
                # the connection died since the commit (a PostgreSQL restart): the group
                # is committed, so read again on a new one rather than leave it unacked
                if attempt or not exc.connection_invalidated:
                    raise
        for b, _r in done:
            m = self.marks[b.lane]
            self._client.publish(topics.ack(self.site, b.lane), codec.encode_ack(
                b.lane, m.upto, m.ranges, b.batch_id, self.lane_keys[b.lane]), qos=1)
        if self.is_leader and any(r.members_changed for _b, r in done):
            self._wake.set()  # publish the member states that moved soon

    def _dispatch(self, topic: str, payload: bytes) -> None:
        try:
            if topic == topics.snapshot_request(self.site):
                lane, wanted, _reason = codec.parse_snapshot_request(payload)
                if lane not in self.lane_keys:
                    raise codec.SyncMessageError("unknown_lane", f"snapshot for {lane!r}")
                self._snapshot(lane, wanted)
            elif topic.endswith("/status"):
                if not payload:
                    return  # a retained status cleared
                st = codec.parse_status(payload)
                if st["lane"] not in self.lane_keys or topics.lane_of(topic) != st["lane"]:
                    raise codec.SyncMessageError("unknown_lane", f"status of {st['lane']!r}")
                self._record_status(st)
        except codec.SyncMessageError as exc:
            self._refuse(exc.reason, f"{topic}: {exc.detail}")

    def _refuse(self, reason: str, detail: str) -> None:
        """Count and log (at most once a minute per reason). A bad MAC or a seq/hash
        conflict is forgery or a restored lane: an error (an alert), never acked."""
        self.stats[f"rejected_{reason}"] += 1
        metrics.INGEST_REFUSED.labels(reason).inc()
        level = logging.ERROR if reason in ("bad_hmac", "seq_conflict") else logging.WARNING
        self._log_once(reason, level, f"refused ({reason}, {self.stats[f'rejected_{reason}']} "
                                      f"so far): {detail[:300]}")

    def _log_once(self, key: str, level: int, msg: str) -> None:
        now = time.monotonic()
        if now - self._logged_at.get(key, -1e9) >= 60.0:
            self._logged_at[key] = now
            log.log(level, "ingest: %s", msg)

    # ---------------------------------------------------------------- lanes
    def _upsert_lanes(self) -> None:
        """The configured lanes in ``lanes`` (the pages list them); a lane no longer in the
        config is disabled, not deleted (its entries stay); one staff disabled
        (``disabled_by``) is not re-enabled. Workers starting together may
        race on the first insert: the loser finds the rows and updates them."""
        for attempt in range(3):
            try:
                self._upsert_lanes_once()
                return
            except IntegrityError:
                if attempt == 2:
                    raise
                time.sleep(0.1)

    def _upsert_lanes_once(self) -> None:
        now = self.central.clock()
        with self.central.tx() as s:
            have = {r.lane_id: r for r in s.scalars(select(Lane).where(
                Lane.site_id == self.site))}
            for lane in self.icfg.lanes:
                row = have.pop(lane.id, None)
                if row is None:
                    s.add(Lane(site_id=self.site, lane_id=lane.id, name=lane.name,
                               kind=lane.kind, enabled=True, created_at=now))
                else:  # a lane staff disabled stays disabled (until staff enable it)
                    row.name, row.kind = lane.name, lane.kind
                    row.enabled = row.disabled_by is None
            for row in have.values():
                row.enabled = False

    def _record_status(self, st: dict[str, Any]) -> None:
        """Keep the lane's newest status; the leader alone writes ``lane_status``, and only
        what changed (or every ``STATUS_REWRITE_S``): a lane repeats an unchanged status
        every 5-60 s, and every worker writing each one, a transaction each, was 14 % of
        the ingest thread at 200 lanes (docs/scale.md). One writer also keeps the stall
        flag the leader's: a non-leader knows no stalls and would clear it. What changed is
        written by ``_flush_statuses``, at most every ``STATUS_FLUSH_S``: a lane's statuses
        in between coalesce to its newest."""
        lane = str(st["lane"])
        self._statuses[lane] = st
        if not self.is_leader:
            return
        if lane not in self._status_dirty and self._unchanged(lane, st, time.monotonic()):
            self.stats["status_unchanged"] += 1
            return
        if lane in self._status_dirty:
            self.stats["status_coalesced"] += 1
        self._status_dirty.add(lane)

    def _status_key(self, lane: str, st: dict[str, Any]) -> tuple[Any, ...]:
        return (st["state"], int(st["backlog"]), int(st["last_acked_seq"]),
                bool(st.get("backlog_stalled", False)) or lane in self._stalled)

    def _unchanged(self, lane: str, st: dict[str, Any], now_m: float) -> bool:
        seen = self._status_written.get(lane)
        return (seen is not None and seen[0] == self._status_key(lane, st)
                and now_m - seen[1] < STATUS_REWRITE_S)

    def _flush_statuses(self, *, force: bool = False) -> int:
        """Write the newest status of every lane that sent one since the last flush (and
        changed), in one statement, if ``STATUS_FLUSH_S`` has passed since the last flush
        (``force``: now). Returns how many rows were written."""
        now_m = time.monotonic()
        if not self._status_dirty or (not force
                                      and now_m - self._status_flushed < STATUS_FLUSH_S):
            return 0
        self._status_flushed = now_m
        lanes, self._status_dirty = sorted(self._status_dirty), set()
        todo = [(lane, self._statuses[lane]) for lane in lanes
                if not self._unchanged(lane, self._statuses[lane], now_m)]
        self.stats["status_unchanged"] += len(lanes) - len(todo)
        if not todo:
            return 0
        try:
            self._upsert_statuses([st for _lane, st in todo])
        except Exception:
            self._status_dirty.update(lanes)  # written at the next flush
            raise
        for lane, st in todo:
            self._status_written[lane] = (self._status_key(lane, st), now_m)
        self.stats["status_written"] += len(todo)
        self.stats["status_flushes"] += 1
        return len(todo)

    def _upsert_statuses(self, sts: list[dict[str, Any]]) -> None:
        """One ``INSERT ... ON CONFLICT DO UPDATE`` for the lanes of ``sts`` (in lane
        order): a former leader still finishing its own write is no error."""
        now = self.central.clock()
        rows = [{"site_id": self.site, "lane_id": str(st["lane"]), "state": str(st["state"]),
                 "backlog": int(st["backlog"]), "last_acked_seq": int(st["last_acked_seq"]),
                 "last_seen_at": now, "updated_at": now,
                 "stalled": bool(st.get("backlog_stalled", False))
                 or str(st["lane"]) in self._stalled} for st in sts]
        dialect = self.central.engine.dialect.name
        ins = (pg_insert(LaneStatus) if dialect == "postgresql"
               else sqlite_insert(LaneStatus))
        stmt = ins.values(rows)
        stmt = stmt.on_conflict_do_update(
            index_elements=[LaneStatus.site_id, LaneStatus.lane_id],
            set_={c: stmt.excluded[c] for c in ("state", "backlog", "last_acked_seq",
                                                 "last_seen_at", "updated_at", "stalled")})
        with self.central.tx() as s:
            s.execute(stmt)

    def _check_stalls(self) -> None:
        """Lanes with a backlog (as their status says) whose committed watermark has not
        moved for ``stall_alert_s``, or that say they are stalled: logged, counted, and
        ``lane_status.stalled`` set."""
        self._flush_statuses(force=True)  # the statuses as the lanes said them last
        now_m = time.monotonic()
        with self.central.engine.connect() as c:
            rows = c.execute(select(LaneStatus.lane_id, LaneStatus.state, LaneStatus.backlog,
                                    LaneStatus.stalled).where(
                LaneStatus.site_id == self.site)).all()
            state.refresh_marks(c, self.marks, [str(r[0]) for r in rows])
            stalled = set()
            for lane, st, backlog, flag in rows:
                # what the lane says now (every worker gets every status), not the column,
                # which holds this check's own verdict too: read back, it kept a lane
                # stalled for ever once it had been
                said = (bool(self._statuses[lane].get("backlog_stalled", False))
                        if lane in self._statuses else bool(flag))
                upto = self.marks[lane].upto
                prev = self._progress.get(lane)
                waiting = int(backlog) if st == "online" else 0
                if prev is None or prev[0] != upto or waiting == 0:
                    self._progress[lane] = prev = (upto, now_m)
                if (waiting > 0 and now_m - prev[1] >= self.icfg.stall_alert_s) or said:
                    stalled.add(lane)
        for lane in stalled - self._stalled:
            log.error("ingest: lane %s backlog stalled (committed up to %d)", lane,
                      self.marks[lane].upto)
        for lane in self._stalled - stalled:
            log.warning("ingest: lane %s backlog moving again", lane)
        if stalled != self._stalled:
            with self.central.tx() as s:
                s.execute(update(LaneStatus).where(LaneStatus.site_id == self.site)
                          .values(stalled=LaneStatus.lane_id.in_(sorted(stalled))))
        self._stalled = stalled
        metrics.INGEST_STALLED.set(len(stalled))

    # ---------------------------------------------------------------- leader work
    def _tick(self, *, full: bool = True) -> None:
        """Leader work. ``full=False`` (woken by a commit): member states only."""
        if not self.connected.is_set():
            return
        if full:
            was = self.is_leader
            self._try_leader()
            if self.is_leader and not was:
                self._status_written.clear()  # another leader may have written since
                self._status_dirty.update(self._statuses)
                self._flush_statuses(force=True)
            if self.is_leader and (not was or self._reconnected.is_set()):
                self._reconnected.clear()
                self._publish_roster_and_rules()
        if not self.is_leader:
            return
        self._publish_members()
        if full:
            self._drain_outbox()
            every = min(STALL_CHECK_S, self.icfg.stall_alert_s)
            if time.monotonic() - self._stalls_checked >= every:
                self._stalls_checked = time.monotonic()
                self._check_stalls()
            metrics.JOB_RUNS.labels("ingest_publish").inc()

    def _try_leader(self) -> None:
        if self.is_leader:
            if self._leader_conn is not None:
                try:  # the lock lives as long as this session: make sure it still does
                    self._leader_conn.execute(text("SELECT 1"))
                    self._leader_conn.commit()  # never left idle in a transaction
                except Exception:
                    log.warning("ingest: lost the leader's database session")
                    self._release_leader()
            return
        if self.central.engine.dialect.name == "postgresql":
            c = self.central.engine.connect()
            got = bool(c.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                 {"k": LEADER_LOCK}).scalar())
            c.commit()
            if not got:
                c.close()
                return
            self._leader_conn = c
        else:
            db = make_url(str(self.central.engine.url)).database or "central.db"
            f = Path(f"{db}.ingest-leader").open("a")  # noqa: SIM115 - held while leader
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                return
            self._leader_file = f
        self.is_leader = True
        metrics.INGEST_LEADER.set(1)
        log.info("ingest: this worker is the leader (member states, outbox, roster, rules)")

    def _release_leader(self) -> None:
        self._status_dirty.clear()  # the next leader writes them (it has them too)
        if self._leader_conn is not None:
            with contextlib.suppress(Exception):
                self._leader_conn.close()
            self._leader_conn = None
        if self._leader_file is not None:
            self._leader_file.close()
            self._leader_file = None
        self.is_leader = False
        metrics.INGEST_LEADER.set(0)

    def _publish_roster_and_rules(self) -> None:
        bundle, serial, roster_serial = self._site_rules()
        self._client.publish(topics.lanes(self.site), state.roster(
            self.site, self.lane_keys, roster_serial, self.signing_key),
            qos=1, retain=True)
        self._client.publish(topics.rules(self.site), codec.sign_rules(
            bundle, serial, self.signing_key, self.site), qos=1, retain=True)
        metrics.INGEST_PUBLISHED.labels("roster").inc()
        metrics.INGEST_PUBLISHED.labels("rules").inc()

    def _site_rules(self) -> tuple[dict[str, Any], int, int]:
        """The site's bundle (the configured one plus the published campaigns), its serial,
        and the lane roster's serial: both from the database, so every worker sends the
        same message under the same serial."""
        bundle, serial, roster, _source = self._site_rules_sourced()
        return bundle, serial, roster

    def _site_rules_sourced(self) -> tuple[dict[str, Any], int, int, answer.SourceKey]:
        """``_site_rules`` and what the bundle was built from (``answer.source_key``, read
        under the same lock)."""
        path = self.answers.path  # the configured bundle file
        for attempt in range(3):
            try:
                with self.central.tx() as s:
                    lock(s)  # a publish at this moment: its serial, then this one (or reverse)
                    source = answer.source_key(s, self.site, path)
                    bundle = site_bundle(s, self.site, state.bundle_json(path))
                    now = self.central.clock()
                    serial = state.rules_serial(s, bundle, now)
                    roster = state.roster_serial(s, self.site, self.lane_keys, now)
                return bundle, serial, roster, source
            except IntegrityError:  # another worker recorded the same first serial
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def applied(self, fresh: Iterable[str] | None = None,
                c: Connection | None = None) -> dict[str, int]:
        """Every lane's committed watermark: those of ``fresh`` (default: every lane) read
        from the database now (on ``c`` if given), in one query per 200 lanes; the others
        as last read."""
        if c is not None:
            state.refresh_marks(c, self.marks, self.lane_keys if fresh is None else fresh)
        else:
            with self.central.engine.connect() as conn:
                state.refresh_marks(conn, self.marks,
                                    self.lane_keys if fresh is None else fresh)
        return {lane: self.marks.setdefault(lane, state.Marks()).upto
                for lane in self.lane_keys}

    def _publish_members(self) -> int:
        """Every member whose version moved, signed, retained, in one ordered stream."""
        n = 0
        for _round in range(4):  # at most 2,000 a tick: batches wait behind this thread
            with self.central.tx() as s:
                todo = state.members_to_publish(s)
            if not todo:
                return n
            applied = self.applied()  # before the states: see member_state
            now = self.central.clock()
            with self.central.tx() as s:
                for mid, prev in todo:
                    m = state.member_state(s, mid, applied, self.icfg.allowance, prev)
                    if m is None:
                        continue
                    self._client.publish(topics.member(self.site, mid), codec.encode_member(
                        m, self.site, self.signing_key), qos=1, retain=True)
                    state.mark_published(s, mid, m.version, now)
                    n += 1
            metrics.INGEST_PUBLISHED.labels("member").inc(len(todo))
            if len(todo) < 500:
                return n
        self._wake.set()  # more to publish: go on at the next wake
        return n

    def _drain_outbox(self) -> int:
        """Publish what services queued, in id order, and mark it (at least once: a crash
        between the two publishes it again; every message to the lanes is idempotent)."""
        n = 0
        while True:
            with self.central.tx() as s:
                rows = list(s.scalars(select(DownlinkOutbox).where(
                    DownlinkOutbox.published_at.is_(None), DownlinkOutbox.site_id == self.site)
                    .order_by(DownlinkOutbox.id).limit(200)))
                if not rows:
                    return n
                infos = [self._client.publish(f"{topics.ROOT}/{self.site}/{r.topic}",
                                              r.payload.encode("utf-8"), qos=1,
                                              retain=r.retain) for r in rows]
                now = self.central.clock()
                sent = 0
                for r, info in zip(rows, infos, strict=True):
                    with contextlib.suppress(ValueError, RuntimeError):
                        info.wait_for_publish(timeout=5)
                    if not info.is_published():
                        break  # not connected: the rest waits for the next round, in order
                    r.published_at = now
                    sent += 1
                n += sent
            metrics.INGEST_PUBLISHED.labels("outbox").inc(sent)
            if sent < len(rows):
                return n

    def _snapshot(self, lane: str, wanted: tuple[str, ...] | None) -> None:
        to = topics.snapshot(self.site, lane)
        built: answer.Fixed | None = None
        while True:
            # One transaction for the whole answer (each one was a pool checkout and its
            # ping), except when the common part must be built the locked way first.
            with self.central.tx() as s:
                fixed = None
                now = self.central.clock()
                self.answers.revoked_version = None
                if wanted is None:
                    # A full request (every reconnect) also gets the roster and the rule
                    # bundle on the lane's own topic: a broker may not deliver the retained
                    # copies (RabbitMQ 3.10 keeps them per node; docs/brokers.md), and the
                    # lane must not depend on it. Signed once per change (answer.py).
                    fixed = built or self.answers.lookup(s, now)
                if wanted is not None or fixed is not None:
                    self._answer(s, to, lane, wanted, fixed, now,
                                 None if built else self.answers.revoked_version)
                    break
            bundle, serial, roster_serial, source = self._site_rules_sourced()
            built = self.answers.store(source, bundle, serial, roster_serial)
        self.stats["snapshots"] += 1
        metrics.INGEST_PUBLISHED.labels("snapshot").inc()

    def _answer(self, s: Session, to: str, lane: str, wanted: tuple[str, ...] | None,
                fixed: answer.Fixed | None, now: datetime,
                revoked_version: refunds.Version | None = None) -> None:
        """Publish a snapshot answer in ``s``: the common part if given, the revocations
        with it (``revoked_version``: their version as read in ``s`` at ``now``), then the
        member states, 500 a message."""
        if fixed is not None:
            self._client.publish(to, fixed.roster, qos=1)
            self._client.publish(to, fixed.rules, qos=1)
            # The revocations of refunded prepayments not yet expired: one published while
            # the lane was away is not retained (central/services/refunds.py). Signed
            # once per change of the set, its version read with the common part's.
            # And the prepayments neither refunded nor expired, as published: a broker may
            # not deliver their retained copies (RabbitMQ: none through ``prepaid/+``).
            revoked, live = refunds.answer_messages(s, self.site, now, self.signing_key,
                                                    revoked_version)
            for msg in (*live, *revoked):
                self._client.publish(to, msg, qos=1)
        # A lane reads only its own watermark in a member state (edge/sync/downlink.py):
        # one lane's query per request, not every lane's (a site of L lanes reconnecting
        # cost L² queries, docs/scale.md). Read before the states: see member_state.
        applied = self.applied(fresh=[lane], c=s.connection())
        ids = list(wanted) if wanted is not None else state.member_ids(s)
        for i in range(0, max(len(ids), 1), 500):
            ms = [codec.signed_member(m, self.site, self.signing_key)
                  for mid in ids[i:i + 500]
                  if (m := state.member_state(s, mid, applied, self.icfg.allowance))
                  is not None]
            self._client.publish(to, codec.encode_snapshot(ms), qos=1)
