"""One write transaction as the store's modules see it: connection, writing lane, clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edge.store import ledger, sessions
from edge.store.engine import Db
from edge.store.ledger import Draft
from edge.store.types import EntryKind, LedgerEntry, Session


@dataclass
class Tx:
    conn: Db
    lane_id: str
    clock: Callable[[], datetime]
    last: LedgerEntry | None = field(default=None, init=False)
    appended: int = field(default=0, init=False)  # entries this transaction wrote

    def append(self, kind: EntryKind, at: datetime, **kw: Any) -> LedgerEntry:
        """Append an entry written by this lane, stamped ``recorded`` = now."""
        return self.append_all([Draft(kind, at, **kw)])[0]

    def append_all(self, drafts: list[Draft]) -> list[LedgerEntry]:
        """Append several entries in order with one insert (see ``ledger.append_all``)."""
        out = ledger.append_all(self.conn, lane_id=self.lane_id, drafts=drafts,
                                recorded=self.clock(), after=self.last)
        if out:
            self.last = out[-1]
            self.appended += len(out)
        return out

    def session(self, session_id: str) -> Session:
        return sessions.get(self.conn, session_id)
