"""Password hashing (argon2id via argon2-cffi) for staff and members, and token digests."""

from __future__ import annotations

import hashlib

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from central.services.errors import Invalid

_ph = PasswordHasher()
# A hash to verify against when the account does not exist, so a login for an unknown
# name takes as long as one with a wrong password.
_DUMMY = _ph.hash("not-a-real-password")

MIN_PASSWORD = 10
MAX_PASSWORD = 256


def hash_password(password: str, field: str = "password") -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise Invalid(field, f"must be {MIN_PASSWORD}..{MAX_PASSWORD} characters")
    return _ph.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    try:
        return _ph.verify(stored or _DUMMY, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def digest(token: str) -> str:
    """What the database keeps of a session token, API key or one-time code."""
    return hashlib.sha256(token.encode()).hexdigest()
