"""One write transaction as the store's modules see it: connection, writing lane, clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from edge.store import ledger, sessions
from edge.store.types import EntryKind, LedgerEntry, Session


@dataclass(frozen=True)
class Tx:
    conn: Connection
    lane_id: str
    clock: Callable[[], datetime]

    def append(self, kind: EntryKind, at: datetime, **kw: Any) -> LedgerEntry:
        """Append an entry written by this lane, stamped ``recorded`` = now."""
        return ledger.append(self.conn, lane_id=self.lane_id, kind=kind, at=at,
                             recorded=self.clock(), **kw)

    def session(self, session_id: str) -> Session:
        return sessions.get(self.conn, session_id)
