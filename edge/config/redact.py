"""Redaction of secret-looking keys in dumps and log records (shared by config and logs)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from edge.config.secret import REDACTED

# Key names whose values are never printed, whatever their type.
SECRET_KEY_RE = re.compile(
    r"(pass(word|wd)?|secret|token|hmac|api_?key|private_?key|credential|authorization)",
    re.IGNORECASE,
)


def is_secret_key(key: str) -> bool:
    """True if a mapping key names something that must not be printed."""
    return bool(SECRET_KEY_RE.search(key))


def redact_value(key: str, value: Any) -> Any:
    """Redact ``value`` if ``key`` looks secret, recursing into mappings and lists."""
    if is_secret_key(key):
        # An {env}/{file} reference is not itself secret and helps the technician.
        if isinstance(value, Mapping) and set(value) <= {"env", "file"}:
            return dict(value)
        return REDACTED if value not in (None, "") else value
    if isinstance(value, Mapping):
        return redact_mapping(value)
    if isinstance(value, list | tuple):
        return [redact_value(key, v) for v in value]
    return value


def redact_mapping(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with every secret-named key's value replaced by ``***``."""
    return {k: redact_value(str(k), v) for k, v in data.items()}
