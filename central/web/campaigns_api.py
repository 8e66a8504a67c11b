"""The campaigns JSON API: list, one campaign, its bundle, validate a draft (errors per
field, the same checks as the form: ``edge.pricing``'s schema), publish and unpublish
(role ``marketing``), and each campaign's own figures.

A draft has the form's fields (strings, lists, a boolean); it becomes one ``[[campaigns]]``
table through ``campaigns.read_form``, so the page and the API cannot disagree.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import Field, StringConstraints
from sqlalchemy import select
from sqlalchemy.orm import Session

from central.db.models import Campaign
from central.services import campaign_publish, campaigns
from central.services.campaign_figures import campaign_figures
from central.web.schemas import Request as Body
from central.web.security import DB, Reader, StaffPrincipal, central_of, http_error, require_staff

router = APIRouter(prefix="/api/campaigns", tags=["campaigns"])
CampaignsWrite = Annotated[StaffPrincipal, Depends(require_staff("campaigns:write"))]
Short = Annotated[str, StringConstraints(max_length=64)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class Draft(Body):
    """A campaign as the form has it; every field optional but a name and what it gives."""

    name: Name
    applies_to: Literal["purchase", "parking", "both"] = "purchase"
    date_from: Short = ""
    date_to: Short = ""
    time_from: Short = Field(default="", description="HH:MM, with time_to")
    time_to: Short = ""
    tiers: list[Short] = Field(default_factory=list, max_length=20)
    vehicle_classes: list[Short] = Field(default_factory=list, max_length=20)
    days: list[Short] = Field(default_factory=list, max_length=20)
    min_amount: Short = ""
    min_duration_minutes: Short = ""
    categories: list[Short] = Field(default_factory=list, max_length=50)
    brands: list[Short] = Field(default_factory=list, max_length=50)
    first_visit: bool = False
    multiplier: Short = ""
    bonus_points: Short = ""
    group: Short = ""
    budget: Short = Field(default="", description="yuan; the figures flag a campaign over it")


class _FormOf:
    """A draft seen as the posted form ``read_form`` reads."""

    def __init__(self, d: Draft) -> None:
        self.d = d

    def get(self, k: str) -> str | None:
        v = getattr(self.d, k, None)
        if k == "first_visit":
            return "on" if v else ""
        if isinstance(v, list):
            return ",".join(v)
        return v if isinstance(v, str) else None

    def getlist(self, k: str) -> list[str]:
        v = getattr(self.d, k, [])
        return list(v) if isinstance(v, list) else []


def _base(request: Request) -> dict[str, Any]:
    return campaigns.bundle_data(central_of(request).cfg.rules.bundle)


def _site(request: Request) -> str:
    return central_of(request).cfg.site.site_id


def _read(request: Request, s: Session, d: Draft) -> campaigns.CampaignForm:
    return campaigns.read_form(_FormOf(d), campaign_publish.site_bundle(
        s, _site(request), _base(request)))


def _invalid(errors: dict[str, str]) -> JSONResponse:
    errs = [{"field": k, "message": v} for k, v in errors.items()]
    return JSONResponse({"error": "invalid", "field": errs[0]["field"],
                         "message": errs[0]["message"], "errors": errs}, status_code=422)


def _row(s: Session, request: Request, name: str) -> Campaign | None:
    return s.scalar(select(Campaign).where(Campaign.site_id == _site(request),
                                           Campaign.name == name))


@router.get("")
def list_campaigns(request: Request, who: Reader, s: DB) -> Any:
    """Every campaign of the site's bundle: ``source`` ``bundle`` (the configured file) or
    ``central`` (published here; unpublished ones too, with their state)."""
    base = _base(request)
    out = [{"name": c.get("name"), "source": "bundle", "state": "published", "campaign": c}
           for c in base.get("campaigns", [])]
    out += [{**campaign_publish.campaign_json(r), "source": "central"}
            for r in s.scalars(select(Campaign).where(Campaign.site_id == _site(request))
                               .order_by(Campaign.id))]
    return out


@router.get("/bundle")
def site_bundle(request: Request, who: Reader, s: DB) -> Any:
    """The bundle the lanes are sent: the configured one plus the published campaigns."""
    return campaign_publish.site_bundle(s, _site(request), _base(request))


@router.post("/validate")
def validate(body: Draft, request: Request, who: CampaignsWrite, s: DB) -> Any:
    """The draft checked as the lanes would: 200 with its table, or 422 naming each field."""
    form = _read(request, s, body)
    if form.errors or form.campaign is None:
        return _invalid(form.errors)
    return {"valid": True, "campaign": form.campaign, "toml": campaigns.to_toml(form.campaign),
            "budget": None if form.budget is None else str(form.budget)}


@router.post("", status_code=201)
def publish(body: Draft, request: Request, who: CampaignsWrite, s: DB) -> Any:
    """Publish: the site's new bundle, signed, queued for the lanes; audited."""
    form = _read(request, s, body)
    if form.errors or form.campaign is None:
        return _invalid(form.errors)
    key = getattr(request.app.state, "signing_key", None)
    if key is None:
        raise http_error(409, "ingest.signing_key", "not configured: nothing can be signed "
                                                    "for the lanes")
    c = central_of(request)
    p = campaign_publish.publish(s, site=_site(request), base=_base(request), key=key,
                                 campaign=form.campaign, budget=form.budget, actor=who.actor,
                                 now=c.clock())
    return {"name": p.name, "rules_serial": p.serial, "bundle_version": p.bundle_version}


@router.post("/{name}/unpublish")
def unpublish(name: str, request: Request, who: CampaignsWrite, s: DB) -> Any:
    key = getattr(request.app.state, "signing_key", None)
    if key is None:
        raise http_error(409, "ingest.signing_key", "not configured: nothing can be signed "
                                                    "for the lanes")
    p = campaign_publish.unpublish(s, site=_site(request), base=_base(request), key=key,
                                   name=name, actor=who.actor, now=central_of(request).clock())
    return {"name": p.name, "rules_serial": p.serial, "bundle_version": p.bundle_version}


@router.get("/{name}")
def one(name: str, request: Request, who: Reader, s: DB) -> Any:
    """One campaign; a campaign published here comes with its figures."""
    for c in _base(request).get("campaigns", []):
        if c.get("name") == name:
            return {"name": name, "source": "bundle", "state": "published", "campaign": c}
    r = _row(s, request, name)
    if r is None:
        raise http_error(404, "name", f"unknown campaign {name!r}", "notfound")
    ce = central_of(request)
    fig = campaign_figures(s, r, _base(request), ce.cfg.points.cost_per_point, ce.clock())
    return {**campaign_publish.campaign_json(r), "source": "central",
            "toml": campaigns.to_toml(campaign_publish.campaign_json(r)["campaign"]),
            "figures": fig.json()}


@router.get("/{name}/bundle")
def its_bundle(name: str, request: Request, who: Reader, s: DB) -> Any:
    """The campaign's table (and TOML), and the site bundle it was published in, as signed
    and sent to the lanes (serial and version)."""
    r = _row(s, request, name)
    if r is None:
        raise http_error(404, "name", f"unknown campaign {name!r}", "notfound")
    cj = campaign_publish.campaign_json(r)
    sent = None if r.rules_serial is None else campaign_publish.sent_bundle(
        s, _site(request), r.rules_serial)
    return {"name": r.name, "campaign": cj["campaign"], "toml": campaigns.to_toml(
        cj["campaign"]), "rules_serial": r.rules_serial, "bundle_version": r.bundle_version,
        "bundle": sent}


@router.get("/{name}/figures")
def figures(name: str, request: Request, who: Reader, s: DB) -> Any:
    """Points it gave, members reached, visits and spend against the window before, cost
    (``points.cost_per_point``) against value, and the underperformer flag."""
    r = _row(s, request, name)
    if r is None:
        raise http_error(404, "name", f"unknown campaign {name!r}", "notfound")
    ce = central_of(request)
    return campaign_figures(s, r, _base(request), ce.cfg.points.cost_per_point,
                            ce.clock()).json()
