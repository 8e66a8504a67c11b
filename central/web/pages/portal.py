"""The member portal (phone-sized): balance now (live by server-sent events), points about
to expire, coupons, history, the rewards they can afford, redeem in two taps (the reward's
button opens its confirmation), and a stay in progress prepaid in two taps through the same
``record()`` as the staff and pay-station prepayments (so the exit lanes get the signed
``prepaid`` message). The member comes only from the session: no member id is
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
from pydantic import ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from central.db.models import Member, PointsLot, Prepayment, Reward
from central.services import member_stay, members, points, rewards, sessions, signin
from central.services.errors import Invalid, NotFound, ServiceError
from central.web import api
from central.web import prepay as prepay_web
from central.web.pages import (
    FORM,
    LOGIN_COOKIE,
    Ctx,
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
def login_post(request: Request, s: DB, f: FORM) -> Response:
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
def logout(request: Request, s: DB, f: FORM) -> Response:
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
            "redemption_key": f"web-{secrets.token_hex(10)}",
            "stays": member_stay.open_stays(s, c.rules, member_id, now),
            "payment_key": f"portal-{secrets.token_hex(10)}"}


@router.get("", response_class=HTMLResponse)
def home(request: Request, s: DB) -> Response:
    who = member_of(request, s)
    c = central_of(request)
    ctx = portal_context(s, c, who.member_id)
    done = s.get(Reward, request.query_params.get("ok") or "")
    paid = s.get(Prepayment, request.query_params.get("paid") or "")
    if paid is not None and paid.member_id != who.member_id:
        paid = None  # never show another member's payment
    return Ctx(request).render("portal/home.html", **ctx, csrf=who.csrf_token,
                               ok=done.name if done else None, error=None, paid=paid)


@router.post("/redeem", response_class=HTMLResponse)
def redeem(request: Request, s: DB, f: FORM) -> Response:
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
                                   csrf=who.csrf_token, ok=None, error=exc.message,
                                   paid=None)
    r = s.get(Reward, f.get("reward_id", ""))
    return RedirectResponse(f"/m?ok={r.reward_id if r else ''}", 303)


def _prepay(request: Request, s: Any, member_id: str, f: dict[str, str]) -> str:
    """Prepay the member's own stay ``session_id`` for the amount the confirmation showed;
    the payment id comes from the form's key, so a second tap or a retry records once."""
    c = central_of(request)
    key = f.get("payment_key", "")
    if not key.startswith("portal-"):
        raise Invalid("payment_key", "missing or malformed: reload the page")
    old = s.get(Prepayment, key)
    if old is not None:
        if old.member_id != member_id:
            raise Invalid("payment_key", "already used: reload the page")
        return str(old.payment_id)  # the same tap again: already paid
    stays = {st.session_id: st for st in member_stay.open_stays(s, c.rules, member_id,
                                                                  c.clock())}
    st = stays.get(f.get("session_id", ""))
    if st is None:
        raise NotFound("session_id", "no stay in progress for your cars: it may have ended")
    due = st.fee - st.prepaid
    shown = f.get("amount", "")
    if due <= 0:
        raise Invalid("amount", "nothing to pay for this stay now")
    if shown != str(due):
        raise Invalid("amount", f"the fee is now ¥{due} (was ¥{shown[:20]}): confirm again")
    try:
        body = prepay_web.PrepaymentFields(payment_id=key, plate=st.plate,
                                           member_id=member_id, amount=str(due),
                                           entry_event_id=st.entry_event_id)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise Invalid(str(err["loc"][-1]) if err["loc"] else "payment_key",
                      str(err["msg"])) from None
    prepay_web.record(request, s, body, source="portal", actor=f"member:{member_id}")
    return key


@router.post("/prepay", response_class=HTMLResponse)
def prepay(request: Request, s: DB, f: FORM) -> Response:
    who = member_of(request, s, f.get("csrf_token"))
    c = central_of(request)
    try:
        with s.begin_nested():
            pid = _prepay(request, s, who.member_id, f)
    except ServiceError as exc:
        ctx = portal_context(s, c, who.member_id)
        return Ctx(request).render("portal/home.html", status=exc.status, **ctx,
                                   csrf=who.csrf_token, ok=None, error=exc.message,
                                   paid=None)
    return RedirectResponse(f"/m?paid={pid}", 303)


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
