"""Monthly tier perks (seed: gold members get two free 3-hour coupons a month).

``edge.pricing.monthly_perk_coupons`` names each coupon with a stable id
(``perk:<member>:<YYYY-MM>:<i>:<n>``); the coupon table's primary key makes a second grant,
by a restart or another worker, insert nothing.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from central.db.models import Coupon, Member
from edge.pricing import RuleBundle, monthly_perk_coupons


def perk_month(rules: RuleBundle, now: datetime) -> date:
    d = now.astimezone(rules.tz).date()
    return date(d.year, d.month, 1)


def grant_monthly_perks(s: Session, rules: RuleBundle, month: date, now: datetime, *,
                        dry_run: bool = False) -> list[str]:
    """Coupons newly granted for ``month`` (site time) to members not blocked; with
    ``dry_run`` the ones that would be, nothing written."""
    granted: list[str] = []
    ins = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    members = s.execute(select(Member.member_id, Member.tier).where(
        Member.blocked.is_(False)).order_by(Member.member_id)).all()
    for member_id, tier in members:
        coupons = monthly_perk_coupons(rules, tier, member_id, month)
        if not coupons:
            continue
        have = set(s.scalars(select(Coupon.coupon_id).where(
            Coupon.coupon_id.in_([c.coupon_id for c in coupons]))))
        before = len(granted)
        for c in coupons:
            if c.coupon_id in have:
                continue
            if dry_run:
                granted.append(c.coupon_id)
                continue
            res = s.execute(ins(Coupon).values(
                coupon_id=c.coupon_id, member_id=member_id, kind=c.kind, value=str(c.value),
                valid_until=c.valid_until, source="perk", issued_at=now,
            ).on_conflict_do_nothing(index_elements=["coupon_id"]))
            if res.rowcount:  # type: ignore[attr-defined]
                granted.append(c.coupon_id)
        if len(granted) > before and not dry_run:
            m = s.get(Member, member_id)
            if m is not None:
                m.version = m.version + 1
    return granted
