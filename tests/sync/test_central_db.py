"""Central's group commit on SQLite and PostgreSQL: the one-statement fast path is taken for
fresh batches, and every replay (whole, partial, overlapping within a group) still ends up
exactly once with balances equal to the sum of the committed entries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from parkedge_sim.central.db import CentralDB

from edge.sync import codec
from edge.sync.codec import SyncMessageError
from tests.sync.conftest import KEYS, SITE

LANE = "lane-x"
AT = "2026-11-23T09:00:00.000000+00:00"


def _entry(seq: int, *, tag: str = "") -> dict[str, Any]:
    """Points earned on odd seqs, deducted on every 4th, a plain event otherwise."""
    kind, payload = "lane_event", {"event": "loop_check", "tag": tag}
    if seq % 2:
        kind, payload = "points_earned", {"points": seq}
    elif seq % 4 == 0:
        kind, payload = "points_deducted", {"points": 1}
    return {"entry_id": f"{LANE}:{seq}", "lane_id": LANE, "seq": seq, "kind": kind, "at": AT,
            "recorded": AT, "session_id": None, "member_id": "M1" if seq % 3 else "M2",
            "plate": None, "rules_version": None, "payload": payload,
            "prev_hash": "0" * 64, "hash": f"{seq:064x}" if not tag else f"{seq:063x}f"}


def _batch(lo: int, hi: int, *, tag: str = "") -> codec.Batch:
    parts = [codec.canonical(_entry(s, tag=tag)) for s in range(lo, hi + 1)]
    raw = codec.encode_batch(SITE, LANE, parts, lo, hi, KEYS[LANE], datetime.now(UTC))
    return codec.parse_batch(raw, KEYS.get)


def _expected(member: str, upto: int) -> int:
    return sum(codec.points_delta(e["kind"], e["payload"])
               for e in map(_entry, range(1, upto + 1)) if e["member_id"] == member)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CentralDB]:
    url = (f"sqlite:///{tmp_path / 'central.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    d = CentralDB(url)
    yield d
    d.close()


def test_fresh_groups_take_one_statement_and_replays_stay_exactly_once(db: CentralDB) -> None:
    res = db.commit_batches([_batch(1, 10), _batch(11, 20), _batch(21, 30)])
    assert [(r.inserted, r.duplicates) for r in res] == [(10, 0)] * 3
    assert res[0].members_changed == ("M1", "M2")
    assert db.replayed_groups == 0  # the driver counted every row: no per-batch look-ups

    # a whole replay, a partial one and a new batch overlapping another in the same group
    res = db.commit_batches([_batch(1, 10), _batch(25, 34), _batch(35, 40), _batch(38, 45)])
    assert [(r.inserted, r.duplicates) for r in res] == [(0, 10), (4, 6), (6, 0), (5, 3)]
    assert res[0].members_changed == ()
    assert db.replayed_groups == 1
    assert db.commit_batch(_batch(40, 45)).duplicates == 6
    assert db.count_entries() == 45
    assert sorted(db.entry_ids()) == sorted(f"{LANE}:{s}" for s in range(1, 46))
    for m in ("M1", "M2"):  # balances = the sum of the committed entries, nothing twice
        assert db.balance(m) == db.points_from_entries(m) == _expected(m, 45)


def test_same_seq_different_content_refuses_the_whole_group(db: CentralDB) -> None:
    db.commit_batches([_batch(1, 10)])
    with pytest.raises(SyncMessageError) as ei:
        db.commit_batches([_batch(11, 20), _batch(5, 12, tag="reinstalled")])
    assert ei.value.reason == "seq_conflict"
    assert db.count_entries() == 10  # the good batch of that group was rolled back too
    assert db.balance("M1") == _expected("M1", 10)
    assert db.commit_batch(_batch(11, 20)).inserted == 10


def test_entries_outside_the_field_limits_are_recorded_flagged_and_applied(
        db: CentralDB) -> None:
    """#12 item 2: central records what happened on the lane, on both paths (fresh group and
    replay), and keeps the entry as received next to why it was flagged."""
    es = [_entry(s) for s in range(1, 7)]
    es[0]["plate"] = "X" * 300  # points earned by M1: still applied
    es[0]["payload"] = {"points": 10}
    es[2]["kind"] = ["not", "a", "kind"]
    es[4]["payload"] = "not an object"
    parts = [codec.canonical(e) for e in es]
    raw = codec.encode_batch(SITE, LANE, parts, 1, 6, KEYS[LANE], datetime.now(UTC))
    b = codec.parse_batch(raw, KEYS.get)
    assert [seq for seq, _ in b.flagged] == [1, 3, 5]
    res = db.commit_batches([b])
    assert res[0].inserted == 6 and res[0].flagged == 3
    assert db.commit_batches([b])[0].duplicates == 6  # replayed: nothing twice
    fl = db.flagged(LANE)
    assert [f["seq"] for f in fl] == [1, 3, 5]
    assert "plate" in fl[0]["reason"] and "kind" in fl[1]["reason"]
    assert json.loads(fl[0]["raw"])["plate"] == "X" * 300
    assert db.count_entries() == 6
    # +10 (flagged plate), -1 (seq 4); seq 5's payload was not an object: no points
    assert db.balance("M1") == db.points_from_entries("M1") == 10 - 1
