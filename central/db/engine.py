"""Engines for both backends, set up so concurrent writers serialise where they must.

SQLite: WAL, synchronous FULL, foreign keys on, and ``BEGIN IMMEDIATE`` for every
transaction (a deferred one could read, then fail to upgrade to a write lock mid-way).
PostgreSQL: row locks (``SELECT ... FOR UPDATE``) in the services do that job.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
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
    return create_engine(u, pool_pre_ping=True)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
