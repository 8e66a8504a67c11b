"""``POST /api/prepayments``: a stay paid at a pay station (or by staff at the desk) before
the car leaves, recorded once and sent to the site's lanes as a signed ``prepaid`` message.

Staff with the ``operations`` role (the ``points:adjust`` permission, held by operations
only), signed in with the session cookie and the CSRF token like every other staff write.
The message is signed with central's site key: ``app.state.signing_key`` (an
``Ed25519PrivateKey``, set by whoever composes the app from the configuration); without it
the route answers 503 naming ``signing_key`` rather than record a payment no lane could
verify. Bad input is a 4xx naming the field; a retry with the same ``payment_id`` gets the
first answer (200, ``replayed: true``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, Field, field_validator
from sqlalchemy.orm import Session

from central.services import audit, prepay
from central.web.schemas import Id, Money, PlateText
from central.web.schemas import Request as Body
from central.web.security import DB, PointsAdjust, central_of, http_error

router = APIRouter(prefix="/api", tags=["prepayments"])


class PrepaymentFields(Body):
    """What a pay station sends (its source is its key's pay station)."""

    payment_id: Id = Field(description="unique per payment; a retry with it records once")
    plate: PlateText | None = Field(default=None, description="the car; or member_id alone "
                                    "for a member with one plate")
    member_id: Id | None = None
    amount: Money = Field(description='yuan paid, a decimal string, e.g. "30.00"')
    paid_at: AwareDatetime | None = Field(default=None, description="when it was paid "
                                          "(default: now), with a UTC offset")
    entry_event_id: Id | None = Field(default=None, description="the stay's entry event, "
                                      "when the pay station knows it")

    @field_validator("paid_at", mode="before")
    @classmethod
    def _iso(cls, v: Any) -> Any:
        if v is None:
            return None
        if not isinstance(v, str):
            raise ValueError("must be an ISO 8601 string with a UTC offset")
        try:
            d = datetime.fromisoformat(v)
        except ValueError:
            raise ValueError("not an ISO 8601 date-time") from None
        if not 2000 <= d.year <= 2100:
            raise ValueError("out of range (years 2000..2100)")
        return d


class PrepaymentRequest(PrepaymentFields):
    source: Id | None = Field(default=None, description="the pay station's id")


class PrepaymentResponse(BaseModel):
    payment_id: str
    plate: str
    member_id: str | None
    amount: str
    paid_at: datetime
    expires_at: datetime
    replayed: bool


def _signing_key(request: Request) -> Ed25519PrivateKey:
    key = getattr(request.app.state, "signing_key", None)
    if not isinstance(key, Ed25519PrivateKey):
        raise http_error(503, "signing_key", "central's site signing key is not configured: "
                                             "no lane could verify the prepayment",
                         "unavailable")
    return key


@router.post("/prepayments", status_code=201, response_model=PrepaymentResponse,
             responses={200: {"description": "a replay: the first answer, nothing new"}})
def post_prepayment(body: PrepaymentRequest, request: Request, who: PointsAdjust,
                    s: DB) -> Any:
    return record(request, s, body, source=body.source or who.actor, actor=who.actor)


def record(request: Request, s: Session, body: PrepaymentFields, *, source: str,
           actor: str) -> JSONResponse:
    """Record (or replay) a prepayment and answer; the audit line for a new one. Shared by
    the staff route and the pay stations' (central/web/paystation.py)."""
    c = central_of(request)
    key = _signing_key(request)
    now = c.clock()
    r = prepay.prepay(s, c.cfg.site.site_id, payment_id=body.payment_id,
                      amount=Decimal(body.amount), paid_at=body.paid_at, now=now, key=key,
                      source=source, plate=body.plate,
                      member_id=body.member_id, entry_event_id=body.entry_event_id)
    out = PrepaymentResponse(payment_id=r.payment_id, plate=r.plate, member_id=r.member_id,
                             amount=str(r.amount), paid_at=r.paid_at, expires_at=r.expires_at,
                             replayed=r.replayed).model_dump(mode="json")
    if not r.replayed:
        audit.record(s, actor=actor, action="prepayment.add",
                     target=f"prepayment:{r.payment_id}", at=now, after=out)
    s.flush()
    return JSONResponse(out, status_code=200 if r.replayed else 201)
