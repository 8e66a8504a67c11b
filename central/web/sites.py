"""``/api/sites``: the site, its lanes and each lane's status, for operations (write) and
every staff role (read). Registering and enabling/disabling a lane are audited."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StringConstraints

from central.services import audit, sites
from central.web.schemas import Id
from central.web.schemas import Request as Body
from central.web.security import DB, Reader, StaffPrincipal, central_of, require_staff

router = APIRouter(prefix="/api/sites", tags=["sites"])
LanesWrite = Annotated[StaffPrincipal, Depends(require_staff("lanes:write"))]
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$"
SiteId = Annotated[str, Path(pattern=ID_PATTERN, description="the site id")]
LaneId = Annotated[str, Path(pattern=ID_PATTERN, description="the lane id")]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class LaneStatusOut(BaseModel):
    online: bool
    state: str
    backlog: int = Field(description="entries the lane holds that central has not acked")
    last_acked_seq: int = Field(description="the lane's ledger seq central last acked")
    stalled: bool
    last_seen_at: str | None


class LaneOut(BaseModel):
    site_id: str
    lane_id: str
    name: str
    kind: str
    enabled: bool
    disabled_by: str | None
    configured: bool = Field(description="its key is in this central's [[ingest.lanes]]")
    created_at: str | None
    status: LaneStatusOut | None = Field(description="its last published status, if any")
    committed_seq: int = Field(description="highest seq of its ledger committed here")
    committed_entries: int


class SiteOut(BaseModel):
    site_id: str
    timezone: str
    lanes: int
    lanes_enabled: int
    lanes_online: int


class NewLane(Body):
    lane_id: Id
    kind: Literal["entry", "exit"]
    name: Annotated[str, StringConstraints(max_length=200)] = ""


class LanePatch(Body):
    enabled: bool
    reason: Reason = Field(description="why: goes to the audit log")


def _configured(request: Request) -> frozenset[str]:
    return frozenset(lane.id for lane in central_of(request).cfg.ingest.lanes)


def _site(request: Request, site_id: str) -> str:
    site = central_of(request).cfg.site.site_id
    sites.check_site(site, site_id)
    return site


@router.get("", response_model=list[SiteOut])
def list_sites(request: Request, _who: Reader, s: DB) -> Any:
    c = central_of(request)
    return [sites.site_json(s, c.cfg.site.site_id, c.cfg.site.timezone, _configured(request))]


@router.get("/{site_id}", response_model=SiteOut)
def get_site(site_id: SiteId, request: Request, _who: Reader, s: DB) -> Any:
    c = central_of(request)
    return sites.site_json(s, _site(request, site_id), c.cfg.site.timezone,
                           _configured(request))


@router.get("/{site_id}/lanes", response_model=list[LaneOut])
def list_lanes(site_id: SiteId, request: Request, _who: Reader, s: DB) -> Any:
    return sites.lanes(s, _site(request, site_id), _configured(request))


@router.get("/{site_id}/lanes/{lane_id}", response_model=LaneOut)
def get_lane(site_id: SiteId, lane_id: LaneId, request: Request, _who: Reader, s: DB) -> Any:
    return sites.lane(s, _site(request, site_id), lane_id, _configured(request))


@router.post("/{site_id}/lanes", status_code=201, response_model=LaneOut)
def register_lane(site_id: SiteId, body: NewLane, request: Request, who: LanesWrite,
                  s: DB) -> Any:
    site = _site(request, site_id)
    now = central_of(request).clock()
    out = sites.register_lane(s, site, lane_id=body.lane_id, kind=body.kind, name=body.name,
                              now=now, configured=_configured(request))
    audit.record(s, actor=who.actor, action="lane.register",
                 target=f"lane:{site}/{body.lane_id}", at=now, after=out)
    return JSONResponse(out, status_code=201)


@router.patch("/{site_id}/lanes/{lane_id}", response_model=LaneOut)
def patch_lane(site_id: SiteId, lane_id: LaneId, body: LanePatch, request: Request,
               who: LanesWrite, s: DB) -> Any:
    site = _site(request, site_id)
    before, after = sites.set_enabled(s, site, lane_id, body.enabled, who.actor,
                                      _configured(request))
    audit.record(s, actor=who.actor, action="lane.enable" if body.enabled else "lane.disable",
                 target=f"lane:{site}/{lane_id}", at=central_of(request).clock(),
                 before=before, after={"enabled": after["enabled"],
                                       "disabled_by": after["disabled_by"],
                                       "reason": body.reason})
    return after
