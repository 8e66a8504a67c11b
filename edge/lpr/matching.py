"""Safe matching of an exit read to the open sessions.

A wrong match charges one driver for another's stay or spends someone else's points, so the rules
are deliberately narrow: an exact match first; otherwise a *unique* open plate within one
confusable substitution (or among the read's own alternatives, or the grammar's forced readings)
is accepted but flagged; two or more is ambiguous and matches nothing. Only an exact match of a
certain read may spend points automatically; what the site does with the rest is the lane's
policy. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from edge.lpr.grammar import PlateGrammar, is_confusable, normalise_plate
from edge.lpr.source import PlateRead

MatchKind = Literal["exact", "fuzzy", "ambiguous", "none"]


@dataclass(frozen=True)
class ExitMatch:
    plate: str | None  # the open session's plate, None when ambiguous or none
    kind: MatchKind
    flagged: bool  # a person should look at this exit (fuzzy, ambiguous or uncertain read)
    spend_points_ok: bool  # only an exact match of a certain read
    candidates: tuple[str, ...]  # the open plates considered close, best first


def one_confusable_apart(a: str, b: str) -> bool:
    """Same length, exactly one differing position, and that pair is a listed look-alike."""
    if len(a) != len(b) or a == b:
        return False
    diffs = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
    return len(diffs) == 1 and is_confusable(*diffs[0])


def match_exit(read: PlateRead, open_plates: Iterable[str], grammar: PlateGrammar) -> ExitMatch:
    """Match ``read`` against the plates of open sessions (see the module docstring)."""
    opened: dict[str, None] = {}
    for p in open_plates:
        n = normalise_plate(p)
        if n:
            opened.setdefault(n, None)
    plate = normalise_plate(read.plate)
    if not plate or not opened:
        return ExitMatch(None, "none", bool(plate) and read.uncertain, False, ())

    if plate in opened:
        return ExitMatch(
            plate=plate,
            kind="exact",
            flagged=read.uncertain,
            spend_points_ok=not read.uncertain,
            candidates=(plate,),
        )

    alternatives = {normalise_plate(c) for c in read.candidates} | set(grammar.readings(plate))
    alternatives.discard(plate)
    close = [p for p in opened if one_confusable_apart(plate, p) or p in alternatives]
    # Best first: the read's own alternatives in their order, then the rest by text.
    order = {normalise_plate(c): i for i, c in enumerate(read.candidates)}
    close.sort(key=lambda p: (order.get(p, len(order)), p))
    if len(close) == 1:
        return ExitMatch(close[0], "fuzzy", True, False, (close[0],))
    if len(close) > 1:
        return ExitMatch(None, "ambiguous", True, False, tuple(close))
    return ExitMatch(None, "none", read.uncertain, False, ())
