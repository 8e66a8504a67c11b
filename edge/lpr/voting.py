"""Per-character voting across the frames of one vehicle.

One frame can misread one character (glare, a bolt on the plate); the next usually does not.
Each frame contributes, per position, its character's probability (and its runner-up's), both
conditioned on the characters the grammar allows there (``confidence.conditioned``, the figure
``PlateCandidate.confidence`` uses); the position's winner is the character with the largest
sum, and its confidence is that sum over the number of frames. The plate's confidence is its
weakest position's. A frame's runner-up counts at most as much as the frame's own character
(a frame never outvotes its own read), and equal sums go to the character more frames read,
then to the first frame's. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from edge.lpr.confidence import conditioned
from edge.lpr.grammar import PlateGrammar
from edge.lpr.ocr import CharRead


@dataclass(frozen=True)
class FrameRead:
    """The best plate candidate of one frame."""

    plate: str
    chars: tuple[CharRead, ...]  # aligned with ``plate`` when lengths agree
    valid: bool
    colour: str | None = None


@dataclass(frozen=True)
class Vote:
    plate: str
    confidence: float  # 0..1
    frames: int  # frames that voted on this plate's length
    colour: str | None
    candidates: tuple[str, ...]  # alternatives, best first (never includes ``plate``)


def vote(reads: Sequence[FrameRead], grammar: PlateGrammar) -> Vote | None:
    """Combine frame reads; None when no frame read anything."""
    reads = [r for r in reads if r.plate]
    if not reads:
        return None
    # Vote among reads of the most common length, valid reads first (they carry more weight).
    pool = [r for r in reads if r.valid] or reads
    length = Counter(len(r.plate) for r in pool).most_common(1)[0][0]
    voters = [r for r in pool if len(r.plate) == length]
    n = len(voters)

    winners: list[str] = []
    confs: list[float] = []
    seconds: list[tuple[str, float]] = []
    # the same per-character figure as a frame's confidence (applying it twice changes nothing)
    aligned = [conditioned(r.plate, r.chars, grammar) if r.valid else r.chars for r in voters]
    for i in range(length):
        score: dict[str, float] = defaultdict(float)
        read_by: dict[str, int] = defaultdict(int)  # frames that read this character here
        first_read: dict[str, int] = {}
        for j, (r, chars) in enumerate(zip(voters, aligned, strict=True)):
            ch = r.plate[i]
            read_by[ch] += 1
            first_read.setdefault(ch, j)
            if len(chars) == length:
                cr = chars[i]
                score[ch] += cr.prob
                if cr.runner_up and cr.runner_up != ch:
                    # a frame's doubt counts for its rival, but never more than its own
                    # character: a read that kept a character against a likelier rival (the
                    # second look's OVERTURN, a grammar correction) is not overturned by
                    # itself; the position stays as unsure as the frame was
                    score[cr.runner_up] += min(cr.runner_up_prob, cr.prob)
            else:
                score[ch] += 0.5  # no per-character probabilities: a half vote
        # equal scores: the character read by more frames, then the one read first (the read as
        # kept), then by character: never the order the dict was filled in
        ranked = sorted(score.items(), key=lambda kv: (-round(kv[1], 9), -read_by[kv[0]],
                                                        first_read.get(kv[0], n), kv[0]))
        winners.append(ranked[0][0])
        confs.append(min(1.0, ranked[0][1] / n))
        seconds.append(ranked[1] if len(ranked) > 1 else ("", 0.0))

    text = "".join(winners)
    corrected = grammar.correct(text)
    confidence = min(confs)
    if corrected is None:
        confidence *= 0.5
    plate = corrected or text

    alts: list[str] = []
    for seen, _count in Counter(r.plate for r in reads).most_common():
        if seen != plate and seen not in alts:
            alts.append(seen)
    # The runner-up at the weakest position is the most likely alternative reading.
    weakest = min(range(length), key=lambda i: confs[i])
    ch2 = seconds[weakest][0]
    if ch2:
        alt = plate[:weakest] + ch2 + plate[weakest + 1 :]
        if alt != plate and alt not in alts and grammar.is_valid(alt):
            alts.insert(0, alt)
    colours = Counter(r.colour for r in voters if r.colour)
    colour = colours.most_common(1)[0][0] if colours else None
    return Vote(plate, confidence, n, colour, tuple(alts[:5]))
