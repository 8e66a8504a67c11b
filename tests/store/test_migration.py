"""Schema versions: an old file is migrated in place at open; a newer one is refused."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from edge.store import Store, StoreError
from edge.store.engine import make_engine
from edge.store.ledger import append
from edge.store.schema import LATEST, MIGRATIONS, migrate
from edge.store.types import EntryKind

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=TZ)


def _v1_file(path: Path) -> None:
    """A file as parkedge with schema v1 left it: a session, a member, two entries."""
    engine = make_engine(path)
    with engine.begin() as c:
        assert migrate(c, target=1) == (0, 1)
        c.execute(text("INSERT INTO members (member_id, tier, balance) VALUES ('M1', 'gold', 5)"))
        c.execute(text("INSERT INTO points_lots VALUES ('M1', 'L1', 5, 5, NULL, NULL)"))
        c.execute(text(
            "INSERT INTO sessions (session_id, plate, entered_at, entry_lane, vehicle_class, "
            "status, entry_event_id) VALUES ('X1-old', '沪A12345', "
            "'2026-11-23T01:00:00.000000+00:00', 'X1', 'small', 'open', 'e-old')"))
        for i in range(2):
            append(c, lane_id="X1", kind=EntryKind.LANE_EVENT, at=T0, recorded=T0,
                   payload={"event": "old", "i": i})
    engine.dispose()


def test_there_is_more_than_one_step() -> None:
    assert LATEST == len(MIGRATIONS) >= 2


def test_v1_file_is_migrated_and_keeps_its_data(db: Path) -> None:
    _v1_file(db)
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == 1
        cols = {r[1] for r in c.execute("PRAGMA table_info(sessions)")}
        assert "points_before" not in cols
    with Store.open(db, "X1") as store:
        assert store.verify().ok and store.verify().checked == 2
        s = store.find_open_session("沪A12345")
        assert s is not None and s.session_id == "X1-old" and s.points_before is None
        assert store.balance("M1", T0) == 5
        # the new tables and columns work, and the chain continues where v1 left it
        store.mark_acked("central", 1)
        assert [e.seq for e in store.unacked()] == [2]
        e = store.record_lane_event("new", T0)
        assert e.entry_id == "X1:3"
        assert store.verify().ok
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == LATEST


def test_fresh_file_is_created_at_latest(db: Path) -> None:
    Store.open(db, "X1").close()
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == LATEST
    Store.open(db, "X1").close()  # reopening is a no-op


def test_newer_file_is_refused(db: Path) -> None:
    Store.open(db, "X1").close()
    with sqlite3.connect(db) as c:
        c.execute(f"PRAGMA user_version = {LATEST + 1}")
    with pytest.raises(StoreError, match=f"schema version {LATEST + 1} is newer"):
        Store.open(db, "X1")


def test_failed_migration_leaves_the_old_version(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _v1_file(db)
    import edge.store.schema as schema

    broken = [*schema.MIGRATIONS[:1], [*schema.MIGRATIONS[1], "CREATE TABLE members (x INT)"]]
    monkeypatch.setattr(schema, "MIGRATIONS", broken)
    with pytest.raises(StoreError, match="already exists"):
        Store.open(db, "X1")
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == 1
        cols = {r[1] for r in c.execute("PRAGMA table_info(sessions)")}
        assert "points_before" not in cols  # the ALTERs before the failure were rolled back
