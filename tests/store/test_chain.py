"""Hash chain: tamper with the real SQLite file using raw sqlite3 and check verify() sees it."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge.store import Store, StoreError

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=TZ)
COLS = ("pos, entry_id, lane_id, seq, kind, at, recorded, session_id, member_id, plate, "
        "rules_version, payload, prev_hash, hash")


@pytest.fixture
def filled(db: Path) -> Path:
    with Store.open(db, "X1") as s:
        for i in range(6):
            s.record_lane_event("tailgate", T0 + timedelta(minutes=i), plate=f"沪A0000{i}",
                                detail={"n": i})
        assert s.verify().ok
    return db


def _raw(db: Path) -> sqlite3.Connection:
    """A tamperer's connection: drops the append-only triggers first."""
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("DROP TRIGGER ledger_no_update")
    c.execute("DROP TRIGGER ledger_no_delete")
    return c


def _problems(db: Path) -> list[str]:
    with Store.open(db, "X1") as s:
        res = s.verify()
    assert not res.ok
    assert res.problems
    return res.problems


def _rehash(c: sqlite3.Connection, from_pos: int) -> None:
    """What a careful forger does: recompute every hash after the edit (still caught by head)."""
    prev = c.execute("SELECT hash FROM ledger_entries WHERE pos = ?", (from_pos - 1,)).fetchone()
    prev_hash = prev[0] if prev else "0" * 64
    rows = c.execute(f"SELECT {COLS} FROM ledger_entries WHERE pos >= ? ORDER BY pos",
                     (from_pos,)).fetchall()
    for r in rows:
        fields = dict(zip(COLS.split(", "), r, strict=True))
        body = {k: fields[k] for k in ("entry_id", "lane_id", "seq", "kind", "at", "recorded",
                                       "session_id", "member_id", "plate", "rules_version",
                                       "payload")}
        canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        h = hashlib.sha256((prev_hash + canon).encode()).hexdigest()
        c.execute("UPDATE ledger_entries SET prev_hash = ?, hash = ? WHERE pos = ?",
                  (prev_hash, h, fields["pos"]))
        prev_hash = h


def test_untouched_file_verifies(filled: Path) -> None:
    with Store.open(filled, "X1") as s:
        res = s.verify()
    assert res.ok and res.checked == 6 and res.problems == []


def test_the_daemon_itself_cannot_update_or_delete_entries(filled: Path) -> None:
    c = sqlite3.connect(filled)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        c.execute("UPDATE ledger_entries SET plate = 'x' WHERE pos = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        c.execute("DELETE FROM ledger_entries WHERE pos = 1")
    c.close()


def test_edited_payload_is_detected(filled: Path) -> None:
    c = _raw(filled)
    c.execute("UPDATE ledger_entries SET payload = replace(payload, '\"n\":2', '\"n\":9') "
              "WHERE pos = 3")
    c.close()
    problems = _problems(filled)
    assert any("pos 3" in p and "hash mismatch" in p for p in problems), problems


def test_edited_timestamp_is_detected(filled: Path) -> None:
    c = _raw(filled)
    c.execute("UPDATE ledger_entries SET at = '2020-01-01T00:00:00.000000+00:00' WHERE pos = 5")
    c.close()
    assert any("pos 5" in p and "hash mismatch" in p for p in _problems(filled))


def test_edit_with_recomputed_hashes_is_still_detected_by_the_head(filled: Path) -> None:
    c = _raw(filled)
    c.execute("UPDATE ledger_entries SET plate = '沪B99999' WHERE pos = 2")
    _rehash(c, 2)
    c.close()
    problems = _problems(filled)
    assert any("chain head" in p for p in problems), problems


def test_removed_row_is_detected(filled: Path) -> None:
    c = _raw(filled)
    c.execute("DELETE FROM ledger_entries WHERE pos = 3")
    c.close()
    problems = _problems(filled)
    assert any("pos 4" in p and "expected position 3" in p for p in problems), problems
    assert any("prev_hash" in p for p in problems)
    assert any("seq 4, expected 3" in p for p in problems)


def test_removed_last_row_is_detected(filled: Path) -> None:
    c = _raw(filled)
    c.execute("DELETE FROM ledger_entries WHERE pos = 6")
    c.close()
    assert any("chain head" in p for p in _problems(filled))


def test_inserted_row_is_detected(filled: Path) -> None:
    c = _raw(filled)
    row = list(c.execute(f"SELECT {COLS} FROM ledger_entries WHERE pos = 3").fetchone())
    # move rows 4..6 up by one (descending, to keep pos unique) and slip a copy in at 4
    for pos in (6, 5, 4):
        c.execute("UPDATE ledger_entries SET pos = pos + 1 WHERE pos = ?", (pos,))
    row[0], row[1], row[3] = 4, "X1:99", 99
    c.execute(f"INSERT INTO ledger_entries ({COLS}) VALUES ({', '.join('?' * 14)})", row)
    c.close()
    problems = _problems(filled)
    assert any("pos 4 (X1:99): prev_hash" in p for p in problems), problems
    assert any("pos 4 (X1:99): hash mismatch" in p for p in problems), problems
    assert any("chain head" in p for p in problems), problems


def test_reordered_rows_are_detected(filled: Path) -> None:
    c = _raw(filled)
    c.execute("UPDATE ledger_entries SET pos = -1 WHERE pos = 2")
    c.execute("UPDATE ledger_entries SET pos = 2 WHERE pos = 3")
    c.execute("UPDATE ledger_entries SET pos = 3 WHERE pos = -1")
    c.close()
    problems = _problems(filled)
    assert any("pos 2" in p and "prev_hash" in p for p in problems), problems
    assert any("seq 3, expected 2" in p for p in problems), problems


def test_verify_via_cli_exit_codes(filled: Path) -> None:
    from typer.testing import CliRunner

    import edge.cli.ledger  # noqa: F401  (registers the commands)
    from edge.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["ledger", "verify", "--db", str(filled)])
    assert ok.exit_code == 0 and ok.output.strip() == "OK 6 entries"
    c = _raw(filled)
    c.execute("UPDATE ledger_entries SET kind = 'manual_open' WHERE pos = 1")
    c.close()
    bad = runner.invoke(app, ["ledger", "verify", "--db", str(filled)])
    assert bad.exit_code == 1
    assert "BROKEN" in bad.output and "pos 1 (X1:1): hash mismatch" in bad.output


def test_canonical_payload_refuses_nan_and_unknown_types(store: Store) -> None:
    with pytest.raises(StoreError, match="payload"):
        store.record_lane_event("x", T0, detail={"bad": float("nan")})
    with pytest.raises(StoreError, match="payload"):
        store.record_lane_event("x", T0, detail={"bad": object()})
    assert store.verify().checked == 0


def test_verify_through_the_real_entry_point(filled: Path) -> None:
    """`parkedge ledger verify` as a technician runs it: a separate process, exit codes."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-c", "from edge.cli import main; main()", "ledger", "verify"]
    root = Path(__file__).resolve().parents[2]
    ok = subprocess.run([*cmd, "--db", str(filled)], cwd=root, capture_output=True, text=True,
                        timeout=60)
    assert (ok.returncode, ok.stdout.strip()) == (0, "OK 6 entries")
    c = _raw(filled)
    c.execute("DELETE FROM ledger_entries WHERE pos = 2")
    c.close()
    bad = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PARKEDGE_DB": str(filled)})
    assert bad.returncode == 1
    assert "pos 3 (X1:3): expected position 2" in bad.stdout


def test_non_string_ids_are_refused_not_coerced(store: Store) -> None:
    """SQLite would store 123 as '123' and the row would no longer match its own hash."""
    with pytest.raises(StoreError, match="plate: 123 must be a string"):
        store.record_lane_event("x", T0, plate=123)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="session_id"):
        store.record_manual_open("drill", "wang", T0, session_id=7)  # type: ignore[arg-type]
    store.record_lane_event("x", T0, plate="沪A1")
    assert store.verify().ok


def test_a_batch_of_entries_chains_exactly_like_single_appends(db: Path, tmp_path: Path) -> None:
    """``append_all`` (one insert for an exit's entries) writes the rows ``append`` would."""
    from edge.store.engine import make_engine, raw
    from edge.store.ledger import Draft, append, append_all
    from edge.store.types import EntryKind

    drafts = [Draft(EntryKind.LANE_EVENT, T0 + timedelta(seconds=i), plate=f"沪A0000{i}",
                    payload={"event": "tick", "detail": {"n": i, "v": "1.50"}})
              for i in range(4)]
    files = {"batch": db, "single": tmp_path / "single.db"}
    for how, path in files.items():
        Store.open(path, "X1").close()
        engine = make_engine(path)
        with engine.begin() as conn:
            append(conn, lane_id="X1", kind=EntryKind.MANUAL_OPEN, at=T0, recorded=T0,
                   payload={"reason": "first", "operator": "op"})
            if how == "batch":
                append_all(raw(conn), lane_id="X1", drafts=drafts, recorded=T0)
            else:
                for d in drafts:
                    append(conn, lane_id="X1", kind=d.kind, at=d.at, recorded=T0,
                           plate=d.plate, payload=d.payload)
        engine.dispose()
    rows = {}
    for how, path in files.items():
        with sqlite3.connect(path) as c:
            rows[how] = c.execute(f"SELECT {COLS} FROM ledger_entries ORDER BY pos").fetchall()
            rows[how + " head"] = c.execute("SELECT * FROM ledger_head").fetchall()
        with Store.open(path, "X1") as s:
            assert s.verify().ok
    assert len(rows["batch"]) == 5
    assert rows["batch"] == rows["single"]
    assert rows["batch head"] == rows["single head"] == [(1, 5, rows["batch"][-1][-1])]


def test_a_batch_with_one_bad_entry_writes_nothing(filled: Path) -> None:
    from edge.store.engine import make_engine
    from edge.store.ledger import Draft, append_all
    from edge.store.types import EntryKind

    before = sqlite3.connect(filled).execute("SELECT COUNT(*) FROM ledger_entries").fetchone()
    engine = make_engine(filled)
    with pytest.raises(StoreError, match="plate: 123"), engine.begin() as conn:
        append_all(conn, lane_id="X1", recorded=T0, drafts=[
            Draft(EntryKind.LANE_EVENT, T0, payload={"event": "ok"}),
            Draft(EntryKind.LANE_EVENT, T0, plate=123, payload={"event": "bad"}),  # type: ignore[arg-type]
        ])
    engine.dispose()
    after = sqlite3.connect(filled).execute("SELECT COUNT(*) FROM ledger_entries").fetchone()
    assert after == before
