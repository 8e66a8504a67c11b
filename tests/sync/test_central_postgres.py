"""The central store on PostgreSQL (127.0.0.1:5432, database ``test``), when one is there.

Same exactly-once commit as on SQLite: a schema of its own per run, dropped afterwards.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from parkedge_sim.central.db import CentralDB

from edge.sync import codec
from tests.sync.conftest import KEYS, SITE, make_store, write_events


def test_exactly_once_and_balances_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    store = make_store(tmp_path, "lane-x")
    write_events(store, 30)
    db = CentralDB(pg_url)
    try:
        db.upsert_member("M1", balance=100)
        es = store.entries(0, 100)
        raws = [codec.encode_batch(SITE, "lane-x", [codec.encode_entry(e) for e in part],
                                   part[0].seq, part[-1].seq, KEYS["lane-x"], datetime.now(UTC))
                for part in (es[:20], es[10:30])]  # overlapping: 10 duplicates
        bs = [codec.parse_batch(r, lambda _l: KEYS["lane-x"]) for r in raws]
        res = db.commit_batches(bs)
        assert [(r.inserted, r.duplicates) for r in res] == [(20, 0), (10, 10)]
        assert db.commit_batch(bs[1]).duplicates == 20  # a replay changes nothing
        assert sorted(db.entry_ids()) == sorted(e.entry_id for e in es)
        assert db.count_entries() == 30
        db.settle("M1", -130)  # below zero: flagged, never refused
        st = db.member_state("M1", {}, 0)
        assert st is not None and st.balance == -30 and st.flagged
    finally:
        db.close()
