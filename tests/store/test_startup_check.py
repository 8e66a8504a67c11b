"""Ledger damage at start (#12 item 4): real WAL truncation, byte flips and deletion, an
overwritten page, a 0-byte file, a zeroed header and a deleted ledger, against the high-water
mark the lane keeps beside it. The real daemon must refuse each with exit status 65 and a clear
message, never a traceback; ``ledger verify`` alone says OK for the WAL cases."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge.store import ExitRecord, LedgerDamaged, Store
from edge.store.guard import HighWater, check_ledger, hwm_path, read_hwm, write_hwm

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
CHECKPOINTED = 40  # lane events folded into the main file
IN_WAL = 30  # written after the last checkpoint: only in the WAL


def write_entries(store: Store, start: int, n: int) -> None:
    for i in range(start, start + n):
        if i % 10 == 0:  # a real stay now and then: sessions, exits, fees
            s, _ = store.record_entry(plate=f"沪A{i:05d}", entered_at=T0, event_id=f"in{i}")
            store.record_exit(ExitRecord(
                exit_event_id=f"out{i}", session_id=s.session_id, plate=s.plate,
                exited_at=T0 + timedelta(hours=1), member_id=None, rules_version="r1",
                fee=Decimal("5.00"), payable=Decimal("5.00"), points_deducted=0, lots_used=(),
                coupons_used=(), points_earned=0, earned_expires_at=None, quote={}))
        else:
            store.record_lane_event("tailgate", T0 + timedelta(seconds=i), plate=f"沪B{i:05d}")


def crash_image(root: Path, *, acked: int = 0, in_wal: int = IN_WAL) -> Path:
    """A lane's ledger as a power cut leaves it: CHECKPOINTED writes in the main file, the
    rest only in the WAL, and the high-water mark written by the lane (edge.store.guard)."""
    src, dst = root / "live", root / "lane"
    src.mkdir()
    dst.mkdir()
    store = Store.open(src / "ledger.db", "X1")
    store.defer_checkpoints(every=100_000)  # only when asked, as in the lane
    write_entries(store, 1, CHECKPOINTED)
    if acked:
        store.mark_acked("central", acked)
    store.checkpoint()
    write_entries(store, 1000, in_wal)
    seq, h, a = store.tail()
    write_hwm(src / "ledger.db", HighWater("X1", seq, h, a))
    for p in src.iterdir():  # the files as they are on disk with the writer still running
        if not p.name.endswith("-shm"):
            shutil.copy(p, dst / p.name)
    store.close()
    assert (dst / "ledger.db-wal").stat().st_size > 0
    return dst / "ledger.db"


def verify_says_ok(db: Path) -> bool:
    r = subprocess.run([sys.executable, "-m", "edge", "ledger", "verify", "--db", str(db)],
                       capture_output=True, text=True, timeout=60)
    return r.returncode == 0 and r.stdout.startswith("OK")


def truncate_wal(db: Path) -> None:
    wal = db.with_name(db.name + "-wal")
    size = wal.stat().st_size
    frame = 4096 + 24
    with wal.open("r+b") as f:  # keep the header and a third of the frames
        f.truncate(32 + frame * max(1, (size - 32) // frame // 3) + 100)


def flip_wal_byte(db: Path) -> None:
    wal = db.with_name(db.name + "-wal")
    frames = (wal.stat().st_size - 32) // (4096 + 24)
    at = 32 + (4096 + 24) * (frames // 3) + 24 + 1000  # inside a page of an early frame
    with wal.open("r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x01]))


def delete_wal(db: Path) -> None:
    db.with_name(db.name + "-wal").unlink()


WAL_DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": truncate_wal, "byte_flipped": flip_wal_byte, "deleted": delete_wal}


@pytest.mark.parametrize("damage", sorted(WAL_DAMAGE))
def test_lost_wal_entries_pass_verify_but_fail_the_start_up_check(
        tmp_path: Path, damage: str) -> None:
    db = crash_image(tmp_path)
    check_ledger(db, "X1")  # the undamaged image is fine
    WAL_DAMAGE[damage](db)
    assert verify_says_ok(db)  # the attack: the shorter chain is consistent
    with pytest.raises(LedgerDamaged) as err:
        check_ledger(db, "X1")
    assert "entries lost" in str(err.value), err.value.problems


def test_acked_entries_missing_are_loss_even_without_a_mark(tmp_path: Path) -> None:
    db = crash_image(tmp_path, acked=CHECKPOINTED + 20)  # central had 20 entries now gone
    hwm_path(db, "X1").unlink()
    delete_wal(db)  # the acks were checkpointed; the entries after them are lost
    with pytest.raises(LedgerDamaged) as err:
        check_ledger(db, "X1")
    assert any("central acknowledged" in p for p in err.value.problems)


def test_a_mark_whose_entry_has_another_hash_is_refused(tmp_path: Path) -> None:
    db = crash_image(tmp_path)
    mark = read_hwm(db, "X1")
    assert mark is not None
    write_hwm(db, HighWater("X1", mark.seq, "0" * 64, 0))  # e.g. a file restored from backup
    with pytest.raises(LedgerDamaged, match="not the one committed"):
        check_ledger(db, "X1")


def checkpointed(db: Path) -> None:
    """Fold the WAL in and drop it, as a clean shutdown does."""
    with Store.open(db, "X1"):
        pass
    assert not db.with_name(db.name + "-wal").exists()


def overwrite_page(db: Path) -> None:
    checkpointed(db)
    pages = db.stat().st_size // 4096
    with db.open("r+b") as f:
        f.seek(4096 * (pages // 2))
        f.write(os.urandom(4096))


def zero_bytes(db: Path) -> None:
    checkpointed(db)
    db.write_bytes(b"")


def zero_header(db: Path) -> None:
    checkpointed(db)
    with db.open("r+b") as f:
        f.write(b"\0" * 100)


def delete_ledger(db: Path) -> None:
    checkpointed(db)
    db.unlink()


FILE_DAMAGE: dict[str, Callable[[Path], None]] = {
    "overwritten_page": overwrite_page, "zero_bytes": zero_bytes, "zeroed_header": zero_header,
    "deleted_ledger": delete_ledger, **WAL_DAMAGE}


def test_a_fresh_lane_with_no_file_and_no_mark_starts(tmp_path: Path) -> None:
    res = check_ledger(tmp_path / "ledger.db", "X1")
    assert res.entries == 0 and res.mark is None


def test_zero_bytes_is_refused_even_without_a_mark(tmp_path: Path) -> None:
    (tmp_path / "ledger.db").write_bytes(b"")
    with pytest.raises(LedgerDamaged, match="0 bytes"):
        check_ledger(tmp_path / "ledger.db", "X1")


def test_full_and_integrity_modes_check_the_whole_chain(tmp_path: Path) -> None:
    db = crash_image(tmp_path)
    assert check_ledger(db, "X1", mode="full").verified > check_ledger(db, "X1").verified - 1
    assert check_ledger(db, "X1", mode="integrity").entries == CHECKPOINTED + IN_WAL + 2 * 7


def daemon_config(tmp: Path, db: Path) -> Path:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp / "x1.toml"
    cfg.write_text(f"""
[lane]
id = "X1"
site = "s"
direction = "exit"
timezone = "Asia/Shanghai"
control_socket = "{tmp / "x1.sock"}"

[buses.io]
url = "tcp://127.0.0.1:{port}"
protocol = "modbus"

[buses.led]
url = "socket://127.0.0.1:{port}"
protocol = "raw"

[devices.barrier]
driver = "modbus-coil"
bus = "io"

[devices.loops]
driver = "modbus-inputs"
bus = "io"

[devices.display]
driver = "a0"
bus = "led"

[camera]
source = "push"
listen = "127.0.0.1:{port}"

[rules]
path = "{REPO / "config" / "rules.example.toml"}"

[storage]
path = "{db}"
pending_dir = "{tmp / "run"}"

[logging]
level = "WARNING"
format = "text"
""", encoding="utf-8")
    return cfg


@pytest.mark.parametrize("damage", sorted(FILE_DAMAGE))
def test_the_daemon_refuses_a_damaged_ledger_with_exit_65(tmp_path: Path, damage: str) -> None:
    db = crash_image(tmp_path)
    FILE_DAMAGE[damage](db)
    cfg = daemon_config(tmp_path, db)
    r = subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 65, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert "parkedge ledger recover" in out
    assert "damaged or has lost entries" in out
    # the same check from the CLI, for the technician
    c = subprocess.run([sys.executable, "-m", "edge", "ledger", "check", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert c.returncode == 65 and "DAMAGED" in c.stderr, c.stdout + c.stderr
    # nothing was deleted or replaced by the refusal
    if damage not in ("deleted_ledger",):
        assert db.exists()
    if damage == "zero_bytes":
        assert db.stat().st_size == 0
