"""Rewards: the tiers that may redeem, categories, stock taken atomically (409 when out, never
below 0 under concurrent redemptions: threads on PostgreSQL), the monthly cap."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from central.db.models import Member, Redemption, Reward
from central.services import members, points, rewards
from central.services.errors import Forbidden, Invalid, Refused
from tests.central.helpers import at

NOW = at("2026-03-03 10:00")


def _member(c: Any, s: Any, mid: str, tier: str, balance: int) -> None:
    m = members.enrol(s, c.rules, member_id=mid, phone=None, name=mid, tier=tier,
                      now=at("2026-01-01 09:00"))
    points.accrue(s, c.rules, m, balance, at("2026-01-01 09:00"), lot_id=f"seed-{mid}",
                  source="test")


def test_tiers_category_and_stock_are_checked_and_shown(central: Any) -> None:
    c = central
    tiers = c.rules.tier_names
    with c.tx() as s:
        r = rewards.put_reward(s, reward_id="lounge", kind="experience", name="Lounge",
                               points=50, value=Decimal("20"), tiers=["gold"],
                               category="lifestyle", stock=3, known_tiers=tiers)
        assert rewards.reward_json(r) == {
            "reward_id": "lounge", "kind": "experience", "name": "Lounge", "points": 50,
            "value": "20", "hours": None, "active": True, "tiers": ["gold"],
            "category": "lifestyle", "stock": 3}
        cases: list[tuple[dict[str, Any], str]] = [
            ({"kind": "parking_hours", "hours": 1, "stock": 3}, "stock"),
            ({"tiers": ["diamond"]}, "tiers"), ({"tiers": []}, "tiers"),
            ({"stock": -1}, "stock"), ({"category": "x" * 40}, "category")]
        for kw, field in cases:
            args = {"kind": "merchandise", "name": "X", "points": 1, "value": Decimal("1"),
                    "known_tiers": tiers, **kw}
            with pytest.raises(Invalid) as e:
                rewards.put_reward(s, reward_id="bad", **args)
            assert e.value.field == field
        _member(c, s, "M1", "member", 500)
        _member(c, s, "G1", "gold", 500)
    with pytest.raises(Forbidden) as fe, c.tx() as s:
        rewards.redeem(s, c.rules, member_id="M1", reward_id="lounge", redemption_key="k-m1",
                       now=NOW)
    assert "gold" in fe.value.message
    with c.tx() as s:
        for i in range(3):
            rewards.redeem(s, c.rules, member_id="G1", reward_id="lounge",
                           redemption_key=f"k-g{i}", now=NOW)
    with pytest.raises(Refused) as oe, c.tx() as s:
        rewards.redeem(s, c.rules, member_id="G1", reward_id="lounge", redemption_key="k-g9",
                       now=NOW)
    assert "out of stock" in oe.value.message and oe.value.status == 409
    with c.tx() as s:
        assert s.get(Reward, "lounge").stock == 0
        assert s.get(Member, "G1").balance == 350
        # a retry of a redemption that went through answers it again, stock untouched
        again = rewards.redeem(s, c.rules, member_id="G1", reward_id="lounge",
                               redemption_key="k-g0", now=NOW)
        assert again.replayed and s.get(Reward, "lounge").stock == 0


def test_monthly_cap_refuses_where_it_bites(central: Any) -> None:
    c = central
    with c.tx() as s:
        rewards.put_reward(s, reward_id="spa", kind="experience", name="Spa", points=10,
                           value=Decimal("150"))
        _member(c, s, "G1", "gold", 500)
        rewards.redeem(s, c.rules, member_id="G1", reward_id="spa", redemption_key="a",
                       now=NOW)
    with pytest.raises(Refused) as e, c.tx() as s:
        rewards.redeem(s, c.rules, member_id="G1", reward_id="spa", redemption_key="b",
                       now=NOW)
    assert "¥200" in e.value.message and "¥150.00 redeemed" in e.value.message
    with c.tx() as s:  # next month (site time) the cap starts again
        rewards.redeem(s, c.rules, member_id="G1", reward_id="spa", redemption_key="c",
                       now=at("2026-04-01 00:05"))


def test_concurrent_redemptions_never_take_more_than_the_stock(central: Any) -> None:
    c = central
    if c.engine.dialect.name != "postgresql":
        pytest.skip("row locks under real concurrency: PostgreSQL")
    n, stock = 16, 5
    with c.tx() as s:
        rewards.put_reward(s, reward_id="mug", kind="merchandise", name="Mug", points=10,
                           value=Decimal("1"), stock=stock)
        for i in range(n):
            _member(c, s, f"M{i}", "member", 100)
    start = threading.Barrier(n)
    outcome: dict[str, str] = {}

    def redeem(i: int) -> None:
        start.wait()
        try:
            with c.tx() as s:
                rewards.redeem(s, c.rules, member_id=f"M{i}", reward_id="mug",
                               redemption_key=f"mug-{i}", now=NOW)
            outcome[f"M{i}"] = "ok"
        except Refused as exc:
            outcome[f"M{i}"] = exc.message
        except Exception as exc:
            outcome[f"M{i}"] = repr(exc)

    threads = [threading.Thread(target=redeem, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    oks = sorted(m for m, v in outcome.items() if v == "ok")
    assert len(oks) == stock, outcome
    assert all("out of stock" in v for v in outcome.values() if v != "ok"), outcome
    with c.tx() as s:
        assert s.get(Reward, "mug").stock == 0
        assert s.scalar(select(func.count(Redemption.id))) == stock
        spent = {m.member_id: m.balance for m in s.scalars(select(Member))}
    assert sorted(m for m, b in spent.items() if b == 90) == oks
    assert all(b == 100 for m, b in spent.items() if m not in oks)


def test_rewards_page_and_api_carry_tiers_category_and_stock(central: Any) -> None:
    import re

    from fastapi.testclient import TestClient

    from central.services import staff
    from central.web import create_app

    c = central
    pw = "correct horse battery"
    with c.tx() as s:
        staff.add_user(s, "mkt", "marketing", pw, c.now)
        m = members.enrol(s, c.rules, member_id="M1", phone="13800000001", name="Li",
                          tier="member", now=at("2026-01-01 09:00"), password=pw)
        points.accrue(s, c.rules, m, 500, at("2026-01-01 09:00"), lot_id="seed",
                      source="test")
    with TestClient(create_app(c), base_url="https://testserver") as client:
        page = client.get("/login")
        tok = re.search(r'name="login_token" value="([^"]*)"', page.text)
        assert tok
        client.post("/login", data={"username": "mkt", "password": pw, "next": "",
                                    "login_token": tok.group(1)})
        csrf = re.search(r'name="csrf_token" value="([^"]*)"', client.get("/rewards").text)
        assert csrf
        form = {"csrf_token": csrf.group(1), "reward_id": "lounge", "name": "Lounge",
                "points": "50", "value": "20", "kind": "experience", "category": "lifestyle",
                "stock": "2", "tiers": ["gold"], "active": "on"}
        r = client.post("/rewards", data=form, follow_redirects=False)
        assert r.status_code == 303, r.text
        bad = client.post("/rewards", data={**form, "kind": "parking_hours", "hours": "1"})
        assert bad.status_code == 422 and 'id="rw-stock-err"' in bad.text
        page = client.get("/rewards").text
        row = page[page.index("<td>lounge</td>"):].split("</tr>")[0]
        assert "lifestyle" in row and "gold" in row and ">2<" in row
        r = client.post("/api/staff/login", json={"username": "mkt", "password": pw})
        h = {"X-CSRF-Token": r.json()["csrf_token"]}
        r = client.put("/api/rewards/mug", headers=h, json={
            "kind": "merchandise", "name": "Mug", "points": 10, "value": "1.00",
            "category": "gifts", "stock": 0, "tiers": ["member", "gold"]})
        assert r.status_code == 200, r.text
        assert r.json()["stock"] == 0 and r.json()["tiers"] == ["gold", "member"]
        r = client.put("/api/rewards/mug2", headers=h, json={
            "kind": "merchandise", "name": "Mug", "points": 10, "value": "1.00",
            "tiers": ["diamond"]})
        assert r.status_code == 422 and r.json()["field"] == "tiers"
        # the member's portal: the gold-only lounge is not offered, the mug is out of stock
        client.cookies.clear()
        page = client.get("/m/login")
        tok = re.search(r'name="login_token" value="([^"]*)"', page.text)
        assert tok
        client.post("/m/login", data={"phone": "13800000001", "secret": pw, "next": "",
                                      "login_token": tok.group(1)})
        home = client.get("/m").text
        assert "Lounge" not in home and "Mug" in home and "已兑完" in home
        mine = client.get("/api/me/rewards").json()
        assert [(r["reward_id"], r["why_not"]) for r in mine["rewards"]] == [
            ("mug", "out_of_stock")]
        assert mine["cap_left"] == "200.00"


def test_the_members_catalogue_says_why_not(central: Any) -> None:
    c = central
    with c.tx() as s:
        _member(c, s, "M1", "member", 100)
        catalogue: list[tuple[str, str, int, str, dict[str, Any]]] = [
            ("spa", "experience", 10, "190", {}),  # over the cap after the mug
            ("mug", "merchandise", 10, "20", {"stock": 1}),
            ("bag", "merchandise", 500, "5", {}),  # more points than M1 has
            ("vip", "experience", 5, "1", {"tiers": ["gold"]})]  # not M1's tier
        for rid, kind, pts, value, kw in catalogue:
            rewards.put_reward(s, reward_id=rid, kind=kind, name=rid, points=pts,
                               value=Decimal(value), **kw)
        rewards.redeem(s, c.rules, member_id="M1", reward_id="mug", redemption_key="k1",
                       now=NOW)
    with c.tx() as s:
        cat = rewards.catalogue_for(s, c.rules, "M1", points.spendable(s, "M1", NOW), NOW)
    assert (cat["cap"], cat["redeemed"], cat["cap_left"]) == ("200", "20.00", "180.00")
    why = {r["reward_id"]: r["why_not"] for r in cat["rewards"]}
    assert why == {"mug": "out_of_stock", "spa": "monthly_cap", "bag": "points"}
