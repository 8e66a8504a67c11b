"""The member portal (phone-sized): balance now (live by server-sent events), points about
to expire, coupons, history, the rewards they can afford, redeem in two taps (the reward's
button opens its confirmation). The member comes only from the session: no member id is
ever taken from a URL or a form."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from central.db.models import Member, PointsLot, Reward
from central.services import members, points, rewards, sessions, signin
from central.services.errors import ServiceError
from central.web import api
from central.web.pages import (
    LOGIN_COOKIE,
    Ctx,
    form_of,
    login_token,
    login_token_ok,
    member_of,
    safe_next,
)
from central.web.pages.staff import history_lines
from central.web.security import DB, MEMBER_COOKIE, central_of

router = APIRouter(prefix="/m", include_in_schema=False)
POLL_S = 0.5
STREAM_MAX_S = 300  # the browser's EventSource reconnects by itself
SOON_DAYS = 60


def _login_form(request: Request, error: str | None, phone: str, nxt: str,
                status: int) -> Response:
    tok = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    resp = Ctx(request).render("portal/login.html", status=status, next=nxt, error=error,
                               phone=phone, login_token=tok)
    login_token(resp, tok)
    return resp


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> Response:
    return _login_form(request, None, "", safe_next(next, ""), 200)


@router.post("/login", response_class=HTMLResponse)
async def login_post(request: Request, s: DB) -> Response:
    f = await form_of(request)
    phone, secret = f.get("phone", "").strip(), f.get("secret", "")
    nxt = safe_next(f.get("next"), "")
    if not login_token_ok(request, f.get("login_token")):
        return _login_form(request, "wrong_credentials", phone, nxt, 403)
    c = central_of(request)
    code = secret if secret.isdigit() and len(secret) == 8 else None  # a one-time code
    try:
        _m, new = signin.member(s, phone, password=secret, code=code,
                                client=api._client(request), now=c.clock(), web=c.cfg.web)
    except signin.SignInRefused as exc:
        status = api.refused_sign_in(exc)
        error = "too_many" if status == 429 else "wrong_credentials"
        return _login_form(request, error, phone, nxt, status)
    resp = RedirectResponse(nxt or "/m", 303)
    api._set_cookie(resp, MEMBER_COOKIE, new.token, c.cfg.web.session_hours)
    resp.delete_cookie(LOGIN_COOKIE, path="/")
    return resp


@router.post("/logout", response_class=HTMLResponse)
async def logout(request: Request, s: DB) -> Response:
    f = await form_of(request)
    member_of(request, s, f.get("csrf_token"))
    sessions.close_session(s, request.cookies.get(MEMBER_COOKIE, ""))
    resp = RedirectResponse("/m/login", 303)
    resp.delete_cookie(MEMBER_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return resp


def portal_context(s: Any, c: Any, member_id: str) -> dict[str, Any]:
    now = c.clock()
    m = members.get_member(s, member_id)
    spendable = points.spendable(s, member_id, now)
    soon = list(s.scalars(select(PointsLot).where(
        PointsLot.member_id == member_id, PointsLot.remaining > 0, PointsLot.expires_at > now,
        PointsLot.expires_at <= now + timedelta(days=SOON_DAYS)).order_by(PointsLot.expires_at)))
    month = rewards.month_of(c.rules, now)
    cap = c.rules.monthly_cap_value
    used = rewards.redeemed_value(s, member_id, month)
    left = cap - used if cap is not None else None
    cat = []
    for r in s.scalars(select(Reward).where(Reward.active.is_(True))
                       .order_by(Reward.points, Reward.reward_id)):
        allowed = rewards.tiers_of(r)
        if allowed is not None and m.tier not in allowed:
            continue  # another tier's reward: nothing this member could ever redeem
        over_cap = left is not None and r.value > left
        out = r.stock == 0
        cat.append({"r": r, "affordable": r.points <= spendable and not over_cap and not out,
                    "short": max(0, r.points - spendable), "over_cap": over_cap, "out": out})
    coupons = [cp for cp in api.coupons_view(s, member_id) if cp["used_at"] is None]
    return {"m": m, "spendable": spendable, "soon": soon, "cap": cap, "cap_left": left,
            "catalogue": cat, "coupons": coupons, "history": history_lines(s, member_id, 20),
            "redemption_key": f"web-{secrets.token_hex(10)}"}


@router.get("", response_class=HTMLResponse)
def home(request: Request, s: DB) -> Response:
    who = member_of(request, s)
    c = central_of(request)
    ctx = portal_context(s, c, who.member_id)
    done = s.get(Reward, request.query_params.get("ok") or "")
    return Ctx(request).render("portal/home.html", **ctx, csrf=who.csrf_token,
                               ok=done.name if done else None, error=None)


@router.post("/redeem", response_class=HTMLResponse)
async def redeem(request: Request, s: DB) -> Response:
    f = await form_of(request)
    who = member_of(request, s, f.get("csrf_token"))
    c = central_of(request)
    try:
        with s.begin_nested():
            rewards.redeem(s, c.rules, member_id=who.member_id,
                           reward_id=f.get("reward_id", ""),
                           redemption_key=f.get("redemption_key", ""), now=c.clock())
    except ServiceError as exc:
        ctx = portal_context(s, c, who.member_id)
        return Ctx(request).render("portal/home.html", status=exc.status, **ctx,
                                   csrf=who.csrf_token, ok=None, error=exc.message)
    r = s.get(Reward, f.get("reward_id", ""))
    return RedirectResponse(f"/m?ok={r.reward_id if r else ''}", 303)


def _balance(c: Any, member_id: str) -> tuple[int, dict[str, Any]]:
    with c.tx() as s:
        m = s.get(Member, member_id)
        if m is None:
            return -1, {}
        return m.version, {"balance": m.balance,
                           "spendable": points.spendable(s, member_id, c.clock())}


@router.get("/events")
async def events(request: Request, s: DB) -> Response:
    """Server-sent events: the member's balance whenever it changes (polled every 0.5 s
    from the member's version, so any worker's change shows within a second)."""
    who = member_of(request, s)
    c = central_of(request)

    async def stream() -> AsyncIterator[str]:
        last = None
        waited = 0.0
        yield "retry: 1000\n\n"
        while waited < STREAM_MAX_S:
            if await request.is_disconnected():
                return
            version, body = await run_in_threadpool(_balance, c, who.member_id)
            if version < 0:
                return
            if version != last:
                last = version
                yield f"event: balance\ndata: {json.dumps(body)}\n\n"
            await asyncio.sleep(POLL_S)
            waited += POLL_S

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
