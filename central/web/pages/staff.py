"""Staff pages: sign-in, the marketing overview, members, rewards. Thin: each handler
checks who asks (``staff_of``), calls the services, renders a template."""

from __future__ import annotations

import json
import secrets
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select, union
from starlette.datastructures import FormData

from central.db.models import Campaign, Member, Plate, Redemption, Reward
from central.services import (
    audit,
    campaign_publish,
    campaigns,
    members,
    points,
    replay_data,
    rewards,
    sessions,
    signin,
)
from central.services.campaign_figures import campaign_figures
from central.services.errors import ServiceError
from central.services.figures import (
    DEFINITIONS,
    EXPIRING_DAYS,
    default_period,
    month_bounds,
    month_range,
    overview,
)
from central.services.staff import allowed
from central.web import api
from central.web.pages import (
    FORM,
    LOGIN_COOKIE,
    RAW_FORM,
    Ctx,
    PageForbidden,
    login_token,
    login_token_ok,
    safe_next,
    staff_of,
    texts,
)
from central.web.security import DB, STAFF_COOKIE, central_of
from edge.pricing.bundle import parse_bundle

router = APIRouter(include_in_schema=False)
HOME = {"marketing": "/overview", "auditor": "/overview", "admin": "/overview",
        "operations": "/ops"}


# ------------------------------------------------------------------ sign-in
@router.get("/", response_class=HTMLResponse)
def root(request: Request, s: DB) -> Response:
    try:
        who = staff_of(request, s, "members")
    except PageForbidden:
        return RedirectResponse("/login", 303)
    return RedirectResponse(HOME.get(who.role, "/members"), 303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> Response:
    return _login_form(request, None, "", safe_next(next, ""), 200)


@router.post("/login", response_class=HTMLResponse)
def login_post(request: Request, s: DB, f: FORM) -> Response:
    username, password = f.get("username", "").strip(), f.get("password", "")
    nxt = safe_next(f.get("next"), "")
    if not login_token_ok(request, f.get("login_token")):
        return _login_form(request, "wrong_credentials", username, nxt, 403)
    c = central_of(request)
    try:
        u, new = signin.staff(s, username, password, client=api._client(request),
                              now=c.clock(), web=c.cfg.web, via="page")
    except signin.SignInRefused as exc:
        status = api.refused_sign_in(exc)
        error = "too_many" if status == 429 else "wrong_credentials"
        return _login_form(request, error, username, nxt, status)
    resp = RedirectResponse(nxt or HOME.get(u.role, "/members"), 303)
    api._set_cookie(resp, STAFF_COOKIE, new.token, c.cfg.web.session_hours)
    resp.delete_cookie(LOGIN_COOKIE, path="/")
    return resp


def _login_form(request: Request, error: str | None, username: str, nxt: str,
                status: int) -> Response:
    tok = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    resp = Ctx(request).render("login.html", status=status, next=nxt, error=error,
                               username=username, login_token=tok)
    login_token(resp, tok)
    return resp


@router.post("/logout", response_class=HTMLResponse)
def logout(request: Request, s: DB, f: FORM) -> Response:
    who = staff_of(request, s, "members", f.get("csrf_token"))
    sessions.close_session(s, request.cookies.get(STAFF_COOKIE, ""))
    audit.record(s, actor=who.actor, action="staff.logout", target=f"user:{who.username}",
                 at=central_of(request).clock())
    resp = RedirectResponse("/login", 303)
    resp.delete_cookie(STAFF_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return resp


# ------------------------------------------------------------------ overview
def _month(v: str | None, default: str) -> str:
    if v and len(v) == 7 and v[4] == "-" and v[:4].isdigit() and v[5:].isdigit() \
            and 2000 <= int(v[:4]) <= 2100 and 1 <= int(v[5:]) <= 12:
        return v
    return default


@router.get("/overview", response_class=HTMLResponse)
def overview_page(request: Request, s: DB, start: str | None = None,
                  end: str | None = None) -> Response:
    who = staff_of(request, s, "overview")
    c = central_of(request)
    now = c.clock()
    d_first, d_last = default_period(c.cfg.site.tz, now)
    first = _month(start, d_first)
    last = _month(end, d_last)
    if last < first:
        first, last = last, first
    first = month_range(first, last)[0] if month_range(first, last) else first
    if len(month_range(first, last)) >= 120:
        last = month_range(first, last)[-1]
    fig = overview(s, c.rules, c.cfg.points.cost_per_point, first, last, now)
    return Ctx(request, who).render("overview.html", fig=fig, first=first, last=last,
                                    definitions=DEFINITIONS, expiring_days=EXPIRING_DAYS)


# ------------------------------------------------------------------ members
def search_members(s: Any, q: str, limit: int = 50) -> list[Member]:
    """By name (contains), phone (prefix or digits contained) or plate (normalised). One
    indexed lookup per field, united (an OR across tables would scan every member): on
    PostgreSQL the LIKEs use the trigram indexes (migration 0007)."""
    q = q.strip()
    if not q:
        return list(s.scalars(select(Member).order_by(Member.member_id).limit(limit)))
    bare = q.replace("%", "").replace("_", "")
    like = f"%{bare}%"
    plate_q = bare.replace(" ", "").replace("·", "").upper()
    ids = union(select(Member.member_id).where(Member.name.like(like)),
                select(Member.member_id).where(Member.phone.like(like)),
                select(Member.member_id).where(Member.member_id == q),
                select(Plate.member_id).where(Plate.plate.like(f"%{plate_q}%"))).subquery()
    return list(s.scalars(select(Member).where(Member.member_id.in_(select(ids.c.member_id)))
                          .order_by(Member.member_id).limit(limit)))


@router.get("/members", response_class=HTMLResponse)
def members_page(request: Request, s: DB, q: str = "") -> Response:
    who = staff_of(request, s, "members")
    found = search_members(s, q[:100])
    plates: dict[str, list[str]] = {}
    for p in s.scalars(select(Plate).where(Plate.member_id.in_([m.member_id for m in found]))):
        plates.setdefault(p.member_id, []).append(p.plate)
    return Ctx(request, who).render("members.html", q=q[:100], found=found, plates=plates)


def member_context(s: Any, c: Any, member_id: str) -> dict[str, Any]:
    now = c.clock()
    m = members.get_member(s, member_id)
    month = rewards.month_of(c.rules, now)
    used = rewards.redeemed_value(s, member_id, month)
    cap = c.rules.monthly_cap_value
    return {"m": m, "plates": members.plates_of(s, member_id),
            "spendable": points.spendable(s, member_id, now),
            "lots": api.lots_view(s, member_id), "coupons": api.coupons_view(s, member_id),
            "history": history_lines(s, member_id, 200),
            "month_used": used, "cap": cap,
            "cap_left": (cap - used) if cap is not None else None}


def history_lines(s: Any, member_id: str, limit: int) -> list[dict[str, Any]]:
    from central.db.models import PointsEntry

    rows = s.scalars(select(PointsEntry).where(PointsEntry.member_id == member_id)
                     .order_by(PointsEntry.at.desc(), PointsEntry.id.desc()).limit(limit))
    return [{"at": r.at, "kind": r.kind, "points": r.points, "ref": r.ref or "",
             "lot_id": r.lot_id or ""} for r in rows]


@router.get("/members/{member_id}", response_class=HTMLResponse)
def member_page(member_id: str, request: Request, s: DB) -> Response:
    who = staff_of(request, s, "members")
    c = central_of(request)
    try:
        ctx = member_context(s, c, member_id)
    except ServiceError:
        return Ctx(request, who).render("members.html", status=404, q=member_id, found=[],
                                        plates={})
    return Ctx(request, who).render("member.html", **ctx,
                                    may_adjust=allowed(who.role, "points:adjust"),
                                    message=request.query_params.get("done"), errors={},
                                    form={})


@router.post("/members/{member_id}/adjust", response_class=HTMLResponse)
def adjust_post(member_id: str, request: Request, s: DB, f: FORM) -> Response:
    who = staff_of(request, s, "members", f.get("csrf_token"))
    c = central_of(request)
    errors: dict[str, str] = {}
    lang_t = Ctx(request, who)
    if not allowed(who.role, "points:adjust"):
        raise PageForbidden(who)
    raw, reason = f.get("points", "").strip(), f.get("reason", "").strip()
    try:
        pts = int(raw)
        if pts == 0 or abs(pts) > 1_000_000:
            raise ValueError
    except ValueError:
        errors["points"] = "1..1000000 or -1..-1000000"
    if not reason:
        errors["reason"] = "required"
    elif len(reason) > 200:
        errors["reason"] = "at most 200 characters"
    if not errors:
        before = members.get_member(s, member_id).balance
        try:
            with s.begin_nested():
                points.adjust(s, c.rules, member_id, pts, c.clock(), reason=reason,
                              ref=f"page:{secrets.token_hex(8)}")
        except ServiceError as exc:
            errors[exc.field if exc.field in ("points", "reason") else "points"] = exc.message
        else:
            s.flush()
            after = members.get_member(s, member_id).balance
            audit.record(s, actor=who.actor, action="points.adjust",
                         target=f"member:{member_id}", at=c.clock(),
                         before={"balance": before},
                         after={"balance": after, "points": pts, "reason": reason})
            return RedirectResponse(f"/members/{member_id}?done={after}", 303)
    ctx = member_context(s, c, member_id)
    return lang_t.render("member.html", status=422, **ctx, may_adjust=True, message=None,
                         errors=errors, form=f)


# ------------------------------------------------------------------ rewards
def rewards_context(s: Any, c: Any) -> dict[str, Any]:
    now = c.clock()
    month = rewards.month_of(c.rules, now)
    cap = c.rules.monthly_cap_value
    cat = list(s.scalars(select(Reward).order_by(Reward.kind, Reward.points)))
    counts = dict(s.execute(select(Redemption.reward_id, func.count(Redemption.id))
                            .group_by(Redemption.reward_id)).all())
    used_by_member = dict(s.execute(
        select(Redemption.member_id, func.sum(Redemption.value))
        .where(Redemption.month == month).group_by(Redemption.member_id)).all())
    blocked: dict[str, int] = {}
    at_cap = 0
    if cap is not None:
        at_cap = sum(1 for v in used_by_member.values() if Decimal(v) >= cap)
        for r in cat:
            blocked[r.reward_id] = sum(1 for v in used_by_member.values()
                                       if Decimal(v) + r.value > cap)
    return {"catalogue": cat, "counts": counts, "cap": cap, "month": month, "at_cap": at_cap,
            "blocked": blocked, "tiers": c.rules.tier_names, "kinds": rewards.KINDS,
            "reward_tiers": {r.reward_id: rewards.tiers_of(r) for r in cat}}


@router.get("/rewards", response_class=HTMLResponse)
def rewards_page(request: Request, s: DB) -> Response:
    who = staff_of(request, s, "rewards")
    ctx = rewards_context(s, central_of(request))
    return Ctx(request, who).render("rewards.html", **ctx, errors={}, form={},
                                    may_edit=allowed(who.role, "rewards:write"),
                                    message=request.query_params.get("saved"))


@router.post("/rewards", response_class=HTMLResponse)
def rewards_post(request: Request, s: DB, raw: RAW_FORM) -> Response:
    f = texts(raw)
    who = staff_of(request, s, "rewards", f.get("csrf_token"))
    if not allowed(who.role, "rewards:write"):
        raise PageForbidden(who)
    c = central_of(request)
    errors: dict[str, str] = {}
    try:
        pts = int(f.get("points", ""))
    except ValueError:
        errors["points"] = "a whole number"
        pts = 0
    try:
        value = Decimal(f.get("value", "") or "x")
    except InvalidOperation:
        errors["value"] = "yuan, e.g. 10 or 9.90"
        value = Decimal(0)
    hours: int | None = None
    if f.get("hours", "").strip():
        try:
            hours = int(f["hours"])
        except ValueError:
            errors["hours"] = "a whole number"
    stock: int | None = None
    if f.get("stock", "").strip():
        try:
            stock = int(f["stock"])
        except ValueError:
            errors["stock"] = "a whole number"
    tiers = [v for v in raw.getlist("tiers") if isinstance(v, str)] or None
    rid = f.get("reward_id", "").strip()
    if not errors:
        old = s.get(Reward, rid)
        before = rewards.reward_json(old) if old else None
        try:
            with s.begin_nested():
                r = rewards.put_reward(s, reward_id=rid, kind=f.get("kind", ""),
                                       name=f.get("name", ""), points=pts, value=value,
                                       hours=hours, active=f.get("active") == "on",
                                       tiers=tiers, category=f.get("category", "").strip()
                                       or None, stock=stock, known_tiers=c.rules.tier_names)
                s.flush()
        except ServiceError as exc:
            errors[exc.field] = exc.message
        else:
            audit.record(s, actor=who.actor, action="reward.put", target=f"reward:{rid}",
                         at=c.clock(), before=before, after=rewards.reward_json(r))
            return RedirectResponse(f"/rewards?saved={rid}", 303)
    ctx = rewards_context(s, c)
    return Ctx(request, who).render("rewards.html", status=422, **ctx, errors=errors, form=f,
                                    may_edit=True, message=None)



# ------------------------------------------------------------------ campaigns (read-only)
def campaign_rows(rules: Any) -> list[dict[str, Any]]:
    """The bundle's campaigns as the page lists them."""
    out = []
    for cp in rules.campaigns:
        cond = []
        for label, v in [("tiers", cp.tiers), ("classes", cp.classes), ("days", cp.days),
                         ("categories", cp.categories), ("brands", cp.brands),
                         ("lanes", cp.lanes)]:
            if v:
                cond.append(f"{label}: {', '.join(sorted(v))}")
        if cp.window:
            cond.append(f"{cp.window[0] // 60:02d}:{cp.window[0] % 60:02d}-"
                        f"{cp.window[1] // 60:02d}:{cp.window[1] % 60:02d}")
        if cp.date_from or cp.date_to:
            cond.append(f"{cp.date_from or '…'} → {cp.date_to or '…'}")
        if cp.min_amount is not None:
            cond.append(f"≥ ¥{cp.min_amount}")
        if cp.min_minutes is not None:
            cond.append(f"≥ {cp.min_minutes} min")
        if cp.first_visit:
            cond.append("first visit")
        gives = []
        if cp.multiplier != 1:
            gives.append(f"×{cp.multiplier}")
        if cp.bonus:
            gives.append(f"+{cp.bonus}")
        out.append({"name": cp.name, "parking": cp.parking, "purchase": cp.purchase,
                    "cond": cond, "gives": gives, "group": cp.group or ""})
    return out


CAMPAIGN_EDITORS = frozenset({"marketing"})


def _campaigns_render(request: Request, s: Any, who: Any, *, form: Any = None,
                      fc: Any = None, status: int = 200, fc_first: str = "",
                      fc_last: str = "", published_ok: str | None = None,
                      unpublished_ok: str | None = None,
                      page_error: str | None = None) -> Response:
    c = central_of(request)
    this = c.clock().astimezone(c.cfg.site.tz)
    if not fc_last:
        fc_last = this.strftime("%Y-%m")
    if not fc_first:
        y, m = this.year, this.month - 2
        if m <= 0:
            y, m = y - 1, m + 12
        fc_first = f"{y:04d}-{m:02d}"
    values = form.values if form is not None else {}
    return Ctx(request, who).render(
        "campaigns.html", status=status, rows=campaign_rows(parse_bundle(site_base(s, c))),
        published=campaigns.published(s, c.cfg.site.site_id), may_edit=who.role in CAMPAIGN_EDITORS,
        values=values, errors=form.errors if form is not None else {},
        fc=fc.json() if fc is not None else None,
        campaign_toml=campaigns.to_toml(form.campaign) if form is not None
        and form.campaign else "",
        tiers=c.rules.tier_names, classes=c.rules.vehicle_classes, days=campaigns.DAYS,
        groups=sorted(c.rules.model.earn.groups),
        fc_first=fc_first, fc_last=fc_last, published_ok=published_ok,
        unpublished_ok=unpublished_ok, page_error=page_error)


@router.get("/campaigns", response_class=HTMLResponse)
def campaigns_page(request: Request, s: DB) -> Response:
    who = staff_of(request, s, "campaigns")
    q = request.query_params
    return _campaigns_render(request, s, who, published_ok=q.get("ok"),
                             unpublished_ok=q.get("unpublished"), page_error=q.get("error"))


def site_base(s: Any, c: Any) -> dict[str, Any]:
    """The site's bundle as the lanes run it: the configured one plus published campaigns."""
    return campaign_publish.site_bundle(s, c.cfg.site.site_id,
                                        campaigns.bundle_data(c.cfg.rules.bundle))


@router.get("/campaigns/{name}", response_class=HTMLResponse)
def campaign_page(name: str, request: Request, s: DB) -> Response:
    """One campaign published here: its state, its own figures as charts, its table."""
    who = staff_of(request, s, "campaigns")
    c = central_of(request)
    row = s.scalar(select(Campaign).where(Campaign.site_id == c.cfg.site.site_id,
                                          Campaign.name == name))
    if row is None:
        return _campaigns_render(request, s, who, status=404,
                                 page_error=f"unknown campaign {name[:64]!r}")
    f = campaign_figures(s, row, campaigns.bundle_data(c.cfg.rules.bundle),
                         c.cfg.points.cost_per_point, c.clock())
    cj = campaign_publish.campaign_json(row)
    return Ctx(request, who).render("campaign.html", c=cj, f=f.json(),
                                    toml=campaigns.to_toml(cj["campaign"]))


def _campaign_form(request: Request, s: Any, raw: FormData) -> tuple[Any, Any, Any]:
    f = texts(raw)
    who = _editor(request, s, f.get("csrf_token"))
    form = campaigns.read_form(raw, site_base(s, central_of(request)))
    return who, form, f


#: the longest period a forecast replays (and a download carries)
FORECAST_MONTHS = 12


def _fc_period(c: Any, start: str | None, end: str | None) -> tuple[str, str]:
    """The forecast's months from the form or query: ordered, at most FORECAST_MONTHS."""
    this = c.clock().astimezone(c.cfg.site.tz).strftime("%Y-%m")
    first, last = _month(start, this), _month(end, this)
    if last < first:
        first, last = last, first
    y, m = int(last[:4]), int(last[5:])
    m -= FORECAST_MONTHS - 1
    while m <= 0:
        y, m = y - 1, m + 12
    return max(first, f"{y:04d}-{m:02d}"), last


def _attachment(body: str, name: str, media: str) -> Response:
    return Response(body.encode("utf-8"), media_type=media, headers={
        "Content-Disposition": f'attachment; filename="{name}"',
        "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


def _editor(request: Request, s: Any, token: str | None = None) -> Any:
    who = staff_of(request, s, "campaigns", token)
    if who.role not in CAMPAIGN_EDITORS:
        raise PageForbidden(who)
    return who


@router.get("/campaigns/forecast/data.jsonl")
def campaign_forecast_data(request: Request, s: DB) -> Response:
    """The stays and purchases a forecast replays, as ``rules simulate --sessions`` reads
    them (members' ids and plates: campaign editors only, never cached)."""
    _editor(request, s)
    c = central_of(request)
    first, last = _fc_period(c, request.query_params.get("first"),
                             request.query_params.get("last"))
    lo, hi = month_bounds(c.cfg.site.tz, first, last)
    recs = replay_data.period_records(s, c.cfg.site.site_id, lo, hi)
    return _attachment(replay_data.as_jsonl(recs), f"forecast-{first}-{last}.jsonl",
                       "application/x-ndjson")


@router.get("/campaigns/forecast/base.json")
def campaign_forecast_base(request: Request, s: DB) -> Response:
    """The site's bundle as the lanes run it (``rules simulate --baseline``)."""
    _editor(request, s)
    data = site_base(s, central_of(request))
    return _attachment(json.dumps(data, ensure_ascii=False, indent=1), "base.json",
                       "application/json")


@router.post("/campaigns/forecast/candidate.json")
def campaign_forecast_candidate(request: Request, s: DB, raw: RAW_FORM) -> Response:
    """The site's bundle with the form's campaign (``rules simulate --rules``)."""
    who, form, _f = _campaign_form(request, s, raw)
    if form.errors or form.data is None:
        return _campaigns_render(request, s, who, form=form, status=422)
    return _attachment(json.dumps(form.data, ensure_ascii=False, indent=1), "candidate.json",
                       "application/json")


@router.post("/campaigns/forecast", response_class=HTMLResponse)
def campaign_forecast(request: Request, s: DB, raw: RAW_FORM) -> Response:
    """Validate the form with edge.pricing's schema; if good, forecast it."""
    who, form, f = _campaign_form(request, s, raw)
    c = central_of(request)
    first, last = _fc_period(c, f.get("fc_start"), f.get("fc_end"))
    if form.errors:
        return _campaigns_render(request, s, who, form=form, status=422, fc_first=first,
                                 fc_last=last)
    rate = Decimal(overview(s, c.rules, c.cfg.points.cost_per_point, first, last,
                            c.clock())["redemption_rate_pct"])
    base = parse_bundle(site_base(s, c))
    fc = campaigns.forecast(s, c.cfg.site.site_id, base, form.bundle, form.campaign["name"],
                            first, last, c.cfg.points.cost_per_point, rate, form.budget)
    return _campaigns_render(request, s, who, form=form, fc=fc, fc_first=first,
                             fc_last=last)


def _signing_key(request: Request) -> Any:
    return getattr(request.app.state, "signing_key", None)


@router.post("/campaigns/publish", response_class=HTMLResponse)
def campaign_publish_post(request: Request, s: DB, raw: RAW_FORM) -> Response:
    """Publish: the site's new bundle, signed, queued for the lanes; audited."""
    who, form, _f = _campaign_form(request, s, raw)
    key = _signing_key(request)
    if key is None and not form.errors:
        form.errors["name"] = "ingest.signing_key is not configured: nothing can be " \
                              "signed for the lanes"
    if form.errors:
        return _campaigns_render(request, s, who, form=form, status=422)
    c = central_of(request)
    try:
        with s.begin_nested():
            campaign_publish.publish(
                s, site=c.cfg.site.site_id, base=campaigns.bundle_data(c.cfg.rules.bundle),
                key=key, campaign=form.campaign, budget=form.budget, actor=who.actor,
                now=c.clock())
    except ServiceError as exc:
        form.errors[exc.field if exc.field in form.values else "name"] = exc.message
        return _campaigns_render(request, s, who, form=form, status=exc.status)
    return RedirectResponse(f"/campaigns?ok={quote(form.campaign['name'])}", 303)


@router.post("/campaigns/unpublish", response_class=HTMLResponse)
def campaign_unpublish_post(request: Request, s: DB, f: FORM) -> Response:
    who = staff_of(request, s, "campaigns", f.get("csrf_token"))
    if who.role not in CAMPAIGN_EDITORS:
        raise PageForbidden(who)
    c = central_of(request)
    key = _signing_key(request)
    name = f.get("name", "")
    if key is None:
        return RedirectResponse("/campaigns?error=no_signing_key", 303)
    try:
        with s.begin_nested():
            campaign_publish.unpublish(s, site=c.cfg.site.site_id,
                                       base=campaigns.bundle_data(c.cfg.rules.bundle),
                                       key=key, name=name, actor=who.actor, now=c.clock())
    except ServiceError as exc:
        return RedirectResponse(f"/campaigns?error={quote(exc.message[:200])}", 303)
    return RedirectResponse(f"/campaigns?unpublished={quote(name)}", 303)
