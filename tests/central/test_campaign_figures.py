"""A published campaign's own figures, on both backends: the points it gave (replayed with
and without it, under the daily cap), members reached, visits and spend in its window
against the same-length window before, cost against value, the underperformer flag."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from central.db.models import Campaign
from central.services import campaign_publish as cp
from central.services import campaigns, members, purchases
from central.services.campaign_figures import all_figures, campaign_figures
from central.services.purchases import PurchaseIn
from tests.central.helpers import RULES, at

TUESDAY = {"name": "tuesday_x2", "applies_to": "purchase", "days": ["tue"],
           "multiplier": "2", "date_from": "2026-03-02", "date_to": "2026-03-08"}


def _buy(c: Any, s: Any, key: str, member: str, amount: str, when: str) -> None:
    purchases.record_purchase(s, c.rules, PurchaseIn("shoe-2", key, member, Decimal(amount),
                                                     at(when)), at(when))


def _seed(c: Any) -> None:
    with c.tx() as s:
        purchases.add_shop(s, "shoe-2", "Shoes", "retail")
        for mid in ("M1", "M2", "M3"):
            members.enrol(s, c.rules, member_id=mid, phone=None, name=mid, tier="gold",
                          now=at("2026-01-01 09:00"))
        _buy(c, s, "b1", "M1", "60", "2026-02-24 12:00")  # the week before, a Tuesday
    with c.tx() as s:
        cp.publish(s, site="mall-1", base=campaigns.bundle_data(RULES),
                   key=Ed25519PrivateKey.generate(), campaign=TUESDAY,
                   budget=Decimal("5.00"), actor="staff:mkt", now=at("2026-03-01 18:00"))
    with c.tx() as s:
        _buy(c, s, "d1", "M1", "60", "2026-03-03 12:00")  # x2: 120 -> 100 a day: +40
        _buy(c, s, "d2", "M2", "70", "2026-03-03 13:00")  # x2: 140 -> 100: +30
        _buy(c, s, "d3", "M3", "80", "2026-03-04 13:00")  # Wednesday: not fired
        _buy(c, s, "late", "M3", "80", "2026-03-10 13:00")  # after date_to: outside


def test_points_reach_visits_cost_and_value(central: Any) -> None:
    c = central
    _seed(c)
    now = at("2026-03-12 12:00")
    base = campaigns.bundle_data(RULES)
    with c.tx() as s:
        row = s.scalars(select(Campaign)).one()
        f = campaign_figures(s, row, base, Decimal("0.05"), now)
    assert f.start == at("2026-03-02 00:00") and f.end == at("2026-03-09 00:00")
    assert (f.points_given, f.members_reached, f.purchases_fired) == (70, 2, 2)
    assert (f.visits, f.visits_before) == (3, 1)
    assert (f.spend, f.spend_before) == (Decimal("210.00"), Decimal("60.00"))
    assert f.cost == Decimal("3.50") and f.value == Decimal("150.00")
    assert not f.underperforming and not f.over_budget
    assert f.days[0] == "2026-03-02" and len(f.days) == 7
    assert f.points_by_day[1] == 70 and sum(f.points_by_day) == 70
    # at ¥3 a point it costs ¥210 for ¥150 brought: flagged, and over its ¥5 budget
    with c.tx() as s:
        (g,) = all_figures(s, "mall-1", base, Decimal("3"), now)
    assert g.underperforming and g.over_budget and g.json()["underperforming"] is True


def test_an_unpublished_campaign_counts_until_it_was_unpublished(central: Any) -> None:
    c = central
    _seed(c)
    with c.tx() as s:
        cp.unpublish(s, site="mall-1", base=campaigns.bundle_data(RULES),
                     key=Ed25519PrivateKey.generate(), name="tuesday_x2", actor="staff:mkt",
                     now=at("2026-03-03 12:30"))
    with c.tx() as s:
        row = s.scalars(select(Campaign)).one()
        f = campaign_figures(s, row, campaigns.bundle_data(RULES), Decimal("0.05"),
                             at("2026-03-12 12:00"))
    assert f.end == at("2026-03-03 12:30")
    assert (f.points_given, f.members_reached) == (40, 1)  # M2's purchase came after


def test_the_campaign_page_shows_its_figures_and_flag(central: Any) -> None:
    import json
    import re

    from fastapi.testclient import TestClient

    from central.services import staff
    from central.web import create_app

    c = central
    _seed(c)
    c.now = at("2026-03-12 12:00")
    pw = "correct horse battery"
    with c.tx() as s:
        staff.add_user(s, "aud", "auditor", pw, c.now)
    with TestClient(create_app(c), base_url="https://testserver") as client:
        r = client.post("/api/staff/login", json={"username": "aud", "password": pw})
        assert r.status_code == 200
        page = client.get("/campaigns/tuesday_x2")
        assert page.status_code == 200, page.text
        assert re.search(r'id="cf-given">70<', page.text)
        assert re.search(r'id="cf-reached">2<', page.text)
        m = re.search(r'id="cf-data">(.*?)</script>', page.text)
        assert m and json.loads(m.group(1))["f"]["points_by_day"][1] == 70
        assert 'id="underperforming"' not in page.text  # ¥3.50 for ¥150 brought
        listing = client.get("/campaigns").text
        assert 'href="/campaigns/tuesday_x2"' in listing
        assert client.get("/campaigns/nope").status_code == 404
        api = client.get("/api/campaigns/tuesday_x2/figures").json()
        assert api["points_given"] == 70 and api["underperforming"] is False
