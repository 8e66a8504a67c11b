"""Deferred records (#12 item 3): written once even if the daemon dies between the ledger
commit and clearing the pending file; a torn last line does not lose the others."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edge.store import EntryKind, Store, StoreError
from edge.store.pending import PendingRecords
from tests.store.conftest import T0


def test_a_pending_record_is_written_once(store: Store, tmp_path: Path) -> None:
    p = PendingRecords(tmp_path / "run", "X1")
    p.add(EntryKind.MANUAL_OPEN, T0, {"reason": "ambulance", "operator": "g7"})
    p.add(EntryKind.LANE_EVENT, T0, {"event": "reversed", "detail": {}}, plate="沪A1")
    saved = tmp_path / "saved.jsonl"
    shutil.copy(tmp_path / "run" / "X1.pending.jsonl", saved)
    assert p.flush(store) == 2 and len(p) == 0
    assert not (tmp_path / "run" / "X1.pending.jsonl").exists()
    # the daemon died before removing the file: the next start finds the same records
    shutil.copy(saved, tmp_path / "run" / "X1.pending.jsonl")
    again = PendingRecords(tmp_path / "run", "X1")
    assert len(again) == 2
    again.flush(store)
    kinds = [e.kind for e in store.entries(0, 100)]
    assert kinds == [EntryKind.MANUAL_OPEN, EntryKind.LANE_EVENT]
    assert store.verify().ok


def test_a_torn_last_line_keeps_the_others(store: Store, tmp_path: Path) -> None:
    p = PendingRecords(tmp_path, "X1")
    p.add(EntryKind.MANUAL_OPEN, T0, {"reason": "r", "operator": "o"})
    with (tmp_path / "X1.pending.jsonl").open("a") as f:
        f.write('{"id": "torn", "kind": "manu')
    assert len(PendingRecords(tmp_path, "X1")) == 1


def test_only_manual_opens_and_lane_events_can_be_deferred(store: Store) -> None:
    with pytest.raises(StoreError):
        store.record_deferred(EntryKind.FEE_CHARGED, T0, pending_id="x", payload={})
