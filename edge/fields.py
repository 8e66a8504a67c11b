"""Field limits shared by everything that takes a plate or an id across a boundary.

Why one module: the lane, the sync codec and central must agree on what a plate or an id may
be. When the lane accepted a 300-character plate that central's codec refused, the lane resent
that batch for ever. A value is checked once where it enters (camera push, on-box read, a
typed plate, an MQTT message, an HTTP request) against these definitions, and every later
stage can rely on it. Pure: imports nothing of ``edge``.
"""

from __future__ import annotations

import re
import unicodedata

#: The longest plate any grammar here knows is 8 characters (a Chinese new-energy plate);
#: EU and US plates stay under 10 without separators. 16 leaves room for special plates
#: without letting a free-text field through.
PLATE_MAX_CHARS = 16

#: Ids (lane, site, member, session, event, coupon, reward ...): printable ASCII words.
ID_MAX_CHARS = 64
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}")

#: A plate is upper-case Latin letters, digits and CJK ideographs (province abbreviations and
#: the suffixes 警 学 挂 港 澳 使 领 ...). No spaces, separators, punctuation or controls.
_PLATE_CHAR = r"[A-Z0-9\u4e00-\u9fff]"
_PLATE_RE = re.compile(f"{_PLATE_CHAR}{{1,{PLATE_MAX_CHARS}}}")


class FieldError(ValueError):
    """A value that crossed a boundary is not of its field's form (the message names why)."""


def normalise_plate(text: str) -> str:
    """NFKC (full-width letters become ASCII), upper case, separators (space, -, ·, .) dropped."""
    t = unicodedata.normalize("NFKC", text).upper()
    return "".join(ch for ch in t if ch not in " \t-·.•_")


def check_plate(plate: object) -> str:
    """Return ``plate`` if it is a plate in normal form, else raise FieldError.

    Callers normalise first (``normalise_plate``); this refuses what normalising cannot fix.
    """
    if not isinstance(plate, str):
        raise FieldError(f"plate: expected a string, got {type(plate).__name__}")
    if not plate:
        raise FieldError("plate: empty")
    if len(plate) > PLATE_MAX_CHARS:
        raise FieldError(f"plate: {len(plate)} characters, at most {PLATE_MAX_CHARS}")
    if _PLATE_RE.fullmatch(plate) is None:
        bad = next((c for c in plate if not re.fullmatch(_PLATE_CHAR, c)), "?")
        raise FieldError(f"plate: character {bad!r} (U+{ord(bad):04X}) is not allowed")
    return plate


def is_plate(plate: object) -> bool:
    try:
        check_plate(plate)
    except FieldError:
        return False
    return True


def check_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is an id (ASCII word, 1..64 characters), else raise FieldError."""
    if not isinstance(value, str):
        raise FieldError(f"{what}: expected a string, got {type(value).__name__}")
    if _ID_RE.fullmatch(value) is None:
        shown = value[:40]
        raise FieldError(
            f"{what}: {shown!r} is not 1..{ID_MAX_CHARS} characters of A-Z a-z 0-9 _ . : @ -")
    return value
