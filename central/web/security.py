"""Who is asking: staff and member sessions (cookies), CSRF, POS API keys, body size.

Sessions live in the database (every worker sees them); the cookie carries a random token
of which only the digest is stored. Cookies are ``Secure; HttpOnly; SameSite=Strict``.
Every state-changing request with a session must echo the session's CSRF token in the
``X-CSRF-Token`` header. POS requests carry an ``X-API-Key`` instead and no cookie.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from central.db.models import Member, Shop, StaffUser
from central.services import purchases, sessions, staff

if TYPE_CHECKING:
    from central.app import Central

STAFF_COOKIE = "pe_staff"
MEMBER_COOKIE = "pe_member"
SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def central_of(request: Request) -> Central:
    c: Central = request.app.state.central
    return c


def db(request: Request) -> Iterator[Session]:
    """One transaction per request: committed on success, rolled back on any error."""
    with central_of(request).tx() as s:
        yield s


# scope="function": commit (or fail) before the response goes out, never after a 2xx
DB = Annotated[Session, Depends(db, scope="function")]


def http_error(status: int, field: str, message: str, error: str = "refused") -> HTTPException:
    return HTTPException(status, {"error": error, "field": field, "message": message})


@dataclass(frozen=True)
class StaffPrincipal:
    username: str
    role: str
    csrf_token: str

    @property
    def actor(self) -> str:
        return f"staff:{self.username}"


@dataclass(frozen=True)
class MemberPrincipal:
    member_id: str
    csrf_token: str


def _session(request: Request, s: Session, cookie: str, kind: str,
             form_token: str | None = None) -> Any:
    """The session row, or None. A state-changing request must carry the session's CSRF
    token: in the ``X-CSRF-Token`` header (API) or, for the pages' HTML forms, in the form's
    ``csrf_token`` field (``form_token``, read by the page dependency); either must equal
    the token of THIS session, compared in constant time."""
    token = request.cookies.get(cookie)
    if not token:
        return None
    row = sessions.find_session(s, token, central_of(request).clock())
    if row is None or row.subject_kind != kind:
        return None
    if request.method not in SAFE:
        sent = request.headers.get("x-csrf-token") or form_token or ""
        if not secrets.compare_digest(sent.encode(), row.csrf_token.encode()):
            raise http_error(403, "X-CSRF-Token", "missing or wrong CSRF token", "csrf")
    return row


def require_staff(permission: str) -> Callable[..., StaffPrincipal]:
    """Dependency: a signed-in, enabled staff member whose role holds ``permission``."""

    def dep(request: Request, s: DB) -> StaffPrincipal:
        row = _session(request, s, STAFF_COOKIE, "staff")
        if row is None:
            raise http_error(401, "session", "sign in as staff", "unauthenticated")
        u = s.get(StaffUser, row.subject_id)
        if u is None or u.disabled:
            raise http_error(401, "session", "account disabled", "unauthenticated")
        if not staff.allowed(u.role, permission):
            raise http_error(403, "role", f"role {u.role} may not {permission}", "forbidden")
        return StaffPrincipal(u.username, u.role, row.csrf_token)

    return dep


def require_member(request: Request, s: DB) -> MemberPrincipal:
    row = _session(request, s, MEMBER_COOKIE, "member")
    if row is None:
        raise http_error(401, "session", "sign in as a member", "unauthenticated")
    m = s.get(Member, row.subject_id)
    if m is None:
        raise http_error(401, "session", "unknown member", "unauthenticated")
    return MemberPrincipal(m.member_id, row.csrf_token)


def require_shop(request: Request, s: DB) -> Shop:
    key = request.headers.get("x-api-key")
    if not key:
        raise http_error(401, "X-API-Key", "missing shop API key", "unauthenticated")
    shop = purchases.shop_for_key(s, key)
    if shop is None:
        raise http_error(401, "X-API-Key", "unknown or disabled shop API key",
                         "unauthenticated")
    return shop


async def csv_body(request: Request) -> str:
    """A ``text/csv`` body as text (415 for another type, 422 if not UTF-8). Read on the
    event loop, as a dependency (``CSV_BODY``), so that the handler taking it is a plain
    ``def`` run in the thread pool: thousands of rows checked and recorded must not stall
    the process's other requests (central/web/pages: ``FORM``)."""
    if not request.headers.get("content-type", "").startswith("text/csv"):
        raise http_error(415, "content-type", "send text/csv", "invalid")
    try:
        return (await request.body()).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise http_error(422, "body", "not UTF-8", "invalid") from None


CSV_BODY = Annotated[str, Depends(csv_body)]
AMember = Annotated[MemberPrincipal, Depends(require_member)]
AShop = Annotated[Shop, Depends(require_shop)]
Reader = Annotated[StaffPrincipal, Depends(require_staff("read"))]
MembersWrite = Annotated[StaffPrincipal, Depends(require_staff("members:write"))]
PointsAdjust = Annotated[StaffPrincipal, Depends(require_staff("points:adjust"))]
RewardsWrite = Annotated[StaffPrincipal, Depends(require_staff("rewards:write"))]
ShopsWrite = Annotated[StaffPrincipal, Depends(require_staff("shops:write"))]
UsersWrite = Annotated[StaffPrincipal, Depends(require_staff("users:write"))]


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, whether announced or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _too_large(send, self.limit)
                return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return msg

        async def tracked_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counted, tracked_send)
        except _TooLarge:
            if not started:
                await _too_large(send, self.limit)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    from central import metrics

    metrics.REFUSED.labels("unmatched", "too_large").inc()
    body = (b'{"error":"too_large","field":"body","message":"request body over '
            + str(limit).encode() + b' bytes"}')
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
