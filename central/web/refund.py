"""``/api/prepayments`` for staff: list, one, and refund (operations; audited). Creating
one is central/web/prepay.py (staff) and central/web/paystation.py (pay stations)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StringConstraints

from central.services import audit, refunds
from central.web.prepay import _signing_key
from central.web.schemas import Request as Body
from central.web.security import DB, PointsAdjust, Reader, central_of

router = APIRouter(prefix="/api/prepayments", tags=["prepayments"])
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$"
PaymentId = Annotated[str, Path(pattern=ID_PATTERN, description="the payment id")]


class LaneUse(BaseModel):
    lane_id: str
    seq: int
    at: str
    session_id: str | None


class PrepaymentOut(BaseModel):
    payment_id: str
    site_id: str
    plate: str
    member_id: str | None
    amount: str = Field(description="yuan, a decimal string")
    paid_at: str
    expires_at: str
    entry_event_id: str | None
    source: str
    created_at: str
    cleared_at: str | None
    refunded_at: str | None
    refunded_by: str | None
    refund_reason: str | None
    used_by: list[LaneUse] = Field(description="exits that let the car out on it")


class RefundOut(PrepaymentOut):
    replayed: bool = Field(description="already refunded: nothing changed")


class RefundRequest(Body):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        description="why: goes to the audit log")


@router.get("", response_model=list[PrepaymentOut])
def list_prepayments(
        _who: Reader, s: DB, request: Request,
        plate: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
        member_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        refunded: bool | None = None,
        conflict: Annotated[bool, Query(description=(
            "only refunded prepayments a lane nonetheless used (the revocation reached it "
            "too late): for the desk to settle"))] = False,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    return refunds.listing(s, plate=plate, member_id=member_id, refunded=refunded,
                           limit=limit, conflict=conflict, now=central_of(request).clock())


@router.get("/{payment_id}", response_model=PrepaymentOut)
def get_prepayment(payment_id: PaymentId, _who: Reader, s: DB) -> Any:
    return refunds.get(s, payment_id)


@router.post("/{payment_id}/refund", response_model=RefundOut,
             responses={409: {"description": "a lane has used it: the car left"},
                        503: {"description": "no site signing key: no revocation possible"}})
def refund(payment_id: PaymentId, body: RefundRequest, request: Request, who: PointsAdjust,
           s: DB) -> Any:
    now = central_of(request).clock()
    key = _signing_key(request)  # the revocation is signed as the prepayment was
    before = refunds.get(s, payment_id)
    out, done = refunds.refund(s, payment_id, actor=who.actor, reason=body.reason, now=now,
                               key=key)
    if done:
        audit.record(s, actor=who.actor, action="prepayment.refund",
                     target=f"prepayment:{payment_id}", at=now,
                     before={"refunded_at": before["refunded_at"]},
                     after={"refunded_at": out["refunded_at"], "reason": body.reason,
                            "amount": out["amount"]})
    return JSONResponse({**out, "replayed": not done})
