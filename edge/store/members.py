"""Member cache (accounts, points lots, coupons, plate bindings), on a caller's connection.

Central owns members; the lane keeps a cache it can price from while offline. Lots carry
``remaining`` so a deduction is a decrement the schema refuses to take below zero, and the
member row keeps a cached balance (all remaining points, expired or not) for quick display.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from edge.store.codec import money, parse_ts, parse_ts_opt, ts, ts_opt
from edge.store.engine import Db
from edge.store.types import (
    CouponView,
    EntryKind,
    LotView,
    Member,
    MemberView,
    StoreError,
)

_MEMBER = "member_id, tier, name, version, auto_deduct, blocked, balance"
# points spendable at :at: remaining in lots not expired (expiry is exclusive)
_SPENDABLE = ("SELECT COALESCE(SUM(remaining), 0) FROM points_lots WHERE member_id = :m "
              "AND (expires_at IS NULL OR expires_at > :at)")


def _member(r: Any) -> Member:
    return Member(r[0], r[1], r[2], int(r[3]), bool(r[4]), bool(r[5]), int(r[6]))


def get_member(c: Db, member_id: str) -> Member | None:
    r = c.execute(f"SELECT {_MEMBER} FROM members WHERE member_id = :m",
                  {"m": member_id}).fetchone()
    return None if r is None else _member(r)


def require_member(c: Db, member_id: str) -> Member:
    m = get_member(c, member_id)
    if m is None:
        raise StoreError(f"member_id: unknown member {member_id!r}")
    return m


def member_and_balance(c: Db, member_id: str, at: datetime) -> tuple[Member, int] | None:
    """The member and its points spendable at ``at``, in one statement (the exit's look-up)."""
    r = c.execute(f"SELECT {_MEMBER}, ({_SPENDABLE}) FROM members WHERE member_id = :m",
                  {"m": member_id, "at": ts(at, "at")}).fetchone()
    return None if r is None else (_member(r), int(r[7]))


def refresh_balance(c: Db, member_id: str) -> None:
    c.execute(
        "UPDATE members SET balance = (SELECT COALESCE(SUM(remaining), 0) FROM points_lots "
        "WHERE member_id = :m) WHERE member_id = :m",
        {"m": member_id},
    )


def upsert_member(c: Db, member_id: str, *, tier: str, name: str | None, version: int,
                  auto_deduct: bool, blocked: bool) -> None:
    """Insert or update; an update older than the cached version is ignored (stale downlink)."""
    if not member_id:
        raise StoreError("member_id: must be non-empty")
    if not tier:
        raise StoreError("tier: must be non-empty")
    c.execute(
        "INSERT INTO members (member_id, tier, name, version, auto_deduct, blocked) "
        "VALUES (:m, :t, :n, :v, :a, :b) ON CONFLICT (member_id) DO UPDATE SET "
        "tier = :t, name = :n, version = :v, auto_deduct = :a, blocked = :b "
        "WHERE excluded.version >= members.version",
        {"m": member_id, "t": tier, "n": name, "v": int(version), "a": int(bool(auto_deduct)),
         "b": int(bool(blocked))},
    )


def set_lots(c: Db, member_id: str,
             lots: list[tuple[str, int, datetime | None, datetime | None]]) -> None:
    """Replace the member's lots with central's snapshot."""
    require_member(c, member_id)
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    for i, lot in enumerate(lots):
        try:
            lot_id, points, expires_at, earned_at = lot
        except (TypeError, ValueError) as exc:
            raise StoreError(f"lots[{i}]: expected (lot_id, points, expires_at, earned_at)") \
                from exc
        if not lot_id or lot_id in seen:
            raise StoreError(f"lots[{i}].lot_id: {lot_id!r} is empty or repeated")
        if not isinstance(points, int) or isinstance(points, bool) or points < 0:
            raise StoreError(f"lots[{i}].points: {points!r} must be an int >= 0")
        seen.add(lot_id)
        rows.append({"m": member_id, "l": lot_id, "p": points,
                     "e": ts_opt(expires_at, f"lots[{i}].expires_at"),
                     "ea": ts_opt(earned_at, f"lots[{i}].earned_at")})
    c.execute("DELETE FROM points_lots WHERE member_id = :m", {"m": member_id})
    if rows:
        c.executemany(
            "INSERT INTO points_lots (member_id, lot_id, points, remaining, expires_at, "
            "earned_at) VALUES (:m, :l, :p, :p, :e, :ea)",
            rows,
        )
    refresh_balance(c, member_id)


def add_coupon(c: Db, member_id: str, coupon_id: str, kind: str, value: Decimal,
               valid_until: datetime | None) -> None:
    require_member(c, member_id)
    if not coupon_id or not kind:
        raise StoreError("coupon_id and kind must be non-empty")
    used = c.execute(
        "SELECT used_at FROM coupons WHERE coupon_id = :c", {"c": coupon_id}
    ).fetchone()
    if used is not None and used[0] is not None:
        raise StoreError(f"coupon_id: {coupon_id!r} was already used; not replaced")
    c.execute(
        "INSERT INTO coupons (coupon_id, member_id, kind, value, valid_until) "
        "VALUES (:c, :m, :k, :v, :u) ON CONFLICT (coupon_id) DO UPDATE SET "
        "member_id = :m, kind = :k, value = :v, valid_until = :u",
        {"c": coupon_id, "m": member_id, "k": kind, "v": money(value, "value"),
         "u": ts_opt(valid_until, "valid_until")},
    )


def spendable(c: Db, member_id: str, at: datetime) -> int:
    """Points spendable at ``at`` (0 for an unknown member)."""
    return int(c.execute(_SPENDABLE, {"m": member_id, "at": ts(at, "at")}).fetchone()[0])


def balance(c: Db, member_id: str, at: datetime) -> int:
    """Points spendable at ``at``: remaining in lots not expired (expiry is exclusive)."""
    found = member_and_balance(c, member_id, at)
    if found is None:
        raise StoreError(f"member_id: unknown member {member_id!r}")
    return found[1]


def _period_start(at: datetime, tz: ZoneInfo, *, month: bool) -> tuple[str, str]:
    local = at.astimezone(tz)
    if month:
        start = datetime(local.year, local.month, 1, tzinfo=tz)
        y, m = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        end = datetime(y, m, 1, tzinfo=tz)
    else:
        start = datetime(local.year, local.month, local.day, tzinfo=tz)
        nxt = (start + timedelta(days=1)).date()
        end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)
    return ts(start), ts(end)


def _period_sums(c: Db, member_id: str, at: datetime,
                 tz: ZoneInfo) -> tuple[Decimal, int, int]:
    """(money value redeemed this month, points redeemed today, points earned today) in ``tz``.

    Reversed exits (CORRECTION points_returned / earned_revoked) are netted out in the
    period the reversal happened. Only the needed JSON fields are extracted, in SQL.
    """
    mlo, mhi = _period_start(at, tz, month=True)
    dlo, dhi = _period_start(at, tz, month=False)
    rows = c.execute(
        "SELECT kind, at, json_extract(payload, '$.action'), json_extract(payload, '$.points'), "
        "json_extract(payload, '$.value') FROM ledger_entries WHERE member_id = :m "
        "AND kind IN ('points_deducted', 'points_earned', 'correction') "
        "AND at >= :lo AND at < :hi",
        {"m": member_id, "lo": mlo, "hi": mhi},
    )
    month_value, today_points, earned_today = Decimal(0), 0, 0
    for kind, when, action, points, value in rows:
        today = dlo <= when < dhi
        sign = 1
        if kind == EntryKind.CORRECTION:
            if action not in ("points_returned", "earned_revoked"):
                continue
            sign = -1
            kind = (EntryKind.POINTS_DEDUCTED if action == "points_returned"
                    else EntryKind.POINTS_EARNED)
        if kind == EntryKind.POINTS_DEDUCTED:
            month_value += sign * Decimal(str(value or "0"))
            if today:
                today_points += sign * int(points or 0)
        elif today:
            earned_today += sign * int(points or 0)
    return month_value, today_points, earned_today


def member_view(c: Db, member_id: str, at: datetime, tz: ZoneInfo) -> MemberView:
    m = require_member(c, member_id)
    at_s = ts(at, "at")
    lots = tuple(
        LotView(r[0], int(r[1]), parse_ts_opt(r[2]), parse_ts_opt(r[3]))
        for r in c.execute(
            "SELECT lot_id, remaining, expires_at, earned_at FROM points_lots "
            "WHERE member_id = :m AND remaining > 0 AND (expires_at IS NULL OR "
            "expires_at > :at) ORDER BY expires_at IS NULL, expires_at, lot_id",
            {"m": member_id, "at": at_s},
        )
    )
    coupons = tuple(
        CouponView(r[0], r[1], Decimal(r[2]), parse_ts_opt(r[3]))
        for r in c.execute(
            "SELECT coupon_id, kind, value, valid_until FROM coupons WHERE member_id = :m "
            "AND used_at IS NULL AND (valid_until IS NULL OR valid_until > :at) "
            "ORDER BY valid_until IS NULL, valid_until, coupon_id",
            {"m": member_id, "at": at_s},
        )
    )
    month_value, today_points, earned_today = _period_sums(c, member_id, at, tz)
    return MemberView(
        member_id=member_id,
        tier=m.tier,
        auto_deduct=m.auto_deduct,
        blocked=m.blocked,
        lots=lots,
        coupons=coupons,
        redeemed_this_month_value=month_value,
        redeemed_today_points=today_points,
        earned_today=earned_today,
        balance=sum(lot.points for lot in lots),
    )


def spend_lots(c: Db, member_id: str, lots_used: tuple[tuple[str, int], ...],
               at: datetime) -> None:
    """Decrement each lot; refuse an unknown, expired or overspent lot (never go negative)."""
    at_s = ts(at, "exited_at")
    for lot_id, pts in lots_used:
        r = c.execute(
            "SELECT remaining, expires_at FROM points_lots WHERE member_id = :m "
            "AND lot_id = :l",
            {"m": member_id, "l": lot_id},
        ).fetchone()
        if r is None:
            raise StoreError(f"lots_used: member {member_id!r} has no lot {lot_id!r}")
        if r[1] is not None and r[1] <= at_s:
            raise StoreError(f"lots_used: lot {lot_id!r} expired at {parse_ts(r[1]).isoformat()}")
        if pts > int(r[0]):
            raise StoreError(
                f"lots_used: lot {lot_id!r} has {r[0]} points left, {pts} requested")
        c.execute(
            "UPDATE points_lots SET remaining = remaining - :p WHERE member_id = :m "
            "AND lot_id = :l",
            {"p": pts, "m": member_id, "l": lot_id},
        )


def use_coupons(c: Db, member_id: str, coupons: tuple[str, ...], at: datetime,
                session_id: str) -> list[dict[str, Any]]:
    """Mark coupons used; refuse unknown, someone else's, used or expired ones."""
    at_s = ts(at, "exited_at")
    out = []
    for cid in coupons:
        r = c.execute(
            "SELECT member_id, kind, value, valid_until, used_at FROM coupons "
            "WHERE coupon_id = :c", {"c": cid},
        ).fetchone()
        if r is None or r[0] != member_id:
            raise StoreError(f"coupons_used: member {member_id!r} has no coupon {cid!r}")
        if r[4] is not None:
            raise StoreError(f"coupons_used: coupon {cid!r} was already used at {r[4]}")
        if r[3] is not None and r[3] <= at_s:
            raise StoreError(f"coupons_used: coupon {cid!r} expired at {r[3]}")
        c.execute(
            "UPDATE coupons SET used_at = :at, used_session = :s WHERE coupon_id = :c",
            {"at": at_s, "s": session_id, "c": cid},
        )
        out.append({"coupon_id": cid, "kind": r[1], "value": r[2]})
    return out
