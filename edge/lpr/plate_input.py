"""The one check every plate passes where it enters the lane (#12 item 2).

Why: a 300-character plate typed or pushed at a lane was stored, then refused by central's
codec, and the lane resent that batch for ever. Each plate source (camera push, on-box read,
the technician's ``lane plate``) calls ``accept_plate`` before a ``PlateRead`` exists; a plate
that fails is refused with the reason, counted in ``parkedge_bad_input_total{source=...}`` and
the lane goes on. The limits themselves are ``edge.fields`` (shared with sync and central).
"""

from __future__ import annotations

import unicodedata

from edge import metrics
from edge.fields import FieldError, check_plate, normalise_plate

__all__ = ["FieldError", "accept_plate"]


def accept_plate(raw: str, source: str) -> str:
    """The normal form of ``raw``, or FieldError (counted under ``source``).

    Control and format characters (C0/C1 controls, DEL, zero-width and bidi marks) are refused
    before normalising: normalising would silently drop some of them (tab) and keep others.
    """
    try:
        if not isinstance(raw, str):
            raise FieldError(f"plate: expected a string, got {type(raw).__name__}")
        if len(raw) > 4 * 64:  # not worth normalising; the message must not echo it all
            raise FieldError(f"plate: {len(raw)} characters, far over the limit")
        bad = next((c for c in raw if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co")), None)
        if bad is not None:
            raise FieldError(f"plate: control character U+{ord(bad):04X} is not allowed")
        return check_plate(normalise_plate(raw))
    except FieldError:
        metrics.BAD_INPUT.labels(source=source).inc()
        raise

