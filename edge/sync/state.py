"""What the sync knows beyond the store, kept in the lane's own SQLite file.

The store's schema belongs to the store; the sync adds its own ``sync_*`` tables (created
here, migrations keyed in ``sync_schema``) for the central balance version of each account,
its offline allowance and overdraft flag, and the last accepted rule-bundle serial, so all of
it survives a restart exactly like the ledger does. It also reads the ledger (read-only) for
the backlog size and for this lane's not-yet-acknowledged deductions per account.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, text

from edge.store.engine import make_engine
from edge.sync import codec
from edge.sync.codec import points_delta

_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS sync_members (
            member_id TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            central_balance INTEGER NOT NULL,
            applied_seq INTEGER NOT NULL DEFAULT 0,
            allowance INTEGER NOT NULL DEFAULT 0,
            flagged INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE IF NOT EXISTS sync_rules (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            serial INTEGER NOT NULL,
            version TEXT NOT NULL
        )""",
    ],
    [
        # Central's signed roster of the site's lanes (who may sign session events), kept
        # so that a restart with no broker retained copy still authenticates sessions.
        """CREATE TABLE IF NOT EXISTS sync_lanes (
            lane_id TEXT PRIMARY KEY,
            public_key TEXT NOT NULL,
            serial INTEGER NOT NULL
        )""",
    ],
]

#: The upsert of ``sync_members``: also run inside the downlink's single transaction.
PUT_ACCOUNT_SQL = (
    "INSERT INTO sync_members (member_id, version, central_balance, applied_seq, "
    "allowance, flagged) VALUES (:m, :v, :b, :s, :a, :f) ON CONFLICT (member_id) "
    "DO UPDATE SET version = :v, central_balance = :b, applied_seq = :s, "
    "allowance = :a, flagged = :f WHERE excluded.version > sync_members.version")


_WIRE_COLS = ("at, entry_id, hash, kind, lane_id, member_id, payload, plate, prev_hash, "
              "recorded, rules_version, seq, session_id")


@dataclass(frozen=True)
class WireEntry:
    """One ledger row as the uplink needs it: its seq, what announcements need, its bytes."""

    seq: int
    kind: str
    at: str
    plate: str | None
    session_id: str | None
    member_id: str | None
    rules_version: str | None
    payload_text: str
    wire: bytes


@dataclass(frozen=True)
class CachedAccount:
    member_id: str
    version: int
    central_balance: int
    applied_seq: int
    allowance: int
    flagged: bool


class SyncState:
    """The sync's own tables plus read-only ledger queries, on a second connection."""

    def __init__(self, path: Path | str, lane_id: str) -> None:
        self._engine = make_engine(Path(path))
        self._lock = threading.Lock()
        self.lane_id = lane_id
        with self._engine.begin() as c:
            c.exec_driver_sql("CREATE TABLE IF NOT EXISTS sync_schema "
                              "(id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)")
            cur = c.exec_driver_sql("SELECT version FROM sync_schema").scalar()
            have = int(cur or 0)
            for step in _MIGRATIONS[have:]:
                for stmt in step:
                    c.exec_driver_sql(stmt)
            c.execute(text("INSERT INTO sync_schema (id, version) VALUES (1, :v) "
                           "ON CONFLICT (id) DO UPDATE SET version = :v"),
                      {"v": len(_MIGRATIONS)})

    def close(self) -> None:
        self._engine.dispose()

    def _read(self) -> Connection:
        return self._engine.execution_options(readonly=True).connect()

    # ---------------------------------------------------------------- ledger (read-only)
    def last_seq(self) -> int:
        with self._lock, self._read() as c, c.begin():
            return int(c.execute(text("SELECT COALESCE(MAX(seq), 0) FROM ledger_entries "
                                      "WHERE lane_id = :l"), {"l": self.lane_id}).scalar_one())

    def acked_seq(self, peer: str = "central") -> int:
        with self._lock, self._read() as c, c.begin():
            v = c.execute(text("SELECT acked_seq FROM outbox_state WHERE peer = :p"),
                          {"p": peer}).scalar()
            return int(v or 0)

    def wire_page(self, after_seq: int, limit: int) -> list[WireEntry]:
        """This lane's entries after ``after_seq`` already in wire form, straight from the
        stored text: the payload column is the store's canonical JSON, so it is spliced in
        as is instead of being parsed and encoded again (the uplink's hot path)."""
        with self._lock, self._read() as c, c.begin():
            cur = c.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cur.execute(f"SELECT {_WIRE_COLS} FROM ledger_entries WHERE lane_id = ? "
                            "AND seq > ? ORDER BY seq LIMIT ?",
                            (self.lane_id, int(after_seq), int(limit)))
                rows = cur.fetchall()
            finally:
                cur.close()
        return [WireEntry(int(r[11]), r[3], r[0], r[7], r[12], r[5], r[10], r[6],
                          codec.wire_entry(*r)) for r in rows]

    def exited_without_entry(self, plate: str, entered_at: str) -> str | None:
        """The session of a vehicle that left with no entry record after ``entered_at``
        (stored-time text) and has not been corrected for a late entry yet."""
        with self._lock, self._read() as c, c.begin():
            return c.execute(text(
                "SELECT s.session_id FROM sessions s WHERE s.plate = :p AND s.entry_lane IS NULL "
                "AND s.status != 'open' AND s.exited_at >= :e AND NOT EXISTS (SELECT 1 FROM "
                "ledger_entries l WHERE l.session_id = s.session_id AND l.kind = 'correction' "
                "AND json_extract(l.payload, '$.action') = 'late_entry') "
                "ORDER BY s.exited_at LIMIT 1"), {"p": plate, "e": entered_at}).scalar()

    def plates_of(self, member_id: str) -> list[str]:
        with self._lock, self._read() as c, c.begin():
            return list(c.execute(text("SELECT plate FROM plate_bindings WHERE member_id = :m"),
                                  {"m": member_id}).scalars())

    def late_entry_recorded(self, event_id: str) -> bool:
        with self._lock, self._read() as c, c.begin():
            return c.execute(text(
                "SELECT 1 FROM ledger_entries WHERE kind = 'correction' AND "
                "json_extract(payload, '$.action') = 'late_entry' AND "
                "json_extract(payload, '$.detail.event_id') = :e LIMIT 1"),
                {"e": event_id}).first() is not None

    def pending_points(self, member_id: str, after_seq: int) -> int:
        """Net points this lane moved for ``member_id`` in entries with seq > ``after_seq``
        (deductions negative): what central's balance does not include yet."""
        net = 0
        with self._lock, self._read() as c, c.begin():
            rows = c.execute(text("SELECT kind, payload FROM ledger_entries WHERE "
                                  "lane_id = :l AND member_id = :m AND seq > :s AND kind IN "
                                  "('points_deducted', 'points_earned', 'correction')"),
                             {"l": self.lane_id, "m": member_id, "s": int(after_seq)})
            for kind, payload in rows:
                net += points_delta(kind, json.loads(payload))
        return net

    # ---------------------------------------------------------------- accounts
    def account(self, member_id: str) -> CachedAccount | None:
        with self._lock, self._read() as c, c.begin():
            r = c.execute(text("SELECT member_id, version, central_balance, applied_seq, "
                               "allowance, flagged FROM sync_members WHERE member_id = :m"),
                          {"m": member_id}).first()
        return None if r is None else CachedAccount(r[0], int(r[1]), int(r[2]), int(r[3]),
                                                    int(r[4]), bool(r[5]))

    def put_account(self, a: CachedAccount) -> None:
        with self._lock, self._engine.begin() as c:
            c.execute(text(PUT_ACCOUNT_SQL), {
                "m": a.member_id, "v": a.version, "b": a.central_balance, "s": a.applied_seq,
                "a": a.allowance, "f": int(a.flagged)})

    # ---------------------------------------------------------------- rules
    def rules_serial(self) -> tuple[int, str | None]:
        with self._lock, self._read() as c, c.begin():
            r = c.execute(text("SELECT serial, version FROM sync_rules WHERE id = 1")).first()
        return (0, None) if r is None else (int(r[0]), str(r[1]))

    def put_rules_serial(self, serial: int, version: str) -> None:
        with self._lock, self._engine.begin() as c:
            c.execute(text("INSERT INTO sync_rules (id, serial, version) VALUES (1, :s, :v) "
                           "ON CONFLICT (id) DO UPDATE SET serial = :s, version = :v"),
                      {"s": serial, "v": version})


    # ---------------------------------------------------------------- lane roster
    def lane_roster(self) -> tuple[int, dict[str, str]]:
        """(serial, {lane: public key hex}) of the last accepted roster; (0, {}) if none."""
        with self._lock, self._read() as c, c.begin():
            rows = c.execute(text("SELECT lane_id, public_key, serial FROM sync_lanes")).all()
        return (max((int(r[2]) for r in rows), default=0), {r[0]: r[1] for r in rows})

    def put_lane_roster(self, serial: int, keys: dict[str, str]) -> None:
        with self._lock, self._engine.begin() as c:
            c.execute(text("DELETE FROM sync_lanes"))
            for lane, pk in keys.items():
                c.execute(text("INSERT INTO sync_lanes (lane_id, public_key, serial) "
                               "VALUES (:l, :k, :s)"), {"l": lane, "k": pk, "s": serial})
