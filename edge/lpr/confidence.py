"""Per-character confidence conditioned on the plate grammar.

The recogniser's softmax spreads each step's probability over every character it can output
and the CTC blank. At the province position of a Chinese plate much of it goes to letters,
digits or blank, which the grammar rules out there, so the raw figure (豫 0.63 with the best
*legal* rival at 4e-5) says "unsure" about a read that is not in doubt. What a lane needs is
p(char | a legal character stands here) = p(char) / sum of p(legal characters at this step):
a read whose every position is unambiguous among legal characters is confident, and two legal
characters competing (新 0.59 / 浙 0.41) stay unsure. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from edge.lpr.grammar import CONFUSABLES, PlateGrammar
from edge.lpr.ocr import CharRead

# The conditioning trusts the OCR's split among legal characters only as far as the OCR put
# mass on legal characters at all: below this share the figure is p / LEGAL_FLOOR, not p / mass
# (a province picked out of 0.5 % residual mass is no evidence of a province).
LEGAL_FLOOR = 0.5
# A vote of several reads (``fused``) changes the first read's character only when the winner
# holds at least OVERTURN times its share (as ``Recogniser._constrained`` leaves two legal
# characters within 2x of each other unread).
OVERTURN = 2.0


def conditioned(
    plate: str, chars: Sequence[CharRead], grammar: PlateGrammar
) -> tuple[CharRead, ...]:
    """``chars`` with each ``prob`` (and runner-up) conditioned on the characters the grammar
    allows at that position of ``plate``; ``alts`` keep the OCR's raw distribution, so applying
    this twice gives the same figures. Unchanged when ``chars`` is not aligned with a valid
    ``plate``, and per character when the OCR gave no distribution (``alts`` empty) or the
    plate's character is not in it (a look-alike correction the OCR saw no evidence for)."""
    if len(chars) != len(plate) or not grammar.is_valid(plate):
        return tuple(chars)
    out = []
    for i, (ch, c, allowed) in enumerate(zip(plate, chars, grammar.allowed_at(plate), strict=True)):
        dist = _legal_mass(c.alts, allowed)
        p = dist.get(ch, 0.0)
        if p <= 0.0:
            out.append(c)
            continue
        legal = sorted(((q, k) for k, q in dist.items() if k != ch), reverse=True)
        # "no character here" (the blank) is a rival only when the plate without this one is
        # valid too (an 8th character read off the frame's edge)
        blank = c.blank if grammar.is_valid(plate[:i] + plate[i + 1 :]) else 0.0
        mass = max(p + sum(q for q, _ in legal) + blank, LEGAL_FLOOR)
        q2, k2 = legal[0] if legal else (0.0, "")
        out.append(CharRead(ch, min(1.0, p / mass), k2, q2 / mass, c.alts, c.x, c.blank))
    return tuple(out)


def _legal_mass(alts: Mapping[str, float], allowed: frozenset[str]) -> dict[str, float]:
    """The legal characters' distribution, each illegal character's mass shared equally by its
    legal look-alikes: an O in a serial slot is evidence of a 0 (as the grammar's correction
    assumes), a 0 in the city letter's slot of an O or a D, so a rival to a D read there."""
    out = {k: q for k, q in alts.items() if k in allowed}
    for k, q in alts.items():
        if k in allowed:
            continue
        subs = CONFUSABLES.get(k, frozenset()) & allowed
        for sub in subs:
            out[sub] = out.get(sub, 0.0) + q / len(subs)
    return out


def fused(
    plate: str, reads: Sequence[Sequence[CharRead]], grammar: PlateGrammar
) -> tuple[str, tuple[CharRead, ...]] | None:
    """Per-character vote of several reads of one plate (the same crop seen a little
    differently): at each position every read's distribution over the characters the grammar
    allows there (``plate``'s layout) counts once, as a share that sums to one, and the
    likeliest character wins. Reads not aligned with ``plate`` do not vote. The winner's
    ``prob`` is its mean share, so reads that disagree stay unsure. None when the vote is no
    valid plate. ``plate`` (the first read) keeps a character the vote does not clearly
    overturn (``OVERTURN``)."""
    if not grammar.is_valid(plate):
        return None
    voters = [r for r in reads if len(r) == len(plate)]
    if not voters:
        return None
    out = []
    for i, allowed in enumerate(grammar.allowed_at(plate)):
        share: dict[str, float] = {}
        for r in voters:
            c = r[i]
            dist = _legal_mass(c.alts, allowed) if c.alts else {c.char: c.prob}
            total = sum(dist.values())
            if total <= 0.0:
                continue
            for k, q in dist.items():
                share[k] = share.get(k, 0.0) + q / total
        if not share:
            return None
        ranked = sorted(share.items(), key=lambda kv: kv[1], reverse=True)
        if ranked[0][0] != plate[i] and ranked[0][1] < OVERTURN * share.get(plate[i], 0.0):
            # not clearly ahead of the first read's character: a coin flip stays as read
            ranked.sort(key=lambda kv: kv[0] != plate[i])
        ch, p = ranked[0]
        k2, q2 = ranked[1] if len(ranked) > 1 else ("", 0.0)
        first = voters[0][i]
        n = len(voters)
        out.append(CharRead(ch, p / n, k2, q2 / n, first.alts, first.x, first.blank))
    text = "".join(c.char for c in out)
    corrected = grammar.correct(text)
    if corrected is None or len(corrected) != len(out):
        return None
    return corrected, tuple(out)
