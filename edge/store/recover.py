"""Rebuild a damaged or incomplete ledger from central's copy plus what is left locally.

Central keeps every entry it acknowledged exactly as the lane hashed it (``recorded`` and
``prev_hash`` included), so an entry lost locally can be put back byte for byte and its hash
re-checked. Steps (``recover``):

1. Move the damaged file, its WAL and shared-memory files and the high-water mark into
   ``<ledger>.damaged-<UTC time>/``: never deleted, kept for the investigation.
2. Read every ledger row still readable in that copy (row by row if a page is bad).
3. Merge with central's entries: the same entry in both must have the same hash (else refuse:
   one of the two copies was altered); otherwise the union.
4. Order the union by following ``prev_hash`` from the genesis, re-hash every entry, check
   each lane's seqs are gapless. What cannot be chained (an entry lost everywhere, so its
   successors hang loose) is reported and not written; the rebuilt chain ends before it.
5. Write a new ledger file: the entries verbatim, the chain head, the sessions and exit/payment
   idempotency keys replayed from the entries, central's acknowledgements as the outbox state,
   and a ``correction`` ``ledger_recovered`` entry recording what was done and what was lost.
   The member cache starts empty: central's retained member states refill it when sync
   connects (a stale cache could let points be spent twice).
6. Verify the new file (``Store.verify``) and write a new high-water mark.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from edge.store import ledger
from edge.store.codec import GENESIS, canonical_json, entry_hash
from edge.store.guard import HighWater, hwm_path, write_hwm
from edge.store.store import Store
from edge.store.types import StoreError

ROW_FIELDS = ("entry_id", "lane_id", "seq", "kind", "at", "recorded", "session_id",
              "member_id", "plate", "rules_version", "payload", "prev_hash", "hash")


@dataclass
class RecoverReport:
    aside: Path
    local: int = 0  # readable rows in the damaged copy
    central: int = 0  # entries in central's export(s)
    written: int = 0  # entries in the rebuilt chain
    from_central_only: int = 0
    from_local_only: int = 0
    dropped: list[str] = field(default_factory=list)  # could not be chained (after a loss)
    lost: list[str] = field(default_factory=list)  # lane seq ranges nobody has
    problems: list[str] = field(default_factory=list)


def _row(d: dict[str, Any], origin: str) -> dict[str, Any]:
    """One entry in the store's stored form (payload as its canonical text)."""
    missing = [k for k in ROW_FIELDS if k not in d or (d[k] is None and k not in (
        "session_id", "member_id", "plate", "rules_version"))]
    if missing:
        raise StoreError(f"{origin}: entry {d.get('entry_id')!r} lacks {', '.join(missing)} "
                         "(a central that did not keep them cannot be used to rebuild)")
    out = {k: d[k] for k in ROW_FIELDS}
    out["seq"] = int(out["seq"])
    if not isinstance(out["payload"], str):
        out["payload"] = canonical_json(out["payload"])
    return out


def read_central_export(lines: Iterable[str], origin: str) -> list[dict[str, Any]]:
    """JSON lines from ``parkedge-central export-lane LANE``."""
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except ValueError as exc:
            raise StoreError(f"{origin} line {n}: not JSON ({exc})") from exc
        if not isinstance(d, dict):
            raise StoreError(f"{origin} line {n}: expected an object")
        out.append(_row(d, f"{origin} line {n}"))
    return out


def read_local(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every ledger row still readable in a damaged file (row by row past a bad page)."""
    notes: list[str] = []
    if not path.exists() or path.stat().st_size == 0:
        return [], [f"{path.name}: nothing to read"]
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [], [f"{path.name}: cannot open ({exc})"]
    rows: list[dict[str, Any]] = []
    cols = ", ".join(ROW_FIELDS)
    try:
        try:
            rows = [dict(zip(ROW_FIELDS, r, strict=True)) for r in
                    conn.execute(f"SELECT {cols} FROM ledger_entries ORDER BY pos")]
        except sqlite3.DatabaseError as exc:
            notes.append(f"{path.name}: full read failed ({exc}); reading row by row")
            rows = []
            try:
                top = int(conn.execute("SELECT MAX(pos) FROM ledger_entries").fetchone()[0]
                          or 0)
            except sqlite3.DatabaseError as exc2:
                notes.append(f"{path.name}: unreadable ({exc2})")
                top = 0
            bad = 0
            for pos in range(1, top + 1):
                try:
                    r = conn.execute(f"SELECT {cols} FROM ledger_entries WHERE pos = ?",
                                     (pos,)).fetchone()
                except sqlite3.DatabaseError:
                    bad += 1
                    continue
                if r is not None:
                    rows.append(dict(zip(ROW_FIELDS, r, strict=True)))
            if bad:
                notes.append(f"{path.name}: {bad} row(s) unreadable")
    finally:
        conn.close()
    return [_row(r, path.name) for r in rows], notes


def move_aside(db: Path, lane_id: str) -> Path:
    """Move the ledger's files (and the mark) into a new directory beside it; delete nothing."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = db.with_name(f"{db.name}.damaged-{stamp}")
    aside.mkdir()
    for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"),
              hwm_path(db, lane_id)):
        if p.exists():
            os.replace(p, aside / p.name)
    return aside


def _chain(rows: dict[str, dict[str, Any]], report: RecoverReport) -> list[dict[str, Any]]:
    """Follow prev_hash from the genesis; re-hash each entry; stop where nothing follows."""
    by_prev: dict[str, list[dict[str, Any]]] = {}
    for r in rows.values():
        by_prev.setdefault(r["prev_hash"], []).append(r)
    out: list[dict[str, Any]] = []
    prev = GENESIS
    last_seq: dict[str, int] = {}
    while prev in by_prev:
        nxt = by_prev.pop(prev)
        if len(nxt) > 1:
            report.problems.append(f"{len(nxt)} entries claim to follow {prev[:12]}…: "
                                   + ", ".join(r["entry_id"] for r in nxt))
            break
        r = nxt[0]
        if entry_hash(r["prev_hash"], ledger.hashed_fields(r)) != r["hash"]:
            report.problems.append(f"{r['entry_id']}: hash does not match its content")
            break
        lane, seq = r["lane_id"], r["seq"]
        if seq != last_seq.get(lane, 0) + 1 or r["entry_id"] != f"{lane}:{seq}":
            report.problems.append(f"{r['entry_id']}: seq gap after {last_seq.get(lane, 0)}")
            break
        last_seq[lane] = seq
        out.append(r)
        prev = r["hash"]
    chained = {r["entry_id"] for r in out}
    report.dropped = sorted((r["entry_id"] for r in rows.values()
                             if r["entry_id"] not in chained),
                            key=lambda e: (e.split(":")[0], int(e.split(":")[1])))
    return out


def _lost_ranges(rows: dict[str, dict[str, Any]], chained: list[dict[str, Any]],
                 high: dict[str, int]) -> list[str]:
    """Per lane: seqs above the rebuilt chain's end up to the highest known (the mark)."""
    ends: dict[str, int] = {}
    for r in chained:
        ends[r["lane_id"]] = r["seq"]
    top: dict[str, int] = dict(high)
    for r in rows.values():
        top[r["lane_id"]] = max(top.get(r["lane_id"], 0), r["seq"])
    return [f"{lane}:{ends.get(lane, 0) + 1}..{hi}" for lane, hi in sorted(top.items())
            if hi > ends.get(lane, 0)]


def recover(db: Path, lane_id: str, central: list[dict[str, Any]], *,
            allow_loss: bool = False) -> RecoverReport:
    """Rebuild ``db`` (see the module docstring). Refuses (StoreError, nothing changed but the
    move aside, which is undone) when the copies disagree, or when entries would be lost and
    ``allow_loss`` is False."""
    old_mark: HighWater | None = None
    mp = hwm_path(db, lane_id)
    if mp.exists():
        try:
            d = json.loads(mp.read_text())
            old_mark = HighWater(lane_id, int(d["seq"]), str(d["hash"]),
                                 int(d.get("acked_seq", 0)))
        except (ValueError, KeyError, OSError):
            old_mark = None
    aside = move_aside(db, lane_id)
    report = RecoverReport(aside)
    try:
        # read a scratch copy: even a read-only open adds -shm/-wal files to the evidence
        with tempfile.TemporaryDirectory(prefix="parkedge-recover-") as scratch:
            for f in aside.iterdir():
                if f.name.startswith(db.name) and not f.name.endswith(".hwm"):
                    shutil.copy2(f, Path(scratch) / f.name)
            local, notes = read_local(Path(scratch) / db.name)
        report.problems += [f"note: {n}" for n in notes]
        report.local, report.central = len(local), len(central)
        rows: dict[str, dict[str, Any]] = {}
        for r in central:
            rows[r["entry_id"]] = r
        for r in local:
            have = rows.get(r["entry_id"])
            if have is not None and have != r:
                diff = sorted(k for k in ROW_FIELDS if have[k] != r[k])
                raise StoreError(f"{r['entry_id']}: the local copy and central's differ "
                                 f"({', '.join(diff)}); one of them was altered: not "
                                 "rebuilding")
            if have is None:
                rows[r["entry_id"]] = r
        local_ids = {r["entry_id"] for r in local}
        central_ids = {r["entry_id"] for r in central}
        chain = _chain(rows, report)
        fatal = [p for p in report.problems if not p.startswith("note:")]
        if fatal and not allow_loss:
            raise StoreError("the rebuilt chain does not verify: " + "; ".join(fatal))
        high = {lane_id: old_mark.seq} if old_mark else {}
        report.lost = _lost_ranges(rows, chain, high)
        if (report.lost or report.dropped) and not allow_loss:
            raise StoreError(
                "entries would be lost (" + ", ".join(report.lost) + "): neither central nor "
                "the local file has them. Re-run with --allow-loss to rebuild without them "
                "(recorded in a ledger_recovered correction).")
        report.written = len(chain)
        report.from_central_only = sum(1 for r in chain if r["entry_id"] not in local_ids)
        report.from_local_only = sum(1 for r in chain if r["entry_id"] not in central_ids)
        # acknowledged = what central holds without a gap from 1, and only as far as the
        # rebuilt chain goes (an ack beyond its end would make the start-up check refuse it)
        chained_seqs = {r["seq"] for r in chain if r["lane_id"] == lane_id}
        central_seqs = {r["seq"] for r in central if r["lane_id"] == lane_id}
        acked = 0
        while acked + 1 in chained_seqs and acked + 1 in central_seqs:
            acked += 1
        _write(db, lane_id, chain, acked, report)
    except BaseException:
        # nothing written: put the damaged files back where they were
        for suffix in ("", "-wal", "-shm"):  # the partial rebuild, never the damaged original
            db.with_name(db.name + suffix).unlink(missing_ok=True)
        hwm_path(db, lane_id).unlink(missing_ok=True)
        for p in aside.iterdir():
            os.replace(p, db.with_name(p.name))
        aside.rmdir()
        raise
    return report


def _write(db: Path, lane_id: str, chain: list[dict[str, Any]], acked: int,
           report: RecoverReport) -> None:
    store = Store.open(db, lane_id)
    try:
        with store._write() as c:  # one transaction: the whole rebuild or nothing
            if chain:
                c.executemany(
                    "INSERT INTO ledger_entries (pos, entry_id, lane_id, seq, kind, at, "
                    "recorded, session_id, member_id, plate, rules_version, payload, "
                    "prev_hash, hash) VALUES (:pos, :entry_id, :lane_id, :seq, :kind, :at, "
                    ":recorded, :session_id, :member_id, :plate, :rules_version, :payload, "
                    ":prev_hash, :hash)",
                    [dict(r, pos=i) for i, r in enumerate(chain, 1)])
                c.execute("INSERT INTO ledger_head (id, last_pos, last_hash) VALUES "
                          "(1, :p, :h)", {"p": len(chain), "h": chain[-1]["hash"]})
            _replay_sessions(c, chain)
            if acked:
                c.execute("INSERT INTO outbox_state (peer, acked_seq, acked_ranges) VALUES "
                          "('central', :a, '[]')", {"a": acked})
        store.record_correction(
            "ledger_recovered", datetime.now(UTC),
            reason="rebuilt by `parkedge ledger recover` from central's copy and the "
                   "damaged file",
            detail={"damaged_copy": str(report.aside), "entries": report.written,
                    "from_central_only": report.from_central_only,
                    "from_local_only": report.from_local_only,
                    "lost": report.lost, "dropped": report.dropped[:50]})
        res = store.verify()
        if not res.ok:
            raise StoreError("the rebuilt ledger does not verify: " + "; ".join(res.problems))
        seq, h, a = store.tail()
        write_hwm(db, HighWater(lane_id, seq, h, a))
    finally:
        store.close()


_EXIT_KINDS = ("session_closed", "fee_charged", "coupon_used", "points_deducted",
               "points_earned")


def _replay_sessions(c: sqlite3.Connection, chain: list[dict[str, Any]]) -> None:
    """The sessions table and the exit/payment idempotency keys, from the entries alone."""
    exit_group: tuple[str, list[str]] | None = None  # (key, entry ids) of the current exit
    session_of = {r["entry_id"]: r["session_id"] for r in chain}

    def flush() -> None:
        nonlocal exit_group
        if exit_group is not None:
            key, ids = exit_group
            sid = session_of[ids[0]]
            c.execute("INSERT OR IGNORE INTO idempotency (key, scope, session_id, entry_ids) "
                      "VALUES (?, 'exit', ?, ?)", (key, sid, json.dumps(ids)))
        exit_group = None

    for r in chain:
        kind, sid, p = r["kind"], r["session_id"], json.loads(r["payload"])
        if exit_group is not None and not (kind in _EXIT_KINDS[1:]
                                           and sid == session_of[exit_group[1][0]]):
            flush()
        if kind == "session_opened" and sid:
            c.execute("UPDATE sessions SET status = 'closed' WHERE plate = ? AND status = "
                      "'open'", (r["plate"],))
            c.execute("INSERT OR IGNORE INTO sessions (session_id, plate, entered_at, "
                      "entry_lane, vehicle_class, member_id, status, rules_version, "
                      "entry_event_id) VALUES (?, ?, ?, ?, ?, ?, 'open', ?, ?)",
                      (sid, r["plate"], r["at"], p.get("entry_lane"),
                       p.get("vehicle_class") or "small", r["member_id"], r["rules_version"],
                       p.get("event_id")))
        elif kind == "session_closed" and sid:
            c.execute("INSERT OR IGNORE INTO sessions (session_id, plate, entered_at, "
                      "entry_lane, vehicle_class, member_id, status, rules_version) VALUES "
                      "(?, ?, ?, NULL, 'small', ?, 'closed', ?)",
                      (sid, r["plate"] or "", r["at"], r["member_id"], r["rules_version"]))
            c.execute("UPDATE sessions SET status = ?, exited_at = ?, exit_lane = ?, "
                      "exit_event_id = ?, member_id = COALESCE(?, member_id), "
                      "rules_version = COALESCE(?, rules_version), exit_detail = ? "
                      "WHERE session_id = ?",
                      (p.get("status") or "closed", r["at"], p.get("exit_lane"),
                       p.get("exit_event_id"), r["member_id"], r["rules_version"],
                       json.dumps({"lots_used": [], "coupons_used": [], "earned_lot_id": None,
                                   "points_value": "0"}), sid))
            exit_group = (f"exit:{p.get('exit_event_id')}", [r["entry_id"]])
            continue
        elif kind == "fee_charged" and sid:
            c.execute("UPDATE sessions SET fee = ?, payable = ? WHERE session_id = ?",
                      (str(p.get("fee")), str(p.get("payable")), sid))
        elif kind == "points_deducted" and sid:
            _detail(c, sid, lots_used=p.get("lots", []), points_value=str(p.get("value", "0")))
            c.execute("UPDATE sessions SET points_deducted = ? WHERE session_id = ?",
                      (int(p.get("points", 0)), sid))
        elif kind == "coupon_used" and sid:
            _detail(c, sid, coupon=p.get("coupon_id"))
        elif kind == "points_earned" and sid:
            _detail(c, sid, earned_lot_id=p.get("lot_id"))
            c.execute("UPDATE sessions SET points_earned = ? WHERE session_id = ?",
                      (int(p.get("points", 0)), sid))
        elif kind == "payment_received" and sid:
            out = Decimal(str(p.get("outstanding", "0")))
            c.execute("UPDATE sessions SET paid = ?, status = ? WHERE session_id = ?",
                      (str(p.get("paid_total")), "closed" if out <= 0 else "owed", sid))
            c.execute("INSERT OR IGNORE INTO idempotency (key, scope, session_id, entry_ids) "
                      "VALUES (?, 'payment', ?, ?)",
                      (f"pay:{p.get('idem_key')}", sid, json.dumps([r["entry_id"]])))
        elif kind == "correction" and sid:
            action = p.get("action")
            if action in ("superseded", "entry_cancelled"):
                c.execute("UPDATE sessions SET status = 'closed' WHERE session_id = ?", (sid,))
            elif action == "session_reopened":
                c.execute("UPDATE sessions SET status = 'open', exited_at = NULL, "
                          "exit_lane = NULL, fee = NULL, payable = NULL, paid = '0', "
                          "points_deducted = 0, points_earned = 0, exit_event_id = NULL, "
                          "exit_detail = NULL WHERE session_id = ?", (sid,))
        if exit_group is not None and kind in _EXIT_KINDS[1:]:
            exit_group[1].append(r["entry_id"])
    flush()


def _detail(c: sqlite3.Connection, sid: str, *, lots_used: list[Any] | None = None,
            points_value: str | None = None, coupon: str | None = None,
            earned_lot_id: str | None = None) -> None:
    row = c.execute("SELECT exit_detail FROM sessions WHERE session_id = ?", (sid,)).fetchone()
    d = json.loads(row[0]) if row and row[0] else {
        "lots_used": [], "coupons_used": [], "earned_lot_id": None, "points_value": "0"}
    if lots_used is not None:
        d["lots_used"] = lots_used
    if points_value is not None:
        d["points_value"] = points_value
    if coupon:
        d["coupons_used"].append(coupon)
    if earned_lot_id:
        d["earned_lot_id"] = earned_lot_id
    c.execute("UPDATE sessions SET exit_detail = ? WHERE session_id = ?", (json.dumps(d), sid))


__all__ = ["RecoverReport", "read_central_export", "read_local", "recover"]
