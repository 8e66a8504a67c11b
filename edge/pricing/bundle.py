"""Loading a rule bundle: TOML -> validated models -> frozen tables the engine runs on.

Validation happens once per bundle; every problem is reported with its key path so the
person editing the file knows which line to fix. The compiled ``RuleBundle`` holds plain
values only (no pydantic in the quote path).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from edge.pricing.schema import DAY_NAMES, BundleModel, CampaignModel, TariffModel


class BundleError(Exception):
    """A rule bundle was rejected; ``errors`` lists every (key path, reason)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors: list[tuple[str, str]] = list(errors)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{p}: {r}" if p else r for p, r in self.errors)


def _hm(s: str) -> int:
    h, m = s.split(":")
    return int(h) * 60 + int(m)


@dataclass(frozen=True, slots=True)
class Tariff:
    """One vehicle class's tariff, with the zero-fee threshold precomputed."""

    grace: int
    from_grace_end: bool
    unit: int
    rounding: str
    steps: tuple[tuple[int, Decimal], ...]  # (from minute after charge start, rate per unit)
    night: tuple[int, int, Decimal | None, Decimal | None] | None  # start, end, rate, flat
    daily_cap: Decimal | None
    calendar_cap: bool
    fee_factor: Decimal
    all_positive: bool  # every unit costs > 0, so the fee is 0 exactly when no unit is billed


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    by_minutes: bool
    minutes_per_point: int
    yuan_per_point: Decimal
    purchase_yuan_per_point: Decimal
    monthly_coupons: tuple[tuple[str, Decimal, int], ...]


@dataclass(frozen=True, slots=True)
class Campaign:
    name: str
    parking: bool
    purchase: bool
    multiplier: Decimal
    bonus: int
    tiers: frozenset[str] | None
    classes: frozenset[str] | None
    days: frozenset[str] | None
    window: tuple[int, int] | None
    date_from: date | None
    date_to: date | None
    min_minutes: int | None
    lanes: frozenset[str] | None
    first_visit: bool
    categories: frozenset[str] | None
    brands: frozenset[str] | None
    min_amount: Decimal | None
    group: str | None = None  # multiplier group; None = a group of its own


@dataclass(frozen=True)
class RuleBundle:
    """A validated, compiled rule bundle. Build it with ``parse_bundle`` / ``load_bundle``."""

    version: str
    effective_from: datetime
    tz: ZoneInfo
    site_id: str
    default_tier: str
    weekend_days: frozenset[int]
    holidays: frozenset[date]
    extra_workdays: frozenset[date]
    tariffs: Mapping[str, Tariff]
    tariff_history: tuple[tuple[datetime, Mapping[str, Tariff]], ...]
    tariff_basis_entry: bool
    no_entry_fee: Decimal
    pay_grace_minutes: int
    reentry_merge_minutes: int
    tiers: Mapping[str, Tier]
    coupons_first: bool
    min_points: int
    max_points_per_visit: int | None
    max_hours_per_visit: int | None
    monthly_cap_value: Decimal | None
    daily_cap_points: int | None
    max_coupons_per_visit: int
    expiry_mode: str
    annual_month: int
    annual_day: int
    rolling_months: int
    earn_daily_cap: int | None
    stack_multiply: bool
    parking_points_per_hour: Mapping[str, int]
    parking_min_minutes: int
    parking_max_hours: int | None
    purchase_min_spend: Decimal
    campaigns: tuple[Campaign, ...]
    parking_campaigns: tuple[Campaign, ...]
    purchase_campaigns: tuple[Campaign, ...]
    whitelist: Mapping[str, datetime | None]
    blacklist: frozenset[str]
    model: BundleModel
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)
    # multiplier groups whose campaigns take the highest multiplier (the rest multiply)
    max_groups: frozenset[str] = frozenset()

    @property
    def timezone(self) -> ZoneInfo:
        return self.tz

    @property
    def vehicle_classes(self) -> tuple[str, ...]:
        return tuple(self.tariffs)

    @property
    def tier_names(self) -> tuple[str, ...]:
        return tuple(self.tiers)

    def is_whitelisted(self, plate: str, at: datetime) -> bool:
        if plate not in self.whitelist:
            return False
        until = self.whitelist[plate]
        return until is None or at < until

    def is_blacklisted(self, plate: str) -> bool:
        return plate in self.blacklist

    def tier(self, name: str | None) -> Tier:
        return self.tiers.get(name or "", self.tiers[self.default_tier])

    def tariffs_for(self, entered: datetime | None, exited: datetime) -> Mapping[str, Tariff]:
        """The tariff table in effect at entry (or exit, as configured)."""
        at = entered if (self.tariff_basis_entry and entered is not None) else exited
        for until, table in self.tariff_history:
            if at < until:
                return table
        return self.tariffs


# --------------------------------------------------------------------------- errors
_MESSAGES = {
    "missing": "required",
    "extra_forbidden": "unknown key",
}


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "decimal-", "int-", "literal[")):
            continue
        else:
            out += ("." if out else "") + part
    return out


def _reason(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"must be one of {expected}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {
            "greater_than": ">",
            "greater_than_equal": ">=",
            "less_than": "<",
            "less_than_equal": "<=",
        }[kind]
        bound = next(iter(ctx.values()), "")
        return f"must be {op} {bound}"
    if kind == "value_error":
        return str(ctx.get("error", err.get("msg", "")))
    msg = str(err.get("msg", "invalid"))
    return msg[0].lower() + msg[1:] if msg else "invalid"


def _errors(exc: ValidationError) -> list[tuple[str, str]]:
    return [(_key_path(tuple(e.get("loc", ()))), _reason(e)) for e in exc.errors()]


# --------------------------------------------------------------------------- compile
def _compile_tariff(t: TariffModel) -> Tariff:
    if t.steps is not None:
        steps = tuple((s.from_minute, s.rate) for s in t.steps)
    else:
        assert t.rate is not None
        steps = ((0, t.rate),)
    night = None
    if t.night is not None:
        night = (_hm(t.night.start), _hm(t.night.end), t.night.rate, t.night.flat)
    positive = all(r > 0 for _, r in steps)
    if night is not None and night[2] is not None:
        positive = positive and night[2] > 0
    if night is not None and night[3] is not None:
        positive = positive and night[3] > 0
    positive = positive and (t.daily_cap is None or t.daily_cap > 0)
    return Tariff(
        grace=t.grace_minutes,
        from_grace_end=t.charge_from == "grace_end",
        unit=t.unit_minutes,
        rounding=t.rounding,
        steps=steps,
        night=night,
        daily_cap=t.daily_cap,
        calendar_cap=t.cap_period == "calendar_day",
        fee_factor=t.fee_factor,
        all_positive=positive,
    )


def _fs(v: list[str] | None) -> frozenset[str] | None:
    return frozenset(v) if v is not None else None


def _compile_campaign(c: CampaignModel) -> Campaign:
    return Campaign(
        name=c.name,
        parking=c.applies_to in ("parking", "both"),
        purchase=c.applies_to in ("purchase", "both"),
        multiplier=c.multiplier,
        bonus=c.bonus_points,
        tiers=_fs(c.tiers),
        classes=_fs(c.vehicle_classes),
        days=_fs(c.days),
        window=(_hm(c.time_window[0]), _hm(c.time_window[1])) if c.time_window else None,
        date_from=c.date_from,
        date_to=c.date_to,
        min_minutes=c.min_duration_minutes,
        lanes=_fs(c.lanes),
        first_visit=c.first_visit_of_day,
        categories=_fs(c.categories),
        brands=_fs(c.brands),
        min_amount=c.min_amount,
        group=c.group,
    )


def _cross_checks(m: BundleModel) -> list[tuple[str, str]]:
    errs: list[tuple[str, str]] = []
    try:
        ZoneInfo(m.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        errs.append(("timezone", f"unknown time zone {m.timezone!r}"))
    if m.default_tier not in m.tiers:
        errs.append(("default_tier", f"{m.default_tier!r} is not one of the tiers"))
    classes = set(m.tariffs)
    for cls in m.earn.parking.points_per_hour:
        if cls not in classes:
            errs.append((f"earn.parking.points_per_hour.{cls}", "no tariff for this vehicle class"))
        elif m.earn.parking.points_per_hour[cls] < 0:
            errs.append((f"earn.parking.points_per_hour.{cls}", "must be >= 0"))
    seen: set[str] = set()
    for i, c in enumerate(m.campaigns):
        if c.name in seen:
            errs.append((f"campaigns[{i}].name", f"duplicate campaign name {c.name!r}"))
        seen.add(c.name)
        for t in c.tiers or ():
            if t not in m.tiers:
                errs.append((f"campaigns[{i}].tiers", f"unknown tier {t!r}"))
        for v in c.vehicle_classes or ():
            if v not in classes:
                errs.append((f"campaigns[{i}].vehicle_classes", f"unknown vehicle class {v!r}"))
        if c.group is not None:
            if c.group not in m.earn.groups:
                errs.append((f"campaigns[{i}].group",
                             f"unknown multiplier group {c.group!r}; declare it as "
                             f"[earn.groups.{c.group}] with stacking = \"max\" or \"multiply\""))
            elif c.multiplier == 1:
                errs.append((f"campaigns[{i}].group",
                             "a group combines multipliers; this campaign has none"))
        if c.applies_to == "purchase" and c.min_duration_minutes is not None:
            errs.append((f"campaigns[{i}].min_duration_minutes", "only for parking campaigns"))
    used = {c.group for c in m.campaigns}
    for g in m.earn.groups:
        if g not in used:
            errs.append((f"earn.groups.{g}", "no campaign has this group (a typo?)"))
    prev: datetime | None = None
    for i, h in enumerate(m.previous_tariffs):
        for cls in classes - set(h.tariffs):
            errs.append((f"previous_tariffs[{i}].tariffs", f"missing vehicle class {cls!r}"))
        if h.until > m.effective_from:
            errs.append((f"previous_tariffs[{i}].until", "must not be after effective_from"))
        if prev is not None and h.until <= prev:
            errs.append((f"previous_tariffs[{i}].until", "must be later than the one before"))
        prev = h.until
    if m.redemption.max_hours_per_visit is not None:
        for name, tm in m.tiers.items():
            if tm.redeem != "minutes":
                errs.append(
                    (
                        f"tiers.{name}.redeem",
                        "redemption.max_hours_per_visit needs every tier in minutes mode",
                    )
                )
    plates = [e.plate for e in m.lists.whitelist]
    for i, p in enumerate(plates):
        if p in plates[:i]:
            errs.append((f"lists.whitelist[{i}].plate", f"duplicate plate {p!r}"))
    return errs


def parse_bundle(data: Mapping[str, Any]) -> RuleBundle:
    """Validate a bundle given as a dict (parsed TOML or a synced document)."""
    if not isinstance(data, Mapping):
        raise BundleError([("", "a rule bundle must be a table of sections")])
    try:
        m = BundleModel.model_validate(dict(data))
    except ValidationError as exc:
        raise BundleError(_errors(exc)) from None
    errs = _cross_checks(m)
    if errs:
        raise BundleError(errs)
    tz = ZoneInfo(m.timezone)
    tariffs = {k: _compile_tariff(v) for k, v in m.tariffs.items()}
    history = tuple(
        (h.until, {k: _compile_tariff(v) for k, v in h.tariffs.items()}) for h in m.previous_tariffs
    )
    tiers = {
        name: Tier(
            name=name,
            by_minutes=t.redeem == "minutes",
            minutes_per_point=t.minutes_per_point or 0,
            yuan_per_point=t.yuan_per_point or Decimal(0),
            purchase_yuan_per_point=t.purchase_yuan_per_point,
            monthly_coupons=tuple((c.kind, c.value, c.count) for c in t.monthly_coupons),
        )
        for name, t in m.tiers.items()
    }
    r = m.redemption
    campaigns = tuple(_compile_campaign(c) for c in m.campaigns)
    return RuleBundle(
        version=m.version,
        effective_from=m.effective_from,
        tz=tz,
        site_id=m.site_id,
        default_tier=m.default_tier,
        weekend_days=frozenset(DAY_NAMES.index(d) for d in m.calendar.weekend_days),
        holidays=frozenset(m.calendar.holidays),
        extra_workdays=frozenset(m.calendar.extra_workdays),
        tariffs=tariffs,
        tariff_history=history,
        tariff_basis_entry=m.billing.tariff_basis == "entry",
        no_entry_fee=m.billing.no_entry_fee,
        pay_grace_minutes=m.billing.pay_grace_minutes,
        reentry_merge_minutes=m.billing.reentry_merge_minutes,
        tiers=tiers,
        coupons_first=r.order == "coupons_first",
        min_points=r.min_points,
        max_points_per_visit=r.max_points_per_visit,
        max_hours_per_visit=r.max_hours_per_visit,
        monthly_cap_value=r.monthly_cap_value,
        daily_cap_points=r.daily_cap_points,
        max_coupons_per_visit=r.max_coupons_per_visit,
        expiry_mode=m.expiry.mode,
        annual_month=m.expiry.annual_month,
        annual_day=m.expiry.annual_day,
        rolling_months=m.expiry.rolling_months,
        earn_daily_cap=m.earn.daily_cap,
        stack_multiply=m.earn.stacking == "multiply",
        parking_points_per_hour=dict(m.earn.parking.points_per_hour),
        parking_min_minutes=m.earn.parking.min_minutes,
        parking_max_hours=m.earn.parking.max_hours,
        purchase_min_spend=m.earn.purchase.min_spend,
        campaigns=campaigns,
        parking_campaigns=tuple(c for c in campaigns if c.parking),
        purchase_campaigns=tuple(c for c in campaigns if c.purchase),
        whitelist={e.plate: e.until for e in m.lists.whitelist},
        blacklist=frozenset(e.plate for e in m.lists.blacklist),
        model=m,
        max_groups=frozenset(g for g, gm in m.earn.groups.items() if gm.stacking == "max"),
    )


def load_bundle(path: str | Path) -> RuleBundle:
    """Read and validate a rule bundle; ``BundleError`` names every bad key.

    TOML as written by hand; a ``.json`` file is the same tables as JSON (the form central
    signs and sends to the lanes, and offers as a download beside a forecast)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise BundleError([("", f"cannot read {p}: {exc.strerror or exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError([("", f"{p} is not UTF-8 text")]) from None
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BundleError([("", f"{p} is not valid JSON: {exc}")]) from None
        if not isinstance(data, dict):
            raise BundleError([("", f"{p}: a bundle is a JSON object")])
        return parse_bundle(data)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BundleError([("", f"{p} is not valid TOML: {exc}")]) from None
    return parse_bundle(data)
