"""Earning points: for a parking stay at the lane, and for a purchase in the mall.

Both paths share the campaign matcher, the stacking of multipliers and the daily cap, and
both name every rule that fired so marketing can see why a number came out.
"""

from __future__ import annotations

from calendar import monthrange
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo

from edge.pricing.bundle import Campaign, RuleBundle
from edge.pricing.calendar import add_months, day_tags, end_of_local_day, local_instant
from edge.pricing.checks import check_instant, check_member, check_money
from edge.pricing.types import MemberSnapshot, PurchaseEarn


@dataclass(frozen=True, slots=True)
class EarnResult:
    points: int
    fired: tuple[str, ...]
    en: tuple[str, ...]
    zh: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EarnContext:
    """What campaigns may look at, computed once per quote or purchase."""

    local: datetime
    tags: frozenset[str]
    tier: str
    vehicle_class: str | None = None
    minutes: int | None = None
    lane_id: str = ""
    first_visit: bool = False
    category: str | None = None
    brand: str | None = None
    amount: Decimal | None = None


def context_at(rules: RuleBundle, when: datetime, tier: str, **kw: object) -> EarnContext:
    local = when.astimezone(rules.tz)
    tags = day_tags(local.date(), rules.weekend_days, rules.holidays, rules.extra_workdays)
    return EarnContext(local=local, tags=tags, tier=tier, **kw)  # type: ignore[arg-type]


def _matches(c: Campaign, ctx: EarnContext, parking: bool) -> bool:
    if not (c.parking if parking else c.purchase):
        return False
    if c.tiers is not None and ctx.tier not in c.tiers:
        return False
    d: date = ctx.local.date()
    if c.date_from is not None and d < c.date_from:
        return False
    if c.date_to is not None and d > c.date_to:
        return False
    if c.days is not None and not (c.days & ctx.tags):
        return False
    if c.window is not None:
        m = ctx.local.hour * 60 + ctx.local.minute
        s, e = c.window
        if not (s <= m < e if s < e else (m >= s or m < e)):
            return False
    if c.lanes is not None and ctx.lane_id not in c.lanes:
        return False
    if parking:
        if c.classes is not None and ctx.vehicle_class not in c.classes:
            return False
        if c.min_minutes is not None and (ctx.minutes or 0) < c.min_minutes:
            return False
        if c.first_visit and not ctx.first_visit:
            return False
    else:
        if c.first_visit:
            return False
        if c.categories is not None and ctx.category not in c.categories:
            return False
        if c.brands is not None and ctx.brand not in c.brands:
            return False
        if c.min_amount is not None and (ctx.amount or Decimal(0)) < c.min_amount:
            return False
    return True


def _multipliers(rules: RuleBundle, matched: list[Campaign]
                 ) -> tuple[Decimal, dict[str, Campaign]]:
    """The combined multiplier, and each max group's winner (losers do not count).

    Within a group declared ``stacking = "max"`` the highest multiplier counts (the first
    listed on a tie); in a "multiply" group they multiply. Groups (an ungrouped campaign is a
    group of its own) then combine by ``[earn] stacking``.
    """
    groups: dict[str, Decimal] = {}
    winners: dict[str, Campaign] = {}
    for c in matched:
        if c.multiplier == 1:
            continue
        key = c.group if c.group is not None else "\0" + c.name
        if c.group in rules.max_groups:
            w = winners.get(key)
            if w is None or c.multiplier > w.multiplier:
                winners[key] = c
                groups[key] = c.multiplier
        else:
            groups[key] = groups.get(key, Decimal(1)) * c.multiplier
    mult = Decimal(1)
    for v in groups.values():
        mult = mult * v if rules.stack_multiply else max(mult, v)
    return mult, winners


def _apply(rules: RuleBundle, base: int, ctx: EarnContext, parking: bool, *,
           bonuses: bool, earned_today: int, fired: list[str], en: list[str], zh: list[str],
           explain: bool = True) -> int:
    matched = [c for c in (rules.parking_campaigns if parking else rules.purchase_campaigns)
               if _matches(c, ctx, parking)]
    mult, winners = _multipliers(rules, matched)
    bonus = 0
    for c in matched:
        counts = c.multiplier != 1
        w = winners.get(c.group) if c.group is not None else None
        if counts and w is not None and w is not c:
            counts = False
            if explain:
                en.append(f"campaign {c.name}: x{c.multiplier} not stacked, group {c.group} "
                          f"takes the highest ({w.name} x{w.multiplier})")
                zh.append(f"活动 {c.name}: ×{c.multiplier} 不叠加, {c.group} 组取最高 "
                          f"({w.name} ×{w.multiplier})")
        has_bonus = bool(c.bonus and bonuses)
        if has_bonus:
            bonus += c.bonus
        if not (counts or has_bonus):
            continue
        fired.append(c.name)
        if explain:
            x = [f"x{c.multiplier}"] if counts else []
            b = [f"+{c.bonus}"] if has_bonus else []
            en.append(f"campaign {c.name}: " + " ".join(x + b))
            zh.append(f"活动 {c.name}: " + " ".join([v.replace("x", "×") for v in x]
                                                   + [v + "分" for v in b]))
    points = int(base * mult) + bonus
    cap = rules.earn_daily_cap
    if cap is not None and points > 0:
        room = max(0, cap - max(0, earned_today))  # a revocation never widens the cap
        if points > room:
            fired.append("cap:daily_earn")
            en.append(f"daily earning cap {cap}: {points} -> {room}")
            zh.append(f"每日积分上限 {cap}分: {points} → {room}")
            points = room
    return points


def earn_for_stay(rules: RuleBundle, ctx: EarnContext, member: MemberSnapshot, *,
                  merged: bool, explain: bool = True) -> EarnResult:
    """Points a completed stay earns: base by hours and class, campaigns, daily cap."""
    fired: list[str] = []
    en: list[str] = []
    zh: list[str] = []
    minutes = ctx.minutes or 0
    per_hour = rules.parking_points_per_hour.get(ctx.vehicle_class or "", 0)
    base = 0
    if minutes >= rules.parking_min_minutes and per_hour > 0:
        hours = minutes // 60
        if rules.parking_max_hours is not None:
            hours = min(hours, rules.parking_max_hours)
        base = hours * per_hour
        if base:
            fired.append("base:parking")
        if base and explain:
            en.append(f"parking {hours} h x {per_hour} = {base} points")
            zh.append(f"停车 {hours}小时 × {per_hour} = {base}分")
    points = _apply(rules, base, ctx, True, bonuses=not merged,
                    earned_today=member.earned_today, fired=fired, en=en, zh=zh,
                    explain=explain)
    return EarnResult(points, tuple(fired), tuple(en), tuple(zh))


def earn_for_purchase(amount: Decimal, category: str, when: datetime,
                      member: MemberSnapshot | None, rules: RuleBundle, *,
                      brand: str | None = None, tier: str | None = None) -> PurchaseEarn:
    """Points one purchase earns (seed: ¥1 = 1 point, fractions dropped, then multipliers)."""
    if not isinstance(amount, Decimal):
        raise ValueError(f"amount must be a Decimal, got {amount!r}")
    check_money("amount", amount)
    check_instant("when", when)
    if member is not None:
        check_member(member)
        if member.blocked:
            return PurchaseEarn(0, ("member_blocked",), ("member blocked: no points",),
                                ("会员已冻结: 不积分",))
    tier_name = tier or (member.tier if member else None) or rules.default_tier
    t = rules.tier(tier_name)
    flagged: list[str] = []
    if t.name != tier_name:  # as quote_exit: the default tier, and say so
        flagged.append("unknown_tier")
    if amount < rules.purchase_min_spend:
        return PurchaseEarn(
            0, (*flagged, "min_spend"),
            (f"spend {amount} below minimum {rules.purchase_min_spend}: no points",),
            (f"消费 {amount}元 未满 {rules.purchase_min_spend}元: 不积分",))
    base = int(amount / t.purchase_yuan_per_point)
    fired = [*flagged, "base:purchase"]
    en = [f"unknown tier {tier_name!r}: {t.name}"] if flagged else []
    zh = [f"未知等级 {tier_name!r}: 按 {t.name}"] if flagged else []
    en.append(f"spend {amount} / {t.purchase_yuan_per_point} per point ({t.name}) = {base} points")
    zh.append(f"消费 {amount}元 ÷ {t.purchase_yuan_per_point}元/分 ({t.name}) = {base}分")
    ctx = context_at(rules, when, t.name, category=category, brand=brand, amount=amount)
    points = _apply(rules, base, ctx, False, bonuses=True,
                    earned_today=member.earned_today if member else 0,
                    fired=fired, en=en, zh=zh)
    en.append(f"earned {points} points")
    zh.append(f"获得 {points}分")
    return PurchaseEarn(points, tuple(fired), tuple(en), tuple(zh))


def earned_expiry(rules: RuleBundle, earned_at: datetime) -> datetime | None:
    """When points earned at ``earned_at`` stop being spendable (exclusive instant)."""
    check_instant("earned_at", earned_at)
    if rules.expiry_mode == "none":
        return None
    return _expiry(rules.expiry_mode, rules.annual_month, rules.annual_day,
                   rules.rolling_months, earned_at.astimezone(rules.tz).date(), rules.tz)


@lru_cache(maxsize=1024)
def _expiry(mode: str, month: int, day: int, months: int, d: date, tz: ZoneInfo) -> datetime:
    if mode == "annual":
        year = d.year + 1
        last = date(year, month, min(day, monthrange(year, month)[1]))
        return end_of_local_day(last, tz).astimezone(tz)
    return local_instant(add_months(d, months), 0, tz).astimezone(tz)
