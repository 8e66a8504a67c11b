"""The SQLite engine: durable pragmas and ``BEGIN IMMEDIATE`` for every write transaction.

pysqlite's own transaction handling starts a deferred transaction lazily, so two processes
could both read ``max(seq)`` and then collide on the write. Taking the write lock at BEGIN
(``IMMEDIATE``) serialises sequence allocation across the daemon and a CLI process; the busy
timeout makes the second writer wait instead of failing. Read-only work uses a plain
deferred ``BEGIN`` (execution option ``readonly``) so ``ledger verify`` never blocks a lane.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, TextClause, create_engine, event, text
from sqlalchemy.pool import StaticPool

BUSY_TIMEOUT_MS = 10_000


@lru_cache(maxsize=512)
def q(sql: str) -> TextClause:
    """``text(sql)``, parsed once: the exit runs ~30 statements and must stay fast."""
    return text(sql)


def make_engine(path: Path) -> Engine:
    engine = create_engine(
        f"sqlite+pysqlite:///{path}",
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
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
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine
