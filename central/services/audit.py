"""The audit log: who did what to what, when, with the state before and after.

Written in the same transaction as the change it describes, so there is never a change
without its line. The table refuses UPDATE and DELETE (database triggers).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from central.db.models import AuditLog


def _dump(v: Any) -> str | None:
    return None if v is None else json.dumps(v, sort_keys=True, default=str,
                                             ensure_ascii=False)


def record(s: Session, *, actor: str, action: str, target: str, at: datetime,
           before: Any = None, after: Any = None) -> None:
    s.add(AuditLog(at=at, actor=actor, action=action, target=target, before=_dump(before),
                   after=_dump(after)))


def entries(s: Session, limit: int = 200) -> list[dict[str, Any]]:
    rows = s.scalars(select(AuditLog).order_by(AuditLog.id.desc()).limit(limit))
    return [{"id": r.id, "at": r.at.isoformat(), "actor": r.actor, "action": r.action,
             "target": r.target, "before": json.loads(r.before) if r.before else None,
             "after": json.loads(r.after) if r.after else None} for r in rows]
