"""Refund of a prepayment, and the prepayments as staff see them.

A prepayment can be refunded until a lane has used it: once an exit lane has let the car
out on it (its ledger's ``payment_received`` with ``idem_key`` ``prepaid:<id>``, reached
central through ingest, and not given back by a reversed exit's ``prepaid_returned``), the
money paid for a stay that happened and the refund is refused (409): a wrong charge after
the car left is a desk correction, not a refund.

A refund revokes the payment at the lanes. In the refund's own transaction it queues in
``downlink_outbox``, on the payment's topic ``prepaid/{id}``:

1. the signed ``prepaid_revoked`` message (central's site key, as the ``prepaid`` message;
   not retained), which every lane connected now gets after the payment itself (MQTT keeps
   the order on one topic) and applies: an unused prepayment is dropped with a ledger entry,
   a used one is recorded as a conflict (docs/sync-protocol.md);
2. an empty retained publish, clearing the payment's retained copy: a lane that connects
   later never learns the payment, so it never needs the revocation.

A lane that held the payment but was offline (or cut off from central) when the revocation
went out gets it in central's answer to its reconnect snapshot request, which lists the
revocation of every refunded prepayment not yet expired (``revocations``; re-signed from the
row, byte for byte the same: Ed25519 is deterministic). Retained copies are never relied
on: RabbitMQ's MQTT plugin delivers none through the lanes' ``prepaid/+`` filter.

What is left: a lane cut off from central that lets the car out on the payment before the
revocation reaches it. Central then has both ``refunded_at`` and the lane's use
(``used_by``, and the lane's ``prepaid_revoked_after_use`` entry once it hears of the
refund): ``conflicts`` lists them for the desk, ``GET /api/prepayments?conflict=true``
shows them and the gauge ``central_prepaid_refund_conflicts`` counts them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.orm import Session

from central import metrics
from central.db.models import DownlinkOutbox, LaneEntry, Prepayment
from central.db.types import UtcDateTime
from central.services.errors import Invalid, NotFound, Refused
from central.services.prepay import outstanding
from edge.store.codec import ts
from edge.sync import codec

#: A lane uses a prepayment at an exit between its ``paid_at`` (less the lanes' clock skew)
#: and its ``expires_at``; a reversed exit gives it back later. The margins bound the scan
#: of ``lane_entries`` (by its ``at`` index) without missing either.
BEFORE = timedelta(days=1)
AFTER = timedelta(days=7)
#: How far back ``conflicts`` looks (by ``refunded_at``): a lane's use reaches central
#: within the prepayment's life plus the lane's outage.
CONFLICT_WINDOW = timedelta(days=30)
#: At most this many revocations in one reconnect answer (refunds of prepayments that
#: have not expired: a day's refunds, far fewer).
MAX_REVOCATIONS = 1000


def lane_uses(s: Session, payments: Sequence[Prepayment]) -> dict[str, list[dict[str, Any]]]:
    """payment id -> the lanes' uses of it still standing: each exit that took it, less
    those a reversed exit gave back (in the order the lanes wrote them). One query over the
    time window of all ``payments`` (``lane_entries.at`` is indexed), however many."""
    out: dict[str, list[dict[str, Any]]] = {p.payment_id: [] for p in payments}
    if not payments:
        return out
    lo = ts(min(p.paid_at for p in payments) - BEFORE)
    hi = ts(max(p.expires_at for p in payments) + AFTER)
    rows = s.scalars(select(LaneEntry).where(
        LaneEntry.at >= lo, LaneEntry.at <= hi,
        LaneEntry.kind.in_(("payment_received", "correction")),
        LaneEntry.payload.like("%prepaid%"))  # coarse; each payload is checked below
        .order_by(LaneEntry.at, LaneEntry.id))
    for r in rows:
        p = json.loads(r.payload)
        uses = out.get(str(p.get("payment_id")))
        if uses is None:
            continue
        if r.kind == "payment_received" and p.get("method") == "prepaid":
            uses.append({"lane_id": r.lane_id, "seq": r.seq, "at": r.at,
                         "session_id": r.session_id})
        elif r.kind == "correction" and p.get("action") == "prepaid_returned":
            uses[:] = [u for u in uses if u["session_id"] != r.session_id]
    return out


def prepayment_json(p: Prepayment, used_by: list[dict[str, Any]]) -> dict[str, Any]:
    def iso(v: datetime | None) -> str | None:
        return v.isoformat() if v else None

    return {"payment_id": p.payment_id, "site_id": p.site_id, "plate": p.plate,
            "member_id": p.member_id, "amount": str(p.amount), "paid_at": iso(p.paid_at),
            "expires_at": iso(p.expires_at), "entry_event_id": p.entry_event_id,
            "source": p.source, "created_at": iso(p.created_at),
            "cleared_at": iso(p.cleared_at), "refunded_at": iso(p.refunded_at),
            "refunded_by": p.refunded_by, "refund_reason": p.refund_reason,
            "used_by": used_by}


def _one(s: Session, p: Prepayment) -> dict[str, Any]:
    return prepayment_json(p, lane_uses(s, [p])[p.payment_id])


def get(s: Session, payment_id: str) -> dict[str, Any]:
    p = s.get(Prepayment, payment_id)
    if p is None:
        raise NotFound("payment_id", f"unknown prepayment {payment_id!r}")
    return _one(s, p)


def listing(s: Session, *, plate: str | None = None, member_id: str | None = None,
            refunded: bool | None = None, limit: int = 100, conflict: bool = False,
            now: datetime | None = None) -> list[dict[str, Any]]:
    if conflict:
        if now is None:
            raise ValueError("now: required with conflict")
        return [p for p in conflicts(s, now)
                if (plate is None or p["plate"] == plate)
                and (member_id is None or p["member_id"] == member_id)][:limit]
    q = select(Prepayment).order_by(Prepayment.paid_at.desc(), Prepayment.payment_id)
    if plate is not None:
        q = q.where(Prepayment.plate == plate)
    if member_id is not None:
        q = q.where(Prepayment.member_id == member_id)
    if refunded is not None:
        q = q.where(Prepayment.refunded_at.is_not(None) if refunded
                    else Prepayment.refunded_at.is_(None))
    rows = list(s.scalars(q.limit(limit)))
    uses = lane_uses(s, rows)
    return [prepayment_json(p, uses[p.payment_id]) for p in rows]


def revocation(p: Prepayment, key: Ed25519PrivateKey) -> bytes:
    """The signed ``prepaid_revoked`` message of a refunded prepayment."""
    assert p.refunded_at is not None
    return codec.encode_prepaid_revoked(codec.PrepaidRevoked(
        p.payment_id, p.plate, p.amount, p.paid_at, p.expires_at, p.refunded_at),
        p.site_id, key)


def revocations(s: Session, site: str, now: datetime, key: Ed25519PrivateKey,
                limit: int = MAX_REVOCATIONS) -> list[bytes]:
    """The revocation of every refunded prepayment of ``site`` not yet expired (newest
    refunds first): what a reconnecting lane gets in its snapshot answer."""
    rows = s.scalars(select(Prepayment).where(
        Prepayment.site_id == site, Prepayment.refunded_at.is_not(None),
        Prepayment.expires_at > now).order_by(Prepayment.refunded_at.desc(),
                                              Prepayment.payment_id).limit(limit))
    return [revocation(p, key) for p in rows]


#: The version of the site's live prepayments (not expired), one row ``(n, t)``: how many,
#: their soonest expiry, newest creation, how many are refunded and the newest refund. A new
#: prepayment moves ``n`` or, if one expired at the same time, the soonest expiry; a refund
#: (``refunded_at`` is set once, never cleared) moves the refunded count; an expiry moves
#: ``n``. Read through the ``expires_at`` index, like ``revocations``.
#: ``central.ingest.answer`` reads it in the round trip it makes anyway (``VERSION_SQL``), so
#: a cached answer costs no statement of its own.
VERSION_SQL = (
    "SELECT count(*) AS n, coalesce(CAST(min(expires_at) AS text), '') || '|' || "
    "coalesce(CAST(max(created_at) AS text), '') || '|' || CAST(count(refunded_at) AS text) "
    "|| '|' || coalesce(CAST(max(refunded_at) AS text), '') AS t FROM prepayments "
    "WHERE site_id = :site AND expires_at > :now")
_VERSION = text(VERSION_SQL).bindparams(bindparam("now", type_=UtcDateTime()))
Version = tuple[int, str]
#: (site, site key's public bytes) -> (version, the signed revocations, the prepayments'
#: messages): one process's cache; every use checks the version in the caller's transaction.
_revoked: dict[tuple[str, bytes], tuple[Version, list[bytes], list[bytes]]] = {}
_revoked_lock = threading.Lock()
revoked_stats = {"hits": 0, "misses": 0}


def revoked_version(s: Session, site: str, now: datetime) -> Version:
    n, t = s.connection().execute(_VERSION, {"site": site, "now": now}).one()
    return int(n), str(t or "")


def answer_messages(s: Session, site: str, now: datetime, key: Ed25519PrivateKey,
                    version: Version | None = None) -> tuple[list[bytes], list[bytes]]:
    """What a reconnect answer carries about prepayments: the revocations of the refunded
    ones (``revocations``) and the messages of the live ones (``prepay.outstanding``), read
    and signed once per change of the site's prepayments and reused while their version
    (``VERSION_SQL``, read in ``s`` unless the caller read it there already) is the one they
    were built at. Why: every lane of a site reconnecting asks for a full snapshot, and each
    answer selected and signed every revocation (#16).

    Never stale: the version is read before the rows (PostgreSQL's read committed: a change
    committed in between is in the rows, cached under the older version, rebuilt at the next
    use), and a new prepayment, a refund or an expiry moves the version."""

    v = revoked_version(s, site, now) if version is None else version
    k = (site, key.public_key().public_bytes(serialization.Encoding.Raw,
                                             serialization.PublicFormat.Raw))
    with _revoked_lock:
        hit = _revoked.get(k)
    if hit is not None and hit[0] == v:
        revoked_stats["hits"] += 1
        return hit[1], hit[2]
    msgs = revocations(s, site, now, key)
    live = outstanding(s, site, now)
    with _revoked_lock:
        _revoked[k] = (v, msgs, live)
    revoked_stats["misses"] += 1
    return msgs, live


def revoked(s: Session, site: str, now: datetime, key: Ed25519PrivateKey,
            version: Version | None = None) -> list[bytes]:
    """The revocations of ``answer_messages``."""
    return answer_messages(s, site, now, key, version)[0]


def conflicts(s: Session, now: datetime, limit: int = 1000) -> list[dict[str, Any]]:
    """Refunded prepayments a lane nonetheless let a car out on (refunded within
    ``CONFLICT_WINDOW``): for the desk to settle. Sets the gauge
    ``central_prepaid_refund_conflicts``."""
    rows = list(s.scalars(select(Prepayment).where(
        Prepayment.refunded_at.is_not(None), Prepayment.refunded_at >= now - CONFLICT_WINDOW)
        .order_by(Prepayment.refunded_at.desc(), Prepayment.payment_id)))
    uses = lane_uses(s, rows)
    out = [prepayment_json(p, uses[p.payment_id]) for p in rows if uses[p.payment_id]]
    metrics.PREPAID_REFUND_CONFLICTS.set(len(out))
    return out[:limit]


def refund(s: Session, payment_id: str, *, actor: str, reason: str, now: datetime,
           key: Ed25519PrivateKey) -> tuple[dict[str, Any], bool]:
    """Refund under the payment's row lock; returns (the payment, whether this call did it:
    a second refund of the same payment changes nothing and answers the first). Queues the
    signed revocation, then the clearing of the retained copy, in the same transaction."""
    if not 1 <= len(reason) <= 200:
        raise Invalid("reason", "1..200 characters")
    p = s.get(Prepayment, payment_id, with_for_update=True)
    if p is None:
        raise NotFound("payment_id", f"unknown prepayment {payment_id!r}")
    if p.refunded_at is not None:
        return _one(s, p), False
    used = lane_uses(s, [p])[payment_id]
    if used:
        u = used[0]
        raise Refused("payment_id", f"prepayment {payment_id!r} was used by lane "
                                    f"{u['lane_id']} at {u['at']} (the car left): not "
                                    "refundable; correct it at the desk")
    p.refunded_at, p.refunded_by, p.refund_reason = now, actor, reason
    s.execute(insert(DownlinkOutbox).values(
        site_id=p.site_id, topic=f"prepaid/{payment_id}",
        payload=revocation(p, key).decode("utf-8"), retain=False, created_at=now,
        published_at=None))
    s.execute(insert(DownlinkOutbox).values(
        site_id=p.site_id, topic=f"prepaid/{payment_id}", payload="", retain=True,
        created_at=now, published_at=None))
    if p.cleared_at is None:
        p.cleared_at = now
    s.flush()
    return prepayment_json(p, []), True
