"""The site operations page (role ``operations``; admin and auditor may look too, nobody
on it changes anything): lanes, occupancy, devices, plates, manual opens, money.

Thin, like the other pages: ``central.services.ops`` computes, this renders. The live part
(``/ops/live``, the same template the page includes) is fetched again every few seconds
by ``/static/ops.js``; ``/ops/data`` is the same snapshot as JSON for other tools."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from central.services import ops
from central.web.pages import Ctx, staff_of
from central.web.security import DB, central_of

router = APIRouter(include_in_schema=False)
REFRESH_S = 5  # how often the page fetches the live part: a killed lane shows within 30 s


def _snapshot(request: Request, s: Any) -> dict[str, Any]:
    c = central_of(request)
    return ops.snapshot(s, c.clock(), c.cfg.site.tz)


def _no_store(resp: Response) -> Response:
    resp.headers["Cache-Control"] = "no-store"
    return resp


@router.get("/ops", response_class=HTMLResponse)
def ops_page(request: Request, s: DB) -> Response:
    who = staff_of(request, s, "ops")
    return _no_store(Ctx(request, who).render("ops.html", snap=_snapshot(request, s),
                                              refresh_s=REFRESH_S))


@router.get("/ops/live", response_class=HTMLResponse)
def ops_live(request: Request, s: DB) -> Response:
    who = staff_of(request, s, "ops")
    return _no_store(Ctx(request, who).render("ops_live.html", snap=_snapshot(request, s)))


@router.get("/ops/data")
def ops_data(request: Request, s: DB) -> Response:
    staff_of(request, s, "ops")
    return _no_store(JSONResponse(_snapshot(request, s)))
