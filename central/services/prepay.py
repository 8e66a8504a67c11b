"""Prepayment: a stay paid at central (pay station, member portal) before the car leaves.

Central decides no fee here: the pay station (or the portal) took the money and says how
much; the exit lane prices the stay with ``paid_amount``/``paid_at`` (within the bundle's
``pay_grace_minutes`` nothing more is owed, after it only the extra time). This service
validates, records the payment once (the payment id is the idempotency key), and writes the
signed ``prepaid`` message (docs/sync-protocol.md) into ``downlink_outbox`` in the **same
transaction**: a payment is never recorded without its message to the lanes, nor the
message sent for a payment that was rolled back. The message is retained per payment, so
a lane offline when it was published learns it at its next connect; ``clear_expired``
removes the retained copies of expired payments (an empty retained publish). A refund
(central/services/refunds.py) revokes the payment at the lanes with a signed
``prepaid_revoked`` message and clears its retained copy.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from central.db.models import Base, Member, Plate, Prepayment
from central.services.errors import Invalid, NotFound, Refused
from edge.fields import FieldError, check_id, check_plate, normalise_plate
from edge.sync import codec

#: How long a prepayment stays applicable at the exit (and its message retained).
TTL = timedelta(hours=24)
#: A pay station's clock may be a little ahead of central's.
FUTURE_SKEW = timedelta(minutes=2)


@dataclass(frozen=True)
class PrepayResult:
    payment_id: str
    plate: str
    member_id: str | None
    amount: Decimal
    paid_at: datetime
    expires_at: datetime
    replayed: bool


def _outbox() -> Table:
    # The table of migration 0002 (the ingest's outbox publisher sends its rows), by name:
    # whichever model class maps it, the columns are the agreed contract.
    return Base.metadata.tables["downlink_outbox"]


def _amount(raw: Decimal | str) -> Decimal:
    try:
        v = Decimal(raw)
    except (InvalidOperation, TypeError, ValueError):
        raise Invalid("amount", f"{str(raw)[:40]!r} is not a decimal amount") from None
    if not v.is_finite() or not Decimal(0) < v <= codec.MAX_PREPAID_AMOUNT:
        raise Invalid("amount", f"must be greater than 0 and at most "
                                f"{codec.MAX_PREPAID_AMOUNT}")
    if v != v.quantize(Decimal("0.01")):
        raise Invalid("amount", "at most 2 decimals")
    return v.quantize(Decimal("0.01"))


def _plate_for(s: Session, plate: str | None, member_id: str | None) -> str:
    if plate is not None:
        try:
            p = check_plate(normalise_plate(plate))
        except FieldError as exc:
            raise Invalid("plate", str(exc).removeprefix("plate: ")) from None
        if member_id is not None:
            owner = s.scalar(select(Plate.member_id).where(Plate.plate == p))
            if owner != member_id:
                raise Refused("plate", f"{p} is not bound to member {member_id}")
        return p
    if member_id is None:
        raise Invalid("plate", "give the plate, or the member_id of a member with one plate")
    plates = list(s.scalars(select(Plate.plate).where(Plate.member_id == member_id)))
    if len(plates) != 1:
        raise Invalid("plate", f"member {member_id} has {len(plates)} plates: name the car")
    return plates[0]


def _digest(site: str, plate: str, member_id: str | None, amount: Decimal, paid_at: datetime,
            entry_event_id: str | None) -> str:
    body = {"site": site, "plate": plate, "member_id": member_id, "amount": str(amount),
            "paid_at": paid_at.isoformat(), "entry_event_id": entry_event_id}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _result(p: Prepayment, replayed: bool) -> PrepayResult:
    return PrepayResult(p.payment_id, p.plate, p.member_id, p.amount, p.paid_at,
                        p.expires_at, replayed)


def prepay(s: Session, site: str, *, payment_id: str, amount: Decimal | str,
           paid_at: datetime | None, now: datetime, key: Ed25519PrivateKey, source: str,
           plate: str | None = None, member_id: str | None = None,
           entry_event_id: str | None = None, ttl: timedelta = TTL) -> PrepayResult:
    """Record a prepayment once and queue its signed ``prepaid`` message, in ``s``'s
    transaction. The same ``payment_id`` again: the first answer (``replayed``); with other
    content: ``Refused`` (409) on ``payment_id``."""
    try:
        check_id(payment_id, "payment_id")
        if entry_event_id is not None:
            check_id(entry_event_id, "entry_event_id")
        if member_id is not None:
            check_id(member_id, "member_id")
    except FieldError as exc:
        field = str(exc).split(":", 1)[0]
        raise Invalid(field, str(exc).split(":", 1)[-1].strip()) from None
    money = _amount(amount)
    when = now if paid_at is None else paid_at
    if when.tzinfo is None:
        raise Invalid("paid_at", "must carry a UTC offset")
    if when > now + FUTURE_SKEW:
        raise Invalid("paid_at", f"{when.isoformat()} is in the future")
    if when + ttl <= now:
        raise Invalid("paid_at", f"{when.isoformat()} is older than {ttl}: expired")
    if member_id is not None and s.get(Member, member_id) is None:
        raise NotFound("member_id", f"unknown member {member_id!r}")
    the_plate = _plate_for(s, plate, member_id)
    digest = _digest(site, the_plate, member_id, money, when, entry_event_id)
    old = s.get(Prepayment, payment_id)
    if old is not None:
        return _replay(old, digest)
    msg = codec.Prepaid(payment_id, the_plate, money, when, when + ttl, member_id,
                        entry_event_id, source[:64])
    payload = codec.encode_prepaid(msg, site, key).decode("utf-8")
    row = Prepayment(payment_id=payment_id, site_id=site, plate=the_plate, member_id=member_id,
                     amount=money, paid_at=when, expires_at=when + ttl,
                     entry_event_id=entry_event_id, source=source[:80], digest=digest,
                     message=payload, created_at=now)
    try:
        with s.begin_nested():  # a concurrent request with the same id: its row wins
            s.add(row)
            s.flush()
            s.execute(insert(_outbox()).values(
                site_id=site, topic=f"prepaid/{payment_id}", payload=payload, retain=True,
                created_at=now, published_at=None))
    except IntegrityError:  # the savepoint's rollback dropped our row from the session
        first = s.get(Prepayment, payment_id)
        if first is None:
            raise
        return _replay(first, digest)
    return _result(row, False)


#: At most this many prepayments in one reconnect answer (those not refunded and not
#: expired: about a day's, at a mall a few hundred).
MAX_OUTSTANDING = 2000


def outstanding(s: Session, site: str, now: datetime, limit: int = MAX_OUTSTANDING
                ) -> list[bytes]:
    """The signed ``prepaid`` message of every prepayment of ``site`` neither refunded nor
    expired (newest first), exactly as published: what a reconnecting lane gets in its
    snapshot answer, since a broker may not deliver the retained copy (RabbitMQ: none
    through the lanes' ``prepaid/+``; docs/brokers.md). One used already is harmless: the
    lane that used it holds it (a duplicate), any other has no stay it could settle."""
    rows = s.scalars(select(Prepayment.message).where(
        Prepayment.site_id == site, Prepayment.refunded_at.is_(None),
        Prepayment.expires_at > now).order_by(Prepayment.paid_at.desc(),
                                              Prepayment.payment_id).limit(limit))
    return [m.encode("utf-8") for m in rows]


def _replay(old: Prepayment, digest: str) -> PrepayResult:
    if old.digest != digest:
        raise Refused("payment_id", f"payment {old.payment_id!r} was already recorded with "
                                    "other content")
    return _result(old, True)


def clear_expired(s: Session, site: str, now: datetime, limit: int = 1000) -> int:
    """Queue an empty retained publish for each expired prepayment's topic, once: the
    broker then forgets it, and a lane that connects later never sees it."""
    rows = list(s.scalars(select(Prepayment).where(
        Prepayment.site_id == site, Prepayment.expires_at < now,
        Prepayment.cleared_at.is_(None)).order_by(Prepayment.expires_at).limit(limit)
        .with_for_update(skip_locked=True)))
    for p in rows:
        s.execute(insert(_outbox()).values(
            site_id=site, topic=f"prepaid/{p.payment_id}", payload="", retain=True,
            created_at=now, published_at=None))
        p.cleared_at = now
    return len(rows)
