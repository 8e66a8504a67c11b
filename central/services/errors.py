"""What a service refuses, and which field is to blame: the web layer turns these into 4xx
with the field named, the CLI into a message and exit 1."""

from __future__ import annotations


class ServiceError(Exception):
    status = 422

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class Invalid(ServiceError):
    """The input is malformed or out of range."""


class NotFound(ServiceError):
    """An id names nothing (unknown member, shop, reward)."""

    status = 404


class Refused(ServiceError):
    """Well-formed but against the rules right now (not enough points, a cap, a reused key)."""

    status = 409


class Forbidden(ServiceError):
    status = 403
