"""``Reader``: the store's look-ups, all inside one read transaction (``Store.snapshot``).

An exit decision needs five look-ups (a replayed exit, the open session, the member, their
points and coupons, the previous exit). Done as separate ``Store`` calls they cost five
BEGIN/COMMITs and could each see a different state of the file; a snapshot is one deferred
transaction, so they are cheaper and mutually consistent. The single-call ``Store`` methods
are one-look-up snapshots.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from edge.store import exits, members, sessions
from edge.store.engine import Db
from edge.store.types import ExitResult, Member, MemberView, Session, StoreError


class Reader:
    """Read-only look-ups on one open transaction; unusable once the snapshot has ended."""

    def __init__(self, c: Db) -> None:
        self._c: Db | None = c

    @property
    def c(self) -> Db:
        if self._c is None:
            raise StoreError("snapshot: used after its transaction ended")
        return self._c

    def close(self) -> None:
        self._c = None

    def find_open_session(self, plate: str) -> Session | None:
        return sessions.open_for_plate(self.c, plate)

    def open_plates(self) -> list[str]:
        rows = self.c.execute("SELECT plate FROM sessions WHERE status = 'open' ORDER BY plate")
        return [r[0] for r in rows]

    def get_session(self, session_id: str) -> Session | None:
        return sessions.find(self.c, session_id)

    def last_exit(self, plate: str, since: datetime) -> ExitResult | None:
        """The most recent exit of ``plate`` at or after ``since`` (for replays and re-entry)."""
        return exits.last_exit(self.c, plate, since)

    def member_for_plate(self, plate: str) -> Member | None:
        r = self.c.execute("SELECT member_id FROM plate_bindings WHERE plate = :p",
                           {"p": plate}).fetchone()
        return None if r is None else members.get_member(self.c, r[0])

    def get_member(self, member_id: str) -> Member | None:
        return members.get_member(self.c, member_id)

    def member_view(self, member_id: str, at: datetime, tz: ZoneInfo) -> MemberView:
        return members.member_view(self.c, member_id, at, tz)

    def balance(self, member_id: str, at: datetime) -> int:
        return members.balance(self.c, member_id, at)
