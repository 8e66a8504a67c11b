"""The plate CRNN's second opinion on a PP-OCR read: a per-character vote within the grammar.

Why: PP-OCR's confident misreads (S/5, G/6, D/0 ...) are what is left after every choice of
crop (#15), and a recogniser trained on other pictures errs on other characters. Where the two
agree the read stands; where they disagree the position's confidence falls, so an unsure read
goes to the lane's safe policy (no points spent, the intercom) instead of a wrong member. The
CRNN may overturn a character only where the result is still a valid plate and its share of
the position's votes is the larger. Pure: no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from edge.lpr.grammar import PlateGrammar


@dataclass(frozen=True)
class Opinion:
    plate: str
    confidence: float  # the weakest position's share of its votes
    disagreed: tuple[int, ...]  # positions where the two read different characters


def second_opinion(plate: str, probs: Sequence[float], other: str,
                   other_probs: Sequence[float], grammar: PlateGrammar,
                   weight: float = 0.5) -> Opinion:
    """Vote per position: PP-OCR's character with its probability, the CRNN's with its own
    times ``weight`` (< 1: the weaker voter). A read of another length has no per-character
    opinion and leaves the read as it is. The winner at a position must keep the plate valid
    (``allowed_at``). A position's confidence is its winner's own probability times the
    winner's share of the votes cast there: agreement leaves PP-OCR's figure as it was, a sure
    disagreement cuts it (0.99 against a CRNN at 0.9: 0.68), a faint one little (against 0.3:
    0.86)."""
    base = min(probs) if probs else 0.0
    if len(other) != len(plate) or len(other_probs) != len(other):
        return Opinion(plate, base, ())
    allowed = grammar.allowed_at(plate)
    chars = list(plate)
    confs: list[float] = []
    disagreed: list[int] = []
    for i, (a, pa, b, pb) in enumerate(zip(plate, probs, other, other_probs, strict=True)):
        score: dict[str, float] = defaultdict(float)
        score[a] += pa
        if not allowed[i] or b in allowed[i]:
            score[b] += weight * pb
        win, got = max(score.items(), key=lambda kv: kv[1])
        chars[i] = win
        cast = sum(score.values())
        own = pa if win == a else pb
        confs.append(own * got / cast if cast > 0 else 0.0)
        if a != b:
            disagreed.append(i)
    voted = "".join(chars)
    if voted != plate and not grammar.is_valid(voted):  # two changes that only hold alone
        return Opinion(plate, min(base, min(confs)), tuple(disagreed))
    return Opinion(voted, min(min(confs), 1.0), tuple(disagreed))
