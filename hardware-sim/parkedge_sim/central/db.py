"""The bench central server's store: SQLAlchemy Core, SQLite by default, PostgreSQL by URL.

One transaction per lane batch: entries already committed (same lane and seq, or same entry
id) are skipped, the new ones are inserted and applied to the balances they move, all or
nothing. That is what makes the lanes' at-least-once delivery exactly-once here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)

from edge.fields import ID_MAX_CHARS, is_plate
from edge.store.types import EntryKind
from edge.sync.codec import (
    Batch,
    CouponState,
    MemberState,
    SyncMessageError,
    canonical,
    points_delta,
)

meta = MetaData()

entries = Table(
    "central_entries", meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("lane_id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("entry_id", String(200), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("at", String(40), nullable=False),
    Column("member_id", String(128)),
    Column("session_id", String(128)),
    Column("plate", String(32)),
    Column("rules_version", String(128)),
    Column("payload", Text, nullable=False),
    Column("hash", String(64), nullable=False),
    # the two hashed fields a lane needs to rebuild and re-verify its chain from this copy
    # (`parkedge ledger recover`, #12 item 4)
    Column("recorded", String(40)),
    Column("prev_hash", String(64)),
    UniqueConstraint("lane_id", "seq", name="ux_central_lane_seq"),
)

members = Table(
    "central_members", meta,
    Column("member_id", String(128), primary_key=True),
    Column("tier", String(32), nullable=False),
    Column("name", String(200)),
    Column("balance", BigInteger, nullable=False, default=0),
    Column("version", BigInteger, nullable=False, default=1),
    Column("flagged", Boolean, nullable=False, default=False),
    Column("blocked", Boolean, nullable=False, default=False),
    Column("auto_deduct", Boolean, nullable=False, default=True),
)

bindings = Table(
    "central_bindings", meta,
    Column("plate", String(32), primary_key=True),
    Column("member_id", String(128), nullable=False),
)

purchases = Table(
    "central_purchases", meta,
    Column("purchase_id", String(128), primary_key=True),
    Column("member_id", String(128), nullable=False),
    Column("amount", String(32), nullable=False),
    Column("category", String(64), nullable=False),
    Column("at", String(40), nullable=False),
    Column("points", BigInteger, nullable=False),
)

rewards = Table(
    "central_rewards", meta,
    Column("reward_id", String(128), primary_key=True),
    Column("kind", String(32), nullable=False),  # parking_hours|discount|merchandise|experience
    Column("name", String(200), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("value", String(32), nullable=False),  # hours, or yuan
)

redemptions = Table(
    "central_redemptions", meta,
    Column("redemption_id", String(128), primary_key=True),
    Column("member_id", String(128), nullable=False),
    Column("reward_id", String(128), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("value", String(32), nullable=False),
    Column("at", String(40), nullable=False),
)

coupons = Table(
    "central_coupons", meta,
    Column("coupon_id", String(128), primary_key=True),
    Column("member_id", String(128), nullable=False),
    Column("kind", String(16), nullable=False),  # the pricing engine's hours|amount|free
    Column("value", String(32), nullable=False),
    Column("valid_until", String(40)),
    Column("used_entry", String(200)),
)

# Entries a lane wrote that central cannot take as they are (a plate or an id outside the
# shared field limits ...): recorded in central_entries with what could be kept, flagged here
# with the reason and the entry exactly as received, and acked like any other (#12 item 2).
flagged_entries = Table(
    "central_flagged", meta,
    Column("entry_id", String(200), primary_key=True),
    Column("lane_id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("reason", String(300), nullable=False),
    Column("raw", Text, nullable=False),
)

REWARD_KINDS = ("parking_hours", "discount", "merchandise", "experience")
_COUPON_KIND = {"parking_hours": "hours", "discount": "amount"}

rules = Table(
    "central_rules", meta,
    Column("serial", Integer, primary_key=True),
    Column("version", String(128), nullable=False),
    Column("bundle", Text, nullable=False),
)


_ENTRY_COLS = ("lane_id", "seq", "entry_id", "kind", "at", "member_id", "session_id", "plate",
               "rules_version", "payload", "hash", "recorded", "prev_hash")


class _Replayed(Exception):
    """A row of the group was committed before: redo the group on the exact path."""


def _effects(es: Iterable[dict[str, Any]]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Points moved per account and coupons used ``(coupon_id, entry_id)`` by entries."""
    moved: dict[str, int] = {}
    used: list[tuple[str, str]] = []
    for e in es:
        kind, mid, p = e["kind"], e.get("member_id"), e["payload"]
        if kind == "coupon_used" and p.get("coupon_id"):
            used.append((str(p["coupon_id"]), e["entry_id"]))
            if mid:
                moved.setdefault(mid, 0)
        d = points_delta(kind, p)
        if mid and d:
            moved[mid] = moved.get(mid, 0) + d
    return moved, used


@dataclass(frozen=True)
class CommitResult:
    inserted: int
    duplicates: int
    members_changed: tuple[str, ...]
    flagged: int = 0


_KINDS = frozenset(str(k) for k in EntryKind)


def _ok_id(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v) <= ID_MAX_CHARS and v.isascii()


def _clean(e: dict[str, Any]) -> dict[str, Any]:
    """A flagged entry as it can be stored and applied: a field outside its limits is
    dropped (kept whole in ``central_flagged.raw``); a valid member and points still move
    the balance, since the lane already moved them (the entry happened)."""
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


def _taken(b: Batch) -> tuple[dict[str, Any], ...]:
    """The batch's entries, flagged ones cleaned."""
    if not b.flagged:
        return b.entries
    fl = dict(b.flagged)
    return tuple(_clean(e) if e["seq"] in fl else e for e in b.entries)


class CentralDB:
    def __init__(self, url: str = "sqlite:///central.db") -> None:
        kw: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kw["connect_args"] = {"check_same_thread": False, "timeout": 10}
        self.engine: Engine = create_engine(url, **kw)
        self.replayed_groups = 0  # groups that took the exact (batch by batch) path
        if url.startswith("sqlite"):
            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn: Any, _rec: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode = WAL")  # one fsync per commit
                cur.execute("PRAGMA synchronous = FULL")
                cur.close()
        meta.create_all(self.engine)
        with self.engine.begin() as c:  # a central.db made before those two columns existed
            have = {col["name"] for col in inspect(c).get_columns(entries.name)}
            for col in ("recorded", "prev_hash"):
                if col not in have:
                    c.exec_driver_sql(f"ALTER TABLE {entries.name} ADD COLUMN {col} "
                                      f"VARCHAR({40 if col == 'recorded' else 64})")
        # Plain driver SQL for the hot insert (SQLAlchemy's per-row parameter processing
        # cost more than SQLite's own insert); the same text runs on SQLite and PostgreSQL.
        ph = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        self._insert_sql = (f"INSERT INTO {entries.name} ({', '.join(_ENTRY_COLS)}) "
                            f"VALUES ({', '.join([ph] * len(_ENTRY_COLS))})")

    def close(self) -> None:
        self.engine.dispose()

    # ---------------------------------------------------------------- ledger
    def commit_batch(self, b: Batch) -> CommitResult:
        return self.commit_batches([b])[0]

    def commit_batches(self, bs: Sequence[Batch]) -> list[CommitResult]:
        """Several batches in one transaction (group commit: one fsync for all of them).

        Fast path: one multi-row ``INSERT ... ON CONFLICT DO NOTHING`` for the whole group;
        if the driver counts every row inserted, none was committed before (no replay) and
        every entry is applied. Otherwise (a replayed batch, overlapping batches) that
        transaction is rolled back and the group is committed again batch by batch, each one
        comparing its seqs and hashes with what is committed first. Any refusal
        (``seq_conflict``) rolls the whole group back; the caller then commits them one by
        one."""
        if not bs:
            return []
        try:
            with self.engine.begin() as c:
                return self._commit_fresh(c, bs)
        except _Replayed:
            self.replayed_groups += 1
        with self.engine.begin() as c:
            return [self._commit_in(c, b) for b in bs]

    @staticmethod
    def _rows(b: Batch, es: Iterable[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(b.lane, e["seq"], e["entry_id"], e["kind"], e["at"], e.get("member_id"),
                 e.get("session_id"), e.get("plate"), e.get("rules_version"),
                 canonical(e["payload"]).decode(), e["hash"], e.get("recorded"),
                 e.get("prev_hash")) for e in es]

    def _commit_fresh(self, c: Any, bs: Sequence[Batch]) -> list[CommitResult]:
        taken = [_taken(b) for b in bs]
        rows = [r for b, es in zip(bs, taken, strict=True) for r in self._rows(b, es)]
        cur = c.exec_driver_sql(self._insert_sql + " ON CONFLICT DO NOTHING", rows)
        if cur.rowcount != len(rows):  # some (lane, seq) or entry_id was there already
            raise _Replayed
        for b in bs:
            self._flag(c, b, b.entries)
        effects = [_effects(es) for es in taken]
        self._apply(c, effects)
        return [CommitResult(len(b.entries), 0, tuple(sorted(moved)), len(b.flagged))
                for b, (moved, _used) in zip(bs, effects, strict=True)]

    @staticmethod
    def _flag(c: Any, b: Batch, new: Sequence[dict[str, Any]]) -> int:
        """Record why each newly inserted flagged entry of ``b`` was flagged, raw."""
        if not b.flagged:
            return 0
        fl = dict(b.flagged)
        rows = [{"entry_id": f"{b.lane}:{e['seq']}", "lane_id": b.lane, "seq": e["seq"],
                 "reason": fl[e["seq"]][:300], "raw": canonical(e).decode()}
                for e in new if e["seq"] in fl]
        if rows:
            c.execute(insert(flagged_entries), rows)
        return len(rows)

    def _commit_in(self, c: Any, b: Batch) -> CommitResult:
        seqs = [e["seq"] for e in b.entries]
        have = {int(seq): h for seq, h in c.execute(select(entries.c.seq, entries.c.hash)
                .where(entries.c.lane_id == b.lane,
                       entries.c.seq.between(min(seqs), max(seqs))))}
        clash = [e["entry_id"] for e in b.entries
                 if e["seq"] in have and have[e["seq"]] != e["hash"]]
        if clash:
            # Same (lane, seq), different content: a lane restored from an old backup or
            # reinstalled with a fresh file. Never overwrite, never call it a duplicate.
            raise SyncMessageError("seq_conflict", f"{len(clash)} entries of {b.lane} "
                                   f"differ from the committed ones, first {clash[0]}")
        # entry_id is "lane:seq" (checked by parse_batch), so (lane, seq) covers it; the
        # UNIQUE constraint on entry_id backs that up inside this transaction.
        new_raw = [e for e in b.entries if e["seq"] not in have]
        fl = dict(b.flagged)
        new = [_clean(e) if e["seq"] in fl else e for e in new_raw]
        if new:
            c.exec_driver_sql(self._insert_sql, self._rows(b, new))
        n_flagged = self._flag(c, b, new_raw)
        moved, used = _effects(new)
        self._apply(c, [(moved, used)])
        return CommitResult(len(new), len(b.entries) - len(new), tuple(sorted(moved)),
                            n_flagged)

    def _apply(self, c: Any, effects: Sequence[tuple[dict[str, int], list[tuple[str, str]]]]
               ) -> None:
        """Coupons used and points moved by newly inserted entries, one write per account."""
        total: dict[str, int] = {}
        for moved, used in effects:
            for coupon_id, entry_id in used:
                c.execute(update(coupons).where(coupons.c.coupon_id == coupon_id)
                          .values(used_entry=entry_id))
            for mid, d in moved.items():
                total[mid] = total.get(mid, 0) + d
        for mid, d in total.items():
            if d:
                self._add_points(c, mid, d)
            else:  # a coupon used (or movements that cancel out): new state for the lanes
                c.execute(update(members).where(members.c.member_id == mid)
                          .values(version=members.c.version + 1))

    def _add_points(self, c: Any, member_id: str, delta: int) -> None:
        """Apply a points movement; going below zero flags the account (never refused)."""
        row = c.execute(select(members.c.balance, members.c.flagged).where(
            members.c.member_id == member_id)).first()
        if row is None:
            c.execute(insert(members).values(member_id=member_id, tier="member", balance=delta,
                                             version=1, flagged=delta < 0))
            return
        bal = int(row[0]) + delta
        c.execute(update(members).where(members.c.member_id == member_id).values(
            balance=bal, version=members.c.version + 1, flagged=bool(row[1]) or bal < 0))

    def lane_seqs(self) -> dict[str, list[int]]:
        """Every committed seq per lane (startup: rebuild the ack watermarks)."""
        out: dict[str, list[int]] = {}
        with self.engine.connect() as c:
            for lane, seq in c.execute(select(entries.c.lane_id, entries.c.seq)
                                       .order_by(entries.c.lane_id, entries.c.seq)):
                out.setdefault(lane, []).append(int(seq))
        return out

    def export_lane(self, lane: str) -> Iterable[dict[str, Any]]:
        """Every committed entry of ``lane`` in seq order, as the lane sent it (the input of
        ``parkedge ledger recover --central-export``)."""
        cols = [entries.c[n] for n in ("entry_id", "lane_id", "seq", "kind", "at", "recorded",
                                       "session_id", "member_id", "plate", "rules_version",
                                       "payload", "prev_hash", "hash")]
        with self.engine.connect() as c:
            for r in c.execute(select(*cols).where(entries.c.lane_id == lane)
                               .order_by(entries.c.seq)):
                d = dict(r._mapping)
                d["payload"] = json.loads(d["payload"])
                yield d

    def flagged(self, lane: str | None = None) -> list[dict[str, Any]]:
        """Flagged entries (oldest first): entry id, lane, seq, reason, the entry as sent."""
        q = select(flagged_entries).order_by(flagged_entries.c.lane_id, flagged_entries.c.seq)
        if lane is not None:
            q = q.where(flagged_entries.c.lane_id == lane)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def entry_ids(self, lane: str | None = None) -> list[str]:
        q = select(entries.c.entry_id)
        if lane is not None:
            q = q.where(entries.c.lane_id == lane)
        with self.engine.connect() as c:
            return list(c.execute(q).scalars())

    def count_entries(self) -> int:
        with self.engine.connect() as c:
            return int(c.execute(select(func.count()).select_from(entries)).scalar_one())

    def points_from_entries(self, member_id: str) -> int:
        """Sum of the member's committed entries' point effects (for reconciliation)."""
        total = 0
        with self.engine.connect() as c:
            for kind, payload in c.execute(select(entries.c.kind, entries.c.payload).where(
                    entries.c.member_id == member_id)):
                total += points_delta(kind, json.loads(payload))
            total += int(c.execute(select(func.coalesce(func.sum(purchases.c.points), 0))
                                   .where(purchases.c.member_id == member_id)).scalar_one())
        return total

    # ---------------------------------------------------------------- members
    def upsert_member(self, member_id: str, *, tier: str = "member", name: str | None = None,
                      balance: int = 0, plates: Iterable[str] = (),
                      auto_deduct: bool = True) -> None:
        """Create (with ``balance``) or update a member; a new version goes to the lanes."""
        with self.engine.begin() as c:
            row = c.execute(select(members.c.version).where(
                members.c.member_id == member_id)).first()
            if row is None:
                c.execute(insert(members).values(member_id=member_id, tier=tier, name=name,
                                                 balance=balance, version=1, flagged=False,
                                                 auto_deduct=auto_deduct))
            else:
                c.execute(update(members).where(members.c.member_id == member_id).values(
                    tier=tier, name=name, auto_deduct=auto_deduct,
                    version=members.c.version + 1))
            for p in plates:
                c.execute(bindings.delete().where(bindings.c.plate == p))
                c.execute(insert(bindings).values(plate=p, member_id=member_id))

    def settle(self, member_id: str, points: int) -> None:
        """Points paid in to clear an overdraft; the flag drops once the balance is >= 0."""
        with self.engine.begin() as c:
            self._add_points(c, member_id, points)
            bal = c.execute(select(members.c.balance).where(
                members.c.member_id == member_id)).scalar_one()
            if bal >= 0:
                c.execute(update(members).where(members.c.member_id == member_id)
                          .values(flagged=False))

    def member_state(self, member_id: str, applied: dict[str, int],
                     allowance: int) -> MemberState | None:
        with self.engine.connect() as c:
            r = c.execute(select(members).where(members.c.member_id == member_id)).first()
            if r is None:
                return None
            plates = tuple(c.execute(select(bindings.c.plate).where(
                bindings.c.member_id == member_id).order_by(bindings.c.plate)).scalars())
            cps = tuple(
                CouponState(cid, kind, Decimal(value),
                            None if vu is None else datetime.fromisoformat(vu))
                for cid, kind, value, vu in c.execute(
                    select(coupons.c.coupon_id, coupons.c.kind, coupons.c.value,
                           coupons.c.valid_until).where(coupons.c.member_id == member_id,
                                                        coupons.c.used_entry.is_(None))
                    .order_by(coupons.c.coupon_id)))
        m = r._mapping
        v = int(m["version"])
        return MemberState(member_id, v, v - 1, m["tier"], m["name"], bool(m["blocked"]),
                           bool(m["flagged"]), bool(m["auto_deduct"]), int(m["balance"]),
                           plates, allowance, dict(applied), cps)

    # ---------------------------------------------------------------- reward catalogue
    def add_reward(self, reward_id: str, kind: str, name: str, points: int,
                   value: Decimal) -> None:
        if kind not in REWARD_KINDS:
            raise ValueError(f"kind: {kind!r} is not one of {', '.join(REWARD_KINDS)}")
        if points <= 0 or value < 0:
            raise ValueError("points must be > 0 and value >= 0")
        with self.engine.begin() as c:
            c.execute(rewards.delete().where(rewards.c.reward_id == reward_id))
            c.execute(insert(rewards).values(reward_id=reward_id, kind=kind, name=name,
                                             points=points, value=str(value)))

    def redeem(self, redemption_id: str, member_id: str, reward_id: str, at: datetime,
               valid_days: int = 90) -> str | None:
        """Spend points on a reward in one transaction; a parking reward becomes a coupon
        (its id is returned). Refused (ValueError) for a flagged account or too few points;
        the same ``redemption_id`` again changes nothing."""
        from datetime import timedelta
        with self.engine.begin() as c:
            if c.execute(select(redemptions.c.redemption_id).where(
                    redemptions.c.redemption_id == redemption_id)).first() is not None:
                return None
            rw = c.execute(select(rewards).where(rewards.c.reward_id == reward_id)).first()
            if rw is None:
                raise ValueError(f"reward_id: unknown reward {reward_id!r}")
            m = c.execute(select(members.c.balance, members.c.flagged).where(
                members.c.member_id == member_id)).first()
            if m is None or bool(m[1]) or int(m[0]) < int(rw.points):
                raise ValueError(f"member {member_id!r}: not enough points or account flagged")
            c.execute(insert(redemptions).values(
                redemption_id=redemption_id, member_id=member_id, reward_id=reward_id,
                kind=rw.kind, points=rw.points, value=rw.value, at=at.isoformat()))
            self._add_points(c, member_id, -int(rw.points))
            kind = _COUPON_KIND.get(rw.kind)
            if kind is None:
                return None  # merchandise / experience: fulfilled at the desk
            cid = f"cp-{redemption_id}"
            c.execute(insert(coupons).values(
                coupon_id=cid, member_id=member_id, kind=kind, value=rw.value,
                valid_until=(at + timedelta(days=valid_days)).isoformat()))
            return cid

    def rewards(self) -> list[dict[str, Any]]:
        """The reward catalogue, cheapest first."""
        with self.engine.connect() as c:
            return [{"reward_id": r.reward_id, "kind": r.kind, "name": r.name,
                     "points": int(r.points), "value": r.value}
                    for r in c.execute(select(rewards).order_by(rewards.c.points,
                                                                 rewards.c.reward_id))]

    def members_overview(self, limit: int = 500) -> list[dict[str, Any]]:
        """Every member's headline (id, name, tier, balance, flagged), by id."""
        with self.engine.connect() as c:
            return [{"member_id": r.member_id, "name": r.name, "tier": r.tier,
                     "balance": int(r.balance), "flagged": bool(r.flagged)}
                    for r in c.execute(select(members.c.member_id, members.c.name,
                                              members.c.tier, members.c.balance,
                                              members.c.flagged)
                                       .order_by(members.c.member_id).limit(limit))]

    def member_ids(self) -> list[str]:
        with self.engine.connect() as c:
            return list(c.execute(select(members.c.member_id).order_by(
                members.c.member_id)).scalars())

    def balance(self, member_id: str) -> int | None:
        with self.engine.connect() as c:
            v = c.execute(select(members.c.balance).where(
                members.c.member_id == member_id)).scalar()
        return None if v is None else int(v)

    # ---------------------------------------------------------------- POS and rules
    def record_purchase(self, purchase_id: str, member_id: str, amount: Decimal, category: str,
                        at: datetime, points: int) -> bool:
        """False if this purchase id was already recorded (a replayed POS message)."""
        with self.engine.begin() as c:
            if c.execute(select(purchases.c.purchase_id).where(
                    purchases.c.purchase_id == purchase_id)).first() is not None:
                return False
            c.execute(insert(purchases).values(purchase_id=purchase_id, member_id=member_id,
                                               amount=str(amount), category=category,
                                               at=at.isoformat(), points=points))
            if points:
                self._add_points(c, member_id, points)
            return True

    def save_rules(self, serial: int, version: str, bundle: dict[str, Any]) -> None:
        with self.engine.begin() as c:
            c.execute(insert(rules).values(serial=serial, version=version,
                                           bundle=canonical(bundle).decode()))

    def last_rules(self) -> tuple[int, dict[str, Any] | None]:
        with self.engine.connect() as c:
            r = c.execute(select(rules.c.serial, rules.c.bundle)
                          .order_by(rules.c.serial.desc()).limit(1)).first()
        return (0, None) if r is None else (int(r[0]), json.loads(r[1]))


