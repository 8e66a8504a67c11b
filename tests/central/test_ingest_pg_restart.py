"""PostgreSQL's backends dying under the ingest worker (a restart, a failover, an admin's
``pg_terminate_backend``): a pooled connection is pinged only when it was idle for
``IDLE_PING_S`` (a failed ping replaces it), and a group whose connection died in its
transaction is retried once on a new one: every entry committed exactly once and acked.
On a fresh PostgreSQL database of the test's own (its backends are killed) (#16)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.exc import OperationalError

from central.app import Central
from central.db import engine as db_engine
from central.db import make_engine
from central.db.models import LaneEntry
from central.ingest.commit import CommitResult
from central.ingest.worker import IngestWorker
from edge.sync import codec, topics
from tests.central.conftest import _pg_reachable
from tests.central.helpers import fresh_pg_database, ingest_central
from tests.central.test_ingest import batch, entry
from tests.central.test_ingest_answer import Sent

LANES = [f"lane-{i:02d}" for i in range(4)]
DSN = "host=127.0.0.1 port=5432 user=postgres dbname={}"


@pytest.fixture
def fresh_db() -> Iterator[str]:
    if not _pg_reachable():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    with fresh_pg_database("central_restart") as name:
        yield name


def kill_backends(db: str) -> int:
    """Terminate every backend of ``db`` (the worker's), from a connection of another
    database: what a PostgreSQL restart does to central's connections."""
    with psycopg.connect(DSN.format("postgres"), autocommit=True) as c:
        row = c.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", (db,)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def site(tmp_path: Path, fresh_db: str) -> Iterator[Central]:
    c = ingest_central(tmp_path, f"postgresql+psycopg://postgres@127.0.0.1:5432/{fresh_db}",
                       LANES)
    yield c
    c.close()


def _feed(w: IngestWorker, first: int, n: int) -> None:
    """One group: a batch of ``n`` entries from every lane, committed and acked as the
    worker's thread does it."""
    bs = [batch(lane, [entry(lane, s) for s in range(first, first + n)]) for lane in LANES]
    out = w.committer.commit(bs)
    w._committed([(b, r) for b, r in zip(bs, out.results, strict=True)
                  if isinstance(r, CommitResult)])


def _acked(w: IngestWorker, sent: Sent) -> dict[str, int]:
    out: dict[str, int] = {}
    for t, p in sent.msgs:
        for lane in LANES:
            if t == topics.ack(w.site, lane):
                out[lane] = max(out.get(lane, 0), codec.parse_ack(p, w.lane_keys[lane]).upto)
    return out


def test_backends_killed_between_and_inside_groups_lose_and_double_nothing(
        site: Central, fresh_db: str) -> None:
    w = site.ingest_worker(client_id="restart-test")
    sent = Sent(w)
    _feed(w, 1, 10)
    killed = [kill_backends(fresh_db)]  # between groups: the pooled connection is dead
    _feed(w, 11, 10)
    killed.append(kill_backends(fresh_db))
    _feed(w, 21, 10)

    # mid-run: the backend killed inside the group's transaction, before its insert
    state = {"armed": True}

    def _kill_inside(_conn: Any, _cur: Any, sql: str, *_a: Any) -> None:
        if state["armed"] and sql.startswith("INSERT INTO lane_entries"):
            state["armed"] = False
            killed.append(kill_backends(fresh_db))

    event.listen(site.engine, "before_cursor_execute", _kill_inside)
    try:
        _feed(w, 31, 10)
    finally:
        event.remove(site.engine, "before_cursor_execute", _kill_inside)
    assert not state["armed"] and all(killed), killed

    # and once more after the commit, before the acks' read (the next group's checkout)
    bs = [batch(lane, [entry(lane, s) for s in range(41, 51)]) for lane in LANES]
    out = w.committer.commit(bs)
    killed.append(kill_backends(fresh_db))
    w._committed([(b, r) for b, r in zip(bs, out.results, strict=True)
                  if isinstance(r, CommitResult)])
    _feed(w, 51, 10)

    with site.tx() as s:
        rows = s.execute(select(LaneEntry.lane_id, func.count(), func.count(LaneEntry.seq
                                                                          .distinct()),
                                func.max(LaneEntry.seq)).group_by(LaneEntry.lane_id)).all()
    assert sorted(rows) == [(lane, 60, 60, 60) for lane in LANES]
    assert _acked(w, sent) == dict.fromkeys(LANES, 60)
    assert w.stats["committed"] == 60 * len(LANES) and w.stats["duplicates"] == 0


def _engine(fresh_db: str) -> Engine:
    return make_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{fresh_db}")


def test_only_an_idle_connection_is_pinged_and_a_dead_one_is_replaced(
        fresh_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(db_engine, "clock", lambda: now[0])
    pings: list[int] = []
    real = db_engine._ping

    def counted(engine: Engine, dbapi_conn: Any) -> None:
        pings.append(1)
        real(engine, dbapi_conn)

    monkeypatch.setattr(db_engine, "_ping", counted)
    eng = _engine(fresh_db)
    try:
        for _ in range(20):  # busy: checked out again within the threshold, never pinged
            with eng.connect() as c:
                assert c.execute(text("SELECT 1")).scalar() == 1
            now[0] += 1.0
        assert pings == []
        now[0] += db_engine.IDLE_PING_S  # idle 6 s: pinged once, then busy again
        with eng.connect() as c:
            pid = c.execute(text("SELECT pg_backend_pid()")).scalar()
        assert len(pings) == 1
        with eng.connect() as c:
            assert c.execute(text("SELECT pg_backend_pid()")).scalar() == pid
        assert len(pings) == 1

        # killed while idle: the ping fails, the pool connects anew, the caller sees nothing
        kill_backends(fresh_db)
        now[0] += db_engine.IDLE_PING_S
        with eng.connect() as c:
            assert c.execute(text("SELECT pg_backend_pid()")).scalar() != pid
        assert len(pings) == 2

        # killed while "busy" (checked in a moment ago): no ping, the statement fails with
        # the connection invalidated (the committer retries such a group), then it is new
        kill_backends(fresh_db)
        now[0] += 1.0
        with pytest.raises(OperationalError) as exc, eng.connect() as c:
            c.execute(text("SELECT 1"))
        assert exc.value.connection_invalidated
        with eng.connect() as c:
            assert c.execute(text("SELECT 1")).scalar() == 1
        assert len(pings) == 2
    finally:
        eng.dispose()
