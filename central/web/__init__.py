"""Central's ASGI application (FastAPI): JSON API, member portal API, POS feed.

Errors have one shape: ``{"error", "field", "message"}`` (plus ``errors`` listing every
field for a malformed body), so a till or a page can point at the field to fix.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from central import metrics
from central.logs import ThrottledLog
from central.services.errors import ServiceError
from central.web import api, campaigns_api, pages, paystation, pos, prepay, refund, sites
from central.web.security import BodyLimit

if TYPE_CHECKING:
    from central.app import Central

log = ThrottledLog(logging.getLogger("central.web"))


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _refused(request: Request, status: int, body: dict[str, Any],
             headers: dict[str, str] | None = None) -> JSONResponse:
    """Every 4xx goes out here: counted (route template, error kind) and logged, throttled."""
    route = getattr(request.scope.get("route"), "path", "unmatched")
    metrics.REFUSED.labels(route, str(body.get("error", "http"))).inc()
    client = request.client.host if request.client else "?"
    log.warning(f"{route}:{body.get('error')}", "refused %s %s from %s: %s %s: %s",
                status, route, client, body.get("error"), body.get("field"),
                str(body.get("message"))[:200])
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(c: Central) -> FastAPI:
    # No /docs or /redoc: their pages load scripts from a CDN; /openapi.json stays.
    app = FastAPI(title="parkedge-central", version="1", docs_url=None, redoc_url=None,
                  description="Members, points lots, rewards, figures and the POS feed of "
                              "the parking points programme.")
    app.state.central = c
    if c.cfg.ingest.signing_key is not None:  # what the prepaid messages are signed with
        from central.ingest.state import load_signing_key

        app.state.signing_key = load_signing_key(c.cfg.ingest.signing_key.get())

    @app.exception_handler(ServiceError)
    async def _service(r: Request, exc: ServiceError) -> JSONResponse:
        kind = type(exc).__name__.lower()
        return _refused(r, exc.status, {"error": kind, "field": exc.field,
                                        "message": exc.message})

    @app.exception_handler(RequestValidationError)
    async def _invalid(r: Request, exc: RequestValidationError) -> JSONResponse:
        errs = [{"field": _field(tuple(e.get("loc", ()))),
                 "message": str(e.get("msg", "")).removeprefix("Value error, ")}
                for e in exc.errors()]
        first = errs[0] if errs else {"field": "body", "message": "invalid"}
        return _refused(r, 422, {"error": "invalid", "field": first["field"],
                                 "message": first["message"], "errors": errs})

    @app.exception_handler(StarletteHTTPException)
    async def _http(r: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, dict) else {
            "error": "http", "field": "", "message": str(exc.detail)}
        return _refused(r, exc.status_code, detail, getattr(exc, "headers", None))

    @app.exception_handler(IntegrityError)
    async def _conflict(r: Request, exc: IntegrityError) -> JSONResponse:
        return _refused(r, 409, {"error": "conflict", "field": "",
                                 "message": "a concurrent request changed the same record; "
                                            "retry"})

    @app.exception_handler(OperationalError)
    async def _busy(_r: Request, exc: OperationalError) -> JSONResponse:
        return JSONResponse({"error": "unavailable", "field": "",
                             "message": "database busy or unreachable; retry"},
                            status_code=503, headers={"Retry-After": "5"})

    app.include_router(api.router)
    app.include_router(campaigns_api.router)
    app.include_router(pos.router)
    app.include_router(prepay.router)
    app.include_router(paystation.router)
    app.include_router(refund.router)
    app.include_router(sites.router)
    pages.install(app)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(BodyLimit, limit=c.cfg.web.max_body_bytes)
    return app
