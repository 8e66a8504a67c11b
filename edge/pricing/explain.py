"""Explanation lines (English and Chinese) and the short LED form of a quote.

A lane display, a receipt and a dispute desk all read these; they are derived only from
the quote and its inputs, never recomputed elsewhere.
"""

from __future__ import annotations

import unicodedata
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.pricing.bundle import RuleBundle
    from edge.pricing.earn import EarnResult
    from edge.pricing.types import Quote, SessionInput

DISPLAY_COLUMNS = 16

_FLAG_TEXT: dict[str, tuple[str, str]] = {
    "whitelist": ("monthly pass / whitelist: free", "月卡/白名单: 免费"),
    "blacklist": ("plate is on the blacklist", "黑名单车辆"),
    "no_entry_record": ("no entry record: flat fee", "无入场记录: 按固定收费"),
    "merged_reentry": ("re-entry merged with the previous stay: no free period",
                       "短时重复入场合并计费: 无免费时段"),
    "pay_grace_exceeded": ("left later than the grace after paying: extra time charged",
                           "缴费后超时离场: 补交超时费用"),
    "unknown_vehicle_class": ("unknown vehicle class: default tariff", "未知车型: 按默认收费"),
    "unknown_tier": ("unknown tier: default tier", "未知会员等级: 按默认等级"),
    "member_blocked": ("member blocked: no points used or earned", "会员已冻结: 不抵扣不积分"),
    "points_not_spent": ("plate read uncertain: no points or coupons used",
                         "车牌识别不确定: 未使用积分和券"),
    "auto_deduct_off": ("member opted out of automatic deduction", "会员关闭自动抵扣"),
    "points_short": ("balance too small to cover the fee", "积分不足以抵扣全部费用"),
    "cap:per_visit": ("per-visit redemption cap reached", "已达单次抵扣上限"),
    "cap:daily_redemption": ("daily redemption cap reached", "已达每日抵扣上限"),
    "cap:monthly_redemption": ("monthly redemption cap reached", "已达每月抵扣上限"),
    "cap:min_redemption": ("below the minimum redemption: no points used",
                           "未达最低抵扣积分: 不抵扣"),
}


def money(x: Decimal) -> str:
    return f"{x:.2f}"


def duration_zh(minutes: int, *, short: bool = False) -> str:
    d, rem = divmod(minutes, 1440)
    h, m = divmod(rem, 60)
    if d:
        return f"{d}天{h}小时" + ("" if short else f"{m}分")
    return f"{h}小时{m}分" if h else f"{m}分"


def duration_en(minutes: int) -> str:
    d, rem = divmod(minutes, 1440)
    h, m = divmod(rem, 60)
    return (f"{d} d " if d else "") + (f"{h} h " if h or d else "") + f"{m} min"


def columns(s: str) -> int:
    """Display columns: a wide (CJK) character takes two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in s)


def _fit(*candidates: str) -> str:
    for c in candidates:
        if columns(c) <= DISPLAY_COLUMNS:
            return c
    return candidates[-1]


def display_lines_zh(q: Quote) -> list[str]:
    """<= 4 lines of <= 16 columns: stay, fee, deduction, payable (+ balance if it fits)."""
    if "whitelist" in q.flags:
        return ["月卡车", "免费通行"]
    lines = [
        _fit(f"停车 {duration_zh(q.duration_minutes)}",
             f"停车 {duration_zh(q.duration_minutes, short=True)}",
             f"停车{q.duration_minutes // 1440}天"),
        _fit(f"费用 {money(q.fee)}元", f"费用{money(q.fee)}", f"费用{q.fee:.0f}"),
    ]
    coupons = sum(1 for d in q.discounts if d.kind == "coupon")
    if q.points_deducted:
        lines.append(_fit(f"积分抵扣 {q.points_deducted}分", f"抵扣{q.points_deducted}分"))
    elif coupons:
        lines.append("停车券抵扣")
    elif q.prepaid:
        lines.append(_fit(f"已付 {money(q.prepaid)}元", f"已付{money(q.prepaid)}"))
    pay = money(q.payable)
    if q.is_member:
        lines.append(_fit(f"应付{pay}元 余{q.balance_after}", f"应付 {pay}元",
                          f"应付{pay}"))
    else:
        lines.append(_fit(f"应付 {pay}元", f"应付{pay}"))
    return lines[:4]


def explain(q: Quote, s: SessionInput, rules: RuleBundle, tier: str, earned: EarnResult
            ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(English lines, Chinese lines) for receipts and the dispute desk."""
    tz = rules.tz
    en: list[str] = [f"rules {rules.version}"]
    zh: list[str] = [f"规则版本 {rules.version}"]
    if s.entered is not None:
        a = s.entered.astimezone(tz).strftime("%Y-%m-%d %H:%M")
        b = s.exited.astimezone(tz).strftime("%Y-%m-%d %H:%M")
        en.append(f"{q.vehicle_class}: parked {duration_en(q.duration_minutes)} ({a} -> {b})")
        zh.append(f"{q.vehicle_class}: 停车 {duration_zh(q.duration_minutes)} ({a} → {b})")
    en.append(f"fee ¥{money(q.fee)}")
    zh.append(f"停车费 ¥{money(q.fee)}")
    if q.prepaid:
        en.append(f"paid at pay station ¥{money(q.prepaid)}")
        zh.append(f"已在缴费机支付 ¥{money(q.prepaid)}")
    for d in q.discounts:
        if d.kind == "coupon":
            en.append(f"coupon {d.ref}: -¥{money(d.amount)}")
            zh.append(f"停车券 {d.ref}: -¥{money(d.amount)}")
        else:
            en.append(f"{d.points} points from lot {d.ref}: -¥{money(d.amount)}")
            zh.append(f"积分 {d.points}分 (批次 {d.ref}): -¥{money(d.amount)}")
    for f in q.flags:
        if f in _FLAG_TEXT:
            en.append(_FLAG_TEXT[f][0])
            zh.append(_FLAG_TEXT[f][1])
    en.extend(earned.en)
    zh.extend(earned.zh)
    if q.points_earned:
        en.append(f"earned {q.points_earned} points" + (
            f", valid until {q.earned_expires_at.astimezone(tz):%Y-%m-%d %H:%M}"
            if q.earned_expires_at else ""))
        zh.append(f"本次获得 {q.points_earned}分" + (
            f", 有效期至 {q.earned_expires_at.astimezone(tz):%Y-%m-%d %H:%M}"
            if q.earned_expires_at else ""))
    en_sum = f"parked {duration_en(q.duration_minutes)}  fee ¥{money(q.fee)}"
    zh_sum = f"停车 {duration_zh(q.duration_minutes)}  费用 ¥{money(q.fee)}"
    if q.is_member:
        en_sum += f"  points -{q.points_deducted}"
        zh_sum += f"  积分抵扣 {q.points_deducted}分"
    en_sum += f"  payable ¥{money(q.payable)}"
    zh_sum += f"  应付 ¥{money(q.payable)}"
    if q.is_member:
        en_sum += f"  balance {q.balance_after}"
        zh_sum += f"  余额 {q.balance_after}分"
    en.append(en_sum)
    zh.append(zh_sum)
    _ = tier
    return tuple(en), tuple(zh)
