"""European country grammars a site configures: "sk", "cz", or several as "eu:sk,cz".

A lane in Slovakia reads mostly Slovak plates, and Czech ones near the border; their layouts
and the letters each country issues tell, per position, which of O/0, I/1, B/8 can stand
there, so ``PlateGrammar.correct`` settles a look-alike wherever only one reading is legal.
Plates of other countries and personalised plates fit no layout: they come out as the OCR read
them, marked invalid (``PlateCandidate.valid``), which is right for a foreign car at a barrier.

Sources (layouts and letters):
- Slovakia: since 1997 LL-DDDLL (district code, three digits, two series letters assigned
  alphabetically); since January 2023 the same LLDDDLL layout with state-wide letters from
  AA-001AA (en.wikipedia.org/wiki/Vehicle_registration_plates_of_Slovakia). No letter is
  documented as withheld: O is issued (since 2004 the plate font draws 0 and O differently),
  so a 0 read in a letter slot is O or D, which the OCR's alternatives decide. The pre-1997
  LL-DDDD plates expired on 1 January 2005: not a layout. Personalised plates (district code +
  five characters) fit any seven characters: left out, else every read would be valid as read
  and nothing corrected.
- Czech Republic: since 2001 DLD DDDD, and DLL DDDD once a region's digit series ran out
  (1AA 0000 after 9A9 9999); the first digit 1-9, the second character the region letter
  (A B C E H J K L M P S T U Z); G, O, Q and W never used (confusable with C, 0 and each other)
  (en.wikipedia.org/wiki/Vehicle_registration_plates_of_the_Czech_Republic and the Czech
  article it cites). The Czechoslovak plates issued until 2001 (two-letter district code, an
  optional series letter, four digits: "BSE 55-79") stay valid in the Czech Republic; only the
  seven-character form is a layout: a six-character one would let the pipeline's span search
  (``Recogniser._plate_span``) cut a seven-character read with one look-alike wrong ("PP587A0")
  to a six-character "plate" ("PP5870") instead of correcting it.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge.lpr.grammar import DIGITS, LETTERS, PlateGrammar

SK_LETTERS = LETTERS
CZ_LETTERS = LETTERS - frozenset("GOQW")
CZ_REGIONS = frozenset("ABCEHJKLMPSTUZ")
CZ_FIRST = DIGITS - {"0"}  # series start at 1x0 0001
# District codes on the 1960-2001 plates of the Czech lands (lotsberg.net/data/czech/legenda.html,
# "districts (okres) included" per region; Prague's codes start with A: "AZ 17-32"). An old
# plate starts with one of their first letters: never I, so "IB25790" is no old plate but a
# misread 1B25790.
CZ_OLD_DISTRICTS = (
    "CB CK JH PI PT ST TA BM BO BK BV HO VY ZN BE BN KD KH KO MB ME NB PB RA PH PZ CV DC LN LT MO"
    " TP UL CL JN LB SM BR FM KI NJ OP OV JE OL PR PV SU KM UH VS ZL HB JI PE TR ZR CR PU SY UO"
    " HK JC NA RK TU DO KT PM PJ PS RO TC CH KV SO"
)
CZ_OLD_FIRST = frozenset("A") | frozenset(code[0] for code in CZ_OLD_DISTRICTS.split())

_L, _D = SK_LETTERS, DIGITS
# country → (layout name, per-position allowed characters)
_LAYOUTS: dict[str, tuple[tuple[str, tuple[frozenset[str], ...]], ...]] = {
    "sk": (("sk", (_L, _L, _D, _D, _D, _L, _L)),),
    "cz": (
        ("cz", (CZ_FIRST, CZ_REGIONS, DIGITS, _D, _D, _D, _D)),
        ("cz-two-letter", (CZ_FIRST, CZ_REGIONS, CZ_LETTERS, _D, _D, _D, _D)),
        ("cz-pre-2001", (CZ_OLD_FIRST, LETTERS, LETTERS, _D, _D, _D, _D)),
    ),
}
COUNTRIES = tuple(_LAYOUTS)


def eu_grammar(countries: Sequence[str]) -> PlateGrammar:
    """The layouts of the given countries ("sk", "cz"), in that order (the first country's
    layout wins where a plate fits two)."""
    keys = [c.strip().lower() for c in countries if c.strip()]
    unknown = sorted(set(keys) - set(_LAYOUTS))
    if not keys or unknown:
        raise ValueError(
            f"EU grammar: countries must be some of {', '.join(COUNTRIES)}; got {list(countries)}"
        )
    pairs = [pair for key in dict.fromkeys(keys) for pair in _LAYOUTS[key]]
    return PlateGrammar(
        name="eu:" + ",".join(dict.fromkeys(keys)),
        layouts=tuple(layout for _, layout in pairs),
        layout_names=tuple(name for name, _ in pairs),
    )
