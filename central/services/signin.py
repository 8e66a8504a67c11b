"""Signing in staff and members: the throttle, the credential check, the session.

One implementation for the JSON API and the pages (they differ only in how they answer):
a refusal raises ``SignInRefused`` after noting the failure, so every way in counts against
the same limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from central.config.models import WebConfig
from central.db.models import Member, StaffUser
from central.services import audit, members, sessions
from central.services.passwords import verify_password


@dataclass
class SignInRefused(Exception):
    """``throttled`` (too many failures for the account or the address in the window) or
    ``wrong_credentials``; ``kind`` is ``staff`` or ``member`` (the metrics' label)."""

    why: Literal["throttled", "wrong_credentials"]
    kind: str


def _guard(s: Session, kind: str, who: str, client: str, now: datetime,
           web: WebConfig) -> list[str]:
    keys = [f"{kind}:{who}", f"ip:{client}"]
    if any(sessions.failures(s, k, now, web.login_window_minutes) >= web.login_max_failures
           for k in keys):
        raise SignInRefused("throttled", kind)
    return keys


def _refuse(s: Session, kind: str, keys: list[str], now: datetime) -> SignInRefused:
    for k in keys:
        sessions.note_failure(s, k, now)
    return SignInRefused("wrong_credentials", kind)


def staff(s: Session, username: str, password: str, *, client: str, now: datetime,
          web: WebConfig, via: str | None = None) -> tuple[StaffUser, sessions.NewSession]:
    """A staff session, its sign-in in the audit log (``via`` says which way, if not the
    API)."""
    keys = _guard(s, "staff", username, client, now, web)
    u = s.get(StaffUser, username) if username else None
    ok = verify_password(u.password_hash if u else None, password)
    if u is None or not ok or u.disabled:
        raise _refuse(s, "staff", keys, now)
    sessions.clear_failures(s, keys[0])
    new = sessions.open_session(s, "staff", u.username, now, web.session_hours)
    audit.record(s, actor=f"staff:{u.username}", action="staff.login",
                 target=f"user:{u.username}", at=now,
                 after={"ip": client} | ({"via": via} if via else {}))
    return u, new


def member(s: Session, phone: str, *, password: str | None, code: str | None, client: str,
           now: datetime, web: WebConfig) -> tuple[Member, sessions.NewSession]:
    """A member session from the password set at enrolment, else a one-time code staff
    handed over (used up by this sign-in)."""
    keys = _guard(s, "member", phone, client, now, web)
    m = s.scalar(select(Member).where(Member.phone == phone)) if phone else None
    ok = password is not None and verify_password(m.password_hash if m else None, password)
    if not ok and code is not None and m is not None:
        ok = members.use_code(s, m.member_id, code, now)
    if m is None or not ok or m.blocked:
        raise _refuse(s, "member", keys, now)
    sessions.clear_failures(s, keys[0])
    return m, sessions.open_session(s, "member", m.member_id, now, web.session_hours)
