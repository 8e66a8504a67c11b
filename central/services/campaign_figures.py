"""A published campaign's own figures: what it gave, whom it reached, what it brought.

Why a replay: a purchase's points carry the effect of every campaign at once, so the
campaign's share is the purchases of its window earned with the site's bundle minus the
same purchases earned without this campaign (each replay keeping the daily cap per member
and site-local day), the same method as the forecast, so forecast and outcome compare.

Window: the campaign's dates intersected with the time it was published (to now, or to its
unpublishing). It is compared with the window of the same length just before it: visits
(member-days with an accrual, ``figures.visit_days``) and members' shop spend. Cost is the
extra points at ``points.cost_per_point``; the value it brought is the spend uplift; a
campaign that cost more than it brought is flagged (the seed's "underperforming").
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from central.db.models import Campaign, Member, Purchase
from central.services.campaign_publish import published_rows
from central.services.figures import CENT, visit_days
from edge.pricing import RuleBundle
from edge.pricing.bundle import parse_bundle
from edge.pricing.earn import earn_for_purchase
from edge.pricing.types import MemberSnapshot

MAX_DAYS = 366  # the daily series a chart draws


@dataclass(frozen=True)
class CampaignFigures:
    name: str
    start: datetime
    end: datetime
    points_given: int
    members_reached: int
    purchases_fired: int
    visits: int
    visits_before: int
    spend: Decimal
    spend_before: Decimal
    cost: Decimal
    value: Decimal
    budget: Decimal | None
    days: list[str]
    points_by_day: list[int]

    @property
    def underperforming(self) -> bool:
        return self.points_given > 0 and self.cost > self.value

    @property
    def over_budget(self) -> bool:
        return self.budget is not None and self.cost > self.budget

    def json(self) -> dict[str, Any]:
        return {"name": self.name, "start": self.start.isoformat(),
                "end": self.end.isoformat(), "points_given": self.points_given,
                "members_reached": self.members_reached,
                "purchases_fired": self.purchases_fired, "visits": self.visits,
                "visits_before": self.visits_before, "spend": str(self.spend),
                "spend_before": str(self.spend_before), "cost": str(self.cost),
                "value": str(self.value),
                "budget": None if self.budget is None else str(self.budget),
                "underperforming": self.underperforming, "over_budget": self.over_budget,
                "days": self.days, "points_by_day": self.points_by_day}


def window(row: Campaign, rules: RuleBundle, now: datetime) -> tuple[datetime, datetime]:
    """[start, end): the campaign's dates (site-local) within its published time."""
    body = json.loads(row.body)
    start = row.published_at
    end = row.unpublished_at or now
    tz = rules.tz
    if body.get("date_from"):
        d = datetime.fromisoformat(str(body["date_from"])[:10]).replace(tzinfo=tz)
        start = max(start, d)
    if body.get("date_to"):
        d = datetime.fromisoformat(str(body["date_to"])[:10]).replace(tzinfo=tz)
        end = min(end, d + timedelta(days=1))
    return start, max(start, end)


def _bundles(s: Session, row: Campaign, base: dict[str, Any]) -> tuple[RuleBundle, RuleBundle]:
    """The site's bundle with this campaign (whether or not still published), and without."""
    others = [json.loads(r.body) for r in published_rows(s, row.site_id) if r.id != row.id]
    without = copy.deepcopy(base)
    without["campaigns"] = list(base.get("campaigns", [])) + others
    with_ = copy.deepcopy(without)
    with_["campaigns"] = with_["campaigns"] + [json.loads(row.body)]
    return parse_bundle(with_), parse_bundle(without)


def _spend(s: Session, lo: datetime, hi: datetime) -> Decimal:
    v = s.scalar(select(func.sum(Purchase.amount)).where(Purchase.at >= lo, Purchase.at < hi))
    return v if isinstance(v, Decimal) else Decimal("0.00")


def campaign_figures(s: Session, row: Campaign, base: dict[str, Any], cost_per_point: Decimal,
                     now: datetime) -> CampaignFigures:
    with_, without = _bundles(s, row, base)
    lo, hi = window(row, with_, now)
    rows = s.execute(
        select(Purchase.at, Purchase.amount, Purchase.category, Purchase.brand,
               Purchase.member_id, Member.tier)
        .join(Member, Member.member_id == Purchase.member_id)
        .where(Purchase.at >= lo, Purchase.at < hi).order_by(Purchase.at, Purchase.id)).all()
    day_w: Counter[tuple[str, str]] = Counter()
    day_wo: Counter[tuple[str, str]] = Counter()
    by_day: Counter[str] = Counter()
    reached: set[str] = set()
    fired = 0
    for at, amount, category, brand, member_id, tier in rows:
        day = at.astimezone(with_.tz).strftime("%Y-%m-%d")
        key = (member_id, day)
        w = earn_for_purchase(amount, category, at, MemberSnapshot(
            member_id, tier, (), earned_today=day_w[key]), with_, brand=brand)
        wo = earn_for_purchase(amount, category, at, MemberSnapshot(
            member_id, tier, (), earned_today=day_wo[key]), without, brand=brand)
        day_w[key] += w.points
        day_wo[key] += wo.points
        extra = w.points - wo.points
        if row.name in w.rules_fired:
            fired += 1
            if extra > 0:
                reached.add(member_id)
        by_day[day] += extra
    given = sum(by_day.values())
    length = hi - lo
    before = visit_days(s, with_, lo - length, lo) if length else {}
    during = visit_days(s, with_, lo, hi) if length else {}
    spend, spend_before = _spend(s, lo, hi), _spend(s, lo - length, lo)
    days: list[str] = []
    d = lo.astimezone(with_.tz).date()
    last = (hi - timedelta(microseconds=1)).astimezone(with_.tz).date()
    while d <= last and len(days) < MAX_DAYS and length:
        days.append(d.isoformat())
        d += timedelta(days=1)
    return CampaignFigures(
        row.name, lo, hi, given, len(reached), fired, sum(during.values()),
        sum(before.values()), spend, spend_before, (cost_per_point * given).quantize(CENT),
        max(spend - spend_before, Decimal(0)).quantize(CENT), row.budget, days,
        [by_day[x] for x in days])


def all_figures(s: Session, site: str, base: dict[str, Any], cost_per_point: Decimal,
                now: datetime) -> list[CampaignFigures]:
    """Every campaign published from central (either state), newest first."""
    rows = s.scalars(select(Campaign).where(Campaign.site_id == site)
                     .order_by(Campaign.published_at.desc(), Campaign.id.desc()))
    return [campaign_figures(s, r, base, cost_per_point, now) for r in rows]
