"""The SQLite engine: durable pragmas and ``BEGIN IMMEDIATE`` for every write transaction.

pysqlite's own transaction handling starts a deferred transaction lazily, so two processes
could both read ``max(seq)`` and then collide on the write. Taking the write lock at BEGIN
(``IMMEDIATE``) serialises sequence allocation across the daemon and a CLI process; the busy
timeout makes the second writer wait instead of failing. Read-only work uses a plain
deferred ``BEGIN`` (execution option ``readonly``) so ``ledger verify`` never blocks a lane.

SQLAlchemy owns the engine, the pool's one connection, its pragmas and the migrations. The
``Store`` runs its statements on the DBAPI connection underneath (``raw``), and since the
lane-latency work also its own ``BEGIN``/``BEGIN IMMEDIATE``/``COMMIT`` (``Store._write``):
for the short statements and transactions the store issues, SQLAlchemy's per-statement work
cost ~25x the statement itself (90 us vs 3.5 us for a one-row SELECT) and its per-transaction
work ~5x (22-26 us vs 4-5 us warm, more inside the busy lane loop). The ``begin`` hook below
still serves ``engine.begin()`` users (migrations, the sync state).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import StaticPool

BUSY_TIMEOUT_MS = 10_000
# every distinct statement the store runs stays prepared (sqlite3's default cache is 128)
STATEMENT_CACHE = 512

Db = sqlite3.Connection
"""The DBAPI connection the store's modules run their statements on."""


def raw(conn: Connection | Db) -> Db:
    """The sqlite3 connection under a SQLAlchemy ``Connection`` (or the argument itself)."""
    if isinstance(conn, sqlite3.Connection):
        return conn
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    return driver


def make_engine(path: Path) -> Engine:
    engine = create_engine(
        f"sqlite+pysqlite:///{path}",
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000,
                      "cached_statements": STATEMENT_CACHE},
        poolclass=StaticPool,  # one connection, guarded by the Store's lock
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = FULL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        readonly = conn.get_execution_options().get("readonly", False)
        raw(conn).execute("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine
