"""Staff accounts: roles, argon2 passwords, disabling; and what each role may do."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from central.db.models import StaffUser
from central.services.errors import Invalid, NotFound, Refused
from central.services.passwords import hash_password

ROLES = ("marketing", "operations", "auditor", "admin")
USERNAME = re.compile(r"^[a-z][a-z0-9_.-]{1,63}$")

#: permission -> roles holding it. Every role reads; writes are split by job.
PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset(ROLES),
    "members:write": frozenset({"operations", "admin"}),
    "points:adjust": frozenset({"operations"}),
    "shops:write": frozenset({"operations", "admin"}),
    "lanes:write": frozenset({"operations"}),
    "rewards:write": frozenset({"marketing"}),
    "campaigns:write": frozenset({"marketing"}),
    "users:write": frozenset({"admin"}),
}


def allowed(role: str, permission: str) -> bool:
    return role in PERMISSIONS.get(permission, frozenset())


def add_user(s: Session, username: str, role: str, password: str, now: datetime) -> StaffUser:
    if not USERNAME.fullmatch(username):
        raise Invalid("username", "2..64 of a-z 0-9 _ . -, starting with a letter")
    if role not in ROLES:
        raise Invalid("role", f"must be one of {', '.join(ROLES)}")
    if s.get(StaffUser, username) is not None:
        raise Refused("username", f"user {username!r} exists")
    u = StaffUser(username=username, role=role, password_hash=hash_password(password),
                  disabled=False, created_at=now)
    s.add(u)
    return u


def get_user(s: Session, username: str) -> StaffUser:
    u = s.get(StaffUser, username)
    if u is None:
        raise NotFound("username", f"unknown user {username!r}")
    return u


def set_password(s: Session, username: str, password: str) -> None:
    get_user(s, username).password_hash = hash_password(password)


def set_disabled(s: Session, username: str, disabled: bool = True) -> None:
    get_user(s, username).disabled = disabled


def admin_count(s: Session) -> int:
    return int(s.scalar(select(func.count()).select_from(StaffUser).where(
        StaffUser.role == "admin", StaffUser.disabled.is_(False))) or 0)
