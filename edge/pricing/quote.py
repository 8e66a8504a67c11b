"""``quote_exit``: everything decided for one exit, from the session, member and bundle.

Order of work: pick the tariff (at entry or exit), special cases (monthly pass, no entry
record, merged re-entry, pay-station grace), the fee, then coupons and points in the
configured order, then the points the stay earns. Pure: the quote time is an argument.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial

from edge.pricing.bundle import RuleBundle, Tariff
from edge.pricing.checks import check_instant, check_member, check_money
from edge.pricing.earn import EarnResult, context_at, earn_for_stay, earned_expiry
from edge.pricing.explain import explain
from edge.pricing.spend import (
    FeeFn,
    Payable,
    SpendState,
    apply_coupons,
    apply_points,
    spendable_lots,
)
from edge.pricing.tariff import StayFee, stay_minutes, to_cents, zero_fee_minutes
from edge.pricing.types import MemberSnapshot, Quote, SessionInput

ZERO = Decimal("0.00")
NO_EARN = EarnResult(0, (), (), ())


def _const(fee: Decimal, _minutes: int) -> Decimal:
    return fee


def quote_exit(session: SessionInput, member: MemberSnapshot | None, rules: RuleBundle,
               at: datetime, *, spend_points: bool = True, explain_lines: bool = True) -> Quote:
    """Price one exit. ``spend_points=False`` prices it but deducts nothing (uncertain read)."""
    check_instant("session.exited", session.exited)
    check_instant("at", at)
    check_instant("session.entered", session.entered, required=False)
    check_instant("session.paid_at", session.paid_at, required=False)
    check_instant("session.previous_exit", session.previous_exit, required=False)
    prepaid = check_money("session.paid_amount", session.paid_amount)
    if member is not None:
        check_member(member)
    flags: list[str] = []
    tz = rules.tz
    entered = session.entered
    table = rules.tariffs_for(entered, session.exited)
    cls = session.vehicle_class
    if cls not in table:
        flags.append("unknown_vehicle_class")
        cls = "small" if "small" in table else next(iter(table))
    t: Tariff = table[cls]

    if rules.is_blacklisted(session.plate):
        flags.append("blacklist")
    whitelisted = bool(session.plate) and rules.is_whitelisted(session.plate, session.exited)
    merged = False
    grace = True
    if entered is None:
        flags.append("no_entry_record")
        duration = 0
        charged = 0
        fee = ZERO if whitelisted else to_cents(rules.no_entry_fee)
        fee_fn: FeeFn = partial(_const, fee)
    else:
        duration = stay_minutes(entered, session.exited)
        prev = session.previous_exit
        if prev is not None and rules.reentry_merge_minutes > 0:
            gap = entered - prev
            if timedelta(0) <= gap <= timedelta(minutes=rules.reentry_merge_minutes):
                merged = True
                grace = False
                flags.append("merged_reentry")
        charged = duration
        if session.paid_at is not None:
            if session.exited > session.paid_at + timedelta(minutes=rules.pay_grace_minutes):
                flags.append("pay_grace_exceeded")
            else:
                charged = stay_minutes(entered, session.paid_at)
        fee_fn = (partial(_const, ZERO) if whitelisted
                  else StayFee(t, entered, tz, grace))
    if whitelisted:
        flags.append("whitelist")

    zero = None
    if entered is not None and not whitelisted:
        zkey = (cls, grace, id(table))
        if zkey not in rules.memo:
            rules.memo[zkey] = zero_fee_minutes(t, grace=grace)
        zero = rules.memo[zkey]
    pay = Payable(fee_fn, prepaid, zero)
    if entered is not None:
        fee = pay.fee(charged)
    st = SpendState(minutes=charged)
    balance = 0
    earned = NO_EARN
    tier_name = ""
    if member is not None:
        tier_name = member.tier if member.tier in rules.tiers else rules.default_tier
        if tier_name != member.tier:
            flags.append("unknown_tier")
        tier = rules.tiers[tier_name]
        lots = spendable_lots(member.lots, at)
        balance = sum(x.points for x in lots)
        if member.blocked:
            flags.append("member_blocked")
        elif not spend_points:
            flags.append("points_not_spent")
        elif not member.auto_deduct:
            flags.append("auto_deduct_off")
        elif fee > 0:
            steps = ("coupons", "points") if rules.coupons_first else ("points", "coupons")
            for step in steps:
                if step == "coupons":
                    apply_coupons(member.coupons, rules.max_coupons_per_visit, st, pay, at)
                else:
                    apply_points(lots, tier, rules, st, pay,
                                 month_value=member.redeemed_this_month_value,
                                 today_points=member.redeemed_today_points,
                                 zero_minutes=zero if st.money == 0 else None)
            flags.extend(st.flags)
        if (entered is not None and not member.blocked and not whitelisted and spend_points):
            first = (session.previous_exit is None or (not merged and
                     session.previous_exit.astimezone(tz).date() < entered.astimezone(tz).date()))
            ctx = context_at(rules, session.exited, tier_name, vehicle_class=cls,
                             minutes=duration, lane_id=session.lane_id, first_visit=first)
            earned = earn_for_stay(rules, ctx, member, merged=merged,
                                   explain=explain_lines)
    payable = pay(st.minutes, st.money)
    points = st.points
    q = Quote(
        fee=fee,
        discounts=tuple(st.lines),
        points_deducted=points,
        lots_used=tuple(st.lots_used),
        coupons_used=tuple(st.coupons_used),
        payable=payable,
        points_earned=earned.points,
        earned_expires_at=earned_expiry(rules, session.exited) if earned.points else None,
        earned_rules=earned.fired,
        balance_before=balance,
        balance_after=balance - points + earned.points,
        duration_minutes=duration,
        rules_version=rules.version,
        flags=tuple(flags),
        prepaid=to_cents(prepaid),
        vehicle_class=cls,
        is_member=member is not None,
    )
    if not explain_lines:
        return q
    en, zh = explain(q, session, rules, tier_name, earned)
    return replace(q, explain_en=en, explain_zh=zh)
