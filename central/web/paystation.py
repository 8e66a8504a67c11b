"""``POST /api/paystation/prepayments``: a pay station records a prepayment with its own
API key (``X-API-Key``; ``parkedge-central paystation add``), not a staff login, so no
cookie and no CSRF token. The same body and checks as the staff route, without
``source``: the source is the key's pay station. ``payment_id`` is the idempotency key: a
retry gets the first answer (200, ``replayed: true``); the same id from another pay
station, or with other content, is refused (409 on ``payment_id``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from central.db.models import Paystation, Prepayment
from central.services import paystations
from central.services.errors import Refused
from central.web.prepay import PrepaymentFields, PrepaymentResponse, record
from central.web.security import DB, http_error

router = APIRouter(prefix="/api/paystation", tags=["prepayments"])


def require_paystation(request: Request, s: DB) -> Paystation:
    key = request.headers.get("x-api-key")
    if not key:
        raise http_error(401, "X-API-Key", "missing pay station API key", "unauthenticated")
    p = paystations.for_key(s, key)
    if p is None:
        raise http_error(401, "X-API-Key", "unknown or revoked pay station API key",
                         "unauthenticated")
    return p


APaystation = Annotated[Paystation, Depends(require_paystation)]


@router.post("/prepayments", status_code=201, response_model=PrepaymentResponse,
             responses={200: {"description": "a replay: the first answer, nothing new"}})
def post_prepayment(body: PrepaymentFields, request: Request, station: APaystation,
                    s: DB) -> Any:
    source = paystations.source_of(station)
    first = s.get(Prepayment, body.payment_id)
    if first is not None and first.source != source:
        raise Refused("payment_id", f"payment {body.payment_id!r} was recorded by another "
                                    "source")
    return record(request, s, body, source=source, actor=source)
