"""The rule bundle as written on disk: pydantic models, one per TOML section.

Only used to validate a bundle once (``parse_bundle``); the engine runs on the compiled
tables in ``bundle.py``. Every field has a description: ``docs/rules.md`` mirrors them.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_TAGS = (*DAY_NAMES, "weekend", "workday", "holiday")

Money = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=4)]
Positive = Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=4)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _check_hhmm(v: str) -> str:
    if not _TIME.match(v):
        raise ValueError("must be a 24-hour time HH:MM, e.g. 22:00")
    return v


def _aware(v: datetime) -> datetime:
    if v.tzinfo is None or v.utcoffset() is None:
        raise ValueError("must include a UTC offset, e.g. 2026-01-01T00:00:00+08:00")
    return v


class CalendarModel(_Model):
    weekend_days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default=["sat", "sun"], description="Days of the week tagged 'weekend'."
    )
    holidays: list[date] = Field(default=[], description="Public holidays, tagged 'holiday'.")
    extra_workdays: list[date] = Field(
        default=[], description="Weekend dates worked instead of a holiday (调休): not 'weekend'."
    )


class StepModel(_Model):
    from_minute: int = Field(
        ge=0, description="Minutes after charging starts when this rate begins."
    )
    rate: Money = Field(description="Yuan per billing unit from then on.")


class NightModel(_Model):
    start: str = Field(description="Local start of the night window, HH:MM.")
    end: str = Field(description="Local end of the night window, HH:MM (may be after midnight).")
    rate: Money | None = Field(default=None, description="Yuan per billing unit at night.")
    flat: Money | None = Field(
        default=None,
        description="Flat yuan for each night the stay is billed in (instead of a rate).",
    )

    _hhmm = field_validator("start", "end")(_check_hhmm)

    @model_validator(mode="after")
    def _one_price(self) -> NightModel:
        if (self.rate is None) == (self.flat is None):
            raise ValueError("give exactly one of rate or flat")
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self


class TariffModel(_Model):
    grace_minutes: int = Field(default=0, ge=0, le=1440, description="Free period in minutes.")
    charge_from: Literal["entry", "grace_end"] = Field(
        default="entry", description="After the grace period, charge from minute 0 or from its end."
    )
    unit_minutes: Literal[1, 15, 30, 60] = Field(default=1, description="Billing unit.")
    rounding: Literal["up", "down", "nearest"] = Field(
        default="up", description="How a part unit is billed."
    )
    rate: Money | None = Field(default=None, description="Yuan per unit (single-rate tariff).")
    steps: list[StepModel] | None = Field(
        default=None, description="Step tariff, e.g. first hour 5, each further hour 3."
    )
    night: NightModel | None = Field(default=None, description="Night window with its own price.")
    daily_cap: Money | None = Field(default=None, description="Most yuan charged per cap day.")
    cap_period: Literal["calendar_day", "rolling_24h"] = Field(
        default="calendar_day",
        description="Cap per calendar day in the site time zone, or per 24 h from entry.",
    )
    fee_factor: Annotated[Decimal, Field(gt=0, le=1)] = Field(
        default=Decimal(1), description="Multiplier on the capped fee (e.g. 0.5 new-energy)."
    )

    @model_validator(mode="after")
    def _one_rate(self) -> TariffModel:
        if (self.rate is None) == (self.steps is None):
            raise ValueError("give exactly one of rate or steps")
        if self.steps is not None:
            if not self.steps:
                raise ValueError("steps must not be empty")
            if self.steps[0].from_minute != 0:
                raise ValueError("the first step must have from_minute = 0")
            mins = [s.from_minute for s in self.steps]
            if mins != sorted(set(mins)):
                raise ValueError("steps must have strictly increasing from_minute")
        return self


class TariffHistoryModel(_Model):
    until: datetime = Field(description="These tariffs applied to entries before this instant.")
    tariffs: dict[str, TariffModel] = Field(description="Tariffs by vehicle class.")

    _aware = field_validator("until")(_aware)


class BillingModel(_Model):
    tariff_basis: Literal["entry", "exit"] = Field(
        default="entry", description="Use the tariff in effect at entry or at exit."
    )
    no_entry_fee: Money = Field(default=Decimal(0), description="Flat fee with no entry record.")
    pay_grace_minutes: int = Field(
        default=15, ge=0, le=240, description="Minutes to leave after paying at a pay station."
    )
    reentry_merge_minutes: int = Field(
        default=0,
        ge=0,
        le=1440,
        description="A re-entry this soon after the last exit continues the same stay.",
    )


class CouponPerkModel(_Model):
    kind: Literal["hours", "amount", "free"] = Field(description="Coupon kind.")
    value: Money = Field(default=Decimal(0), description="Hours or yuan (0 for free).")
    count: int = Field(default=1, ge=1, le=31, description="How many each month.")


class TierModel(_Model):
    redeem: Literal["minutes", "money"] = Field(
        default="minutes", description="A point buys minutes off the stay, or yuan off the fee."
    )
    minutes_per_point: int | None = Field(
        default=None, ge=1, le=1440, description="Minutes one point buys."
    )
    yuan_per_point: Positive | None = Field(default=None, description="Yuan one point buys.")
    purchase_yuan_per_point: Positive = Field(
        default=Decimal(1), description="Purchase yuan per point earned (fractions dropped)."
    )
    monthly_coupons: list[CouponPerkModel] = Field(default=[], description="Monthly tier perks.")

    @model_validator(mode="after")
    def _conversion(self) -> TierModel:
        if self.redeem == "minutes" and self.minutes_per_point is None:
            raise ValueError("redeem = 'minutes' needs minutes_per_point")
        if self.redeem == "money" and self.yuan_per_point is None:
            raise ValueError("redeem = 'money' needs yuan_per_point")
        return self


class RedemptionModel(_Model):
    order: Literal["coupons_first", "points_first"] = Field(
        default="coupons_first", description="Apply coupons before points, or after."
    )
    min_points: int = Field(default=1, ge=1, description="Smallest redemption in points.")
    max_points_per_visit: int | None = Field(default=None, ge=1, description="Per-visit cap.")
    max_hours_per_visit: int | None = Field(
        default=None, ge=1, description="Per-visit cap in hours bought with points (minutes mode)."
    )
    monthly_cap_value: Money | None = Field(
        default=None, description="Most yuan of parking points may pay per calendar month."
    )
    daily_cap_points: int | None = Field(default=None, ge=1, description="Most points per day.")
    max_coupons_per_visit: int = Field(default=1, ge=0, le=10, description="Coupons per exit.")


class ExpiryModel(_Model):
    mode: Literal["none", "annual", "rolling"] = Field(default="none", description="Expiry scheme.")
    annual_month: int = Field(
        default=3,
        ge=1,
        le=12,
        description="Annual: points of year Y expire after this month of Y+1.",
    )
    annual_day: int = Field(default=31, ge=1, le=31, description="... and this day (end of day).")
    rolling_months: int = Field(
        default=12, ge=1, le=120, description="Rolling: months after earning."
    )


class ParkingEarnModel(_Model):
    points_per_hour: dict[str, int] = Field(
        default={}, description="Base points per full hour by vehicle class (missing = 0)."
    )
    min_minutes: int = Field(default=0, ge=0, description="Shorter stays earn nothing.")
    max_hours: int | None = Field(default=None, ge=1, description="Hours counted at most.")


class PurchaseEarnModel(_Model):
    min_spend: Money = Field(default=Decimal(0), description="Smaller purchases earn nothing.")


class MultiplierGroupModel(_Model):
    stacking: Literal["max", "multiply"] = Field(
        description="How the multipliers of this group's campaigns that fire together combine: "
        "'max' takes the highest (a Saturday that is also a holiday counts once), "
        "'multiply' takes their product."
    )


class EarnModel(_Model):
    daily_cap: int | None = Field(default=None, ge=1, description="Most points earned per day.")
    stacking: Literal["multiply", "max"] = Field(
        default="multiply",
        description="Combine the groups' multipliers (an ungrouped campaign is a group of its "
        "own) by product or take the largest.",
    )
    groups: dict[str, MultiplierGroupModel] = Field(
        default={},
        description="Multiplier groups, named by campaigns' 'group' key, each with its stacking.",
    )
    parking: ParkingEarnModel = Field(default_factory=ParkingEarnModel)
    purchase: PurchaseEarnModel = Field(default_factory=PurchaseEarnModel)


class CampaignModel(_Model):
    name: str = Field(min_length=1, max_length=64, description="Shown in results and reports.")
    applies_to: Literal["parking", "purchase", "both"] = Field(description="What it rewards.")
    multiplier: Annotated[Decimal, Field(ge=0, le=100)] = Field(
        default=Decimal(1), description="Multiplies the base points."
    )
    bonus_points: int = Field(default=0, ge=0, le=100000, description="Added once per visit.")
    group: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Multiplier group declared under [earn.groups]; none = a group of its own.",
    )
    tiers: list[str] | None = Field(default=None, description="Only these tiers.")
    vehicle_classes: list[str] | None = Field(default=None, description="Only these classes.")
    days: list[str] | None = Field(default=None, description="Day tags: mon..sun, weekend, ...")
    time_window: tuple[str, str] | None = Field(
        default=None, description="Local [start, end) time of day, HH:MM."
    )
    date_from: date | None = Field(default=None, description="First local date (inclusive).")
    date_to: date | None = Field(default=None, description="Last local date (inclusive).")
    min_duration_minutes: int | None = Field(default=None, ge=0, description="Parking only.")
    lanes: list[str] | None = Field(default=None, description="Only these lane ids.")
    first_visit_of_day: bool = Field(default=False, description="Only the day's first visit.")
    categories: list[str] | None = Field(default=None, description="Purchase tenant categories.")
    brands: list[str] | None = Field(default=None, description="Purchase brands.")
    min_amount: Money | None = Field(default=None, description="Purchase minimum.")

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            bad = [d for d in v if d not in DAY_TAGS]
            if bad:
                raise ValueError(f"unknown day {bad[0]!r}; use {', '.join(DAY_TAGS)}")
        return v

    @field_validator("time_window")
    @classmethod
    def _window(cls, v: tuple[str, str] | None) -> tuple[str, str] | None:
        if v is not None:
            _check_hhmm(v[0])
            _check_hhmm(v[1])
            if v[0] == v[1]:
                raise ValueError("start and end must differ")
        return v

    @model_validator(mode="after")
    def _dates(self) -> CampaignModel:
        if self.date_from and self.date_to and self.date_to < self.date_from:
            raise ValueError("date_to is before date_from")
        if self.multiplier == 1 and self.bonus_points == 0:
            raise ValueError("a campaign needs a multiplier other than 1 or bonus_points")
        return self


class ListEntryModel(_Model):
    plate: str = Field(min_length=2, max_length=16, description="Plate as read.")
    until: datetime | None = Field(default=None, description="Whitelist end (exclusive).")
    note: str = Field(default="", description="Why (for people).")

    _aware = field_validator("until")(_aware)


class ListsModel(_Model):
    whitelist: list[ListEntryModel] = Field(default=[], description="Park free (monthly pass).")
    blacklist: list[ListEntryModel] = Field(default=[], description="Flagged at the lane.")


class BundleModel(_Model):
    version: str = Field(min_length=1, max_length=64, description="Shown in every quote.")
    effective_from: datetime = Field(description="When this bundle takes over.")
    timezone: str = Field(description="IANA zone of the site, e.g. Asia/Shanghai.")
    site_id: str = Field(default="", description="Site this bundle is for.")
    default_tier: str = Field(description="Tier used for an unknown tier name.")
    calendar: CalendarModel = Field(default_factory=CalendarModel)
    billing: BillingModel = Field(default_factory=BillingModel)
    tariffs: dict[str, TariffModel] = Field(min_length=1, description="By vehicle class.")
    previous_tariffs: list[TariffHistoryModel] = Field(
        default=[], description="Older tariffs for stays that entered before a change."
    )
    tiers: dict[str, TierModel] = Field(min_length=1, description="Member tiers.")
    redemption: RedemptionModel = Field(default_factory=RedemptionModel)
    expiry: ExpiryModel = Field(default_factory=ExpiryModel)
    earn: EarnModel = Field(default_factory=EarnModel)
    campaigns: list[CampaignModel] = Field(default=[], description="Earning campaigns.")
    lists: ListsModel = Field(default_factory=ListsModel)

    _aware = field_validator("effective_from")(_aware)
