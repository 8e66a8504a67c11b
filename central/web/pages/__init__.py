"""Central's HTML pages: server-rendered Jinja2 templates, a little JavaScript for the live
balance and the charts (Chart.js, served from /static like every other asset: the pages
work without internet access).

Who may open which page is in ``PAGE_ROLES``; a page a role may not open answers 403 with
the reason, and the navigation shows a role only its own pages. Forms post with the
session's CSRF token in a hidden ``csrf_token`` field, checked by the same session code as
the API's ``X-CSRF-Token`` header (``central.web.security``). Times are shown in the site's
time zone to the second.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from central.web.pages.i18n import LANGS, text
from central.web.security import (
    MEMBER_COOKIE,
    STAFF_COOKIE,
    MemberPrincipal,
    StaffPrincipal,
    _session,
    central_of,
)

if TYPE_CHECKING:
    from central.app import Central

WEB = Path(__file__).resolve().parents[1]
templates = Jinja2Templates(directory=str(WEB / "templates"))
LANG_COOKIE = "pe_lang"
LOGIN_COOKIE = "pe_login"  # double-submit token of the sign-in forms (no session yet)

#: page -> staff roles that may open it (the API's permissions decide what they may change)
PAGE_ROLES: dict[str, frozenset[str]] = {
    "overview": frozenset({"marketing", "auditor", "admin"}),
    "campaigns": frozenset({"marketing", "auditor"}),
    "rewards": frozenset({"marketing", "auditor", "admin", "operations"}),
    "members": frozenset({"marketing", "auditor", "admin", "operations"}),
    "ops": frozenset({"operations", "auditor", "admin"}),  # read-only: nothing to change there
}
NAV = ("overview", "ops", "campaigns", "rewards", "members")


class LoginRequired(Exception):
    def __init__(self, login: str, next_url: str) -> None:
        self.login, self.next_url = login, next_url


class PageForbidden(Exception):
    def __init__(self, who: StaffPrincipal) -> None:
        self.who = who


def lang_of(request: Request) -> str:
    v = request.cookies.get(LANG_COOKIE)
    if v in LANGS:
        return v
    return central_of(request).cfg.site.language


def local_time(c: Central, v: datetime | str | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """An instant in the site's zone, to the second (never microseconds, never UTC)."""
    if not v:
        return ""
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    return v.astimezone(c.cfg.site.tz).strftime(fmt)


def texts(form: FormData) -> dict[str, str]:
    """A form's text fields (the last value of a repeated one; uploads are never read)."""
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def form_of(request: Request) -> dict[str, str]:
    return texts(await request.form())


async def raw_form_of(request: Request) -> FormData:
    return await request.form()


#: A POSTed form's text fields (``RAW_FORM``: the whole form, repeated fields too), as a
#: dependency: the form is read on the event loop, and the page handler taking it is a plain
#: ``def`` that FastAPI runs in its thread pool. Why: a handler that awaited the form itself
#: was ``async`` and so ran its database work, argon2 checks and a campaign forecast (a
#: minute of replay on a big site's year) on the event loop, stalling every other request of
#: the process meanwhile (POS tills, lanes' pages, the member portal's live balance).
FORM = Annotated[dict[str, str], Depends(form_of)]
RAW_FORM = Annotated[FormData, Depends(raw_form_of)]


def staff_of(request: Request, s: Session, page: str,
             form_token: str | None = None) -> StaffPrincipal:
    """The signed-in staff member allowed on ``page``; else a redirect to the sign-in page
    (no session) or a 403 page (wrong role). POSTs pass the form's CSRF token."""
    from central.db.models import StaffUser

    row = _session(request, s, STAFF_COOKIE, "staff", form_token)
    u = s.get(StaffUser, row.subject_id) if row is not None else None
    if row is None or u is None or u.disabled:
        raise LoginRequired("/login", request.url.path)
    who = StaffPrincipal(u.username, u.role, row.csrf_token)
    if u.role not in PAGE_ROLES[page]:
        raise PageForbidden(who)
    return who


def member_of(request: Request, s: Session, form_token: str | None = None) -> MemberPrincipal:
    from central.db.models import Member

    row = _session(request, s, MEMBER_COOKIE, "member", form_token)
    m = s.get(Member, row.subject_id) if row is not None else None
    if row is None or m is None:
        raise LoginRequired("/m/login", request.url.path)
    return MemberPrincipal(m.member_id, row.csrf_token)


@dataclass
class Ctx:
    """What every template gets: language, text lookup, site time formatting, nav."""

    request: Request
    who: StaffPrincipal | None = None

    def render(self, name: str, status: int = 200, **kw: Any) -> HTMLResponse:
        c = central_of(self.request)
        lang = lang_of(self.request)
        nav = [p for p in NAV if self.who is not None and self.who.role in PAGE_ROLES[p]]
        here = self.request.url.path
        q = self.request.url.query
        ctx = {"lang": lang, "t": lambda k, **a: text(lang, k, **a),
               "local": lambda v, fmt="%Y-%m-%d %H:%M:%S": local_time(c, v, fmt),
               "who": self.who, "nav": nav, "site": c.cfg.site,
               "here": here, "next_here": quote(here + ("?" + q if q else ""), safe="/"),
               "csrf": self.who.csrf_token if self.who else "", **kw}
        return templates.TemplateResponse(self.request, name, ctx, status_code=status)


def safe_next(v: str | None, default: str) -> str:
    """Only a path on this site (no scheme, no //host): no open redirect."""
    if not v or not v.startswith("/") or v.startswith("//") or "\\" in v:
        return default
    return v


def login_token(response: Response, tok: str) -> None:
    """The sign-in forms' double-submit token: a cookie and the same value in the form."""
    response.set_cookie(LOGIN_COOKIE, tok, max_age=3600, secure=True, httponly=True,
                        samesite="strict", path="/")


def login_token_ok(request: Request, sent: str | None) -> bool:
    have = request.cookies.get(LOGIN_COOKIE) or ""
    return bool(have) and secrets.compare_digest(have.encode(), (sent or "").encode())


def install(app: FastAPI) -> None:
    from central.web.pages import ops, portal, staff

    app.mount("/static", StaticFiles(directory=str(WEB / "static")), name="static")
    app.include_router(staff.router)
    app.include_router(ops.router)
    app.include_router(portal.router)

    @app.exception_handler(LoginRequired)
    async def _login(_r: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(f"{exc.login}?next={quote(exc.next_url, safe='/')}", 303)

    @app.exception_handler(PageForbidden)
    async def _forbidden(r: Request, exc: PageForbidden) -> Response:
        return Ctx(r, exc.who).render("forbidden.html", status=403)

    @app.get("/lang/{to}", include_in_schema=False)
    def set_lang(to: str, request: Request, next: str | None = None) -> Response:
        resp = RedirectResponse(safe_next(next, "/"), 303)
        if to in LANGS:
            resp.set_cookie(LANG_COOKIE, to, max_age=365 * 86400, samesite="lax", path="/")
        return resp
