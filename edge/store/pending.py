"""Records the lane owes the ledger: what happened while the ledger could not be written.

When the ledger's disk is full the operator must still be able to open the barrier (an
ambulance, a trapped driver), and "every barrier movement is in the ledger" must still hold,
late. The record goes to a **pending file** on another filesystem (``[storage] pending_dir``,
default ``/run/parkedge``, a tmpfs) as one fsynced JSON line, and is written into the ledger
(``Store.record_deferred``, idempotent on its id) as soon as a write succeeds again, or at the
next start.

Why a file and not only memory: a queue in memory is lost with the process (the watchdog, a
crash, a restart to free space), exactly when the lane is already in trouble; the pending file
survives those. On a tmpfs it does not survive a power cut, but a directory on the ledger's own
disk would be full too. If even the pending file cannot be written the record is kept in memory
and logged in full at ERROR (the journal is then its only durable copy).
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.store.codec import parse_ts, ts
from edge.store.types import EntryKind, StorageUnavailable

log = logging.getLogger(__name__)


class PendingRecords:
    """Append-only JSON lines ``<dir>/<lane>.pending.jsonl`` plus the same list in memory."""

    def __init__(self, directory: Path | str | None, lane_id: str) -> None:
        self.path = None if directory is None else Path(directory) / f"{lane_id}.pending.jsonl"
        self._items: list[dict[str, Any]] = []
        if self.path is not None and self.path.exists():
            for n, line in enumerate(self.path.read_text("utf-8").splitlines(), 1):
                try:
                    self._items.append(json.loads(line))
                except ValueError:  # a torn last line (power cut while appending)
                    log.error("pending records %s line %d unreadable, kept in the file: %r",
                              self.path, n, line[:200])

    def __len__(self) -> int:
        return len(self._items)

    def add(self, kind: EntryKind, at: datetime, payload: dict[str, Any], *,
            session_id: str | None = None, plate: str | None = None) -> dict[str, Any]:
        """Keep one record; durable in the pending file when that can be written."""
        item = {"id": uuid.uuid4().hex, "kind": str(kind), "at": ts(at), "payload": payload,
                "session_id": session_id, "plate": plate}
        self._items.append(item)
        line = (json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n").encode()
        try:
            if self.path is None:
                raise OSError("no [storage] pending_dir")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("ledger and pending file both unwritable (%s); this record exists only "
                      "in memory and in this log line: %s", exc, line.decode().strip())
        return item

    def flush(self, store: Any) -> int:
        """Write every pending record into the ledger, oldest first; returns how many.

        Raises ``StorageUnavailable`` if the ledger still cannot be written (what is left stays
        pending). The file is removed only once every record is in the ledger.
        """
        done = 0
        while self._items:
            item = self._items[0]
            store.record_deferred(EntryKind(item["kind"]), parse_ts(item["at"]),
                                  pending_id=item["id"], payload=dict(item["payload"]),
                                  session_id=item.get("session_id"), plate=item.get("plate"))
            self._items.pop(0)
            done += 1
        if self.path is not None:
            try:
                self.path.unlink(missing_ok=True)
            except OSError as exc:  # written already: record_deferred skips them next time
                log.warning("cannot remove %s: %s", self.path, exc)
        return done


__all__ = ["PendingRecords", "StorageUnavailable"]
