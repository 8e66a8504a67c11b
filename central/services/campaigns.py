"""Campaigns from the pages' form: validated by edge.pricing's own bundle schema, forecast
over the site's past purchases with and without the campaign, published as a new bundle.

The form's fields become one ``[[campaigns]]`` table appended to the site's bundle; the
whole bundle is then parsed by ``edge.pricing.parse_bundle``, so a campaign the lanes would
refuse is refused here, with the schema's message beside the field it names.

Forecast: the site's stays and purchases of the chosen period (``replay_data``: the stays
rebuilt from the lanes' ingested ledger) go through ``edge.pricing.simulate``'s replayer
twice (the current bundle, the bundle with the campaign), each replay keeping its own daily
earning and redemption caps per member and site-local day. It reads the very JSONL the page
offers for download, so ``parkedge rules simulate`` over those files gives the same figures.

Publishing (``campaign_publish``): a campaign row, the site's new bundle signed into the
downlink outbox, an audit line, in one transaction. The form is validated against the
site's bundle as the lanes run it (the configured one plus the published campaigns).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from central.db.models import Campaign
from central.ingest import state
from central.services.campaign_publish import campaign_json
from central.services.figures import CENT, month_bounds, month_range
from central.services.replay_data import as_jsonl, period_records
from edge.pricing import RuleBundle
from edge.pricing.bundle import BundleError, parse_bundle
from edge.pricing.schema import DAY_TAGS
from edge.pricing.simulate import Replayer, Totals, replay_lines

DAYS = DAY_TAGS
#: schema key -> the form field it is shown beside
FIELD_OF = {"time_window": "time_from", "bonus_points": "bonus_points",
            "min_duration_minutes": "min_duration_minutes", "first_visit_of_day": "first_visit"}
TEXT_FIELDS = ("name", "applies_to", "date_from", "date_to", "time_from", "time_to",
               "min_amount", "min_duration_minutes", "categories", "brands", "multiplier",
               "bonus_points", "group", "budget")


@dataclass
class CampaignForm:
    """The form's values (strings and lists, as posted) and the errors by form field."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    campaign: dict[str, Any] | None = None  # the [[campaigns]] table when valid
    budget: Decimal | None = None
    bundle: RuleBundle | None = None  # the candidate bundle when valid
    data: dict[str, Any] | None = None  # ... and its tables (JSON-ready), as downloaded


def bundle_data(path: Path) -> dict[str, Any]:
    """The configured bundle as JSON-ready values (what the lanes are sent)."""
    return state.bundle_json(path)


def _list(v: str) -> list[str]:
    return [x.strip() for x in v.replace("，", ",").split(",") if x.strip()]


def read_form(form: Any, base: dict[str, Any]) -> CampaignForm:
    """Form fields -> a campaign table, validated by parsing the base bundle plus it."""
    vals: dict[str, Any] = {k: (form.get(k) or "").strip() for k in TEXT_FIELDS}
    for k in ("tiers", "vehicle_classes", "days"):
        vals[k] = [v for v in form.getlist(k) if isinstance(v, str)] if hasattr(
            form, "getlist") else list(form.get(k) or [])
    vals["first_visit"] = (form.get("first_visit") or "") == "on"
    out = CampaignForm(values=vals)
    c: dict[str, Any] = {"name": vals["name"], "applies_to": vals["applies_to"] or "purchase"}
    for k in ("tiers", "vehicle_classes", "days"):
        if vals[k]:
            c[k] = vals[k]
    for k in ("categories", "brands"):
        if vals[k]:
            c[k] = _list(vals[k])
    for k in ("date_from", "date_to"):
        if vals[k]:
            c[k] = vals[k]
    if vals["time_from"] or vals["time_to"]:
        if not (vals["time_from"] and vals["time_to"]):
            out.errors["time_from"] = "give both times, or neither"
        else:
            c["time_window"] = [vals["time_from"], vals["time_to"]]
    if vals["min_amount"]:
        c["min_amount"] = vals["min_amount"]
    if vals["min_duration_minutes"]:
        try:
            c["min_duration_minutes"] = int(vals["min_duration_minutes"])
        except ValueError:
            out.errors["min_duration_minutes"] = "whole minutes"
    if vals["first_visit"]:
        c["first_visit_of_day"] = True
    if vals["multiplier"]:
        c["multiplier"] = vals["multiplier"]
    if vals["bonus_points"]:
        try:
            c["bonus_points"] = int(vals["bonus_points"])
        except ValueError:
            out.errors["bonus_points"] = "whole points"
    if vals["group"]:
        c["group"] = vals["group"]
    if "multiplier" not in c and "bonus_points" not in c:
        out.errors["multiplier"] = "give a multiplier, bonus points, or both"
    if vals["budget"]:
        try:
            out.budget = Decimal(vals["budget"])
            if not out.budget.is_finite() or out.budget <= 0:
                raise InvalidOperation
            out.budget = out.budget.quantize(CENT)
        except InvalidOperation:
            out.errors["budget"] = "yuan, more than 0"
    data = copy.deepcopy(base)
    data.setdefault("campaigns", [])
    if any(x.get("name") == c["name"] for x in data["campaigns"]):
        out.errors["name"] = f"a campaign named {c['name']!r} exists"
    idx = len(data["campaigns"])
    data["campaigns"].append(c)
    data["version"] = f"{base.get('version', 'bundle')}+{c['name']}"[:64]
    try:
        out.bundle = parse_bundle(data)
    except BundleError as exc:
        for path, reason in exc.errors:
            prefix = f"campaigns[{idx}]"
            if path.startswith(prefix):
                key = path[len(prefix):].lstrip(".").split("[")[0].split(".")[0] or "name"
                out.errors.setdefault(FIELD_OF.get(key, key), reason)
            else:
                out.errors.setdefault("name", f"{path}: {reason}")
    if out.errors:
        out.bundle = None
        return out
    out.campaign = c
    out.data = data
    return out


@dataclass(frozen=True)
class Forecast:
    months: list[str]
    base: list[int]
    with_campaign: list[int]
    sessions: int
    purchases: int
    members: int
    fired: int
    extra_points: int
    extra_cost: Decimal
    expected_redeemed: int
    redemption_rate_pct: str
    budget: Decimal | None
    fees_base: Decimal = Decimal(0)
    fees_with: Decimal = Decimal(0)

    @property
    def over_budget(self) -> bool:
        return self.budget is not None and self.extra_cost > self.budget

    def json(self) -> dict[str, Any]:
        return {"months": self.months, "base": self.base, "with_campaign": self.with_campaign,
                "sessions": self.sessions, "purchases": self.purchases,
                "members": self.members, "fired": self.fired,
                "extra_points": self.extra_points, "extra_cost": str(self.extra_cost),
                "expected_redeemed": self.expected_redeemed,
                "redemption_rate_pct": self.redemption_rate_pct,
                "budget": str(self.budget) if self.budget is not None else None,
                "over_budget": self.over_budget, "fees_base": str(self.fees_base),
                "fees_with": str(self.fees_with)}


def replay(records: list[dict[str, Any]], rules: RuleBundle) -> Totals:
    """``records`` through one bundle, exactly as ``rules simulate`` reads them."""
    r = Replayer(rules)
    replay_lines(as_jsonl(records).splitlines(), r, None)
    return r.t


def forecast(s: Session, site: str, base: RuleBundle, candidate: RuleBundle, name: str,
             first: str, last: str, cost_per_point: Decimal, redemption_rate: Decimal,
             budget: Decimal | None = None) -> Forecast:
    """The campaign's effect on the site's stays and purchases of ``first``..``last`` (site
    months): points with and without it, the extra points' cost (``points.cost_per_point``)
    and the redemptions to expect at the period's redemption rate."""
    lo, hi = month_bounds(base.tz, first, last)
    w, b = Replayer(candidate), Replayer(base)
    # one serialisation, one pass: both bundles see each line in turn, as ``rules simulate``
    replay_lines(as_jsonl(period_records(s, site, lo, hi)).splitlines(), w, b)
    months = month_range(first, last)
    extra = w.t.points_issued - b.t.points_issued
    return Forecast(months, [b.t.by_month.get(m, 0) for m in months],
                    [w.t.by_month.get(m, 0) for m in months], w.t.sessions, w.t.purchases,
                    w.t.members, w.t.campaigns.get(name, [0, 0])[0], extra,
                    (cost_per_point * extra).quantize(CENT),
                    int(extra * redemption_rate / 100), str(redemption_rate), budget,
                    b.t.fees_collected, w.t.fees_collected)


def to_toml(c: dict[str, Any]) -> str:
    """The ``[[campaigns]]`` table as TOML (to paste into the bundle, or for the lanes)."""
    lines = ["[[campaigns]]"]
    for k, v in c.items():
        lines.append(f"{k} = {json.dumps(v, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"


def published(s: Session, site: str) -> list[dict[str, Any]]:
    """The site's campaigns published from the pages or the API (either state), newest
    first."""
    rows = s.scalars(select(Campaign).where(Campaign.site_id == site)
                     .order_by(Campaign.published_at.desc(), Campaign.id.desc()))
    return [campaign_json(r) for r in rows]
