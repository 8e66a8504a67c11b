"""Start-up check of the ledger file, and the durable high-water mark it is checked against.

SQLite cannot tell a ledger that lost its WAL (truncated, a flipped byte, deleted) from one
that never had those entries: it drops the bad frames and every frame after them and opens
cleanly, and ``ledger verify`` then checks a shorter but consistent chain. Only something
kept outside the file can see the loss. The **high-water mark** is that: a small JSON file
beside the ledger (``<ledger>.<lane>.hwm``) with the last seq and hash this lane committed and
the last seq central acknowledged, replaced atomically (write, fsync, rename, fsync the
directory). The lane writes it after a barrier pulse (like the deferred WAL checkpoint, off
the exit's critical path) and every few seconds when something changed, so it trails the
ledger by at most one decision or a few seconds.

``check_ledger`` runs before the daemon opens the store and refuses (``LedgerDamaged``) on:

* a missing or 0-byte ledger while a high-water mark exists (or a 0-byte file at all: SQLite
  would silently start a new, empty ledger in it);
* a file SQLite cannot read or whose ``PRAGMA quick_check`` fails (overwritten page, zeroed
  header);
* a chain that ends before the high-water mark, or whose entry at the mark has another hash;
* a chain that ends before the seq central acknowledged (from the file or the mark);
* a broken hash chain in the entries written since the mark (from ``TAIL_VERIFY`` before it).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.store import ledger
from edge.store.codec import GENESIS, entry_hash
from edge.store.types import LedgerDamaged

log = logging.getLogger(__name__)

HWM_VERSION = 1
TAIL_VERIFY = 1000  # entries re-hashed before the mark (the whole chain: ``full=True``)


@dataclass(frozen=True)
class HighWater:
    lane_id: str
    seq: int  # the last seq this lane committed (0: none yet)
    hash: str  # that entry's hash
    acked_seq: int  # the last seq central acknowledged (the outbox state)
    written_at: str = ""
    v: int = HWM_VERSION


def hwm_path(db_path: Path | str, lane_id: str) -> Path:
    p = Path(db_path)
    return p.with_name(f"{p.name}.{lane_id}.hwm")


def read_hwm(db_path: Path | str, lane_id: str) -> HighWater | None:
    """The mark, or None if there is none; an unreadable mark is damage (LedgerDamaged)."""
    path = hwm_path(db_path, lane_id)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LedgerDamaged(f"high-water mark {path}: cannot read: {exc.strerror}") from exc
    try:
        d = json.loads(raw)
        mark = HighWater(lane_id=str(d["lane_id"]), seq=int(d["seq"]), hash=str(d["hash"]),
                         acked_seq=int(d.get("acked_seq", 0)),
                         written_at=str(d.get("written_at", "")), v=int(d.get("v", 1)))
    except (ValueError, KeyError, TypeError) as exc:
        raise LedgerDamaged(f"high-water mark {path}: unreadable ({exc}); it is written "
                            "atomically, so this is damage, not a torn write") from exc
    if mark.lane_id != lane_id:
        raise LedgerDamaged(f"high-water mark {path} is lane {mark.lane_id!r}, not {lane_id!r}")
    return mark


def write_hwm(db_path: Path | str, mark: HighWater) -> None:
    """Replace the mark atomically: a crash leaves the old mark or the new one, never half.

    Raises OSError (e.g. ENOSPC): the caller logs it and tries again later; the old mark stays.
    """
    path = hwm_path(db_path, mark.lane_id)
    tmp = path.with_name(path.name + ".tmp")
    data = dict(asdict(mark), written_at=datetime.now(UTC).isoformat())
    body = (json.dumps(data, sort_keys=True) + "\n").encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@dataclass(frozen=True)
class CheckResult:
    entries: int  # this lane's last seq
    mark: HighWater | None
    quick_check_ms: float
    chain_ms: float
    verified: int  # entries re-hashed
    warnings: tuple[str, ...] = ()


def _damaged(path: Path, problems: list[str]) -> LedgerDamaged:
    return LedgerDamaged(
        f"ledger {path} is damaged or has lost entries; the lane will not start on it "
        f"(see `parkedge ledger recover`, docs/ledger.md): " + "; ".join(problems), problems)


def check_ledger(path: Path | str, lane_id: str, *, mode: str = "quick") -> CheckResult:
    """Refuse (``LedgerDamaged``) a ledger that is damaged or behind what was committed.

    Opens the file with plain sqlite3 (no migration, nothing written). ``mode``: "quick" runs
    ``PRAGMA quick_check`` and re-hashes the chain from ``TAIL_VERIFY`` entries before the
    mark; "integrity" ``PRAGMA integrity_check`` (also checks every index against its table,
    ~4x the time); "full" integrity_check and the whole chain. Measured per 100k entries
    (64 MB) in docs/ledger.md.
    """
    if mode not in ("quick", "integrity", "full"):
        raise ValueError(f"mode: {mode!r} must be quick, integrity or full")
    full = mode == "full"
    pragma = "quick_check" if mode == "quick" else "integrity_check"
    p = Path(path)
    mark = read_hwm(p, lane_id)
    if not p.exists():
        if mark is not None and mark.seq > 0:
            raise _damaged(p, [f"the ledger file is missing, but seq {mark.seq} of lane "
                               f"{lane_id} was committed (high-water mark "
                               f"{hwm_path(p, lane_id).name}, {mark.written_at})"])
        return CheckResult(0, mark, 0.0, 0.0, 0)  # a new lane: Store.open creates the file
    if p.stat().st_size == 0:
        what = (f"seq {mark.seq} was committed" if mark is not None and mark.seq > 0
                else "a ledger file is never empty once created")
        raise _damaged(p, [f"the ledger file is 0 bytes ({what}); SQLite would start a new, "
                           "empty ledger in it"])
    problems: list[str] = []
    warnings: list[str] = []
    t0 = time.perf_counter()
    try:
        # read-only: closing a read-write connection would checkpoint the WAL into the file
        # and delete it, i.e. destroy the evidence of a damaged WAL
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, isolation_level=None,
                               timeout=10.0)
    except sqlite3.Error as exc:
        raise _damaged(p, [f"SQLite cannot open it: {exc}"]) from exc
    try:
        try:
            rows = [str(r[0]) for r in conn.execute(f"PRAGMA {pragma}(20)")]
        except sqlite3.DatabaseError as exc:
            raise _damaged(p, [f"SQLite cannot read it: {exc}"]) from exc
        qc_ms = (time.perf_counter() - t0) * 1000
        if rows != ["ok"]:
            raise _damaged(p, [f"PRAGMA {pragma}: " + " | ".join(rows[:5])])
        t1 = time.perf_counter()
        try:
            last_seq, verified = _check_chain(conn, lane_id, mark, full, problems, warnings)
        except sqlite3.DatabaseError as exc:
            raise _damaged(p, [f"SQLite cannot read the ledger: {exc}"]) from exc
        chain_ms = (time.perf_counter() - t1) * 1000
    finally:
        conn.close()
    if problems:
        raise _damaged(p, problems)
    for w in warnings:
        log.warning("ledger start-up check: %s", w)
    return CheckResult(last_seq, mark, qc_ms, chain_ms, verified, tuple(warnings))


def _check_chain(conn: sqlite3.Connection, lane_id: str, mark: HighWater | None, full: bool,
                 problems: list[str], warnings: list[str]) -> tuple[int, int]:
    has_ledger = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                              "name = 'ledger_entries'").fetchone() is not None
    if not has_ledger:
        if mark is not None and mark.seq > 0:
            problems.append(f"the file has no ledger table, but seq {mark.seq} was committed")
        return 0, 0
    row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM ledger_entries WHERE lane_id = ?",
                       (lane_id,)).fetchone()
    last_seq = int(row[0])
    acked_row = conn.execute("SELECT acked_seq FROM outbox_state WHERE peer = 'central'"
                             ).fetchone() if _has_table(conn, "outbox_state") else None
    file_acked = 0 if acked_row is None else int(acked_row[0])
    mark_seq = 0 if mark is None else mark.seq
    mark_acked = 0 if mark is None else mark.acked_seq
    if mark is not None and last_seq < mark.seq:
        problems.append(f"lane {lane_id} ends at seq {last_seq}, but seq {mark.seq} was "
                        f"committed (high-water mark of {mark.written_at}): "
                        f"{mark.seq - last_seq} entries lost (a lost or damaged WAL?)")
    elif mark is not None and mark.seq > 0:
        h = conn.execute("SELECT hash FROM ledger_entries WHERE lane_id = ? AND seq = ?",
                         (lane_id, mark.seq)).fetchone()
        if h is None or str(h[0]) != mark.hash:
            problems.append(f"entry {lane_id}:{mark.seq} is not the one committed (its hash "
                            "differs from the high-water mark): the file was replaced or "
                            "rewritten")
    acked = max(file_acked, mark_acked)
    if last_seq < acked:
        problems.append(f"central acknowledged seq {acked} of lane {lane_id}, but the ledger "
                        f"ends at seq {last_seq}")
    if file_acked < mark_acked:
        warnings.append(f"the file's ack state ({file_acked}) is behind the high-water mark "
                        f"({mark_acked}): acks were lost with the WAL")
    # Re-hash the tail of the chain (or all of it) and compare its end with ledger_head.
    start_pos = 1
    if not full and mark_seq > 0:
        r = conn.execute("SELECT pos FROM ledger_entries WHERE lane_id = ? AND seq = ?",
                         (lane_id, mark_seq)).fetchone()
        if r is not None:
            start_pos = max(1, int(r[0]) - TAIL_VERIFY)
    verified = _verify_from(conn, start_pos, problems)
    return last_seq, verified


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def _verify_from(conn: sqlite3.Connection, start_pos: int, problems: list[str]) -> int:
    """Re-hash entries from ``start_pos`` on, check links, seqs and the head."""
    prev_hash = GENESIS
    last_seq: dict[str, int] = {}
    if start_pos > 1:
        r = conn.execute("SELECT hash FROM ledger_entries WHERE pos = ?", (start_pos - 1,)
                         ).fetchone()
        if r is None:
            problems.append(f"chain: position {start_pos - 1} is missing")
            return 0
        prev_hash = str(r[0])
        for lane, seq in conn.execute("SELECT lane_id, MAX(seq) FROM ledger_entries WHERE "
                                      "pos < ? GROUP BY lane_id", (start_pos,)):
            last_seq[str(lane)] = int(seq)
    expected = start_pos
    n = 0
    for r in conn.execute(f"SELECT {ledger.COLUMNS} FROM ledger_entries WHERE pos >= ? "
                          "ORDER BY pos", (start_pos,)):
        m: dict[str, Any] = dict(zip(ledger.COLUMN_NAMES, r, strict=True))
        n += 1
        where = f"pos {m['pos']} ({m['entry_id']})"
        if m["pos"] != expected or m["prev_hash"] != prev_hash:
            problems.append(f"chain: {where} does not follow the previous entry")
        if entry_hash(m["prev_hash"], ledger.hashed_fields(m)) != m["hash"]:
            problems.append(f"chain: {where} hash mismatch (edited)")
        lane, seq = str(m["lane_id"]), int(m["seq"])
        if lane in last_seq and seq != last_seq[lane] + 1:
            problems.append(f"chain: {where} seq gap after {last_seq[lane]}")
        last_seq[lane] = seq
        expected, prev_hash = int(m["pos"]) + 1, str(m["hash"])
        if len(problems) > 20:
            break
    head = conn.execute("SELECT last_pos, last_hash FROM ledger_head WHERE id = 1").fetchone()
    if head is not None and (int(head[0]), str(head[1])) != (expected - 1, prev_hash):
        problems.append(f"chain: ledger_head says pos {head[0]}, the chain ends at "
                        f"{expected - 1}")
    return n
