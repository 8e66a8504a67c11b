"""Outbox state for sync: what each peer has acknowledged of this lane's ledger.

``acked_seq`` covers everything up to it; ``acked_ranges`` are out-of-order acks above it.
Ranges touching ``acked_seq`` are folded into it, and it never goes back, so a late or
repeated ack cannot make the lane resend less than it must.
"""

from __future__ import annotations

import json

from edge.store import ledger
from edge.store.engine import Db
from edge.store.types import LedgerEntry, StoreError


def _state(c: Db, peer: str) -> tuple[int, list[list[int]]]:
    st = c.execute("SELECT acked_seq, acked_ranges FROM outbox_state WHERE peer = :p",
                   {"p": peer}).fetchone()
    return (0, []) if st is None else (int(st[0]), json.loads(st[1]))


def unacked(c: Db, lane_id: str, limit: int, peer: str) -> list[LedgerEntry]:
    acked, ranges = _state(c, peer)
    out: list[LedgerEntry] = []
    rows = c.execute(f"SELECT {ledger.COLUMNS} FROM ledger_entries WHERE "
                     "lane_id = :l AND seq > :a ORDER BY seq", {"l": lane_id, "a": acked})
    seq_at = ledger.COLUMN_NAMES.index("seq")
    for r in rows:
        seq = int(r[seq_at])
        if any(lo <= seq <= hi for lo, hi in ranges):
            continue
        out.append(ledger.to_entry(r))
        if len(out) >= limit:
            break
    return out


def mark_acked(c: Db, peer: str, upto: int,
               ranges: list[tuple[int, int]] | None) -> None:
    acked, old = _state(c, peer)
    acked = max(acked, int(upto))
    merged: list[list[int]] = []
    for lo, hi in sorted([(int(a), int(b)) for a, b in old]
                         + [(int(a), int(b)) for a, b in ranges or []]):
        if lo > hi:
            raise StoreError(f"ranges: [{lo}, {hi}] is empty")
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    keep: list[list[int]] = []
    for lo, hi in merged:
        if lo <= acked + 1:
            acked = max(acked, hi)
        else:
            keep.append([lo, hi])
    c.execute("INSERT INTO outbox_state (peer, acked_seq, acked_ranges) VALUES (:p, :a, :r) "
              "ON CONFLICT (peer) DO UPDATE SET acked_seq = :a, acked_ranges = :r",
              {"p": peer, "a": acked, "r": json.dumps(keep)})
