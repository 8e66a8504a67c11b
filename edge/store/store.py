"""``Store``: the lane's durable ledger, sessions and member cache in one SQLite file.

Every public method is one short transaction under one lock on one connection; writes begin
with ``BEGIN IMMEDIATE`` (see ``engine``). Ledger rows are only ever appended; the session and
member tables are the current state those rows explain. The exit is one transaction and is
idempotent on its event id and on the session, so a replay never deducts twice.
"""

from __future__ import annotations

import json
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

from sqlalchemy import Connection, Engine, exc

from edge.store import ledger, members
from edge.store import reports as _reports
from edge.store.codec import money, parse_ts, parse_ts_opt, ts, ts_opt
from edge.store.engine import make_engine, q
from edge.store.schema import LATEST, migrate
from edge.store.types import (
    EntryKind,
    ExitRecord,
    ExitResult,
    LedgerEntry,
    Member,
    MemberView,
    Session,
    StoreError,
    VerifyResult,
)

Clock = Callable[[], datetime]

_SESSION_COLS = (
    "session_id, plate, entered_at, entry_lane, vehicle_class, member_id, status, exited_at, "
    "exit_lane, fee, payable, paid, points_deducted, points_earned, rules_version, "
    "exit_event_id, entry_event_id, points_before, balance_after"
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _session(r: Any) -> Session:
    m = r._mapping
    return Session(
        session_id=m["session_id"],
        plate=m["plate"],
        entered_at=parse_ts(m["entered_at"]),
        entry_lane=m["entry_lane"],
        vehicle_class=m["vehicle_class"],
        member_id=m["member_id"],
        status=m["status"],
        exited_at=parse_ts_opt(m["exited_at"]),
        exit_lane=m["exit_lane"],
        fee=None if m["fee"] is None else Decimal(m["fee"]),
        payable=None if m["payable"] is None else Decimal(m["payable"]),
        paid=Decimal(m["paid"]),
        points_deducted=int(m["points_deducted"]),
        points_earned=int(m["points_earned"]),
        rules_version=m["rules_version"],
        exit_event_id=m["exit_event_id"],
        entry_event_id=m["entry_event_id"],
        points_before=m["points_before"],
        balance_after=m["balance_after"],
    )


def _nonempty(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise StoreError(f"{what}: must be a non-empty string, got {value!r}")
    return value


def _points(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StoreError(f"{what}: {value!r} must be an int >= 0")
    return value


def _amount(value: Any, what: str) -> Decimal:
    if not isinstance(value, Decimal):
        raise StoreError(f"{what}: {value!r} must be a Decimal")
    d = Decimal(money(value, what))
    if d < 0:
        raise StoreError(f"{what}: {value} must not be negative")
    return d


class Store:
    """The ledger and everything it explains, for one lane (``lane_id``) of one file."""

    def __init__(self, engine: Engine, lane_id: str, clock: Clock = _utcnow) -> None:
        self._engine = engine
        self._ro = engine.execution_options(readonly=True)
        self._lock = threading.RLock()
        self._clock = clock
        self.lane_id = lane_id
        self.path: Path | None = None

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, path: Path | str, lane_id: str, *, clock: Clock | None = None) -> Store:
        """Create or migrate the file at ``path`` and return a store writing as ``lane_id``."""
        _nonempty(lane_id, "lane_id")
        if ":" in lane_id:
            raise StoreError(f"lane_id: {lane_id!r} must not contain ':' (entry ids are lane:seq)")
        p = Path(path)
        if not p.parent.exists():
            raise StoreError(f"storage.path: directory {p.parent} does not exist")
        engine = make_engine(p)
        store = cls(engine, lane_id, clock or _utcnow)
        store.path = p
        try:
            with engine.begin() as conn:
                migrate(conn, LATEST)
        except exc.DBAPIError as e:
            engine.dispose()
            raise StoreError(f"storage.path: cannot open {p}: {e.orig}") from e
        except StoreError:
            engine.dispose()
            raise
        return store

    def close(self) -> None:
        with self._lock:
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
            raw = self._engine.raw_connection()
            try:
                row = raw.driver_connection.execute(  # type: ignore[union-attr]
                    "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                raw.close()
        return int(row[0]), int(row[1]), int(row[2])

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._lock:
            try:
                with self._engine.begin() as conn:
                    yield conn
            except exc.IntegrityError as e:
                raise StoreError(f"refused by the database: {e.orig}") from e
            except exc.OperationalError as e:
                raise StoreError(f"database error: {e.orig}") from e

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._lock, self._ro.begin() as conn:
            yield conn

    def _append(self, conn: Connection, kind: EntryKind, at: datetime, **kw: Any) -> LedgerEntry:
        return ledger.append(conn, lane_id=self.lane_id, kind=kind, at=at,
                             recorded=self._clock(), **kw)

    # ------------------------------------------------------------------ sessions
    def record_entry(
        self, *, plate: str, entered_at: datetime, event_id: str, vehicle_class: str = "small",
        member_id: str | None = None, rules_version: str | None = None,
        lane_id: str | None = None, detail: dict[str, Any] | None = None,
    ) -> tuple[Session, bool]:
        """Open a session (SESSION_OPENED); the same ``event_id`` again returns it unchanged."""
        _nonempty(plate, "plate")
        _nonempty(event_id, "event_id")
        _nonempty(vehicle_class, "vehicle_class")
        at_s = ts(entered_at, "entered_at")
        lane = lane_id or self.lane_id
        with self._write() as c:
            old = c.execute(q(f"SELECT {_SESSION_COLS} FROM sessions "
                              "WHERE entry_event_id = :e"), {"e": event_id}).first()
            if old is not None:
                return _session(old), False
            prev = c.execute(q(f"SELECT {_SESSION_COLS} FROM sessions WHERE plate = :p "
                               "AND status = 'open'"), {"p": plate}).first()
            if prev is not None:
                ps = _session(prev)
                c.execute(q("UPDATE sessions SET status = 'closed' WHERE session_id = :s"),
                          {"s": ps.session_id})
                self._append(c, EntryKind.CORRECTION, entered_at, session_id=ps.session_id,
                             member_id=ps.member_id, plate=plate, payload={
                                 "action": "superseded", "by_event": event_id,
                                 "reason": "new entry while a session was open (missed exit)"})
            sid = f"{lane}-{uuid.uuid4().hex[:12]}"
            c.execute(
                q("INSERT INTO sessions (session_id, plate, entered_at, entry_lane, "
                  "vehicle_class, member_id, status, rules_version, entry_event_id) VALUES "
                  "(:s, :p, :e, :l, :v, :m, 'open', :r, :ev)"),
                {"s": sid, "p": plate, "e": at_s, "l": lane, "v": vehicle_class, "m": member_id,
                 "r": rules_version, "ev": event_id},
            )
            self._append(c, EntryKind.SESSION_OPENED, entered_at, session_id=sid,
                         member_id=member_id, plate=plate, rules_version=rules_version,
                         payload={"event_id": event_id, "vehicle_class": vehicle_class,
                                  "entry_lane": lane, "detail": detail or {}})
            return self._get(c, sid), True

    def cancel_entry(self, session_id: str, at: datetime, reason: str) -> LedgerEntry | None:
        """The vehicle reversed away from the entry: close its session with a CORRECTION."""
        with self._write() as c:
            s = self._get(c, session_id)
            if s.status != "open":
                return None
            c.execute(q("UPDATE sessions SET status = 'closed' WHERE session_id = :s"),
                      {"s": session_id})
            return self._append(c, EntryKind.CORRECTION, at, session_id=session_id,
                                member_id=s.member_id, plate=s.plate,
                                payload={"action": "entry_cancelled", "reason": reason})

    def _get(self, c: Connection, session_id: str) -> Session:
        r = c.execute(q(f"SELECT {_SESSION_COLS} FROM sessions WHERE session_id = :s"),
                      {"s": session_id}).first()
        if r is None:
            raise StoreError(f"session_id: unknown session {session_id!r}")
        return _session(r)

    def find_open_session(self, plate: str) -> Session | None:
        with self._read() as c:
            r = c.execute(q(f"SELECT {_SESSION_COLS} FROM sessions WHERE plate = :p "
                            "AND status = 'open'"), {"p": plate}).first()
            return None if r is None else _session(r)

    def open_plates(self) -> list[str]:
        with self._read() as c:
            return list(c.execute(q("SELECT plate FROM sessions WHERE status = 'open' "
                                    "ORDER BY plate")).scalars())

    def get_session(self, session_id: str) -> Session | None:
        with self._read() as c:
            r = c.execute(q(f"SELECT {_SESSION_COLS} FROM sessions WHERE session_id = :s"),
                          {"s": session_id}).first()
            return None if r is None else _session(r)

    def list_sessions(self, *, open_only: bool = False, limit: int = 100) -> list[Session]:
        where = "WHERE status = 'open'" if open_only else ""
        with self._read() as c:
            rows = c.execute(q(f"SELECT {_SESSION_COLS} FROM sessions {where} "
                               "ORDER BY entered_at DESC LIMIT :n"), {"n": int(limit)})
            return [_session(r) for r in rows]

    # ------------------------------------------------------------------ exit
    def record_exit(self, rec: ExitRecord) -> ExitResult:
        """Close the stay, charge, deduct, earn: all or nothing, and at most once."""
        _nonempty(rec.exit_event_id, "exit_event_id")
        _nonempty(rec.plate, "plate")
        at_s = ts(rec.exited_at, "exited_at")
        fee = _amount(rec.fee, "fee")
        payable = _amount(rec.payable, "payable")
        deducted = _points(rec.points_deducted, "points_deducted")
        earned = _points(rec.points_earned, "points_earned")
        lots: dict[str, int] = {}
        for i, item in enumerate(rec.lots_used):
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise StoreError(f"lots_used[{i}]: expected (lot_id, points)")
            lots[_nonempty(item[0], f"lots_used[{i}].lot_id")] = (
                lots.get(item[0], 0) + _points(item[1], f"lots_used[{i}].points"))
        if sum(lots.values()) != deducted:
            raise StoreError(f"lots_used: sum {sum(lots.values())} != points_deducted {deducted}")
        if len(set(rec.coupons_used)) != len(rec.coupons_used):
            raise StoreError("coupons_used: a coupon is listed twice")
        if (deducted or earned or rec.coupons_used) and not rec.member_id:
            raise StoreError("member_id: required when points or coupons move")
        ts_opt(rec.earned_expires_at, "earned_expires_at")
        key = f"exit:{rec.exit_event_id}"
        with self._write() as c:
            done = c.execute(q("SELECT session_id, entry_ids FROM idempotency WHERE key = :k"),
                             {"k": key}).first()
            if done is not None:
                return self._replay(c, done[0], json.loads(done[1]))
            if rec.session_id is not None:
                s = self._get(c, rec.session_id)
                if s.status != "open":
                    return self._replay(c, s.session_id, None)
                sid = s.session_id
            else:
                sid = f"{self.lane_id}-{uuid.uuid4().hex[:12]}"
                c.execute(
                    q("INSERT INTO sessions (session_id, plate, entered_at, entry_lane, "
                      "vehicle_class, member_id, status, rules_version) VALUES "
                      "(:s, :p, :e, NULL, :v, :m, 'closed', :r)"),
                    {"s": sid, "p": rec.plate, "e": at_s,
                     "v": str(rec.quote.get("vehicle_class", "small")), "m": rec.member_id,
                     "r": rec.rules_version},
                )
            mid = rec.member_id
            member: Member | None = None
            before: int | None = None
            if mid:
                member = members.get_member(c, mid)
                if member is None and (deducted or earned or rec.coupons_used):
                    raise StoreError(f"member_id: unknown member {mid!r}")
                if member is not None:
                    before = members.balance(c, mid, rec.exited_at)
            entries = self._exit_entries(c, rec, sid, fee, payable, lots, earned)
            after = members.balance(c, member.member_id, rec.exited_at) if member else None
            status = "owed" if payable > 0 else "closed"
            c.execute(
                q("UPDATE sessions SET status = :st, exited_at = :x, exit_lane = :l, "
                  "fee = :f, payable = :pay, points_deducted = :d, points_earned = :e, "
                  "rules_version = :r, exit_event_id = :ev, member_id = COALESCE(:m, "
                  "member_id), points_before = :b, balance_after = :a, tier = :t, "
                  "exit_detail = :det WHERE session_id = :s"),
                {"st": status, "x": at_s, "l": self.lane_id, "f": str(fee), "pay": str(payable),
                 "d": deducted, "e": earned, "r": rec.rules_version, "ev": rec.exit_event_id,
                 "m": mid, "b": before, "a": after, "t": member.tier if member else None,
                 "s": sid, "det": json.dumps(self._detail(rec, lots, earned))},
            )
            ids = [e.entry_id for e in entries]
            c.execute(q("INSERT INTO idempotency (key, scope, session_id, entry_ids) VALUES "
                        "(:k, 'exit', :s, :i)"), {"k": key, "s": sid, "i": json.dumps(ids)})
            return ExitResult(self._get(c, sid), tuple(entries), False, after)

    @staticmethod
    def _points_value(quote: dict[str, Any]) -> Decimal:
        if "points_value" in quote:
            return Decimal(str(quote["points_value"]))
        return sum((Decimal(str(d.get("amount", "0"))) for d in quote.get("discounts", ())
                    if isinstance(d, dict) and d.get("kind") == "points"), Decimal(0))

    def _detail(self, rec: ExitRecord, lots: dict[str, int], earned: int) -> dict[str, Any]:
        return {"lots_used": [[k, v] for k, v in lots.items()],
                "coupons_used": list(rec.coupons_used),
                "earned_lot_id": f"earn:{rec.exit_event_id}" if earned else None,
                "points_value": str(self._points_value(rec.quote))}

    def _exit_entries(self, c: Connection, rec: ExitRecord, sid: str, fee: Decimal,
                      payable: Decimal, lots: dict[str, int], earned: int) -> list[LedgerEntry]:
        at, mid, plate, rv = rec.exited_at, rec.member_id, rec.plate, rec.rules_version
        common: dict[str, Any] = {"session_id": sid, "member_id": mid, "plate": plate,
                                  "rules_version": rv}
        out = [self._append(c, EntryKind.SESSION_CLOSED, at, **common, payload={
            "exit_event_id": rec.exit_event_id, "exit_lane": self.lane_id,
            "flags": list(rec.flags), "status": "owed" if payable > 0 else "closed"})]
        out.append(self._append(c, EntryKind.FEE_CHARGED, at, **common, payload={
            "fee": fee, "payable": payable, "quote": rec.quote}))
        if rec.coupons_used:
            assert mid is not None
            for cp in members.use_coupons(c, mid, rec.coupons_used, at, sid):
                out.append(self._append(c, EntryKind.COUPON_USED, at, **common, payload=cp))
        if lots:
            assert mid is not None
            members.spend_lots(c, mid, tuple(lots.items()), at)
            out.append(self._append(c, EntryKind.POINTS_DEDUCTED, at, **common, payload={
                "points": rec.points_deducted, "lots": [[k, v] for k, v in lots.items()],
                "value": self._points_value(rec.quote)}))
        if earned:
            assert mid is not None
            lot_id = f"earn:{rec.exit_event_id}"
            c.execute(q("INSERT INTO points_lots (member_id, lot_id, points, remaining, "
                        "expires_at, earned_at) VALUES (:m, :l, :p, :p, :e, :a)"),
                      {"m": mid, "l": lot_id, "p": earned, "e": ts_opt(rec.earned_expires_at),
                       "a": ts(at)})
            out.append(self._append(c, EntryKind.POINTS_EARNED, at, **common, payload={
                "points": earned, "lot_id": lot_id, "expires_at": rec.earned_expires_at}))
        if mid and (lots or earned):
            members.refresh_balance(c, mid)
        return out

    def _replay(self, c: Connection, session_id: str, ids: list[str] | None) -> ExitResult:
        s = self._get(c, session_id)
        if ids is None and s.exit_event_id:
            row = c.execute(q("SELECT entry_ids FROM idempotency WHERE key = :k"),
                            {"k": f"exit:{s.exit_event_id}"}).first()
            ids = json.loads(row[0]) if row else []
        return ExitResult(s, tuple(ledger.by_ids(c, ids or [])), True, s.balance_after)

    def last_exit(self, plate: str, since: datetime) -> ExitResult | None:
        """The most recent exit of ``plate`` at or after ``since`` (for replays and re-entry)."""
        with self._read() as c:
            r = c.execute(q("SELECT session_id FROM sessions WHERE plate = :p AND "
                            "status IN ('closed', 'owed') AND exited_at >= :t "
                            "ORDER BY exited_at DESC LIMIT 1"),
                          {"p": plate, "t": ts(since, "since")}).first()
            return None if r is None else self._replay(c, r[0], None)

    def record_payment(self, session_id: str, amount: Decimal, method: str, at: datetime,
                       idem_key: str) -> LedgerEntry:
        """Money received for a stay; owed -> closed once fully paid. Idempotent on idem_key."""
        amt = _amount(amount, "amount")
        if amt == 0:
            raise StoreError("amount: must be greater than zero")
        _nonempty(method, "method")
        _nonempty(idem_key, "idem_key")
        key = f"pay:{idem_key}"
        with self._write() as c:
            done = c.execute(q("SELECT entry_ids FROM idempotency WHERE key = :k"),
                             {"k": key}).first()
            if done is not None:
                return ledger.by_ids(c, json.loads(done[0]))[0]
            s = self._get(c, session_id)
            if s.status == "closed":
                raise StoreError(f"session_id: session {session_id} owes nothing")
            paid = s.paid + amt
            outstanding = (s.payable - paid) if s.payable is not None else None
            status = s.status
            if s.status == "owed" and outstanding is not None and outstanding <= 0:
                status = "closed"
            c.execute(q("UPDATE sessions SET paid = :p, status = :st WHERE session_id = :s"),
                      {"p": str(paid), "st": status, "s": session_id})
            e = self._append(c, EntryKind.PAYMENT_RECEIVED, at, session_id=session_id,
                             member_id=s.member_id, plate=s.plate, payload={
                                 "amount": amt, "method": method, "idem_key": idem_key,
                                 "paid_total": paid, "outstanding": outstanding})
            c.execute(q("INSERT INTO idempotency (key, scope, session_id, entry_ids) VALUES "
                        "(:k, 'payment', :s, :i)"),
                      {"k": key, "s": session_id, "i": json.dumps([e.entry_id])})
            return e

    def reverse_exit(self, session_id: str, at: datetime, reason: str) -> list[LedgerEntry]:
        """The vehicle backed away after the exit was committed: undo it with CORRECTIONs."""
        with self._write() as c:
            s = self._get(c, session_id)
            if s.status == "open" or s.exited_at is None:
                return []
            row = c.execute(q("SELECT exit_detail FROM sessions WHERE session_id = :s"),
                            {"s": session_id}).scalar_one()
            det: dict[str, Any] = json.loads(row) if row else {}
            mid = s.member_id
            common: dict[str, Any] = {"session_id": session_id, "member_id": mid,
                                      "plate": s.plate, "rules_version": s.rules_version}
            out: list[LedgerEntry] = []
            lots = [(str(k), int(v)) for k, v in det.get("lots_used", [])]
            if lots and mid:
                for lot_id, pts in lots:
                    c.execute(q(
                        "INSERT INTO points_lots (member_id, lot_id, points, remaining) VALUES "
                        "(:m, :l, :p, :p) ON CONFLICT (member_id, lot_id) DO UPDATE SET "
                        "points = MAX(points, remaining + :p), remaining = remaining + :p"),
                        {"m": mid, "l": lot_id, "p": pts})
                out.append(self._append(c, EntryKind.CORRECTION, at, **common, payload={
                    "action": "points_returned", "points": s.points_deducted,
                    "lots": [[k, v] for k, v in lots], "value": det.get("points_value", "0"),
                    "reason": reason}))
            for cid in det.get("coupons_used", []):
                c.execute(q("UPDATE coupons SET used_at = NULL, used_session = NULL "
                            "WHERE coupon_id = :c AND used_session = :s"),
                          {"c": cid, "s": session_id})
                out.append(self._append(c, EntryKind.CORRECTION, at, **common, payload={
                    "action": "coupon_returned", "coupon_id": cid, "reason": reason}))
            earned_lot = det.get("earned_lot_id")
            if earned_lot and mid and s.points_earned:
                rem = c.execute(q("SELECT remaining FROM points_lots WHERE member_id = :m "
                                  "AND lot_id = :l"), {"m": mid, "l": earned_lot}).scalar()
                take = min(int(rem or 0), s.points_earned)
                c.execute(q("UPDATE points_lots SET remaining = remaining - :t "
                            "WHERE member_id = :m AND lot_id = :l"),
                          {"t": take, "m": mid, "l": earned_lot})
                out.append(self._append(c, EntryKind.CORRECTION, at, **common, payload={
                    "action": "earned_revoked", "points": take, "lot_id": earned_lot,
                    "unrecovered": s.points_earned - take, "reason": reason}))
            if mid and members.get_member(c, mid) is not None:
                members.refresh_balance(c, mid)
            c.execute(q(
                "UPDATE sessions SET status = 'open', exited_at = NULL, exit_lane = NULL, "
                "fee = NULL, payable = NULL, paid = '0', points_deducted = 0, points_earned = 0, "
                "exit_event_id = NULL, exit_detail = NULL, points_before = NULL, "
                "balance_after = NULL WHERE session_id = :s"), {"s": session_id})
            out.append(self._append(c, EntryKind.CORRECTION, at, **common, payload={
                "action": "session_reopened", "reason": reason, "fee": s.fee,
                "payable": s.payable, "paid": s.paid, "exit_event_id": s.exit_event_id}))
            return out

    # ------------------------------------------------------------------ other entries
    def record_lane_event(self, event: str, at: datetime, *, plate: str | None = None,
                          session_id: str | None = None,
                          detail: dict[str, Any] | None = None) -> LedgerEntry:
        _nonempty(event, "event")
        with self._write() as c:
            return self._append(c, EntryKind.LANE_EVENT, at, plate=plate, session_id=session_id,
                                payload={"event": event, "detail": detail or {}})

    def record_manual_open(self, reason: str, operator: str, at: datetime, *,
                           session_id: str | None = None) -> LedgerEntry:
        _nonempty(reason, "reason")
        _nonempty(operator, "operator")
        with self._write() as c:
            return self._append(c, EntryKind.MANUAL_OPEN, at, session_id=session_id,
                                payload={"reason": reason, "operator": operator})

    def record_correction(self, action: str, at: datetime, *, reason: str,
                          session_id: str | None = None, member_id: str | None = None,
                          plate: str | None = None, corrects: str | None = None,
                          detail: dict[str, Any] | None = None) -> LedgerEntry:
        """A free-form correction (e.g. from central after sync): ``corrects`` names the
        entry_id it amends. It changes no state here; it documents a decision."""
        _nonempty(action, "action")
        _nonempty(reason, "reason")
        with self._write() as c:
            return self._append(c, EntryKind.CORRECTION, at, session_id=session_id,
                                member_id=member_id, plate=plate, payload={
                                    "action": action, "reason": reason, "corrects": corrects,
                                    "detail": detail or {}})

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
        _nonempty(plate, "plate")
        with self._write() as c:
            members.require_member(c, member_id)
            c.execute(q("INSERT INTO plate_bindings (plate, member_id, version) VALUES "
                        "(:p, :m, :v) ON CONFLICT (plate) DO UPDATE SET member_id = :m, "
                        "version = :v WHERE excluded.version >= plate_bindings.version"),
                      {"p": plate, "m": member_id, "v": int(version)})

    def unbind_plate(self, plate: str) -> None:
        with self._write() as c:
            c.execute(q("DELETE FROM plate_bindings WHERE plate = :p"), {"p": plate})

    def member_for_plate(self, plate: str) -> Member | None:
        with self._read() as c:
            mid = c.execute(q("SELECT member_id FROM plate_bindings WHERE plate = :p"),
                            {"p": plate}).scalar()
            return None if mid is None else members.get_member(c, mid)

    def get_member(self, member_id: str) -> Member | None:
        with self._read() as c:
            return members.get_member(c, member_id)

    def member_view(self, member_id: str, at: datetime, tz: ZoneInfo) -> MemberView:
        with self._read() as c:
            return members.member_view(c, member_id, at, tz)

    def balance(self, member_id: str, at: datetime) -> int:
        with self._read() as c:
            return members.balance(c, member_id, at)

    # ------------------------------------------------------------------ reading
    def entries(self, after_seq: int = 0, limit: int = 1000) -> list[LedgerEntry]:
        """This lane's entries with seq > ``after_seq``, in sequence order."""
        with self._read() as c:
            rows = c.execute(q(f"SELECT {ledger.COLUMNS} FROM ledger_entries WHERE "
                               "lane_id = :l AND seq > :a ORDER BY seq LIMIT :n"),
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
            st = c.execute(q("SELECT acked_seq, acked_ranges FROM outbox_state "
                             "WHERE peer = :p"), {"p": peer}).first()
            acked, ranges = (0, []) if st is None else (int(st[0]), json.loads(st[1]))
            out: list[LedgerEntry] = []
            rows = c.execute(q(f"SELECT {ledger.COLUMNS} FROM ledger_entries WHERE "
                               "lane_id = :l AND seq > :a ORDER BY seq"),
                             {"l": self.lane_id, "a": acked})
            for r in rows:
                seq = int(r._mapping["seq"])
                if any(lo <= seq <= hi for lo, hi in ranges):
                    continue
                out.append(ledger.to_entry(r))
                if len(out) >= limit:
                    break
            return out

    def mark_acked(self, peer: str, upto: int,
                   ranges: list[tuple[int, int]] | None = None) -> None:
        """Record acks: everything <= ``upto`` plus ``ranges`` above it (merged, compacted)."""
        _nonempty(peer, "peer")
        with self._write() as c:
            st = c.execute(q("SELECT acked_seq, acked_ranges FROM outbox_state "
                             "WHERE peer = :p"), {"p": peer}).first()
            acked, old = (0, []) if st is None else (int(st[0]), json.loads(st[1]))
            acked = max(acked, int(upto))
            merged: list[list[int]] = []
            for lo, hi in sorted([tuple(x) for x in old] + [tuple(x) for x in ranges or []]):
                if lo > hi:
                    raise StoreError(f"ranges: [{lo}, {hi}] is empty")
                if merged and lo <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], hi)
                else:
                    merged.append([lo, hi])
            keep: list[list[int]] = []
            for lo, hi in merged:
                if lo <= acked + 1:
                    acked = max(acked, hi)
                else:
                    keep.append([lo, hi])
            c.execute(q("INSERT INTO outbox_state (peer, acked_seq, acked_ranges) VALUES "
                        "(:p, :a, :r) ON CONFLICT (peer) DO UPDATE SET acked_seq = :a, "
                        "acked_ranges = :r"), {"p": peer, "a": acked, "r": json.dumps(keep)})
