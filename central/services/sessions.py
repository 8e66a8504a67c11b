"""Web sessions and login throttling, kept in the database so every worker sees them."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from central.db.models import LoginFailure, WebSession
from central.services.passwords import digest


@dataclass(frozen=True)
class NewSession:
    token: str  # goes into the cookie; the database keeps only its digest
    csrf_token: str


def open_session(s: Session, kind: str, subject: str, now: datetime, hours: int) -> NewSession:
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    s.add(WebSession(token_hash=digest(token), subject_kind=kind, subject_id=subject,
                     csrf_token=csrf, created_at=now, expires_at=now + timedelta(hours=hours)))
    return NewSession(token, csrf)


def find_session(s: Session, token: str, now: datetime) -> WebSession | None:
    row = s.get(WebSession, digest(token))
    if row is None or row.expires_at <= now:
        return None
    return row


def close_session(s: Session, token: str) -> None:
    s.execute(delete(WebSession).where(WebSession.token_hash == digest(token)))


def close_sessions_of(s: Session, kind: str, subject: str) -> None:
    s.execute(delete(WebSession).where(WebSession.subject_kind == kind,
                                       WebSession.subject_id == subject))


def failures(s: Session, key: str, now: datetime, window_minutes: int) -> int:
    return int(s.scalar(select(func.count()).select_from(LoginFailure).where(
        LoginFailure.key == key, LoginFailure.at > now - timedelta(minutes=window_minutes)))
        or 0)


def note_failure(s: Session, key: str, now: datetime) -> None:
    s.add(LoginFailure(key=key, at=now))


def clear_failures(s: Session, key: str) -> None:
    s.execute(delete(LoginFailure).where(LoginFailure.key == key))
