"""``parkedge ledger recover`` (#12 item 4): a lane's ledger damaged for real (WAL truncated or
deleted, header zeroed) is rebuilt from ``parkedge-central``'s copy (its SQLite database,
exported with ``parkedge-central export-lane``) plus what is left locally;
the rebuilt chain is byte-identical to the lane's, verified, and the damaged files are kept."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from central.app import Central
from central.config import load_config
from central.ingest.commit import Committer
from edge.store import EntryKind, LedgerEntry, Store
from edge.store.guard import check_ledger, hwm_path
from edge.sync import codec
from tests.store.test_startup_check import crash_image, delete_wal, truncate_wal, zero_header

KEY = b"recover-test-key"
RULES = Path(__file__).resolve().parents[2] / "config" / "rules.example.toml"


def entries_of(db: Path) -> list[LedgerEntry]:
    """The lane's entries as they were before the damage (read from an intact copy)."""
    copy = db.parent.parent / "intact"
    copy.mkdir()
    for p in db.parent.iterdir():
        shutil.copy(p, copy / p.name)
    with Store.open(copy / db.name, "X1") as s:
        return s.entries(0, 100_000)


def central_with(tmp: Path, entries: list[LedgerEntry]) -> Path:
    """parkedge-central's database holding ``entries`` as the lane sent them (committed by
    its ingest's committer), then its export file."""
    conf, db = tmp / "central.toml", tmp / "central.db"
    conf.write_text(f'[site]\nsite_id = "s"\ntimezone = "Asia/Shanghai"\n'
                    f'[database]\nurl = "sqlite:///{db}"\n'
                    f'[rules]\nbundle = "{RULES}"\n', encoding="utf-8")
    c = Central.from_config(load_config(conf), migrate=True)
    try:
        committer = Committer(c.engine, c.sessions, c.rules, c.clock)
        for i in range(0, len(entries), 10):
            part = entries[i:i + 10]
            raw = codec.encode_batch("s", "X1", [codec.encode_entry(e) for e in part],
                                     part[0].seq, part[-1].seq, KEY, datetime.now(UTC))
            out_ = committer.commit([codec.parse_batch(raw, {"X1": KEY}.get)])
            assert not any(isinstance(r, codec.SyncMessageError) for r in out_.results)
    finally:
        c.close()
    out = tmp / "central-X1.jsonl"
    with out.open("w") as f:
        subprocess.run([sys.executable, "-m", "central", "export-lane", "X1", "-c", str(conf)],
                       stdout=f, check=True, timeout=60)
    return out


def recover(db: Path, export: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", "ledger", "recover", "--db", str(db), "--lane", "X1",
         "--central-export", str(export), *extra], capture_output=True, text=True, timeout=60)


def aside_dirs(db: Path) -> list[Path]:
    return sorted(db.parent.glob(f"{db.name}.damaged-*"))


def test_wal_lost_everything_acked_is_rebuilt_byte_for_byte(tmp_path: Path) -> None:
    db = crash_image(tmp_path)
    before = entries_of(db)
    export = central_with(tmp_path, before)  # central acked all of them
    open_before = {s.plate for s in Store.open(tmp_path / "intact" / "ledger.db", "X1")
                   .list_sessions(open_only=True)}
    truncate_wal(db)
    r = recover(db, export)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "damaged files kept in" in r.stdout
    check_ledger(db, "X1")  # the lane will start on it
    with Store.open(db, "X1") as s:
        assert s.verify().ok
        after = s.entries(0, 100_000)
        assert [(e.entry_id, e.hash) for e in after[:len(before)]] == \
            [(e.entry_id, e.hash) for e in before]
        last = after[-1]
        assert last.kind == EntryKind.CORRECTION
        assert last.payload["action"] == "ledger_recovered"
        assert {x.plate for x in s.list_sessions(open_only=True)} == open_before
        closed = [x for x in s.list_sessions(limit=1000) if x.exited_at is not None]
        assert closed and all(x.fee is not None for x in closed)
        assert s.unacked(limit=10) == [last]  # central has the rest
    (aside,) = aside_dirs(db)
    assert (aside / "ledger.db").exists() and (aside / "ledger.db-wal").exists()
    assert (aside / hwm_path(db, "X1").name).exists()


def test_entries_lost_everywhere_are_refused_then_rebuilt_with_allow_loss(
        tmp_path: Path) -> None:
    db = crash_image(tmp_path)
    before = entries_of(db)
    export = central_with(tmp_path, before[:60])  # central acked 60 of 84
    delete_wal(db)  # the local file keeps the checkpointed 48
    files = sorted(p.name for p in db.parent.iterdir())
    r = recover(db, export)
    assert r.returncode == 1 and "X1:61..84" in r.stderr, r.stdout + r.stderr
    assert sorted(p.name for p in db.parent.iterdir()) == files  # nothing changed
    r = recover(db, export, "--allow-loss")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "LOST" in r.stdout and "X1:61..84" in r.stdout
    check_ledger(db, "X1")
    with Store.open(db, "X1") as s:
        assert s.verify().ok
        after = s.entries(0, 1000)
        assert [e.hash for e in after[:60]] == [e.hash for e in before[:60]]
        assert after[-1].payload["detail"]["lost"] == ["X1:61..84"]


def test_local_entries_central_never_got_are_kept(tmp_path: Path) -> None:
    db = crash_image(tmp_path)
    before = entries_of(db)
    export = central_with(tmp_path, before[:30])
    truncate_wal(db)
    r = recover(db, export, "--allow-loss")
    assert r.returncode == 0, r.stdout + r.stderr
    with Store.open(db, "X1") as s:
        n = len(s.entries(0, 1000)) - 1
        assert n > 48  # central's 30, the main file's 48, and what the WAL's valid part had
        assert [e.hash for e in s.entries(0, 1000)[:n]] == [e.hash for e in before[:n]]


def test_zeroed_header_rebuilds_from_central_alone(tmp_path: Path) -> None:
    db = crash_image(tmp_path)
    before = entries_of(db)
    export = central_with(tmp_path, before)
    zero_header(db)
    r = recover(db, export)
    assert r.returncode == 0, r.stdout + r.stderr
    with Store.open(db, "X1") as s:
        assert s.verify().ok and len(s.entries(0, 1000)) == len(before) + 1


def test_a_local_row_that_differs_from_centrals_copy_is_refused(tmp_path: Path) -> None:
    db = crash_image(tmp_path)
    before = entries_of(db)
    export = central_with(tmp_path, before)
    lines = export.read_text().splitlines()
    lines[5] = lines[5].replace('"tailgate"', '"tailgatx"')  # central's copy was altered
    export.write_text("\n".join(lines) + "\n")
    r = recover(db, export)
    assert r.returncode == 1 and "differ" in r.stderr, r.stdout + r.stderr
    assert aside_dirs(db) == [] and db.exists()


def test_recover_refuses_while_the_lane_answers(tmp_path: Path) -> None:
    db = crash_image(tmp_path)
    export = central_with(tmp_path, entries_of(db))
    import socket
    import threading

    sock_path = tmp_path / "x1.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(sock_path))
    srv.listen(1)

    def answer() -> None:
        c, _ = srv.accept()
        c.recv(4096)
        c.sendall(b'{"ok": true}\n')
        c.close()

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    cfg = tmp_path / "x1.toml"
    cfg.write_text(f'[lane]\nid = "X1"\ncontrol_socket = "{sock_path}"\n'
                   f'[storage]\npath = "{db}"\n')
    r = subprocess.run([sys.executable, "-m", "edge", "ledger", "recover", "--config", str(cfg),
                        "--central-export", str(export)], capture_output=True, text=True,
                       timeout=60)
    srv.close()
    assert r.returncode == 2 and "stop it first" in r.stderr, r.stdout + r.stderr
