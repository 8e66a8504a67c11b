"""The plate CRNN's second opinion on a PP-OCR read: a per-character vote within the grammar.

Why: PP-OCR's confident misreads (S/5, G/6, D/0 ...) are what is left after every choice of
crop (#15), and a recogniser trained on other pictures errs on other characters. Where the two
agree the read stands; where they disagree the position's confidence falls, so an unsure read
goes to the lane's safe policy (no points spent, the intercom) instead of a wrong member. The
CRNN may overturn a character only where the result is still a valid plate and its share of
the position's votes is the larger. ``second_opinion`` is pure; ``SecondOpinion`` runs the
CRNN (``plate_rec``) for the lane.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from edge.lpr.confidence import conditioned
from edge.lpr.grammar import PlateGrammar
from edge.lpr.voting import Vote

if TYPE_CHECKING:
    from edge.lpr.pipeline import PlateCandidate


@dataclass(frozen=True)
class Opinion:
    plate: str
    confidence: float  # the weakest position's share of its votes
    disagreed: tuple[int, ...]  # positions where the two read different characters


def second_opinion(plate: str, probs: Sequence[float], other: str,
                   other_probs: Sequence[float], grammar: PlateGrammar,
                   weight: float = 0.5, overturn: bool = True) -> Opinion:
    """Vote per position: PP-OCR's character with its probability, the CRNN's with its own
    times ``weight`` (< 1: the weaker voter). A read of another length has no per-character
    opinion and leaves the read as it is. The winner at a position must keep the plate valid
    (``allowed_at``). A position's confidence is its winner's own probability times the
    winner's share of the votes cast there: agreement leaves PP-OCR's figure as it was, a sure
    disagreement cuts it (0.99 against a CRNN at 0.9: 0.68), a faint one little (against 0.3:
    0.86). ``overturn=False``: PP-OCR's character stands even where it loses, with its share
    as the confidence (the read never changes, only its doubt)."""
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
        if not overturn:
            win, got = a, score[a]
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


@dataclass(frozen=True)
class Judged:
    """A vote after the second opinion, and whether the CRNN read exactly the voted plate."""

    vote: Vote
    agreed: bool


# the CRNN's vote against PP-OCR's, and doubt only (no overturned character): the setting
# that never lowers exact accuracy and still catches confident misreads (docs/lpr.md)
WEIGHT = 0.25
OVERTURN = False


class SecondOpinion:
    """The vote on the lane: the CRNN reads the best frame's crop within the grammar once per
    car, after the frames' own vote; a car whose read it doubts is published uncertain."""

    def __init__(self, grammar: PlateGrammar, weight: float = WEIGHT,
                 overturn: bool = OVERTURN, recogniser: Any | None = None) -> None:
        from edge.lpr.plate_rec import PlateRecogniser

        self.grammar = grammar
        self.weight = weight
        self.overturn = overturn
        self._rec = recogniser or PlateRecogniser()

    def apply(self, vote: Vote, best: PlateCandidate) -> Vote:
        """``vote`` after the CRNN's opinion on ``best.crop``: the same Vote when they agree,
        else a lower confidence (or, rarely, a character overturned, the old plate then the
        first alternative)."""
        return self.judge(vote, best).vote

    def judge(self, vote: Vote, best: PlateCandidate) -> Judged:
        """``apply``'s Vote, and whether the CRNN read the very plate voted (an early accept
        needs that: a read of another length has no per-character opinion, which is no
        agreement either)."""
        other = self._rec.read([best.crop], self.grammar)[0]
        return Judged(self._weigh(vote, best, other.text, other.probs),
                      other.text == vote.plate)

    def _weigh(self, vote: Vote, best: PlateCandidate, text: str,
               text_probs: Sequence[float]) -> Vote:
        """The vote after the CRNN's read ``text`` of the best crop (see ``apply``)."""
        n = len(vote.plate)
        probs = [vote.confidence] * n
        if best.plate == vote.plate:
            own = [c.prob for c in conditioned(best.plate, best.chars, self.grammar)]
            if len(own) == n:  # the best frame's figures, never above the vote's
                probs = [max(vote.confidence, p) for p in own]
        op = second_opinion(vote.plate, probs, text, text_probs, self.grammar,
                            self.weight, self.overturn)
        if not op.disagreed:
            return vote
        confidence = min(vote.confidence, op.confidence)
        if op.plate == vote.plate:
            return replace(vote, confidence=confidence)
        alts = (vote.plate, *(c for c in vote.candidates if c not in (vote.plate, op.plate)))
        return replace(vote, plate=op.plate, confidence=confidence, candidates=alts[:5])
