"""One write transaction as the store's modules see it: connection, writing lane, clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from edge.store import ledger, sessions
from edge.store.types import EntryKind, LedgerEntry, Session


@dataclass
class Tx:
    conn: Connection
    lane_id: str
    clock: Callable[[], datetime]
    last: LedgerEntry | None = field(default=None, init=False)

    def append(self, kind: EntryKind, at: datetime, **kw: Any) -> LedgerEntry:
        """Append an entry written by this lane, stamped ``recorded`` = now."""
        self.last = ledger.append(self.conn, lane_id=self.lane_id, kind=kind, at=at,
                                  recorded=self.clock(), after=self.last, **kw)
        return self.last

    def session(self, session_id: str) -> Session:
        return sessions.get(self.conn, session_id)
