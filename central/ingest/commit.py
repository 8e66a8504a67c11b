"""Committing lane batches exactly once, whichever worker gets them (port of the bench's
``CentralDB.commit_batches``, docs/sync-protocol.md "Delivery guarantees").

One transaction per group of batches. Fast path: one ``INSERT ... ON CONFLICT DO NOTHING``
of every entry of the group (sorted by lane and seq, so two workers inserting overlapping
groups take the unique-index locks in the same order); if every row went in, nothing was
there before and every entry is applied. Otherwise (a replay, a batch another worker holds
or committed) the transaction is rolled back and the group is committed batch by batch,
comparing seqs and hashes with what is committed: the same (lane, seq) with the same hash is
a duplicate, with another hash a ``seq_conflict`` (never acked). A deadlock or a unique
violation against a concurrent worker's insert retries the group: after the other commit
it takes the exact path; so does a group whose connection died under it (once). A worker
killed mid-transaction commits nothing; the lane resends.

The points of new entries move through central's lots (``central.services.points``): earned
= a new lot, deducted = taken soonest-expiring first, coupon used = the coupon marked used.
A lane never asks before spending offline, so central never refuses what happened: what the
live lots cannot cover goes into the member's debt lot (negative ``remaining``, never
spendable), repaid from the next points. Balance = sum of entries = sum of lots, always.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from central.db.models import Coupon, Member, PointsLot
from central.services.lots import take_from_lots
from central.services.points import _entry, accrue, engine_lots, lock_member
from edge.fields import ID_MAX_CHARS, is_plate
from edge.pricing import PointsLot as EngineLot
from edge.pricing import RuleBundle
from edge.store.types import EntryKind
from edge.sync.codec import Batch, SyncMessageError, canonical, points_delta

log = logging.getLogger(__name__)

_COLS = ("lane_id", "seq", "entry_id", "kind", "at", "recorded", "session_id", "member_id",
         "plate", "rules_version", "payload", "prev_hash", "hash", "received_at")
_KINDS = frozenset(str(k) for k in EntryKind)
#: PostgreSQL SQLSTATEs worth a retry: deadlock, serialization failure, unique violation
#: (a concurrent worker's insert of the same row committed between our check and insert).
_RETRY_STATES = {"40P01", "40001", "23505"}
MAX_RETRIES = 8


class _Replayed(Exception):
    """A row of the group was there already: redo the group on the exact path."""


class _Race(Exception):
    """Another worker committed rows of this group after we looked: try again."""


@dataclass(frozen=True)
class CommitResult:
    inserted: int
    duplicates: int
    members_changed: tuple[str, ...]
    flagged: int = 0
    lag_s: float | None = None  # now - the newest new entry's recorded time


@dataclass
class Outcome:
    """A group's result: one ``CommitResult`` or a refusal per batch, in order."""

    results: list[CommitResult | SyncMessageError] = field(default_factory=list)
    path: str = "fresh"
    retries: int = 0


def _ok_id(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v) <= ID_MAX_CHARS and v.isascii()


def _clean(e: dict[str, Any]) -> dict[str, Any]:
    """A flagged entry as it can be stored and applied: a field outside its limits is
    dropped (kept whole in ``lane_flagged.raw``); a valid member and points still move the
    balance, since the lane already moved them (the entry happened)."""
    c = dict(e)
    if not isinstance(c.get("kind"), str) or c["kind"] not in _KINDS:
        c["kind"] = "flagged"
    for k in ("at", "recorded"):
        if not isinstance(c.get(k), str) or len(c[k]) > 40:
            c[k] = ""
    for k in ("session_id", "member_id", "rules_version"):
        if c.get(k) is not None and not _ok_id(c[k]):
            c[k] = None
    if c.get("plate") is not None and not is_plate(c["plate"]):
        c["plate"] = None
    if not isinstance(c.get("payload"), dict):
        c["payload"] = {}
    return c


def _taken(b: Batch) -> list[dict[str, Any]]:
    if not b.flagged:
        return list(b.entries)
    fl = dict(b.flagged)
    return [_clean(e) if e["seq"] in fl else e for e in b.entries]


def parse_time(text: Any, fallback: datetime) -> datetime:
    """A lane's time text as an aware datetime; ``fallback`` if it is not one."""
    if isinstance(text, str) and text:
        try:
            t = datetime.fromisoformat(text)
        except ValueError:
            return fallback
        if t.tzinfo is not None:
            return t
    return fallback


class Committer:
    """Group commits of lane batches on central's database (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine, sessions: sessionmaker[Session], rules: RuleBundle,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine, self.sessions, self.rules, self.clock = engine, sessions, rules, clock
        self._sqlite = engine.dialect.name == "sqlite"
        ph = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        # Plain driver SQL for the hot insert (SQLAlchemy's per-row parameter processing
        # costs more than the insert). SQLite: executemany of one row's statement (in
        # process, no round trips). PostgreSQL: one statement per group whatever its size,
        # each column sent as one array and the rows made by unnest(): the same text every
        # time (psycopg parses it once and PostgreSQL prepares it), where a multi-row VALUES
        # of 14 placeholders a row was new text for every group size, and psycopg's parse
        # of its thousands of placeholders took more of the worker than the insert itself
        # (docs/scale.md, "Where the two cores go"). executemany was a round trip per row.
        # The arrays go in psycopg's binary format (``%b``): its text format quotes and
        # escapes every element in Python (44 us a row, 19 % of a worker in a storm; binary
        # 6 us), and COPY into a temp table measured no cheaper (docs/scale.md).
        self._row = f"({', '.join([ph] * len(_COLS))})"
        self._head = f"INSERT INTO lane_entries ({', '.join(_COLS)}) VALUES "
        self._insert = self._head + self._row + " ON CONFLICT DO NOTHING"
        binary = "%b" if engine.dialect.driver == "psycopg" else ph
        arrays = ", ".join(f"{binary}::{'bigint' if c == 'seq' else 'text'}[]"
                           for c in _COLS[:-1])
        self._unnest = (f"INSERT INTO lane_entries ({', '.join(_COLS)}) SELECT u.*, "
                        f"{ph}::timestamptz FROM unnest({arrays}) AS u "
                        "ON CONFLICT DO NOTHING")

    # ---------------------------------------------------------------- rows
    def _stamp(self, now: datetime) -> Any:
        """``received_at`` as the driver stores it (UtcDateTime's own forms)."""
        if self._sqlite:
            return now.astimezone(UTC).replace(tzinfo=None).isoformat(" ")
        return now

    def _rows(self, b: Batch, es: Iterable[dict[str, Any]], now: Any) -> list[tuple[Any, ...]]:
        return [(b.lane, e["seq"], e["entry_id"], e["kind"], e["at"], e.get("recorded") or "",
                 e.get("session_id"), e.get("member_id"), e.get("plate"),
                 e.get("rules_version"), canonical(e["payload"]).decode(), e["prev_hash"],
                 e["hash"], now) for e in es]

    def _insert_rows(self, conn: Any, rows: list[tuple[Any, ...]]) -> int:
        """Insert, skipping rows already there; returns how many went in. Rows go in in
        the order given (unnest keeps the arrays' order): the caller's (lane, seq) order
        is the lock order two workers share."""
        if not rows:
            return 0
        if self._sqlite:
            return int(conn.exec_driver_sql(self._insert, rows).rowcount)
        columns = [list(c) for c in zip(*rows, strict=True)]
        stamp = columns.pop()  # received_at: one value for the whole group
        return int(conn.exec_driver_sql(self._unnest, (stamp[0], *columns)).rowcount)

    # ---------------------------------------------------------------- commit
    def commit(self, bs: Sequence[Batch]) -> Outcome:
        """Commit a group; every batch gets a result or its refusal (never raises for one
        batch's refusal: a ``seq_conflict`` batch is taken out and the rest committed)."""
        if not bs:
            return Outcome()
        out = Outcome()
        pending = list(bs)
        refused: dict[int, SyncMessageError] = {}
        died = 0  # groups retried because their connection died under them
        for attempt in range(MAX_RETRIES + 1):
            try:
                results = self._attempt(pending, exact=out.path == "exact")
                break
            except _Replayed:
                out.path = "exact"
            except SyncMessageError:
                # one batch is refused: find it alone, commit the others without it
                bad = self._find_refused(pending)
                if bad is None:
                    raise
                refused[id(bad[0])] = bad[1]
                pending = [b for b in pending if b is not bad[0]]
                out.path = "exact"
                if not pending:
                    results = []
                    break
            except (_Race, DBAPIError) as exc:
                if (isinstance(exc, DBAPIError) and exc.connection_invalidated and not died
                        and attempt < MAX_RETRIES):
                    # The connection died mid-transaction (a PostgreSQL restart or failover,
                    # a killed backend): nothing of it is committed, or, if it died in the
                    # COMMIT, all of it, which the retry finds as duplicates (exact path).
                    # The pool has replaced the connection: one more try on a new one,
                    # rather than failing the group (unacked, resent by every lane later).
                    died += 1
                    log.warning("ingest: the database connection died under a group of %d "
                                "batches; retrying it once on a new one: %s", len(pending),
                                str(exc.orig)[:200])
                    out.retries += 1
                    out.path = "exact"
                    continue
                if attempt == MAX_RETRIES or (isinstance(exc, DBAPIError)
                                              and not self._retryable(exc)):
                    raise
                out.retries += 1
                out.path = "exact"
                time.sleep(0.01 * (attempt + 1))
        else:  # pragma: no cover - the loop breaks or raises
            raise RuntimeError("unreachable")
        it = iter(results)
        out.results = [refused[id(b)] if id(b) in refused else next(it) for b in bs]
        return out

    def _retryable(self, exc: DBAPIError) -> bool:
        if isinstance(exc, IntegrityError):
            return True
        state = getattr(exc.orig, "sqlstate", None)
        if state in _RETRY_STATES:
            return True
        return self._sqlite and "locked" in str(exc.orig).lower()

    def _find_refused(self, bs: Sequence[Batch]) -> tuple[Batch, SyncMessageError] | None:
        for b in bs:
            try:
                with self.sessions.begin() as s:
                    self._check_conflict(s, b)
            except SyncMessageError as exc:
                return b, exc
        return None

    def _attempt(self, bs: Sequence[Batch], *, exact: bool) -> list[CommitResult]:
        now = self.clock()
        with self.sessions.begin() as s:
            conn = s.connection()
            stamp = self._stamp(now)
            if not exact:
                order = sorted(range(len(bs)), key=lambda i: (bs[i].lane, bs[i].first_seq))
                taken = {i: _taken(bs[i]) for i in order}
                rows = [r for i in order for r in self._rows(bs[i], taken[i], stamp)]
                if self._insert_rows(conn, rows) != len(rows):
                    raise _Replayed
                news = [(bs[i], taken[i], list(bs[i].entries)) for i in range(len(bs))]
                dups = [0] * len(bs)
            else:
                news, dups = [], []
                for b in bs:
                    new_raw = self._check_conflict(s, b)
                    fl = dict(b.flagged)
                    new = [_clean(e) if e["seq"] in fl else e for e in new_raw]
                    if new and self._insert_rows(conn, self._rows(b, new, stamp)) != len(new):
                        raise _Race  # another worker committed some of them since we looked
                    news.append((b, new, new_raw))
                    dups.append(len(b.entries) - len(new))
            flagged = [self._flag(s, b, raw) for b, _new, raw in news]
            changed = self._apply(s, [e for _b, new, _raw in news for e in new], now)
        results = []
        for (_b, new, _raw), d, nf in zip(news, dups, flagged, strict=True):
            mids = tuple(sorted({str(e["member_id"]) for e in new if e.get("member_id")}
                                & changed))
            lag = None
            if new:
                rec = parse_time(new[-1].get("recorded"), now)
                lag = max(0.0, (now - rec).total_seconds())
            results.append(CommitResult(len(new), d, mids, nf, lag))
        return results

    def _check_conflict(self, s: Session, b: Batch) -> list[dict[str, Any]]:
        """The batch's entries not committed yet; ``seq_conflict`` if a committed one of the
        same (lane, seq) has another hash (a lane restored from an old backup)."""
        seqs = [e["seq"] for e in b.entries]
        have = {int(seq): h for seq, h in s.connection().exec_driver_sql(
            "SELECT seq, hash FROM lane_entries WHERE lane_id = {p} AND seq BETWEEN {p} "
            "AND {p}".format(p="?" if self._sqlite else "%s"),
            (b.lane, min(seqs), max(seqs)))}
        clash = [e["entry_id"] for e in b.entries
                 if e["seq"] in have and have[e["seq"]] != e["hash"]]
        if clash:
            raise SyncMessageError("seq_conflict", f"{len(clash)} entries of {b.lane} differ "
                                   f"from the committed ones, first {clash[0]}")
        return [e for e in b.entries if e["seq"] not in have]

    @staticmethod
    def _flag(s: Session, b: Batch, new_raw: Sequence[dict[str, Any]]) -> int:
        if not b.flagged:
            return 0
        from central.db.models import LaneFlagged
        fl = dict(b.flagged)
        n = 0
        for e in new_raw:
            if e["seq"] in fl:
                s.add(LaneFlagged(entry_id=f"{b.lane}:{e['seq']}", lane_id=b.lane,
                                  seq=e["seq"], reason=fl[e["seq"]][:300],
                                  raw=canonical(e).decode()))
                n += 1
        return n

    # ---------------------------------------------------------------- points
    def _apply(self, s: Session, new: Sequence[dict[str, Any]], now: datetime) -> set[str]:
        """Points and coupons of newly inserted entries, member by member in id order (the
        lock order every worker uses), each member's entries in (lane, seq) order."""
        per: dict[str, list[dict[str, Any]]] = {}
        for e in new:
            mid = e.get("member_id")
            if not mid:
                continue
            p = e["payload"]
            if points_delta(e["kind"], p) or (e["kind"] == "coupon_used"
                                               and p.get("coupon_id")):
                per.setdefault(str(mid), []).append(e)
        for mid in sorted(per):
            m = self._member(s, mid, now)
            for e in sorted(per[mid], key=lambda e: (e["lane_id"], e["seq"])):
                apply_entry(s, self.rules, m, e, now)
            settle_debt(s, m, now)
        return set(per)

    def _member(self, s: Session, member_id: str, now: datetime) -> Member:
        m = s.get(Member, member_id, with_for_update=True)
        if m is not None:
            return m
        # A member central does not know (deleted, or enrolled where it should not be):
        # the entry happened, so the account is opened rather than the points lost.
        log.warning("ingest: lane entry for unknown member %r: account opened", member_id)
        m = Member(member_id=member_id, name="", tier=self.rules.tier_names[0], blocked=False,
                   balance=0, version=1, created_at=now)
        s.add(m)
        s.flush()
        return lock_member(s, member_id)


def apply_entry(s: Session, rules: RuleBundle, m: Member, e: dict[str, Any],
                now: datetime) -> None:
    """One lane entry's effect on the member ``m`` (locked by the caller)."""
    p, kind, ref = e["payload"], e["kind"], e["entry_id"]
    at = parse_time(e.get("at"), now)
    if kind == "coupon_used" and p.get("coupon_id"):
        c = s.get(Coupon, str(p["coupon_id"]), with_for_update=True)
        if c is not None and c.member_id == m.member_id and c.used_at is None:
            c.used_at = at
            m.version = m.version + 1
    d = points_delta(kind, p)
    if d > 0:
        source = "lane" if kind == "points_earned" else "lane_return"
        accrue(s, rules, m, d, at, lot_id=f"lane:{ref}", source=source, ref=ref)
    elif d < 0:
        spend_overdraw(s, m, -d, at, kind="points_spent" if kind == "points_deducted"
                       else "adjustment", ref=ref)


def _debt_id(member_id: str) -> str:
    return f"debt:{member_id}"


def spend_overdraw(s: Session, m: Member, points: int, at: datetime, *, kind: str,
                   ref: str) -> None:
    """Take ``points`` from the live lots soonest-expiring first; what they cannot cover
    goes on the member's debt lot (the lane spent it offline: it happened)."""
    rows = engine_lots(s, m.member_id, lock=True)
    lots = tuple(EngineLot(r.lot_id, r.remaining, r.expires_at, r.earned_at)
                 for r in rows.values())
    avail = sum(n for _lid, n in _all_spendable(lots, at))
    take = min(points, avail)
    if take:
        for lot_id, n in take_from_lots(lots, take, at):
            rows[lot_id].remaining -= n
            _entry(s, m, kind, -n, at, lot_id=lot_id, ref=ref)
    rest = points - take
    if rest:
        debt = s.scalar(select(PointsLot).where(PointsLot.lot_id == _debt_id(m.member_id))
                        .with_for_update())
        if debt is None:
            debt = PointsLot(lot_id=_debt_id(m.member_id), member_id=m.member_id, points=0,
                             remaining=0, earned_at=at, expires_at=None, source="overdraft")
            s.add(debt)
        debt.remaining = debt.remaining - rest
        _entry(s, m, kind, -rest, at, lot_id=debt.lot_id, ref=ref)


def _all_spendable(lots: tuple[EngineLot, ...], at: datetime) -> list[tuple[str, int]]:
    from edge.pricing.spend import spendable_lots
    return [(lot.lot_id, lot.points) for lot in spendable_lots(lots, at)]


def settle_debt(s: Session, m: Member, now: datetime) -> None:
    """Pay the member's debt lot from their live lots (soonest-expiring first): no entry,
    the sum of the lots is unchanged; afterwards nothing is spendable while in debt."""
    debt = s.scalar(select(PointsLot).where(PointsLot.lot_id == _debt_id(m.member_id))
                    .with_for_update())
    if debt is None or debt.remaining >= 0:
        return
    rows = engine_lots(s, m.member_id, lock=True)
    lots = tuple(EngineLot(r.lot_id, r.remaining, r.expires_at, r.earned_at)
                 for r in rows.values())
    avail = sum(n for _lid, n in _all_spendable(lots, now))
    pay = min(-debt.remaining, avail)
    if pay <= 0:
        return
    for lot_id, n in take_from_lots(lots, pay, now):
        rows[lot_id].remaining -= n
    debt.remaining = debt.remaining + pay


def export_lane(s: Session, lane: str) -> list[dict[str, Any]]:
    """Every committed entry of ``lane`` in seq order, as the lane sent it (the input of
    ``parkedge ledger recover --central-export``)."""
    from central.db.models import LaneEntry
    out = []
    for r in s.scalars(select(LaneEntry).where(LaneEntry.lane_id == lane)
                       .order_by(LaneEntry.seq)):
        out.append({"entry_id": r.entry_id, "lane_id": r.lane_id, "seq": r.seq,
                    "kind": r.kind, "at": r.at, "recorded": r.recorded,
                    "session_id": r.session_id, "member_id": r.member_id, "plate": r.plate,
                    "rules_version": r.rules_version, "payload": json.loads(r.payload),
                    "prev_hash": r.prev_hash, "hash": r.hash})
    return out
