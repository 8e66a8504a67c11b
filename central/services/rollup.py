"""Figure rollups: the ledger summed per site-local day, folded in by a minute job.

The overview would otherwise sum a year of entries on every render. ``fold`` adds the
entries, purchases and redemptions past the mark (``rollup_marks``) to ``figures_daily``,
``member_days`` and ``member_months`` and moves the mark, in one transaction under the mark
row's lock: a second worker waits, then finds nothing left, so the fold is idempotent.
PostgreSQL folds in SQL (the first fold of millions of rows included); SQLite, the small
trial store with no time zones in SQL, folds in Python with the same ``Tail`` the pages use
for what is not folded yet.

Why a fold stops at ids it can trust: on PostgreSQL a transaction may commit id 100 after
id 101; ``safe_id`` takes a brief SHARE lock on each table (waits for the writers in
flight, blocks new ones for that instant) so every id up to the max it reads is committed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import CursorResult, bindparam, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from central.db.models import (
    FiguresDaily,
    LotExpiryHour,
    Member,
    MemberDay,
    MemberMonth,
    MemberSlot,
    MemberTotal,
    MonthPack,
    PointsEntry,
    PointsLot,
    Purchase,
    Redemption,
    Reward,
    RollupMark,
    VisitGroup,
    VisitGroupPeriod,
)
from central.db.types import UtcDateTime
from edge.pricing import RuleBundle

MARK = "figures"
# visit days in a period -> the overview's groups; index -1: earned without a visit
VISIT_BUCKETS = ((1, 2, "1-2"), (3, 5, "3-5"), (6, 10, "6-10"), (11, 20, "11-20"),
                 (21, 10**9, "21+"))
LOCK_WAIT = "2s"  # a page waits this long for a fold, then reads the raw ledger
MAX_PERIODS = 24  # periods whose visit groups the folds keep; others are grouped per render
TABLES = (("entries_id", "points_entries"), ("purchases_id", "purchases"),
          ("redemptions_id", "redemptions"))


@dataclass(frozen=True)
class Marks:
    """Last folded id per source table (0 = nothing folded)."""

    entries: int = 0
    purchases: int = 0
    redemptions: int = 0


def read_marks(s: Session, tz: ZoneInfo, *, lock: bool = False) -> Marks | None:
    """The marks, or None if nothing was folded yet or the rollups are in another zone
    (then they must not be read). ``lock`` (the pages) holds the row FOR SHARE on
    PostgreSQL so no fold commits between the rollups and the tail read; a fold holding it
    longer than LOCK_WAIT (the first fold of a large ledger) gives None too."""
    q = select(RollupMark).where(RollupMark.name == MARK)
    pg = s.get_bind().dialect.name == "postgresql"
    if not (lock and pg):
        row = s.scalar(q)
    else:
        try:
            with s.begin_nested():
                s.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
                row = s.scalar(q.with_for_update(read=True))
        except OperationalError:  # lock_timeout: a long fold is running
            return None
        finally:
            s.execute(text("SET LOCAL lock_timeout TO DEFAULT"))
    if row is None or row.tz != str(tz):
        return None
    return Marks(row.entries_id, row.purchases_id, row.redemptions_id)


def ypp_of(rules: RuleBundle) -> dict[str, int]:
    """Tier -> cents per purchase point (the base ¥ per point)."""
    return {n: int(rules.tier(n).purchase_yuan_per_point * 100) for n in rules.tier_names}


# ------------------------------------------------------------------ the tail, in Python
@dataclass
class Tail:
    """Rows summed as the rollups sum them, keyed the same way: ``daily[(day, kind, key)]
    = [points, n, value_cents]``, ``member_days[(member, day)] = [earned, visits]``."""

    tz: ZoneInfo
    daily: dict[tuple[str, str, str], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0, 0]))
    member_days: dict[tuple[str, str], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0]))
    last: Marks = field(default_factory=Marks)

    def day(self, at: datetime) -> str:
        return at.astimezone(self.tz).strftime("%Y-%m-%d")

    def add_entry(self, member_id: str, kind: str, points: int, at: datetime,
                  source: str | None) -> None:
        d = self.day(at)
        row = self.daily[(d, kind, source or "")]
        row[0] += points
        row[1] += 1
        if kind == "points_earned":
            md = self.member_days[(member_id, d)]
            md[0] += points
            md[1] += 0 if source == "adjustment" else 1

    def add_purchase(self, at: datetime, points: int, amount: Decimal, ypp: int) -> None:
        if points <= 0:
            return
        d = self.day(at)
        base = min(int(amount * 100) // ypp, points)
        for key, pts in (("points", points), ("base", base)):
            row = self.daily[(d, "purchase", key)]
            row[0] += pts
            row[1] += 1

    def add_redemption(self, at: datetime, reward_kind: str, points: int,
                       value: Decimal) -> None:
        row = self.daily[(self.day(at), "redemption", reward_kind)]
        row[0] += points
        row[1] += 1
        row[2] += int(value * 100)


def read_tail(s: Session, rules: RuleBundle, after: Marks, upto: Marks | None = None) -> Tail:
    """What lies past ``after`` (up to ``upto`` if given), summed in Python."""
    t = Tail(rules.tz)
    ypp = ypp_of(rules)
    hi = upto or Marks(2**62, 2**62, 2**62)
    last = [after.entries, after.purchases, after.redemptions]
    q = (select(PointsEntry.id, PointsEntry.member_id, PointsEntry.kind, PointsEntry.points,
                PointsEntry.at, PointsLot.source)
         .join(PointsLot, PointsLot.lot_id == PointsEntry.lot_id, isouter=True)
         .where(PointsEntry.id > after.entries, PointsEntry.id <= hi.entries))
    for i, mid, kind, pts, at, src in s.execute(q):
        t.add_entry(mid, kind, int(pts), at, src)
        last[0] = max(last[0], i)
    q2 = (select(Purchase.id, Purchase.at, Purchase.points, Purchase.amount, Member.tier)
          .join(Member, Member.member_id == Purchase.member_id)
          .where(Purchase.id > after.purchases, Purchase.id <= hi.purchases))
    for i, at, pts, amount, tier in s.execute(q2):
        t.add_purchase(at, int(pts), amount, ypp.get(tier, 100))
        last[1] = max(last[1], i)
    q3 = (select(Redemption.id, Redemption.at, Reward.kind, Redemption.points,
                 Redemption.value)
          .join(Reward, Reward.reward_id == Redemption.reward_id)
          .where(Redemption.id > after.redemptions, Redemption.id <= hi.redemptions))
    for i, at, kind, pts, value in s.execute(q3):
        t.add_redemption(at, kind, int(pts), value)
        last[2] = max(last[2], i)
    t.last = Marks(*last)
    return t


def tail_size(s: Session, after: Marks) -> int:
    """How many source rows lie past the marks (by id: an upper bound, gaps included)."""
    n = 0
    for col, mark in ((PointsEntry.id, after.entries), (Purchase.id, after.purchases),
                      (Redemption.id, after.redemptions)):
        n += max(0, int(s.scalar(select(func.coalesce(func.max(col), 0))) or 0) - mark)
    return n


# ------------------------------------------------------------------ folding
_UPSERT_DAILY = text("""
    INSERT INTO figures_daily (day, kind, key, points, n, value_cents)
    VALUES (:day, :kind, :key, :points, :n, :value)
    ON CONFLICT (day, kind, key) DO UPDATE SET points = figures_daily.points + excluded.points,
        n = figures_daily.n + excluded.n,
        value_cents = figures_daily.value_cents + excluded.value_cents""")
_UPSERT_MEMBER_DAY = text("""
    INSERT INTO member_days (member_id, day, earned, visits) VALUES (:m, :day, :e, :v)
    ON CONFLICT (member_id, day) DO UPDATE SET earned = member_days.earned + excluded.earned,
        visits = member_days.visits + excluded.visits""")
_MONTHS_FROM_DAYS = """
    INSERT INTO member_months (month, member_id, earned, visit_days)
    SELECT substr(d.day, 1, 7), d.member_id, sum(d.earned),
           sum(CASE WHEN d.visits > 0 THEN 1 ELSE 0 END)
    FROM member_days d WHERE {where}
    GROUP BY substr(d.day, 1, 7), d.member_id
    ON CONFLICT (month, member_id) DO UPDATE SET earned = excluded.earned,
        visit_days = excluded.visit_days"""


def safe_id(s: Session, table: str) -> int:
    """The highest id of ``table`` (one of TABLES) whose rows are all committed (see the
    module's docstring). Run it in a transaction of its own and end that at once: it holds
    the lock till then. One table per transaction: holding one while waiting for another
    could deadlock with a writer that inserts them in the other order."""
    if table not in {t for _c, t in TABLES}:
        raise ValueError(table)
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SET LOCAL lock_timeout = '1s'"))
        s.execute(text(f"LOCK TABLE {table} IN SHARE MODE"))
    return int(s.scalar(text(f"SELECT coalesce(max(id), 0) FROM {table}")) or 0)


def _lock_mark(s: Session, tz: ZoneInfo, now: datetime) -> RollupMark:
    """The mark row, created if missing, locked; rollups of another zone are dropped."""
    s.execute(text("""INSERT INTO rollup_marks (name, tz, entries_id, purchases_id,
                      redemptions_id) VALUES (:n, :tz, 0, 0, 0)
                      ON CONFLICT (name) DO NOTHING"""), {"n": MARK, "tz": str(tz)})
    row = s.scalars(select(RollupMark).where(RollupMark.name == MARK)
                    .with_for_update()).one()
    if row.tz != str(tz):
        for model in (FiguresDaily, MemberDay, MemberMonth, VisitGroup, VisitGroupPeriod,
                      MonthPack):
            s.query(model).delete()
        row.tz, row.entries_id, row.purchases_id, row.redemptions_id = str(tz), 0, 0, 0
        row.folded_at = now
        s.flush()
    return row


def fold(s: Session, rules: RuleBundle, upto: Marks, now: datetime) -> Marks:
    """Fold everything past the mark up to ``upto`` (from ``safe_id``) into the rollups and
    move the mark; returns how many rows of each table were folded. Commit is the caller's."""
    row = _lock_mark(s, rules.tz, now)
    after = Marks(row.entries_id, row.purchases_id, row.redemptions_id)
    hi = Marks(max(upto.entries, after.entries), max(upto.purchases, after.purchases),
               max(upto.redemptions, after.redemptions))
    if hi == after:
        return Marks()
    if s.get_bind().dialect.name == "postgresql":
        _fold_sql(s, rules, after, hi)
    else:
        _fold_python(s, rules, after, hi)
    row.entries_id, row.purchases_id, row.redemptions_id = hi.entries, hi.purchases, \
        hi.redemptions
    row.folded_at = now
    s.flush()
    return Marks(hi.entries - after.entries, hi.purchases - after.purchases,
                 hi.redemptions - after.redemptions)


def _fold_python(s: Session, rules: RuleBundle, after: Marks, hi: Marks) -> None:
    t = read_tail(s, rules, after, hi)
    if t.daily:
        s.execute(_UPSERT_DAILY, [{"day": d, "kind": k, "key": key, "points": v[0], "n": v[1],
                                   "value": v[2]} for (d, k, key), v in t.daily.items()])
    if t.member_days:
        s.execute(_UPSERT_MEMBER_DAY, [{"m": m, "day": d, "e": v[0], "v": v[1]}
                                       for (m, d), v in t.member_days.items()])
        touched = {(m, d[:7]) for m, d in t.member_days}
        who = [{"m": m} for m in sorted({m for m, _d in touched})]
        _move_groups(s, -1, "mm.member_id = :m", who)
        s.execute(text(_MONTHS_FROM_DAYS.format(
            where="d.member_id = :m AND substr(d.day, 1, 7) = :month")),
            [{"m": m, "month": mo} for m, mo in sorted(touched)])
        _move_groups(s, 1, "mm.member_id = :m", who)
        refresh_packs(s, {mo for _m, mo in touched})


def _fold_sql(s: Session, rules: RuleBundle, after: Marks, hi: Marks) -> None:
    """The same sums as ``Tail``, done by PostgreSQL over the id ranges."""
    p: dict[str, Any] = {"tz": str(rules.tz), "e0": after.entries, "e1": hi.entries,
                         "p0": after.purchases, "p1": hi.purchases,
                         "r0": after.redemptions, "r1": hi.redemptions}
    day = "to_char(timezone(:tz, {}.at), 'YYYY-MM-DD')"
    upsert = """ ON CONFLICT (day, kind, key) DO UPDATE SET
        points = figures_daily.points + excluded.points, n = figures_daily.n + excluded.n,
        value_cents = figures_daily.value_cents + excluded.value_cents"""
    s.execute(text(f"""
        INSERT INTO figures_daily (day, kind, key, points, n, value_cents)
        SELECT {day.format('e')}, e.kind, coalesce(l.source, ''), sum(e.points), count(*), 0
        FROM points_entries e LEFT JOIN points_lots l ON l.lot_id = e.lot_id
        WHERE e.id > :e0 AND e.id <= :e1 GROUP BY 1, 2, 3""" + upsert), p)
    ypp = ypp_of(rules)
    tiers = " ".join(f"WHEN :t{i} THEN {int(c)}" for i, c in enumerate(ypp.values()))
    p.update({f"t{i}": n for i, n in enumerate(ypp)})
    ypp_sql = f"(CASE m.tier {tiers} ELSE 100 END)" if ypp else "100"
    s.execute(text(f"""
        INSERT INTO figures_daily (day, kind, key, points, n, value_cents)
        SELECT d, 'purchase', k, sum(v), count(*), 0 FROM (
          SELECT {day.format('pu')} d, x.k, x.v
          FROM purchases pu JOIN members m ON m.member_id = pu.member_id,
          LATERAL (VALUES ('points', pu.points),
                          ('base', least(pu.amount / {ypp_sql}, pu.points))) x(k, v)
          WHERE pu.id > :p0 AND pu.id <= :p1 AND pu.points > 0) q
        GROUP BY d, k""" + upsert), p)
    s.execute(text(f"""
        INSERT INTO figures_daily (day, kind, key, points, n, value_cents)
        SELECT {day.format('r')}, 'redemption', w.kind, sum(r.points), count(*), sum(r.value)
        FROM redemptions r JOIN rewards w ON w.reward_id = r.reward_id
        WHERE r.id > :r0 AND r.id <= :r1 GROUP BY 1, 2, 3""" + upsert), p)
    s.execute(text(f"""
        INSERT INTO member_days (member_id, day, earned, visits)
        SELECT e.member_id, {day.format('e')}, sum(e.points),
               count(*) FILTER (WHERE coalesce(l.source, '') <> 'adjustment')
        FROM points_entries e LEFT JOIN points_lots l ON l.lot_id = e.lot_id
        WHERE e.kind = 'points_earned' AND e.id > :e0 AND e.id <= :e1 GROUP BY 1, 2
        ON CONFLICT (member_id, day) DO UPDATE SET
          earned = member_days.earned + excluded.earned,
          visits = member_days.visits + excluded.visits"""), p)
    who = """mm.member_id IN (SELECT DISTINCT e.member_id FROM points_entries e
        WHERE e.kind = 'points_earned' AND e.id > :e0 AND e.id <= :e1)"""
    _move_groups(s, -1, who, p)
    s.execute(text(_MONTHS_FROM_DAYS.format(where="""(d.member_id, substr(d.day, 1, 7)) IN (
        SELECT DISTINCT e.member_id, to_char(timezone(:tz, e.at), 'YYYY-MM')
        FROM points_entries e WHERE e.kind = 'points_earned'
          AND e.id > :e0 AND e.id <= :e1)""")), p)
    _move_groups(s, 1, who, p)
    refresh_packs(s, {str(mo) for mo in s.scalars(text("""
        SELECT DISTINCT to_char(timezone(:tz, e.at), 'YYYY-MM') FROM points_entries e
        WHERE e.kind = 'points_earned' AND e.id > :e0 AND e.id <= :e1"""), p)})


# ------------------------------------------------------------------ month packs
# (slots, visit days, earned) of a month's members, big-endian as PostgreSQL's int4send /
# int8send write them
PACK_TYPES: tuple[np.dtype[Any], ...] = (np.dtype(">i4"), np.dtype(">i4"), np.dtype(">i8"))
_NEW_SLOTS = text("""
    INSERT INTO member_slots (member_id, slot)
    SELECT t.member_id, (SELECT coalesce(max(x.slot), 0) FROM member_slots x)
                        + row_number() OVER (ORDER BY t.member_id)
    FROM (SELECT DISTINCT mm.member_id FROM member_months mm
          WHERE mm.month IN :months AND NOT EXISTS (
            SELECT 1 FROM member_slots y WHERE y.member_id = mm.member_id)) t
    """).bindparams(bindparam("months", expanding=True))
_PACK_PG = text("""
    INSERT INTO month_packs (month, members, slots, visit_days, earned)
    SELECT mm.month, count(*), string_agg(int4send(x.slot), ''::bytea ORDER BY x.slot),
           string_agg(int4send(mm.visit_days::int), ''::bytea ORDER BY x.slot),
           string_agg(int8send(mm.earned), ''::bytea ORDER BY x.slot)
    FROM member_months mm JOIN member_slots x ON x.member_id = mm.member_id
    WHERE mm.month IN :months GROUP BY mm.month
    ON CONFLICT (month) DO UPDATE SET members = excluded.members, slots = excluded.slots,
        visit_days = excluded.visit_days, earned = excluded.earned
    """).bindparams(bindparam("months", expanding=True))


def refresh_packs(s: Session, months: set[str]) -> None:
    """Rebuild the packs of ``months`` from their ``member_months`` (after the fold
    changed them), giving new members their slots first."""
    if not months:
        return
    ms = sorted(months)
    s.execute(_NEW_SLOTS, {"months": ms})
    if s.get_bind().dialect.name == "postgresql":
        s.execute(_PACK_PG, {"months": ms})
        return
    for month in ms:
        rows = s.execute(select(MemberSlot.slot, MemberMonth.visit_days, MemberMonth.earned)
                         .join(MemberSlot, MemberSlot.member_id == MemberMonth.member_id)
                         .where(MemberMonth.month == month).order_by(MemberSlot.slot)).all()
        a = np.array(rows, dtype=np.int64).reshape(-1, 3)
        packed = [a[:, i].astype(t).tobytes() for i, t in enumerate(PACK_TYPES)]
        s.execute(text("""INSERT INTO month_packs (month, members, slots, visit_days, earned)
            VALUES (:m, :n, :s, :v, :e) ON CONFLICT (month) DO UPDATE SET
            members = excluded.members, slots = excluded.slots,
            visit_days = excluded.visit_days, earned = excluded.earned"""),
            {"m": month, "n": len(rows), "s": packed[0], "v": packed[1], "e": packed[2]})


def _pack_rows(s: Session, first: str, last: str) -> list[tuple[bytes, bytes, bytes]]:
    """The period's packs. PostgreSQL sends them in its binary format, on the session's
    own connection (its transaction, its snapshot): as text, bytea travels as hex, twice
    the bytes and a decode (~100 ms instead of ~25 for a year of 80,000 members)."""
    if s.get_bind().dialect.name == "postgresql":
        raw = s.connection().connection.driver_connection
        with raw.cursor(binary=True) as cur:  # type: ignore[union-attr]
            cur.execute("""SELECT slots, visit_days, earned FROM month_packs
                           WHERE month >= %s AND month <= %s""", (first, last))
            return [(bytes(a), bytes(b), bytes(c)) for a, b, c in cur.fetchall()]
    return [(bytes(a), bytes(b), bytes(c)) for a, b, c in s.execute(
        select(MonthPack.slots, MonthPack.visit_days, MonthPack.earned)
        .where(MonthPack.month >= first, MonthPack.month <= last))]


def pack_groups(s: Session, first: str, last: str) -> dict[int, list[int]]:
    """Bucket -> [members, points] of the members with a ``member_months`` row in
    ``first``..``last``, by their visit days and points earned over the period: what the
    SQL GROUP BY of ``member_months`` gives, summed per slot over the months' packs."""
    packs = [tuple(np.frombuffer(b, t) for b, t in zip(row, PACK_TYPES, strict=True))
             for row in _pack_rows(s, first, last)]
    packs = [p for p in packs if len(p[0])]
    if not packs:
        return {}
    n = max(int(p[0][-1]) for p in packs) + 1  # sorted by slot
    visits = np.zeros(n, np.int64)
    earned = np.zeros(n, np.int64)
    seen = np.zeros(n, bool)
    for slots, v, e in packs:
        visits[slots] += v  # a slot appears once per month: no repeated index
        earned[slots] += e
        seen[slots] = True
    visits, earned = visits[seen], earned[seen]
    tops = np.array([hi for _lo, hi, _label in VISIT_BUCKETS], np.int64)
    bucket = np.searchsorted(tops, visits, side="left")  # the first bucket whose top >= v
    bucket[(visits < 1) | (bucket >= len(tops))] = -1
    out: dict[int, list[int]] = {}
    for b in np.unique(bucket):
        mask = bucket == b
        out[int(b)] = [int(mask.sum()), int(earned[mask].sum())]
    return out


# ------------------------------------------------------------------ visit groups per period
def bucket_of(visit_days: int) -> int:
    """Index in VISIT_BUCKETS, or -1 for no visit."""
    for i, (lo_v, hi_v, _label) in enumerate(VISIT_BUCKETS):
        if lo_v <= visit_days <= hi_v:
            return i
    return -1


_BUCKET = "(CASE WHEN v < 1 THEN -1 " + " ".join(
    f"WHEN v <= {hi_v} THEN {i}" for i, (_l, hi_v, _x) in enumerate(VISIT_BUCKETS)) \
    + " ELSE -1 END)"
_ADD_GROUPS = """ ON CONFLICT (first, last, bucket) DO UPDATE SET
    members = visit_groups.members + excluded.members,
    points = visit_groups.points + excluded.points"""


def _move_groups(s: Session, sign: int, where: str, params: Any) -> None:
    """Take the given members out of (-1) or put them into (+1) every kept period's groups,
    from their member_months as they are now: a fold does -1, updates the months, +1."""
    s.execute(text(f"""
        INSERT INTO visit_groups (first, last, bucket, members, points)
        SELECT first, last, {_BUCKET}, {sign} * count(*), {sign} * sum(e) FROM (
          SELECT p.first AS first, p.last AS last, mm.member_id AS member_id,
                 sum(mm.earned) AS e, sum(mm.visit_days) AS v
          FROM visit_group_periods p
          JOIN member_months mm ON mm.month >= p.first AND mm.month <= p.last
          WHERE {where} GROUP BY p.first, p.last, mm.member_id) t
        WHERE 1 = 1 GROUP BY first, last, {_BUCKET}""" + _ADD_GROUPS), params)


def period_groups(s: Session, first: str, last: str, now: datetime
                  ) -> dict[int, list[int]]:
    """Bucket -> [members, points] of the folded member-months of ``first``..``last``.
    A period not kept yet is grouped once here and kept (up to MAX_PERIODS), so the next
    renders and the folds find it; call it with the mark held (pages: FOR SHARE)."""
    key = (VisitGroupPeriod.first == first) & (VisitGroupPeriod.last == last)
    if s.scalar(select(func.count()).select_from(VisitGroupPeriod).where(key)):
        return {int(b): [int(n), int(p)] for b, n, p in s.execute(
            select(VisitGroup.bucket, VisitGroup.members, VisitGroup.points).where(
                VisitGroup.first == first, VisitGroup.last == last))}
    groups = pack_groups(s, first, last)
    args = {"first": first, "last": last, "now": now}
    kept = int(s.scalar(select(func.count()).select_from(VisitGroupPeriod)) or 0)
    keep = text("""INSERT INTO visit_group_periods (first, last, built_at)
                   VALUES (:first, :last, :now) ON CONFLICT (first, last) DO NOTHING"""
                ).bindparams(bindparam("now", type_=UtcDateTime()))
    if kept < MAX_PERIODS and cast(CursorResult[Any], s.execute(keep, args)).rowcount == 1 \
            and groups:
        s.execute(text("""INSERT INTO visit_groups (first, last, bucket, members, points)
            VALUES (:first, :last, :b, :n, :pts)"""),
            [{"first": first, "last": last, "b": b, "n": n, "pts": pts}
             for b, (n, pts) in sorted(groups.items())])
    return groups


# ------------------------------------------------------------------ points by expiry hour
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def expiry_hour(t: datetime) -> int:
    """Whole UTC hours since the epoch before ``t``: the hour ``lot_expiry_hours`` files a
    lot under (the triggers' ``floor(epoch / 3600)``, migration 0009)."""
    return (t - EPOCH) // HOUR


def hour_start(hour: int) -> datetime:
    return EPOCH + hour * HOUR


_COMPACT_PG = text("""
    WITH gone AS (
      DELETE FROM lot_expiry_hours WHERE hour IN (
        SELECT hour FROM lot_expiry_hours GROUP BY hour
        HAVING count(*) > 1 OR sum(points) = 0)
      RETURNING hour, points)
    INSERT INTO lot_expiry_hours (hour, points)
    SELECT hour, sum(points) FROM gone GROUP BY hour HAVING sum(points) <> 0""")


def compact_expiry(s: Session) -> int:
    """Merge each expiry hour's rows (one per lot change) into one, dropping hours that
    sum to nothing; returns the rows left. The sums do not change: a row is deleted and its
    points re-added by the same transaction, and a row some writer has not committed yet is
    not seen, so it stays for the next run (PostgreSQL's DELETE skips the rows another
    compaction deleted first)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(_COMPACT_PG)
    else:  # one writer at a time on SQLite
        merge = [(int(h), int(p)) for h, p in s.execute(text(
            """SELECT hour, sum(points) FROM lot_expiry_hours GROUP BY hour
               HAVING count(*) > 1 OR sum(points) = 0"""))]
        if merge:
            s.execute(text("DELETE FROM lot_expiry_hours WHERE hour = :h"),
                      [{"h": h} for h, _p in merge])
            rows = [{"h": h, "p": p} for h, p in merge if p != 0]
            if rows:
                s.execute(text("INSERT INTO lot_expiry_hours (hour, points) VALUES (:h, :p)"),
                          rows)
    return int(s.scalar(select(func.count()).select_from(LotExpiryHour)) or 0)


_COMPACT_TOTALS_PG = text("""
    WITH gone AS (DELETE FROM member_totals RETURNING members, outstanding)
    INSERT INTO member_totals (members, outstanding)
    SELECT coalesce(sum(members), 0), coalesce(sum(outstanding), 0) FROM gone
    HAVING count(*) > 0""")


def member_totals(s: Session) -> tuple[int, int]:
    """(members, points held in positive balances) from ``member_totals``."""
    n, held = s.execute(select(func.coalesce(func.sum(MemberTotal.members), 0),
                               func.coalesce(func.sum(MemberTotal.outstanding), 0))).one()
    return int(n), int(held)


def compact_totals(s: Session) -> None:
    """Merge ``member_totals``' rows into one, the way ``compact_expiry`` merges hours (a
    row another transaction has not committed is not seen and stays)."""
    if int(s.scalar(select(func.count()).select_from(MemberTotal)) or 0) <= 1:
        return
    if s.get_bind().dialect.name == "postgresql":
        s.execute(_COMPACT_TOTALS_PG)
        return
    n, held = member_totals(s)
    s.execute(text("DELETE FROM member_totals"))
    s.execute(text("INSERT INTO member_totals (members, outstanding) VALUES (:n, :h)"),
              {"n": n, "h": held})


def rollup_counts(s: Session) -> dict[str, int]:
    """Rows in each rollup table (for the job's log line and the bench)."""
    return {m.__tablename__: int(s.scalar(select(func.count()).select_from(m)) or 0)
            for m in (FiguresDaily, MemberDay, MemberMonth)}


__all__ = ["VISIT_BUCKETS", "Marks", "Tail", "bucket_of", "compact_expiry", "compact_totals",
           "expiry_hour", "fold", "hour_start", "member_totals", "pack_groups",
           "period_groups", "read_marks", "read_tail", "refresh_packs", "rollup_counts",
           "safe_id", "tail_size", "ypp_of"]
