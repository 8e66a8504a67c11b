"""What the ingest worker asks of the database per message, on SQLite and PostgreSQL: the
costs that grew with the number of lanes at 200 lanes (docs/scale.md). A snapshot request
reads one lane's watermark, not every lane's (a site reconnecting cost lanes² queries); a
group's acks read their lanes' watermarks in one query; an unchanged lane status is not
written again, only the leader writes statuses, and at most once a second: each lane's
newest, in one statement (in a storm nearly every status has changed)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from central.app import Central
from central.db.models import LaneStatus
from central.ingest import worker
from central.ingest.commit import CommitResult
from central.ingest.worker import IngestWorker
from tests.central.helpers import ingest_central
from tests.central.test_ingest import batch, entry

LANES = [f"lane-{i:02d}" for i in range(12)]


@pytest.fixture
def site(tmp_path: Path, db_url: str) -> Iterator[Central]:
    """Central with ingest configured for 12 lanes (no broker: nothing here is sent)."""
    c = ingest_central(tmp_path, db_url, LANES)
    yield c
    c.close()


class Statements:
    """The SQL statements the engine ran that touch ``lane_entries``."""

    def __init__(self, c: Central) -> None:
        self.seen: list[str] = []
        self.engine = c.engine
        event.listen(c.engine, "before_cursor_execute", self._on)

    def _on(self, _conn: Any, _cur: Any, sql: str, *_a: Any) -> None:
        if "lane_entries" in sql:
            self.seen.append(sql)

    def __enter__(self) -> Statements:
        self.seen.clear()
        return self

    def __exit__(self, *_exc: Any) -> None:
        event.remove(self.engine, "before_cursor_execute", self._on)


class AllStatements:
    """Every SQL statement the engine runs (SQLite's own ``BEGIN IMMEDIATE`` aside)."""

    def __init__(self, c: Central) -> None:
        self.seen: list[str] = []
        event.listen(c.engine, "before_cursor_execute", self._on)

    def _on(self, _conn: Any, _cur: Any, sql: str, *_a: Any) -> None:
        if not sql.startswith("BEGIN"):
            self.seen.append(sql)


def _commit(c: Central, w: IngestWorker, lanes: list[str], seqs: range) -> None:
    bs = [batch(lane, [entry(lane, s) for s in seqs]) for lane in lanes]
    out = w.committer.commit(bs)
    w._committed([(b, r) for b, r in zip(bs, out.results, strict=True)
                  if isinstance(r, CommitResult)])


def test_snapshot_requests_read_one_lane_each_and_its_fresh_watermark(
        site: Central) -> None:
    """A whole site asking for snapshots: one watermark query per request (it was one per
    lane per request, 144 here), and the asking lane's watermark is the committed one."""
    w = site.ingest_worker(client_id="cost-test")
    _commit(site, w, LANES[:3], range(1, 6))
    with Statements(site) as q:
        for lane in LANES:
            w._snapshot(lane, None)
    assert len(q.seen) == len(LANES), q.seen[:3]
    _commit(site, w, [LANES[0]], range(6, 9))
    w.marks.clear()  # as another worker's commit: only the database knows
    assert w.applied(fresh=[LANES[0]])[LANES[0]] == 8
    assert w.applied() == {lane: 8 if lane == LANES[0] else 5 if lane in LANES[:3] else 0
                           for lane in LANES}
    assert w.stats["snapshots"] == len(LANES)


def test_a_groups_acks_read_their_watermarks_in_one_query(site: Central) -> None:
    w = site.ingest_worker(client_id="cost-test")
    bs = [batch(lane, [entry(lane, s) for s in range(1, 4)]) for lane in LANES]
    out = w.committer.commit(bs)
    with Statements(site) as q:
        w._committed([(b, r) for b, r in zip(bs, out.results, strict=True)
                      if isinstance(r, CommitResult)])
    assert len(q.seen) == 1
    assert {lane: w.marks[lane].upto for lane in LANES} == dict.fromkeys(LANES, 3)


def _status(lane: str, backlog: int, acked: int, state: str = "online") -> dict[str, Any]:
    return {"lane": lane, "state": state, "backlog": backlog, "last_acked_seq": acked,
            "backlog_stalled": False}


def _rows(c: Central) -> dict[str, tuple[str, int, int]]:
    with c.tx() as s:
        return {r.lane_id: (r.state, r.backlog, r.last_acked_seq)
                for r in s.scalars(select(LaneStatus))}


def test_statuses_are_written_by_the_leader_and_only_when_they_change(site: Central) -> None:
    w = site.ingest_worker(client_id="cost-test")
    w._record_status(_status("lane-00", 4, 10))
    assert _rows(site) == {}  # not the leader: kept, not written
    w.connected.set()
    w._tick(full=True)  # becomes the leader, writes what it kept
    try:
        assert w.is_leader
        assert _rows(site) == {"lane-00": ("online", 4, 10)}
        for _ in range(5):  # a lane repeating itself every 5 s
            w._record_status(_status("lane-00", 4, 10))
        assert w.stats["status_unchanged"] == 5 and w.stats["status_written"] == 1
        w._record_status(_status("lane-00", 0, 14))
        w._record_status(_status("lane-00", 0, 14, "offline"))
        assert _rows(site) == {"lane-00": ("online", 4, 10)}  # coalescing: not yet
        assert w._flush_statuses() == 0  # the leader's first flush was a moment ago
        w._status_flushed -= worker.STATUS_FLUSH_S  # the interval passed
        assert w._flush_statuses() == 1
        assert _rows(site) == {"lane-00": ("offline", 0, 14)}  # the newest, once
        assert w.stats["status_written"] == 2 and w.stats["status_coalesced"] == 1
    finally:
        w._release_leader()


def test_a_storms_statuses_coalesce_per_lane_and_the_last_is_written(site: Central) -> None:
    """Every lane's backlog moving with every group, as in a reconnect storm: the statements
    per committed entry, the statuses among them written at most once a second (newest per
    lane, one statement), the last ones after the interval and on stop."""
    w = site.ingest_worker(client_id="cost-test")
    w.connected.set()
    w._tick(full=True)
    assert w.is_leader
    q = AllStatements(site)
    rounds, per = 10, 10
    for r in range(rounds):  # each round: a group of every lane's batch, then their statuses
        _commit(site, w, LANES, range(r * per + 1, (r + 1) * per + 1))
        for lane in LANES:
            w._record_status(_status(lane, (rounds - r - 1) * per, (r + 1) * per))
        w._flush_statuses()  # what the worker's loop does between groups
    entries = rounds * per * len(LANES)
    status_sql = [x for x in q.seen if "lane_status" in x]
    # before: a transaction per status (a locked read and a write): 240 statements here
    assert len(status_sql) <= 1, status_sql
    assert len(q.seen) / entries < 0.05, (len(q.seen), entries)
    assert w.stats["status_coalesced"] >= (rounds - 1) * len(LANES) - len(LANES)

    time.sleep(worker.STATUS_FLUSH_S)  # after the interval the newest of each lane is in
    assert w._flush_statuses() == len(LANES)
    assert _rows(site) == dict.fromkeys(LANES, ("online", 0, rounds * per))

    for lane in LANES[:3]:  # and on stop, whatever the interval
        w._record_status(_status(lane, 0, rounds * per, "offline"))
    w.stop()
    assert not w.is_leader
    assert _rows(site) == {lane: ("offline" if lane in LANES[:3] else "online", 0,
                                  rounds * per) for lane in LANES}


def test_a_stall_the_lane_reported_clears_when_it_says_so(site: Central) -> None:
    """The leader's stall check takes the lane's word from its newest status: the column
    also holds the check's own verdict, and read back it kept the lane stalled for ever."""
    w = site.ingest_worker(client_id="cost-test")
    w.connected.set()
    w._tick(full=True)
    try:
        assert w.is_leader
        w._record_status({**_status("lane-03", 2, 0), "backlog_stalled": True})
        w._check_stalls()
        assert w._stalled == {"lane-03"}
        w._record_status(_status("lane-03", 0, 2))
        w._check_stalls()
        assert w._stalled == set()
        with site.tx() as s:
            assert not s.get(LaneStatus, ("mall-1", "lane-03")).stalled  # type: ignore[union-attr]
    finally:
        w._release_leader()
