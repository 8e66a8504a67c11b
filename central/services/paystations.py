"""Pay stations: the machines at the exits and lobbies that take money for a stay before
the car leaves and post it to central (``POST /api/paystation/prepayments``).

Each has its own API key, shown once when it is added; only the key's SHA-256 is stored
(as for the shops' POS keys), so a database dump reveals no usable key. Revoking keeps the
row (the audit log and the prepayments' ``source`` still name it) and stops the key at
once. A pay station is not a staff login: it can record prepayments and nothing else.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from central.db.models import Paystation
from central.services.errors import Invalid, NotFound, Refused
from central.services.passwords import digest
from edge.fields import FieldError, check_id

KEY_PREFIX = "pst_"


def source_of(p: Paystation) -> str:
    """What a prepayment it posts records as its ``source``."""
    return f"paystation:{p.paystation_id}"


def add(s: Session, paystation_id: str, name: str, now: datetime) -> str:
    """Register a pay station; returns its API key (the only time it is shown)."""
    try:
        check_id(paystation_id, "paystation_id")
    except FieldError as exc:
        raise Invalid("paystation_id", str(exc).removeprefix("paystation_id: ")) from None
    if len(name) > 200:
        raise Invalid("name", "at most 200 characters")
    if s.get(Paystation, paystation_id) is not None:
        raise Refused("paystation_id", f"pay station {paystation_id!r} exists")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    s.add(Paystation(paystation_id=paystation_id, name=name or paystation_id,
                     api_key_hash=digest(key), active=True, created_at=now,
                     revoked_at=None))
    s.flush()
    return key


def revoke(s: Session, paystation_id: str, now: datetime) -> bool:
    """Stop a pay station's key; False if it was already revoked."""
    p = s.get(Paystation, paystation_id, with_for_update=True)
    if p is None:
        raise NotFound("paystation_id", f"unknown pay station {paystation_id!r}")
    if not p.active:
        return False
    p.active, p.revoked_at = False, now
    return True


def for_key(s: Session, api_key: str) -> Paystation | None:
    """The active pay station holding this key, or None."""
    p = s.scalar(select(Paystation).where(Paystation.api_key_hash == digest(api_key)))
    return p if p is not None and p.active else None


def listing(s: Session) -> list[dict[str, Any]]:
    return [{"paystation_id": p.paystation_id, "name": p.name, "active": p.active,
             "created_at": p.created_at.isoformat(),
             "revoked_at": p.revoked_at.isoformat() if p.revoked_at else None}
            for p in s.scalars(select(Paystation).order_by(Paystation.paystation_id))]
