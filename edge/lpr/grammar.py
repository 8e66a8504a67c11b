"""Plate grammars: what a valid plate looks like, and position-aware confusable correction.

OCR confuses shapes (O/0, I/1, B/8, Z/2, S/5, D/0). A grammar knows, per position, which
characters are legal, so a read can be corrected *only where exactly one legal reading exists*:
"沪AB1Z34" stays as read (every character is legal where it stands), while "沪A1234O" becomes
"沪A12340" because O is not legal in a serial position and 0 is its only legal look-alike.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DIGITS = frozenset("0123456789")
LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Mainland serials never use I or O (too close to 1 and 0).
CN_LETTERS = LETTERS - {"I", "O"}
CN_ALNUM = CN_LETTERS | DIGITS
# The city letter may be O (public-security plates such as 粤O...), never I.
CN_CITY = LETTERS - {"I"}
CN_PROVINCES = frozenset("京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼")


def _letters_to(last: str, extra: str = "") -> frozenset[str]:
    """City letters A..``last`` (never I), plus ``extra``."""
    return frozenset(c for c in "ABCDEFGHJKLMNPQRSTUVWXYZ" if c <= last) | frozenset(extra)


# The city letters (发牌机关代号) each province issues, from the public GA 36 code lists
# (zh.wikipedia.org "中国大陆车辆号牌地区代码" / "中华人民共和国民用机动车号牌", as of 2024), so a
# read outside them is impossible (浙 issues A..L: 浙Q is a misread 皖Q or 新Q). Permissive by
# design, because a wrong table loses real plates: every letter up to the province's highest (a
# gap such as 晋G, a former prefecture, stays legal), letters of abolished prefectures kept
# (皖Q 巢湖 until 2011), O everywhere (public-security organs' series, 粤O), and every letter
# for the municipalities, Hebei (former prefectures' series), Shandong, Guangdong and Sichuan,
# whose lists run to Y/Z or which we cannot vouch for.
CN_CITY_LETTERS: dict[str, frozenset[str]] = {
    **{p: CN_CITY for p in "京津沪渝冀鲁粤川"},
    "晋": _letters_to("M"),
    "蒙": _letters_to("M"),
    "辽": _letters_to("P"),
    "吉": _letters_to("K"),
    "黑": _letters_to("R"),
    "苏": _letters_to("N", "U"),
    "浙": _letters_to("L"),
    "皖": _letters_to("S"),
    "闽": _letters_to("K"),
    "赣": _letters_to("M"),
    "豫": _letters_to("U"),
    "鄂": _letters_to("W"),
    "湘": _letters_to("U"),
    "桂": _letters_to("R"),
    "琼": _letters_to("F"),
    "贵": _letters_to("J"),
    "云": _letters_to("S"),
    "藏": _letters_to("J"),
    "陕": _letters_to("V"),
    "甘": _letters_to("P"),
    "青": _letters_to("H"),
    "宁": _letters_to("E"),
    "新": _letters_to("R"),
}
CN_CITY_LETTERS = {p: s | {"O"} for p, s in CN_CITY_LETTERS.items()}
CN_SUFFIXES = frozenset("学警挂港澳")
NEV_MARKS = frozenset("DF")  # new-energy: D pure electric, F hybrid

CONFUSABLE_PAIRS: tuple[tuple[str, str], ...] = (
    ("O", "0"),
    ("I", "1"),
    ("B", "8"),
    ("Z", "2"),
    ("S", "5"),
    ("D", "0"),
)


def _confusable_map(pairs: Iterable[tuple[str, str]]) -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    for a, b in pairs:
        out.setdefault(a, set()).add(b)
        out.setdefault(b, set()).add(a)
    return {k: frozenset(v) for k, v in out.items()}


CONFUSABLES: dict[str, frozenset[str]] = _confusable_map(CONFUSABLE_PAIRS)

# Separators seen on printed plates and in camera/OCR output; removed by normalisation.
_SEPARATORS = frozenset(" \t\r\n·•・.-_–—:|/\\'\"`,")
_MAX_READINGS = 16  # bounds the combinatorics of a badly read plate


def normalise_plate(text: str) -> str:
    """Canonical plate text: NFKC (full-width → ASCII), upper case, separators removed.

    ``normalise_plate("沪A·12345 ") == "沪A12345"``. Never raises on str input; returns "" when
    nothing is left.
    """
    if not isinstance(text, str):
        raise TypeError(f"plate text must be str, got {type(text).__name__}")
    out = text
    for _ in range(4):  # NFKC can expose new separators (e.g. "¯" → " ̄"): run to a fixed point
        folded = unicodedata.normalize("NFKC", out).upper()
        nxt = "".join(ch for ch in folded if ch not in _SEPARATORS and not ch.isspace())
        if nxt == out:
            break
        out = nxt
    return out


def is_confusable(a: str, b: str) -> bool:
    """True when two single characters are a listed OCR look-alike pair."""
    return b in CONFUSABLES.get(a, frozenset())


@dataclass(frozen=True)
class PlateGrammar:
    """A plate format: one or more layouts, each a sequence of allowed-character sets.

    ``colours`` maps a layout index to the plate colours that layout is printed in (a hint for
    the finder and for display; the finder's measured colour wins).
    """

    name: str
    layouts: tuple[tuple[frozenset[str], ...], ...]
    layout_names: tuple[str, ...] = ()
    layout_colours: tuple[tuple[str, ...], ...] = ()
    # the thinnest plate's height / width as issued (GA 36: a new-energy plate, 140 x 480 mm);
    # None where plates of many shapes are read (Latin: EU 110 x 520, US 6 x 12 in)
    min_aspect: float | None = None

    def __post_init__(self) -> None:
        if not self.layouts:
            raise ValueError(f"grammar {self.name!r} has no layouts")
        if any(not layout for layout in self.layouts):
            raise ValueError(f"grammar {self.name!r} has an empty layout")

    @property
    def lengths(self) -> frozenset[int]:
        return frozenset(len(layout) for layout in self.layouts)

    @property
    def alphabet(self) -> frozenset[str]:
        """Every character some layout allows somewhere (the OCR output filter)."""
        return frozenset().union(*(s for layout in self.layouts for s in layout))

    def layout_of(self, plate: str) -> int | None:
        """Index of the first layout the (normalised) plate fits exactly, or None."""
        for i, layout in enumerate(self.layouts):
            if len(layout) != len(plate):
                continue
            if all(c in s for c, s in zip(plate, layout, strict=True)):
                return i
        return None

    def allowed_at(self, plate: str) -> tuple[frozenset[str], ...]:
        """Per position of a (normalised) plate, the characters that keep it valid with every
        other position as read: the set its confidence is conditioned on. Empty where no
        layout of that length fits the rest."""
        out = []
        for i in range(len(plate)):
            sets = [
                layout[i]
                for layout in self.layouts
                if len(layout) == len(plate)
                and all(
                    c in s for j, (c, s) in enumerate(zip(plate, layout, strict=True)) if j != i
                )
            ]
            out.append(frozenset().union(*sets))
        return tuple(out)

    def is_valid(self, plate: str) -> bool:
        return self.layout_of(normalise_plate(plate)) is not None

    def readings(self, raw: str) -> tuple[str, ...]:
        """Every valid plate reachable from ``raw`` by swapping illegal characters for legal
        look-alikes, position by position. Characters already legal are never changed.

        Exactly one reading means the correction is forced; several mean it is ambiguous; none
        means ``raw`` cannot be this grammar's plate.
        """
        text = normalise_plate(raw)
        found: list[str] = []
        for layout in self.layouts:
            if len(layout) != len(text):
                continue
            options: list[Sequence[str]] = []
            for ch, allowed in zip(text, layout, strict=True):
                if ch in allowed:
                    options.append((ch,))
                    continue
                subs = sorted(CONFUSABLES.get(ch, frozenset()) & allowed)
                if not subs:
                    break
                options.append(subs)
            else:
                for combo in itertools.islice(itertools.product(*options), _MAX_READINGS):
                    reading = "".join(combo)
                    if reading not in found:
                        found.append(reading)
        return tuple(found)

    def correct(self, raw: str) -> str | None:
        """``raw`` itself when it is valid as read (a legal character is never changed, even
        when another layout would read it differently), else the one valid reading of it, else
        None (none or more than one)."""
        text = normalise_plate(raw)
        if self.layout_of(text) is not None:
            return text
        readings = self.readings(text)
        return readings[0] if len(readings) == 1 else None

    def colours(self, plate: str) -> tuple[str, ...]:
        """Plate colours this plate's layout is printed in ("" layout unknown → ())."""
        i = self.layout_of(normalise_plate(plate))
        if i is None or i >= len(self.layout_colours):
            return ()
        return self.layout_colours[i]

    def in_colour(self, colour: str) -> PlateGrammar:
        """This grammar with only the layouts printed in ``colour`` (a measured blue plate is
        never a new-energy one); itself when no layout is known to be."""
        keep = [i for i, c in enumerate(self.layout_colours) if colour in c]
        if not keep:
            return self
        return PlateGrammar(
            name=f"{self.name}:{colour}",
            layouts=tuple(self.layouts[i] for i in keep),
            layout_names=tuple(self.layout_names[i] for i in keep if i < len(self.layout_names)),
            layout_colours=tuple(self.layout_colours[i] for i in keep),
            min_aspect=self.min_aspect,
        )

    def kind(self, plate: str) -> str | None:
        """Name of the layout (e.g. "new-energy-small"), or None when invalid."""
        i = self.layout_of(normalise_plate(plate))
        if i is None or i >= len(self.layout_names):
            return None
        return self.layout_names[i]


def cn_grammar() -> PlateGrammar:
    """Mainland China (GA 36): province + city letter + 5 serials; new-energy 6 serials;
    a 学/警/挂/港/澳 suffix in place of the last serial. The city letter depends on the
    province (``CN_CITY_LETTERS``): each layout is repeated per group of provinces that issue
    the same letters, so positions stay independent sets."""
    a, d, f, s = CN_ALNUM, DIGITS, NEV_MARKS, CN_SUFFIXES
    groups: dict[frozenset[str], set[str]] = {}
    for prov, letters in CN_CITY_LETTERS.items():
        groups.setdefault(letters, set()).add(prov)
    kinds = (
        ("ordinary", ("blue", "yellow"), (a, a, a, a, a)),
        # coach 学 / police 警 / trailer 挂 / HK 港 / Macau 澳
        ("suffixed", ("yellow", "white", "black"), (a, a, a, a, s)),
        ("new-energy-small", ("green",), (f, a, d, d, d, d)),  # D/F, alnum, 4 digits
        ("new-energy-large", ("green",), (d, d, d, d, d, f)),  # 5 digits, D/F
    )
    layouts, names, colours = [], [], []
    for name, colour, rest in kinds:
        for letters, provs in sorted(groups.items(), key=lambda g: sorted(g[1])):
            layouts.append((frozenset(provs), letters, *(frozenset(x) for x in rest)))
            names.append(name)
            colours.append(colour)
    return PlateGrammar(
        name="cn",
        layouts=tuple(layouts),
        layout_names=tuple(names),
        layout_colours=tuple(colours),
        min_aspect=140 / 480,
    )


_LATIN_CLASSES = {"L": LETTERS, "D": DIGITS, "A": LETTERS | DIGITS}


def latin_grammar(
    patterns: Sequence[str] | None = None, *, min_len: int = 2, max_len: int = 8
) -> PlateGrammar:
    """Generic Latin plates. ``patterns`` like ``("LLLDDDD", "LLLDLDD")`` (L letter, D digit,
    A either) enable position-aware correction for one country; without patterns any
    ``min_len``..``max_len`` alphanumerics are valid and nothing is corrected (every character is
    legal everywhere, so no position allows only one reading)."""
    if patterns:
        layouts = []
        for pat in patterns:
            bad = sorted(set(pat.upper()) - set(_LATIN_CLASSES))
            if bad or not pat:
                raise ValueError(f"latin pattern {pat!r}: use only L, D, A (bad: {bad})")
            layouts.append(tuple(_LATIN_CLASSES[ch] for ch in pat.upper()))
        return PlateGrammar(name="latin", layouts=tuple(layouts), layout_names=tuple(patterns))
    if not 1 <= min_len <= max_len <= 12:
        raise ValueError(
            f"latin grammar: need 1 <= min_len <= max_len <= 12, got {min_len}..{max_len}"
        )
    any_ = _LATIN_CLASSES["A"]
    layouts_any = tuple(tuple(any_ for _ in range(n)) for n in range(min_len, max_len + 1))
    return PlateGrammar(name="latin", layouts=layouts_any)


def grammar_by_name(name: str, patterns: Sequence[str] | None = None) -> PlateGrammar:
    """Config hook: "cn", "latin", "latin:LLLDDDD,LLLDLDD" (country patterns inline), or a
    European site's countries: "sk", "cz", "eu:sk,cz" (``eu_plates``)."""
    key, _, inline = name.strip().partition(":")
    key = key.lower()
    if key == "cn" and not inline:
        return cn_grammar()
    if key == "eu" or (key in ("sk", "cz") and not inline):
        from edge.lpr.eu_plates import eu_grammar  # imports this module: load it late

        return eu_grammar(inline.split(",") if key == "eu" else [key])
    if key == "latin":
        pats = [p.strip() for p in inline.split(",") if p.strip()] if inline else patterns
        return latin_grammar(pats)
    raise ValueError(
        f"unknown plate grammar {name!r}: expected 'cn', 'latin', 'latin:PATTERNS', 'sk', 'cz'"
        " or 'eu:sk,cz'"
    )
