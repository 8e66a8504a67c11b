"""Schema and its migrations, versioned with ``PRAGMA user_version``.

Each step is a list of DDL statements; ``migrate`` applies every step above the file's
``user_version`` inside the caller's single ``BEGIN IMMEDIATE`` transaction, so a crash or a
failing step leaves the file at its old version. Steps are never edited once released: a
change is a new step appended to ``MIGRATIONS``. See docs/ledger.md for why not Alembic.
"""

from __future__ import annotations

from sqlalchemy import Connection

from edge.store.types import StoreError

_V1 = [
    # Append-only ledger: `pos` orders the hash chain for the whole file; (lane_id, seq)
    # is the gapless per-lane sequence that entry_id spells.
    """CREATE TABLE ledger_entries (
        pos INTEGER PRIMARY KEY,
        entry_id TEXT NOT NULL UNIQUE,
        lane_id TEXT NOT NULL,
        seq INTEGER NOT NULL CHECK (seq >= 1),
        kind TEXT NOT NULL,
        at TEXT NOT NULL,
        recorded TEXT NOT NULL,
        session_id TEXT,
        member_id TEXT,
        plate TEXT,
        rules_version TEXT,
        payload TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        UNIQUE (lane_id, seq)
    )""",
    "CREATE INDEX ix_entries_member ON ledger_entries (member_id, kind, at)",
    "CREATE INDEX ix_entries_session ON ledger_entries (session_id)",
    "CREATE INDEX ix_entries_kind_at ON ledger_entries (kind, at)",
    # Defence in depth: the daemon itself can never rewrite history by mistake.
    """CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger_entries
       BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END""",
    """CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger_entries
       BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END""",
    # The chain head: catches a truncated tail, which a chain alone cannot.
    """CREATE TABLE ledger_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        last_pos INTEGER NOT NULL,
        last_hash TEXT NOT NULL
    )""",
    """CREATE TABLE members (
        member_id TEXT PRIMARY KEY,
        tier TEXT NOT NULL,
        name TEXT,
        version INTEGER NOT NULL DEFAULT 0,
        auto_deduct INTEGER NOT NULL DEFAULT 1,
        blocked INTEGER NOT NULL DEFAULT 0,
        balance INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0)
    )""",
    """CREATE TABLE points_lots (
        member_id TEXT NOT NULL REFERENCES members (member_id),
        lot_id TEXT NOT NULL,
        points INTEGER NOT NULL CHECK (points >= 0),
        remaining INTEGER NOT NULL CHECK (remaining >= 0 AND remaining <= points),
        expires_at TEXT,
        earned_at TEXT,
        PRIMARY KEY (member_id, lot_id)
    )""",
    """CREATE TABLE coupons (
        coupon_id TEXT PRIMARY KEY,
        member_id TEXT NOT NULL REFERENCES members (member_id),
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        valid_until TEXT,
        used_at TEXT,
        used_session TEXT
    )""",
    "CREATE INDEX ix_coupons_member ON coupons (member_id)",
    """CREATE TABLE plate_bindings (
        plate TEXT PRIMARY KEY,
        member_id TEXT NOT NULL REFERENCES members (member_id),
        version INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        plate TEXT NOT NULL,
        entered_at TEXT NOT NULL,
        entry_lane TEXT,
        vehicle_class TEXT NOT NULL,
        member_id TEXT,
        status TEXT NOT NULL CHECK (status IN ('open', 'closed', 'owed')),
        exited_at TEXT,
        exit_lane TEXT,
        fee TEXT,
        payable TEXT,
        paid TEXT NOT NULL DEFAULT '0',
        points_deducted INTEGER NOT NULL DEFAULT 0,
        points_earned INTEGER NOT NULL DEFAULT 0,
        rules_version TEXT,
        entry_event_id TEXT UNIQUE,
        exit_event_id TEXT UNIQUE,
        exit_detail TEXT
    )""",
    # At most one open session per plate, enforced by the file itself.
    "CREATE UNIQUE INDEX ux_sessions_open_plate ON sessions (plate) WHERE status = 'open'",
    "CREATE INDEX ix_sessions_plate_exit ON sessions (plate, exited_at)",
    # Idempotency keys (entry/exit events, payments): key -> what it produced.
    """CREATE TABLE idempotency (
        key TEXT PRIMARY KEY,
        scope TEXT NOT NULL,
        session_id TEXT,
        entry_ids TEXT NOT NULL
    )""",
]

_V2 = [
    # Export needs the balance before each exit and the one shown after it.
    "ALTER TABLE sessions ADD COLUMN points_before INTEGER",
    "ALTER TABLE sessions ADD COLUMN balance_after INTEGER",
    "ALTER TABLE sessions ADD COLUMN tier TEXT",
    # Outbox for the sync issue: per peer, everything up to acked_seq is acknowledged, plus
    # out-of-order ranges [[lo, hi], ...] above it.
    """CREATE TABLE outbox_state (
        peer TEXT PRIMARY KEY,
        acked_seq INTEGER NOT NULL DEFAULT 0,
        acked_ranges TEXT NOT NULL DEFAULT '[]'
    )""",
]

MIGRATIONS: list[list[str]] = [_V1, _V2]
LATEST = len(MIGRATIONS)


def user_version(conn: Connection) -> int:
    return int(conn.exec_driver_sql("PRAGMA user_version").scalar_one())


def migrate(conn: Connection, target: int = LATEST) -> tuple[int, int]:
    """Apply the steps between the file's version and ``target`` in the open transaction.

    Returns (from, to). A file newer than this code is refused rather than guessed at.
    """
    current = user_version(conn)
    if current > LATEST:
        raise StoreError(
            f"database schema version {current} is newer than this parkedge ({LATEST}); "
            "upgrade parkedge instead of opening it with an old one"
        )
    for version in range(current + 1, target + 1):
        for stmt in MIGRATIONS[version - 1]:
            conn.exec_driver_sql(stmt)
    if target > current:
        conn.exec_driver_sql(f"PRAGMA user_version = {int(target)}")
    return current, max(current, target)
