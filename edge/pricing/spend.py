"""Spending at the exit: coupons and points against the fee, within every cap.

The fee is a function of the minutes left to pay for, so "1 point = 10 minutes" and
"a 3-hour coupon" take time off the end of the stay and are priced by the real tariff
(grace, units, night rates and caps included), while money-mode points and amount
coupons take yuan off. Points spent are always the fewest whole points that reach the
lowest payable the caps allow; payable(P) never increases with P, which makes that a
bisection when the closed form does not apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, Decimal

from edge.pricing.bundle import RuleBundle, Tier
from edge.pricing.tariff import to_cents
from edge.pricing.types import Coupon, DiscountLine, PointsLot

ZERO = Decimal(0)
NIL = Decimal("0.00")
FeeFn = Callable[[int], Decimal]  # minutes still charged -> fee in yuan (rounded)


@dataclass
class SpendState:
    """Time and money taken off so far, and the lines that did it."""

    minutes: int  # minutes of the stay still charged
    money: Decimal = ZERO  # yuan taken off the fee (coupons, money-mode points)
    lines: list[DiscountLine] = field(default_factory=list)
    coupons_used: list[str] = field(default_factory=list)
    lots_used: list[tuple[str, int]] = field(default_factory=list)
    points: int = 0
    points_value: Decimal = ZERO
    flags: list[str] = field(default_factory=list)


class Payable:
    """payable(minutes, money) = max(0, fee(minutes) - prepaid - money), fee memoised."""

    def __init__(self, fee_fn: FeeFn, prepaid: Decimal, zero_minutes: int | None = None) -> None:
        self._fee = fee_fn
        self._memo: dict[int, Decimal] = {}
        self.prepaid = prepaid
        self.zero = zero_minutes  # fee(m) is 0 for every m <= zero, when known

    def fee(self, minutes: int) -> Decimal:
        if self.zero is not None and minutes <= self.zero:
            return NIL
        minutes = max(0, minutes)
        v = self._memo.get(minutes)
        if v is None:
            v = self._memo[minutes] = self._fee(minutes)
        return v

    def __call__(self, minutes: int, money: Decimal) -> Decimal:
        v = self.fee(minutes) - self.prepaid - money
        return to_cents(v) if v > 0 else NIL


def spendable_lots(lots: tuple[PointsLot, ...], at: datetime) -> list[PointsLot]:
    """Lots usable at ``at``, soonest-expiring first (a lot is dead at its expiry instant)."""
    live = [x for x in lots if x.points > 0 and (x.expires_at is None or at < x.expires_at)]
    live.sort(key=lambda x: (x.expires_at is None, x.expires_at or at,
                             x.earned_at is None, x.earned_at or at, x.lot_id))
    return live


# --------------------------------------------------------------------------- coupons
def _coupon_effect(c: Coupon, st: SpendState, pay: Payable) -> tuple[int, Decimal]:
    if c.kind == "hours":
        return st.minutes - int(c.value * 60), st.money
    if c.kind == "amount":
        return st.minutes, st.money + c.value
    return st.minutes, st.money + pay(st.minutes, st.money)  # free: whatever is left


def apply_coupons(coupons: tuple[Coupon, ...], limit: int, st: SpendState, pay: Payable,
                  at: datetime) -> None:
    """Use up to ``limit`` coupons, each once: the smallest that clears the fee, else the
    one that takes off most (ties: the soonest to lapse)."""
    pool = [c for c in coupons if c.valid_until is None or at < c.valid_until]
    rank = {"hours": 0, "amount": 0, "free": 1}
    for _ in range(limit):
        now = pay(st.minutes, st.money)
        if now <= 0 or not pool:
            return
        scored = []
        for c in pool:
            m, money = _coupon_effect(c, st, pay)
            after = pay(m, money)
            expiry = c.valid_until.timestamp() if c.valid_until else float("inf")
            scored.append((after, rank[c.kind], c.value, expiry, c.coupon_id, c, m, money))
        clears = [s for s in scored if s[0] <= 0]
        if clears:
            best = min(clears, key=lambda s: (s[1], s[2], s[3], s[4]))
        else:
            best = min(scored, key=lambda s: (s[0], s[3], s[4]))
        after, c, m, money = best[0], best[5], best[6], best[7]
        if after >= now:
            return
        pool.remove(c)
        st.minutes, st.money = m, money
        st.coupons_used.append(c.coupon_id)
        st.lines.append(DiscountLine("coupon", c.coupon_id, 0, now - after))


# --------------------------------------------------------------------------- points
def _first_at_most(lo: int, hi: int, ok: Callable[[int], bool]) -> int:
    """Smallest P in [lo, hi] with ok(P) (ok monotone false..true); hi if none before."""
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def apply_points(lots: list[PointsLot], tier: Tier, rules: RuleBundle, st: SpendState,
                 pay: Payable, *, month_value: Decimal, today_points: int,
                 zero_minutes: int | None) -> None:
    """Deduct the fewest points reaching the lowest payable the caps allow."""
    base = pay(st.minutes, st.money)
    balance = sum(x.points for x in lots)
    if base <= 0 or balance <= 0:
        return
    by_minutes = tier.by_minutes
    n = tier.minutes_per_point
    v = tier.yuan_per_point
    m0, money0 = st.minutes, st.money

    def after(p: int) -> Decimal:
        if by_minutes:
            return pay(m0 - p * n, money0)
        return pay(m0, money0 + p * v)

    # points that would clear the most the fee can be cleared, ignoring every cap
    if by_minutes:
        if zero_minutes is not None and pay.prepaid == 0 and money0 == 0:
            need = max(0, -(-(m0 - zero_minutes) // n))
        else:
            top = max(0, -(-m0 // n))
            floor_ = after(top)
            need = _first_at_most(0, top, lambda p: after(p) <= floor_)
    else:
        need = int((base / v).to_integral_value(rounding=ROUND_CEILING))

    limits: list[tuple[int, str]] = [(balance, "points_short")]
    if rules.max_points_per_visit is not None:
        limits.append((rules.max_points_per_visit, "cap:per_visit"))
    if rules.max_hours_per_visit is not None and by_minutes:
        limits.append((rules.max_hours_per_visit * 60 // n, "cap:per_visit"))
    if rules.daily_cap_points is not None:
        # a negative period sum (points returned by a correction) never widens a cap
        limits.append((max(0, rules.daily_cap_points - max(0, today_points)),
                       "cap:daily_redemption"))
    cap_p = need
    for lim, name in limits:
        if lim < need:
            st.flags.append(name)
            cap_p = min(cap_p, lim)
    if rules.monthly_cap_value is not None:
        room = rules.monthly_cap_value - max(ZERO, month_value)
        if base - after(cap_p) > room:
            st.flags.append("cap:monthly_redemption")
            if room <= 0:
                cap_p = 0
            else:
                # largest P whose discount fits the room: first P that overflows, minus one
                over = _first_at_most(1, cap_p, lambda p: base - after(p) > room)
                cap_p = over - 1
    if 0 < cap_p < need:
        target = after(cap_p)
        # usually every point counts (one eval); coarse units need the bisection
        if after(cap_p - 1) <= target:
            cap_p = _first_at_most(0, cap_p - 1, lambda p: after(p) <= target)
    if 0 < cap_p < rules.min_points:
        st.flags.append("cap:min_redemption")
        cap_p = 0
    if cap_p <= 0:
        return

    amount = base - after(cap_p)
    if by_minutes:
        st.minutes = m0 - cap_p * n
    else:
        st.money = money0 + min(cap_p * v, base)
    st.points = cap_p
    st.points_value = amount
    left, left_amount = cap_p, amount
    for lot in lots:
        if left <= 0:
            break
        take = min(lot.points, left)
        left -= take
        share = left_amount if left == 0 else to_cents(amount * take / cap_p)
        left_amount -= share
        st.lots_used.append((lot.lot_id, take))
        st.lines.append(DiscountLine("points", lot.lot_id, take, share))
