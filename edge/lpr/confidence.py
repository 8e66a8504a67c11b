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
        subs = sorted(CONFUSABLES.get(k, frozenset()) & allowed)  # sorted: same sums every run
        for sub in subs:
            out[sub] = out.get(sub, 0.0) + q / len(subs)
    return out


def fused(
    plate: str, reads: Sequence[Sequence[CharRead]], grammar: PlateGrammar
) -> tuple[str, tuple[CharRead, ...]] | None:
    """Per-character vote of several reads of one plate (the same crop seen a little
    differently): at each position every read's distribution over the characters the grammar
    allows there (``plate``'s layout) counts once, as a share that sums to one, and the
    likeliest character wins. Reads not aligned with ``plate`` do not vote. None when the vote
    is no valid plate. ``plate`` (the first read, the one kept) keeps a character the vote does
    not clearly overturn (``OVERTURN``), and wins every tie (a tie at the top between two other
    characters is no clear winner either), whatever order the distributions came in.

    Each character's ``alts`` are the readers' combined distribution (the mean share), not the
    first read's alone, so conditioning the result again (``conditioned``, as ``vote`` does per
    frame) keeps the readers' disagreement: the winner's ``prob`` is its mean share (less the
    CTC blank where that is a rival, as for any read), and three reads that disagree stay
    unsure wherever the figure is taken again."""
    if not grammar.is_valid(plate):
        return None
    voters = [r for r in reads if len(r) == len(plate)]
    if not voters:
        return None
    n = len(voters)
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
        kept = plate[i]
        # best first; on equal shares the kept character first, then by character (not by the
        # order the dicts happened to be filled in)
        ranked = sorted(share.items(), key=lambda kv: (-kv[1], kv[0] != kept, kv[0]))
        top, top_share = ranked[0]
        if top != kept and (
            top_share < OVERTURN * share.get(kept, 0.0)  # not clearly ahead of the read
            or (len(ranked) > 1 and _same(top_share, ranked[1][1]))  # no single winner
        ):
            ranked.sort(key=lambda kv: kv[0] != kept)  # stable: the rest stay as ranked
        ch, p = ranked[0]
        k2, q2 = ranked[1] if len(ranked) > 1 else ("", 0.0)
        first = voters[0][i]
        blank = sum(r[i].blank for r in voters) / n
        mean = {k: q / n for k, q in share.items()}
        out.append(CharRead(ch, p / n, k2, q2 / n, mean, first.x, blank))
    text = "".join(c.char for c in out)
    corrected = grammar.correct(text)
    if corrected is None or len(corrected) != len(out):
        return None
    # the figures a later ``conditioned`` gives (the blank's rivalry included): the same
    # whoever takes them again
    return corrected, conditioned(corrected, out, grammar)


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
