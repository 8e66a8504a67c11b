"""``Store``: the lane's durable ledger, sessions and member cache in one SQLite file.

Every public method is one short transaction under one lock on one connection; writes begin
with ``BEGIN IMMEDIATE`` (see ``engine``). Ledger rows are only ever appended; the session and
member tables are the current state those rows explain. The exit is one transaction and is
idempotent on its event id and on the session, so a replay never deducts twice.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, exc

from edge import metrics
from edge.store import exits, ledger, members, outbox, peer_sessions, sessions
from edge.store import reports as _reports
from edge.store.checks import nonempty
from edge.store.codec import ts
from edge.store.engine import Db, make_engine, raw
from edge.store.reader import Reader
from edge.store.schema import LATEST, migrate, user_version
from edge.store.tx import Tx
from edge.store.types import (
    EntryKind,
    ExitRecord,
    ExitResult,
    LedgerEntry,
    Member,
    MemberView,
    Session,
    StorageUnavailable,
    StoreError,
    VerifyResult,
)

# SQLite result codes that say the file cannot be written now, not that the request is wrong
_STORAGE_CODES = frozenset({
    sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB,
})


def _storage_error(e: sqlite3.Error) -> StoreError:
    """``StorageUnavailable`` for a full disk or an I/O failure, ``StoreError`` otherwise."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None and (code & 0xFF) in _STORAGE_CODES:
        return StorageUnavailable(f"ledger cannot be written: {e}")
    return StoreError(f"database error: {e}")

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Store:
    """The ledger and everything it explains, for one lane (``lane_id``) of one file."""

    def __init__(self, engine: Engine, lane_id: str, clock: Clock = _utcnow) -> None:
        self._engine = engine
        self._ro = engine.execution_options(readonly=True)
        self._db: Db | None = None  # the pool's one connection, once a transaction needed it
        self._checkpoint_every = 0  # 0: SQLite's automatic checkpoint (defer_checkpoints)
        self._writes = 0  # write transactions since the last checkpoint
        self._lock = threading.RLock()
        self._clock = clock
        self.lane_id = lane_id
        self.path: Path | None = None

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, path: Path | str, lane_id: str, *, clock: Clock | None = None) -> Store:
        """Create or migrate the file at ``path`` and return a store writing as ``lane_id``."""
        nonempty(lane_id, "lane_id")
        if ":" in lane_id:
            raise StoreError(f"lane_id: {lane_id!r} must not contain ':' (entry ids are lane:seq)")
        p = Path(path)
        if not p.parent.exists():
            raise StoreError(f"storage.path: directory {p.parent} does not exist")
        engine = make_engine(p)
        store = cls(engine, lane_id, clock or _utcnow)
        store.path = p
        try:
            # Look first without the write lock: read-only tools (ledger verify) then never
            # take it on an up-to-date file. migrate() re-reads the version under the lock.
            with store._ro.begin() as conn:
                current = user_version(conn)
            if current != LATEST:
                with engine.begin() as conn:
                    migrate(conn, LATEST)
        except exc.DBAPIError as e:
            engine.dispose()
            raise StoreError(f"storage.path: cannot open {p}: {e.orig}") from e
        except sqlite3.Error as e:
            engine.dispose()
            raise StoreError(f"storage.path: cannot open {p}: {e}") from e
        except StoreError:
            engine.dispose()
            raise
        return store

    def close(self) -> None:
        with self._lock:
            self._db = None
            self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def checkpoint(self) -> tuple[int, int, int]:
        """Fold the WAL back into the main file (periodic job; PASSIVE never blocks writers).

        Runs outside any transaction (a checkpoint inside one is refused). Returns SQLite's
        (busy, wal frames, frames checkpointed).
        """
        with self._lock:
            row = self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self._writes = 0
        return int(row[0]), int(row[1]), int(row[2])

    def defer_checkpoints(self, every: int = 16) -> None:
        """Checkpoint when asked (``checkpoint_if_due``), not inside whichever commit crosses
        SQLite's 1,000-page mark.

        An exit writes ~21 WAL pages, so one exit in ~48 copied the whole WAL into the file and
        synced it before returning, i.e. before its barrier opened. The lane runner calls this
        and checkpoints after its pulses. A store whose owner stops asking still checkpoints,
        inline, after ``4 * every`` write transactions.
        """
        if every < 1:
            raise StoreError(f"every: {every} must be >= 1")
        with self._lock:
            self._conn().execute("PRAGMA wal_autocheckpoint = 0")
            self._checkpoint_every = every

    @property
    def checkpoint_due(self) -> bool:
        """Deferred checkpoints only: ``every`` writes since the last checkpoint."""
        return 0 < self._checkpoint_every <= self._writes

    def checkpoint_if_due(self) -> bool:
        with self._lock:
            if not self.checkpoint_due:
                return False
            self.checkpoint()
            return True

    def _conn(self) -> Db:
        """The DBAPI connection under the engine's single pooled connection (``StaticPool``:
        the same one ``engine.begin()`` gets), with the pragmas its connect hook set."""
        if self._db is None:
            self._db = raw(self._engine.connect())
        return self._db

    @contextmanager
    def _write(self) -> Iterator[Db]:
        """One ``BEGIN IMMEDIATE`` transaction; committed (synchronous=FULL) when the block
        ends, rolled back on error.

        BEGIN/COMMIT are issued on the connection directly: SQLAlchemy's ``engine.begin()``
        (connection object, pool checkout and reset, events) cost ~25 µs warm and a few
        hundred µs cold inside the lane's event loop per transaction, against ~5 µs for the
        statements themselves; the exit pays it twice (docs/ledger.md).
        """
        with self._lock:
            c = self._conn()
            try:
                c.execute("BEGIN IMMEDIATE")
                try:
                    yield c
                    c.execute("COMMIT")
                except BaseException:
                    if c.in_transaction:
                        c.rollback()
                    raise
                self._writes += 1
                if 0 < self._checkpoint_every * 4 <= self._writes:
                    # nobody asked for a while: the safety net. The commit above is durable
                    # whatever happens here: a checkpoint failing (disk full) must not be
                    # reported as a failed write.
                    with contextlib.suppress(sqlite3.Error):
                        self.checkpoint()
            except sqlite3.IntegrityError as e:
                raise StoreError(f"refused by the database: {e}") from e
            except sqlite3.DatabaseError as e:  # OperationalError: full, I/O, locked...
                raise _storage_error(e) from e

    @contextmanager
    def _read(self) -> Iterator[Db]:
        """One deferred (read) transaction: a consistent view that never blocks a writer."""
        with self._lock:
            c = self._conn()
            c.execute("BEGIN")
            try:
                yield c
            finally:
                if c.in_transaction:
                    c.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[Reader]:
        """Several look-ups in one read transaction: one consistent view, one BEGIN/COMMIT.

        Holds the store's lock: call no other ``Store`` method inside the block.
        """
        with self._read() as c:
            r = Reader(c)
            try:
                yield r
            finally:
                r.close()

    @contextmanager
    def _tx(self) -> Iterator[Tx]:
        with self._write() as c:
            tx = Tx(c, self.lane_id, self._clock)
            yield tx
        metrics.LEDGER_ENTRIES.inc(tx.appended)  # committed: an error never gets here

    # ------------------------------------------------------------------ sessions
    def record_entry(
        self, *, plate: str, entered_at: datetime, event_id: str, vehicle_class: str = "small",
        member_id: str | None = None, rules_version: str | None = None,
        lane_id: str | None = None, detail: dict[str, Any] | None = None,
    ) -> tuple[Session, bool]:
        """Open a session (SESSION_OPENED); the same ``event_id`` again returns it unchanged."""
        nonempty(plate, "plate")
        nonempty(event_id, "event_id")
        nonempty(vehicle_class, "vehicle_class")
        at_s = ts(entered_at, "entered_at")
        lane = lane_id or self.lane_id
        with self._tx() as tx:
            c = tx.conn
            old = sessions.by_entry_event(c, event_id)
            if old is not None:
                return old, False
            prev = sessions.open_for_plate(c, plate)
            if prev is not None:
                c.execute("UPDATE sessions SET status = 'closed' WHERE session_id = :s",
                          {"s": prev.session_id})
                tx.append(EntryKind.CORRECTION, entered_at, session_id=prev.session_id,
                          member_id=prev.member_id, plate=plate, payload={
                              "action": "superseded", "by_event": event_id,
                              "reason": "new entry while a session was open (missed exit)"})
            sid = f"{lane}-{uuid.uuid4().hex[:12]}"
            c.execute(
                "INSERT INTO sessions (session_id, plate, entered_at, entry_lane, "
                "vehicle_class, member_id, status, rules_version, entry_event_id) VALUES "
                "(:s, :p, :e, :l, :v, :m, 'open', :r, :ev)",
                {"s": sid, "p": plate, "e": at_s, "l": lane, "v": vehicle_class, "m": member_id,
                 "r": rules_version, "ev": event_id},
            )
            tx.append(EntryKind.SESSION_OPENED, entered_at, session_id=sid,
                      member_id=member_id, plate=plate, rules_version=rules_version,
                      payload={"event_id": event_id, "vehicle_class": vehicle_class,
                               "entry_lane": lane, "detail": detail or {}})
            return tx.session(sid), True

    def cancel_entry(self, session_id: str, at: datetime, reason: str) -> LedgerEntry | None:
        """The vehicle reversed away from the entry: close its session with a CORRECTION."""
        with self._tx() as tx:
            s = tx.session(session_id)
            if s.status != "open":
                return None
            tx.conn.execute("UPDATE sessions SET status = 'closed' WHERE session_id = :s",
                            {"s": session_id})
            return tx.append(EntryKind.CORRECTION, at, session_id=session_id,
                             member_id=s.member_id, plate=s.plate,
                             payload={"action": "entry_cancelled", "reason": reason})

    def cache_session(self, *, session_id: str, plate: str, entered_at: datetime,
                      event_id: str, entry_lane: str, vehicle_class: str = "small",
                      member_id: str | None = None,
                      rules_version: str | None = None) -> tuple[Session, bool]:
        """Another lane's open session, kept under its id: a row, no ledger entry (sync)."""
        nonempty(session_id, "session_id")
        nonempty(plate, "plate")
        nonempty(event_id, "event_id")
        with self._tx() as tx:
            return peer_sessions.cache_opened(
                tx, session_id=session_id, plate=plate, entered_at=entered_at,
                event_id=event_id, entry_lane=entry_lane, vehicle_class=vehicle_class,
                member_id=member_id, rules_version=rules_version)

    def close_cached(self, session_id: str, exit_lane: str) -> Session | None:
        """Another lane recorded this stay's exit: close the row here, write no entry."""
        with self._tx() as tx:
            return peer_sessions.close(tx, session_id, exit_lane)

    def knows_entry_event(self, event_id: str) -> bool:
        """A session (open or closed, own or a copy) was recorded for this arrival event."""
        with self._read() as c:
            return sessions.by_entry_event(c, event_id) is not None

    def find_open_session(self, plate: str) -> Session | None:
        with self.snapshot() as r:
            return r.find_open_session(plate)

    def open_plates(self) -> list[str]:
        with self.snapshot() as r:
            return r.open_plates()

    def get_session(self, session_id: str) -> Session | None:
        with self.snapshot() as r:
            return r.get_session(session_id)

    def list_sessions(self, *, open_only: bool = False, limit: int = 100) -> list[Session]:
        where = "WHERE status = 'open'" if open_only else ""
        with self._read() as c:
            rows = c.execute(f"SELECT {sessions.COLS} FROM sessions {where} "
                             "ORDER BY entered_at DESC LIMIT :n", {"n": int(limit)})
            return [sessions.to_session(r) for r in rows]

    # ------------------------------------------------------------------ exit
    def record_exit(self, rec: ExitRecord) -> ExitResult:
        """Close the stay, charge, deduct, earn: all or nothing, and at most once."""
        with self._tx() as tx:
            return exits.record_exit(tx, rec)

    def last_exit(self, plate: str, since: datetime) -> ExitResult | None:
        """The most recent exit of ``plate`` at or after ``since`` (for replays and re-entry)."""
        with self.snapshot() as r:
            return r.last_exit(plate, since)

    def record_payment(self, session_id: str, amount: Decimal, method: str, at: datetime,
                       idem_key: str) -> LedgerEntry:
        """Money received for a stay; owed -> closed once fully paid. Idempotent on idem_key."""
        with self._tx() as tx:
            return exits.record_payment(tx, session_id, amount, method, at, idem_key)

    def reverse_exit(self, session_id: str, at: datetime, reason: str) -> list[LedgerEntry]:
        """The vehicle backed away after the exit was committed: undo it with CORRECTIONs."""
        with self._tx() as tx:
            return exits.reverse_exit(tx, session_id, at, reason)

    # ------------------------------------------------------------------ other entries
    def record_lane_event(self, event: str, at: datetime, *, plate: str | None = None,
                          session_id: str | None = None,
                          detail: dict[str, Any] | None = None) -> LedgerEntry:
        nonempty(event, "event")
        with self._tx() as tx:
            return tx.append(EntryKind.LANE_EVENT, at, plate=plate, session_id=session_id,
                             payload={"event": event, "detail": detail or {}})

    def record_manual_open(self, reason: str, operator: str, at: datetime, *,
                           session_id: str | None = None) -> LedgerEntry:
        nonempty(reason, "reason")
        nonempty(operator, "operator")
        with self._tx() as tx:
            return tx.append(EntryKind.MANUAL_OPEN, at, session_id=session_id,
                             payload={"reason": reason, "operator": operator})

    def record_correction(self, action: str, at: datetime, *, reason: str,
                          session_id: str | None = None, member_id: str | None = None,
                          plate: str | None = None, corrects: str | None = None,
                          detail: dict[str, Any] | None = None) -> LedgerEntry:
        """A free-form correction (e.g. from central after sync): ``corrects`` names the
        entry_id it amends. It changes no state here; it documents a decision."""
        nonempty(action, "action")
        nonempty(reason, "reason")
        with self._tx() as tx:
            return tx.append(EntryKind.CORRECTION, at, session_id=session_id,
                             member_id=member_id, plate=plate, payload={
                                 "action": action, "reason": reason, "corrects": corrects,
                                 "detail": detail or {}})

    def record_deferred(self, kind: EntryKind, at: datetime, *, pending_id: str,
                        payload: dict[str, Any], session_id: str | None = None,
                        plate: str | None = None) -> LedgerEntry | None:
        """Write a record the lane could not write when it happened (``edge.store.pending``).

        Idempotent on ``pending_id`` (the daemon may die between this commit and clearing the
        pending file); returns None if it was already written. ``at`` is when it happened;
        ``recorded`` says when it finally reached the ledger.
        """
        nonempty(pending_id, "pending_id")
        if kind not in (EntryKind.MANUAL_OPEN, EntryKind.LANE_EVENT):
            raise StoreError(f"kind: {kind!r} cannot be deferred")
        with self._tx() as tx:
            seen = tx.conn.execute(
                "SELECT 1 FROM ledger_entries WHERE kind = :k AND json_extract(payload, "
                "'$.pending_id') = :p LIMIT 1", {"k": str(kind), "p": pending_id}).fetchone()
            if seen is not None:
                return None
            return tx.append(kind, at, session_id=session_id, plate=plate,
                             payload={**payload, "pending_id": pending_id, "deferred": True})

    def tail(self) -> tuple[int, str, int]:
        """This lane's last (seq, hash) and what central acknowledged: the high-water mark."""
        with self._read() as c:
            row = c.execute("SELECT seq, hash FROM ledger_entries WHERE lane_id = :l "
                            "ORDER BY seq DESC LIMIT 1", {"l": self.lane_id}).fetchone()
            acked = c.execute("SELECT acked_seq FROM outbox_state WHERE peer = 'central'"
                              ).fetchone()
        seq, h = (0, "") if row is None else (int(row[0]), str(row[1]))
        return seq, h, 0 if acked is None else int(acked[0])

    # ------------------------------------------------------------------ members
    def upsert_member(self, member_id: str, *, tier: str, name: str | None = None,
                      version: int = 0, auto_deduct: bool = True, blocked: bool = False) -> None:
        with self._write() as c:
            members.upsert_member(c, member_id, tier=tier, name=name, version=version,
                                  auto_deduct=auto_deduct, blocked=blocked)

    def set_lots(self, member_id: str,
                 lots: list[tuple[str, int, datetime | None, datetime | None]]) -> None:
        with self._write() as c:
            members.set_lots(c, member_id, lots)

    def add_coupon(self, member_id: str, coupon_id: str, kind: str, value: Decimal,
                   valid_until: datetime | None) -> None:
        with self._write() as c:
            members.add_coupon(c, member_id, coupon_id, kind, value, valid_until)

    def bind_plate(self, plate: str, member_id: str, version: int = 0) -> None:
        nonempty(plate, "plate")
        with self._write() as c:
            members.require_member(c, member_id)
            c.execute("INSERT INTO plate_bindings (plate, member_id, version) VALUES "
                      "(:p, :m, :v) ON CONFLICT (plate) DO UPDATE SET member_id = :m, "
                      "version = :v WHERE excluded.version >= plate_bindings.version",
                      {"p": plate, "m": member_id, "v": int(version)})

    def unbind_plate(self, plate: str) -> None:
        with self._write() as c:
            c.execute("DELETE FROM plate_bindings WHERE plate = :p", {"p": plate})

    def member_for_plate(self, plate: str) -> Member | None:
        with self.snapshot() as r:
            return r.member_for_plate(plate)

    def get_member(self, member_id: str) -> Member | None:
        with self.snapshot() as r:
            return r.get_member(member_id)

    def member_view(self, member_id: str, at: datetime, tz: ZoneInfo) -> MemberView:
        with self.snapshot() as r:
            return r.member_view(member_id, at, tz)

    def balance(self, member_id: str, at: datetime) -> int:
        with self.snapshot() as r:
            return r.balance(member_id, at)

    # ------------------------------------------------------------------ reading
    def entries(self, after_seq: int = 0, limit: int = 1000) -> list[LedgerEntry]:
        """This lane's entries with seq > ``after_seq``, in sequence order."""
        with self._read() as c:
            rows = c.execute(f"SELECT {ledger.COLUMNS} FROM ledger_entries WHERE "
                             "lane_id = :l AND seq > :a ORDER BY seq LIMIT :n",
                             {"l": self.lane_id, "a": int(after_seq), "n": int(limit)})
            return [ledger.to_entry(r) for r in rows]

    def verify(self) -> VerifyResult:
        with self._read() as c:
            return ledger.verify(c)

    def export(self, what: str = "entries") -> Iterator[dict[str, Any]]:
        """All rows of ``what`` ("entries" or "sessions") as JSON-ready dicts."""
        if what not in ("entries", "sessions"):
            raise StoreError(f"what: {what!r} must be 'entries' or 'sessions'")
        with self._read() as c:
            rows = (_reports.export_entries(c) if what == "entries"
                    else _reports.export_sessions(c))
        return iter(rows)

    def report(self, month: str | None, tz: ZoneInfo) -> dict[str, Any]:
        with self._read() as c:
            return _reports.report(c, month, tz)

    # ------------------------------------------------------------------ outbox
    def unacked(self, limit: int = 500, peer: str = "central") -> list[LedgerEntry]:
        """This lane's entries the peer has not acknowledged, oldest first."""
        with self._read() as c:
            return outbox.unacked(c, self.lane_id, limit, peer)

    def mark_acked(self, peer: str, upto: int,
                   ranges: list[tuple[int, int]] | None = None) -> None:
        """Record acks: everything <= ``upto`` plus ``ranges`` above it (merged, compacted)."""
        nonempty(peer, "peer")
        with self._write() as c:
            outbox.mark_acked(c, peer, upto, ranges)
