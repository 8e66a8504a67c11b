"""The POS feed: shops post purchases (one at a time, or a CSV file at night).

Authenticated by the shop's API key (``X-API-Key``), never a cookie, so no CSRF token.
Bad input gets a 4xx naming the field; a retried POST with the same idempotency key gets
the first answer (200, ``replayed: true``) and earns nothing more.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from central import metrics
from central.services import campaign_publish, purchases
from central.services.errors import ServiceError
from central.services.purchases import PosLimits, PurchaseIn
from central.web.schemas import PurchaseRequest, PurchaseResponse
from central.web.security import CSV_BODY, DB, AShop, central_of, http_error
from edge.pricing import RuleBundle

if TYPE_CHECKING:
    from central.app import Central

router = APIRouter(prefix="/api/pos", tags=["pos"])
CSV_COLUMNS = ("shop_id", "idempotency_key", "member_id", "amount", "at", "brand")
MAX_CSV_ROWS = 10_000


def _rules(s: Session, c: Central) -> RuleBundle:
    """The site's bundle with the campaigns published at central (they earn here too)."""
    return campaign_publish.current_rules(s, c.cfg.site.site_id, c.cfg.rules.bundle, c.rules)


def _limits(request: Request) -> PosLimits:
    p = central_of(request).cfg.pos
    return PosLimits(p.max_age_days, p.future_minutes, p.max_amount)


def _to_in(body: PurchaseRequest) -> PurchaseIn:
    return PurchaseIn(body.shop_id, body.idempotency_key, body.member_id,
                      Decimal(body.amount), body.at, body.brand)


def _out(r: purchases.PurchaseResult) -> dict[str, Any]:
    return PurchaseResponse(purchase_id=r.purchase_id, points=r.points,
                            rules_fired=list(r.rules_fired), expires_at=r.expires_at,
                            replayed=r.replayed).model_dump(mode="json")


@router.post("/purchases", status_code=201, response_model=PurchaseResponse,
             responses={200: {"description": "a replay: the first answer, nothing earned"}})
def post_purchase(body: PurchaseRequest, request: Request, shop: AShop, s: DB) -> Any:
    c = central_of(request)
    r = purchases.record_purchase(s, _rules(s, c), _to_in(body), c.clock(), shop=shop,
                                  limits=_limits(request))
    s.flush()
    _count(r)
    return JSONResponse(_out(r), status_code=200 if r.replayed else 201)


def _count(r: purchases.PurchaseResult) -> None:
    metrics.PURCHASES.labels("replayed" if r.replayed else "recorded").inc()
    if not r.replayed:
        metrics.POINTS_EARNED.inc(r.points)


@router.post("/purchases.csv")
def post_purchases_csv(request: Request, shop: AShop, s: DB, text: CSV_BODY) -> Any:
    """A shop's file of purchases (header shop_id,idempotency_key,member_id,amount,at,brand).
    Every row is checked first; one bad row refuses the whole file (422 naming line and
    field) and nothing is recorded. Rows already recorded count as replays."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or tuple(reader.fieldnames) != CSV_COLUMNS:
        raise http_error(422, "header", f"must be {','.join(CSV_COLUMNS)}", "invalid")
    rows: list[tuple[int, PurchaseRequest]] = []
    for line, raw in enumerate(reader, start=2):
        if line - 1 > MAX_CSV_ROWS:
            raise http_error(413, "body", f"at most {MAX_CSV_ROWS} rows", "too_large")
        if None in raw:
            raise http_error(422, f"line {line}", "more fields than the header", "invalid")
        data = {k: v for k, v in raw.items() if not (k == "brand" and v == "")}
        try:
            rows.append((line, PurchaseRequest.model_validate(data)))
        except ValidationError as exc:
            e = exc.errors()[0]
            field = ".".join(str(p) for p in e["loc"]) or "row"
            raise http_error(422, f"line {line}: {field}",
                             str(e["msg"]).removeprefix("Value error, "), "invalid") from None
    c = central_of(request)
    rules = _rules(s, c)
    out = []
    done: list[purchases.PurchaseResult] = []
    for line, body in rows:
        try:
            r = purchases.record_purchase(s, rules, _to_in(body), c.clock(), shop=shop,
                                          limits=_limits(request))
        except ServiceError as exc:
            raise type(exc)(f"line {line}: {exc.field}", exc.message) from None
        done.append(r)
        out.append({"line": line, **_out(r)})
    s.flush()
    for r in done:
        _count(r)
    return {"rows": len(out), "recorded": sum(1 for r in out if not r["replayed"]),
            "replayed": sum(1 for r in out if r["replayed"]), "results": out}
