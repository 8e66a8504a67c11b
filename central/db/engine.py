"""Engines for both backends, set up so concurrent writers serialise where they must.

SQLite: WAL, synchronous FULL, foreign keys on, and ``BEGIN IMMEDIATE`` for every
transaction (a deferred one could read, then fail to upgrade to a write lock mid-way).
PostgreSQL: row locks (``SELECT ... FOR UPDATE``) in the services do that job. A pooled
connection is pinged before use only when it has been idle for ``IDLE_PING_S`` (a dead one is
replaced by the pool); one in steady use is not (see ``_idle_pings``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, password: str | None = None) -> Engine:
    u = make_url(url)
    if password is not None:
        u = u.set(password=password)
    if u.get_backend_name() == "sqlite":
        engine = create_engine(u, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = FULL")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    engine = create_engine(u)
    _idle_pings(engine)
    return engine


#: A pooled connection idle at least this long is pinged when checked out.
IDLE_PING_S = 5.0
#: The pings' clock (a test moves it).
clock: Callable[[], float] = time.monotonic


def _ping(engine: Engine, dbapi_conn: Any) -> None:
    engine.dialect.do_ping(dbapi_conn)


def _idle_pings(engine: Engine) -> None:
    """Ping a connection at checkout only if it sat in the pool ``IDLE_PING_S`` or longer.

    Why: ``pool_pre_ping`` pinged at every checkout, one round trip each: the ingest worker
    checks out several times per group and per snapshot answer (8 % of its samples in a
    storm, docs/scale.md). A connection in steady use was alive a moment ago; one idle for a
    while may have been closed by a restart, a failover or an idle timeout: that one is
    pinged, and on a failed ping the pool is told (``DisconnectionError``) and connects
    anew. A connection that dies while in use, or between two close uses, raises
    ``OperationalError`` with ``connection_invalidated`` in the caller; the pool replaces it
    and the ingest committer retries its group once (central/ingest/commit.py)."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, rec: Any) -> None:
        rec.info["parkedge_used_at"] = clock()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, rec: Any, _proxy: Any) -> None:
        used = rec.info.get("parkedge_used_at")
        if used is None or clock() - used < IDLE_PING_S:
            return  # new, or in use a moment ago
        try:
            _ping(engine, dbapi_conn)
        except Exception as exc:
            rec.info.pop("parkedge_used_at", None)
            raise DisconnectionError(f"idle connection failed its ping: {exc}") from exc


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
