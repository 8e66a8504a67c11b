"""Appending to and verifying the hash-chained ledger, inside a caller's transaction.

Chain: every row's ``hash`` = sha256(prev_hash + canonical JSON of all its other fields), and
``prev_hash`` is the hash of the row before it in ``pos`` order (the genesis value for the
first). ``ledger_head`` remembers the last position and hash, so cutting rows off the end is
caught too. Sequences are per lane, gapless from 1; the caller holds ``BEGIN IMMEDIATE`` so
``max(seq) + 1`` cannot race another process.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from edge.store.codec import GENESIS, canonical_json, entry_hash, parse_ts, ts
from edge.store.engine import Db, raw
from edge.store.types import EntryKind, LedgerEntry, StoreError, VerifyResult

COLUMNS = (
    "pos, entry_id, lane_id, seq, kind, at, recorded, session_id, member_id, plate, "
    "rules_version, payload, prev_hash, hash"
)
COLUMN_NAMES = tuple(n.strip() for n in COLUMNS.split(","))

_INSERT = (
    "INSERT INTO ledger_entries (pos, entry_id, lane_id, seq, kind, at, recorded, session_id, "
    "member_id, plate, rules_version, payload, prev_hash, hash) VALUES (:pos, :entry_id, "
    ":lane_id, :seq, :kind, :at, :recorded, :session_id, :member_id, :plate, :rules_version, "
    ":payload, :prev_hash, :hash)"
)
# the lane's last seq and the chain's end (position, hash) in one statement
_TAIL = (
    "SELECT (SELECT COALESCE(MAX(seq), 0) FROM ledger_entries WHERE lane_id = :l), "
    "(SELECT pos FROM ledger_entries ORDER BY pos DESC LIMIT 1), "
    "(SELECT hash FROM ledger_entries ORDER BY pos DESC LIMIT 1)"
)
_HEAD = (
    "INSERT INTO ledger_head (id, last_pos, last_hash) VALUES (1, :p, :h) "
    "ON CONFLICT (id) DO UPDATE SET last_pos = :p, last_hash = :h"
)


def hashed_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The fields the hash covers, exactly as stored (payload as its canonical text)."""
    return {
        "entry_id": row["entry_id"],
        "lane_id": row["lane_id"],
        "seq": row["seq"],
        "kind": row["kind"],
        "at": row["at"],
        "recorded": row["recorded"],
        "session_id": row["session_id"],
        "member_id": row["member_id"],
        "plate": row["plate"],
        "rules_version": row["rules_version"],
        "payload": row["payload"],
    }


@dataclass(frozen=True)
class Draft:
    """An entry to append: everything but its place in the chain and its write time."""

    kind: EntryKind
    at: datetime
    session_id: str | None = None
    member_id: str | None = None
    plate: str | None = None
    rules_version: str | None = None
    payload: dict[str, Any] | None = None


def append(
    conn: Connection | Db,
    *,
    lane_id: str,
    kind: EntryKind,
    at: datetime,
    recorded: datetime,
    session_id: str | None = None,
    member_id: str | None = None,
    plate: str | None = None,
    rules_version: str | None = None,
    payload: dict[str, Any] | None = None,
    after: LedgerEntry | None = None,
) -> LedgerEntry:
    """Write one entry at the end of the chain; must run inside a write transaction.

    ``after``: the entry this same transaction appended last (same lane), which spares the
    look-up of the chain's end; safe because ``BEGIN IMMEDIATE`` keeps every other writer out.
    """
    draft = Draft(kind, at, session_id, member_id, plate, rules_version, payload)
    return append_all(conn, lane_id=lane_id, drafts=[draft], recorded=recorded, after=after)[0]


def append_all(conn: Connection | Db, *, lane_id: str, drafts: list[Draft], recorded: datetime,
               after: LedgerEntry | None = None) -> list[LedgerEntry]:
    """Append ``drafts`` in order, chained, with one insert and one head update for all.

    An exit writes 3-5 entries; one ``executemany`` instead of two statements per entry.
    """
    if not isinstance(lane_id, str) or not lane_id or ":" in lane_id:
        raise StoreError(f"lane_id: {lane_id!r} must be non-empty and contain no ':'")
    if not drafts:
        return []
    c = raw(conn)
    if after is not None and after.lane_id == lane_id:
        seq, pos, prev_hash = after.seq, after.pos, after.hash
    else:
        last_seq, last_pos, last_hash = c.execute(_TAIL, {"l": lane_id}).fetchone()
        seq = int(last_seq)
        pos, prev_hash = (0, GENESIS) if last_pos is None else (int(last_pos), str(last_hash))
    rec_s = ts(recorded, "recorded")
    rows: list[dict[str, Any]] = []
    for d in drafts:
        # TEXT columns would silently turn 123 into '123' and break the entry's own hash.
        for name, value in (("session_id", d.session_id), ("member_id", d.member_id),
                            ("plate", d.plate), ("rules_version", d.rules_version)):
            if value is not None and not isinstance(value, str):
                raise StoreError(f"{name}: {value!r} must be a string or None")
        seq += 1
        pos += 1
        row: dict[str, Any] = {
            "pos": pos,
            "entry_id": f"{lane_id}:{seq}",
            "lane_id": lane_id,
            "seq": seq,
            "kind": EntryKind(d.kind).value,
            "at": ts(d.at, "at"),
            "recorded": rec_s,
            "session_id": d.session_id,
            "member_id": d.member_id,
            "plate": d.plate,
            "rules_version": d.rules_version,
            "payload": canonical_json(d.payload or {}),
            "prev_hash": prev_hash,
        }
        row["hash"] = prev_hash = entry_hash(prev_hash, hashed_fields(row))
        rows.append(row)
    c.executemany(_INSERT, rows)
    c.execute(_HEAD, {"p": pos, "h": prev_hash})
    return [to_entry(r) for r in rows]


def to_entry(row: dict[str, Any] | Sequence[Any]) -> LedgerEntry:
    """A row as a dict, or as a tuple in ``COLUMNS`` order."""
    m = row if isinstance(row, dict) else dict(zip(COLUMN_NAMES, row, strict=True))
    return LedgerEntry(
        pos=int(m["pos"]),
        entry_id=m["entry_id"],
        lane_id=m["lane_id"],
        seq=int(m["seq"]),
        kind=EntryKind(m["kind"]),
        at=parse_ts(m["at"]),
        recorded=parse_ts(m["recorded"]),
        session_id=m["session_id"],
        member_id=m["member_id"],
        plate=m["plate"],
        rules_version=m["rules_version"],
        payload=json.loads(m["payload"]),
        prev_hash=m["prev_hash"],
        hash=m["hash"],
    )


def by_ids(c: Db, entry_ids: list[str]) -> list[LedgerEntry]:
    if not entry_ids:
        return []
    rows = c.execute(
        f"SELECT {COLUMNS} FROM ledger_entries WHERE entry_id IN "
        "(SELECT value FROM json_each(:ids)) ORDER BY pos",
        {"ids": json.dumps(entry_ids)},
    ).fetchall()
    return [to_entry(r) for r in rows]


def verify(c: Db, max_problems: int = 100) -> VerifyResult:
    """Recompute the whole chain; report every break (edited, removed, inserted, reordered)."""
    problems: list[str] = []

    def problem(msg: str) -> None:
        if len(problems) < max_problems:
            problems.append(msg)

    prev_hash = GENESIS
    expected_pos = 1
    last_seq: dict[str, int] = {}
    checked = 0
    for r in c.execute(f"SELECT {COLUMNS} FROM ledger_entries ORDER BY pos"):
        m = dict(zip(COLUMN_NAMES, r, strict=True))
        checked += 1
        where = f"pos {m['pos']} ({m['entry_id']})"
        if m["pos"] != expected_pos:
            problem(f"{where}: expected position {expected_pos} (a row was removed or inserted)")
        expected_pos = int(m["pos"]) + 1
        if m["prev_hash"] != prev_hash:
            problem(f"{where}: prev_hash does not match the previous row's hash "
                    "(row removed, inserted or reordered before it)")
        if entry_hash(m["prev_hash"], hashed_fields(m)) != m["hash"]:
            problem(f"{where}: hash mismatch (row edited)")
        lane, seq = m["lane_id"], int(m["seq"])
        want = last_seq.get(lane, 0) + 1
        if seq != want:
            problem(f"{where}: lane {lane} seq {seq}, expected {want} (gap or reorder)")
        last_seq[lane] = seq
        if m["entry_id"] != f"{lane}:{seq}":
            problem(f"{where}: entry_id does not spell lane:seq")
        try:
            EntryKind(m["kind"])
            parse_ts(m["at"])
            parse_ts(m["recorded"])
            json.loads(m["payload"])
        except ValueError as exc:
            problem(f"{where}: unreadable field ({exc})")
        prev_hash = m["hash"]
    head = c.execute("SELECT last_pos, last_hash FROM ledger_head WHERE id = 1").fetchone()
    if head is None:
        if checked:
            problem("ledger_head missing while entries exist")
    elif (int(head[0]), str(head[1])) != (expected_pos - 1, prev_hash):
        problem(f"chain head says pos {head[0]}, ledger ends at pos {expected_pos - 1} "
                "(rows removed from the end, or the head was edited)")
    return VerifyResult(ok=not problems, checked=checked, problems=problems)
