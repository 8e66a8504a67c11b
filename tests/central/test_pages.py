"""The pages without a browser, on both backends: the overview's KPIs as a service
(figures.overview), the sign-in forms' tokens, CSRF from a form field, roles, language,
times in the site's zone, the adjustment's reason and audit line, the portal's privacy and
its server-sent balance."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from central.services import audit, campaigns, members, points, purchases, rewards, staff
from central.services.figures import overview
from central.services.purchases import PurchaseIn
from central.web import create_app
from central.web.pages.i18n import T
from tests.central.helpers import at

PW = "correct horse battery"


@pytest.fixture
def site(central: Any) -> Iterator[tuple[Any, TestClient]]:
    c = central
    c.now = at("2026-03-03 12:00")
    with c.tx() as s:
        for name, role in [("ops", "operations"), ("mkt", "marketing"), ("aud", "auditor"),
                           ("adm", "admin")]:
            staff.add_user(s, name, role, PW, c.now)
        purchases.add_shop(s, "cafe-1", "Cafe", "dining")
        purchases.add_shop(s, "shoe-2", "Shoes", "retail")
        for mid, phone, name in [("M1", "13800000001", "王芳"), ("M2", "13800000002", "李强")]:
            members.enrol(s, c.rules, member_id=mid, phone=phone, name=name, tier="gold",
                          now=at("2026-01-01 09:00"), plates=(f"粤B1000{mid[1]}",),
                          password=PW)
        rewards.put_reward(s, reward_id="park-1h", kind="parking_hours", name="1小时停车券",
                           points=60, value=Decimal("5"), hours=1)
        rewards.put_reward(s, reward_id="mug", kind="merchandise", name="Mug", points=100,
                           value=Decimal("30"))
        rewards.put_reward(s, reward_id="spa", kind="experience", name="Spa", points=150,
                           value=Decimal("190"))
    with TestClient(create_app(c), base_url="https://testserver") as client:
        yield c, client


def form_token(html: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert m, name
    return m.group(1)


def sign_in(client: TestClient, user: str, password: str = PW) -> Any:
    page = client.get("/login")
    return client.post("/login", data={"username": user, "password": password, "next": "",
                                       "login_token": form_token(page.text, "login_token")},
                       follow_redirects=False)


def member_sign_in(client: TestClient, phone: str) -> Any:
    page = client.get("/m/login")
    return client.post("/m/login", data={"phone": phone, "secret": PW, "next": "",
                                         "login_token": form_token(page.text, "login_token")},
                       follow_redirects=False)


def _buy(c: Any, s: Any, key: str, member: str, shop: str, amount: str, when: str) -> None:
    purchases.record_purchase(s, c.rules, PurchaseIn(shop, key, member, Decimal(amount),
                                                     at(when)), at(when))


def test_overview_figures_by_source_month_and_definition(site: tuple[Any, TestClient]) -> None:
    c, _client = site
    with c.tx() as s:
        # January, a Tuesday: dining ¥60 -> 90 points (60 shop base + 30 campaign x1.5)
        _buy(c, s, "a", "M1", "cafe-1", "60", "2026-01-06 12:00")
        # 31 January 23:30 site time is still January (15:30 UTC); Saturday x2 -> 100
        _buy(c, s, "b", "M2", "shoe-2", "50", "2026-01-31 23:30")
        m = points.lock_member(s, "M1")
        points.accrue(s, c.rules, m, 30, at("2026-02-10 09:00"), lot_id="session:1",
                      source="parking")
        points.spend(s, m, 20, at("2026-02-10 11:00"), kind="points_spent", ref="lane X1")
        rewards.redeem(s, c.rules, member_id="M1", reward_id="mug", redemption_key="r1",
                       now=at("2026-02-11 10:00"))
        rewards.redeem(s, c.rules, member_id="M2", reward_id="park-1h", redemption_key="r2",
                       now=at("2026-02-12 10:00"))
    with c.tx() as s:
        f = overview(s, c.rules, Decimal("0.05"), "2026-01", "2026-03", c.now)
    assert f["months"] == ["2026-01", "2026-02", "2026-03"]
    assert f["issued"]["shop"] == [110, 0, 0]
    assert f["issued"]["campaign"] == [80, 0, 0]
    assert f["issued"]["parking"] == [0, 30, 0]
    assert f["redeemed"] == {"parking": [0, 80, 0], "rewards": [0, 100, 0]}
    assert f["points_issued"] == 220 and f["points_redeemed"] == 180
    assert f["redemption_rate_pct"] == "81.8"  # 180 / 220, the seed's definition
    assert f["points_outstanding"] == 40 and f["outstanding_share_pct"] == "18.2"
    assert f["cost_of_points"] == ["9.50", "1.50", "0.00"]  # cost_per_point is the setting
    assert f["value_redeemed"] == ["0.00", "35.00", "0.00"]
    assert {p["kind"]: p["count"] for p in f["popular"]} == {"merchandise": 1,
                                                             "parking_hours": 1}
    assert f["active_members"] == 2 and f["avg_issued_per_active_member"] == 110
    # expiry: 31 March of the next year -> the 2026 lots expire beyond 90 days of 3 March
    assert f["expiring"] == {"30": 0, "60": 0, "90": 0}
    with c.tx() as s:
        f2 = overview(s, c.rules, Decimal("0.05"), "2026-02", "2026-02", c.now)
    assert f2["points_issued"] == 30 and f2["issued"]["shop"] == [0]


def test_expiring_windows(site: tuple[Any, TestClient]) -> None:
    c, _client = site
    with c.tx() as s:
        m = points.lock_member(s, "M1")
        points.accrue(s, c.rules, m, 40, at("2025-06-01 10:00"), lot_id="old", source="parking")
        f = overview(s, c.rules, Decimal("0.05"), "2026-03", "2026-03", at("2026-03-03 12:00"))
    assert f["expiring"] == {"30": 40, "60": 40, "90": 40}  # 2025's lot ends on 31 March


def test_every_text_in_both_languages() -> None:
    for key, (zh, en) in T.items():
        assert zh and en, key


def test_sign_in_form_token_roles_and_language(site: tuple[Any, TestClient]) -> None:
    _c, client = site
    r = client.get("/overview", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/overview"
    page = client.get("/login")
    assert 'lang="zh-CN"' in page.text and "员工登录" in page.text  # zh site by default
    assert '<label for="username">' in page.text and '<label for="password">' in page.text
    # no login token (a forged cross-site form): refused
    r = client.post("/login", data={"username": "mkt", "password": PW},
                    follow_redirects=False)
    assert r.status_code == 403
    r = sign_in(client, "mkt", "wrong")
    assert r.status_code == 401 and "用户名或密码错误" in r.text
    r = sign_in(client, "mkt")
    assert r.status_code == 303 and r.headers["location"] == "/overview"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "secure" in cookie and "samesite=strict" in cookie
    r = client.get("/overview")
    assert r.status_code == 200 and '<canvas id="ch-issued"' in r.text
    assert "/static/vendor/chartjs/chart.umd.min.js" in r.text and "cdn" not in r.text.lower()
    assert client.get("/static/vendor/chartjs/chart.umd.min.js").status_code == 200
    r = client.get("/lang/en?next=/overview")
    assert r.status_code == 200 and "Overview" in r.text and 'lang="en"' in r.text
    r = client.get("/lang/en?next=https://evil.example/", follow_redirects=False)
    assert r.headers["location"] == "/"  # no open redirect
    client.get("/lang/zh")
    r = client.get("/campaigns")  # the bundle's campaigns, read-only for now
    assert r.status_code == 200 and "weekend_x2" in r.text and "×2" in r.text
    client.cookies.clear()
    assert sign_in(client, "ops").headers["location"] == "/ops"
    r = client.get("/overview")
    assert r.status_code == 403 and "无权" in r.text
    assert client.get("/campaigns").status_code == 403


def test_adjustment_needs_csrf_field_reason_and_role(site: tuple[Any, TestClient]) -> None:
    c, client = site
    sign_in(client, "mkt")
    page = client.get("/members/M1")
    assert 'id="adjust"' not in page.text  # marketing may not adjust points
    csrf = form_token(page.text, "csrf_token")
    r = client.post("/members/M1/adjust", data={"points": "5", "reason": "x",
                                                "csrf_token": csrf})
    assert r.status_code == 403
    client.cookies.clear()
    sign_in(client, "ops")
    page = client.get("/members/M1")
    csrf = form_token(page.text, "csrf_token")
    r = client.post("/members/M1/adjust", data={"points": "5", "reason": "goodwill"})
    assert r.status_code == 403  # no CSRF field
    r = client.post("/members/M1/adjust", data={"points": "5", "reason": "goodwill",
                                                "csrf_token": "forged"})
    assert r.status_code == 403
    r = client.post("/members/M1/adjust", data={"points": "5", "reason": " ",
                                                "csrf_token": csrf})
    assert r.status_code == 422 and 'id="adj-reason-err"' in r.text
    r = client.post("/members/M1/adjust", data={"points": "5", "reason": "goodwill",
                                                "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    with c.tx() as s:
        assert members.get_member(s, "M1").balance == 5
        e = audit.entries(s, 1)[0]
    assert (e["actor"], e["action"], e["after"]["reason"]) == ("staff:ops", "points.adjust",
                                                               "goodwill")
    page = client.get("/members/M1")
    # history in the site's zone, to the second: 12:00 +08:00, not 04:00 UTC, no micros
    assert "2026-03-03 12:00:00" in page.text and "+00:00" not in page.text
    r = client.post("/members/M1/adjust", data={"points": "-500", "reason": "oops",
                                                "csrf_token": csrf})
    assert r.status_code == 422 and "not enough points" in r.text


def test_member_search_by_name_phone_plate(site: tuple[Any, TestClient]) -> None:
    _c, client = site
    sign_in(client, "aud")
    for q in ["王芳", "13800000001", "粤b10001", "B10001"]:
        r = client.get("/members", params={"q": q})
        assert "M1" in r.text and "/members/M2" not in r.text, q
    assert "没有找到会员" in client.get("/members", params={"q": "nobody"}).text


def test_rewards_page_cap_and_form(site: tuple[Any, TestClient]) -> None:
    c, client = site
    with c.tx() as s:
        points.adjust(s, c.rules, "M2", 500, c.now, reason="t", ref="t")
        rewards.redeem(s, c.rules, member_id="M2", reward_id="spa", redemption_key="k",
                       now=c.now)
    sign_in(client, "mkt")
    page = client.get("/rewards")
    assert "¥200" in page.text and 'id="at-cap">0<' in page.text
    assert "⚠ 1" in page.text  # M2's ¥190 used: the cap blocks them from the ¥30 mug
    csrf = form_token(page.text, "csrf_token")
    r = client.post("/rewards", data={"reward_id": "cafe", "name": "Coffee", "points": "-3",
                                      "value": "5", "kind": "discount", "active": "on",
                                      "csrf_token": csrf})
    assert r.status_code == 422 and 'id="rw-points-err"' in r.text
    r = client.post("/rewards", data={"reward_id": "cafe", "name": "Coffee", "points": "30",
                                      "value": "5", "kind": "discount", "active": "on",
                                      "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert "Coffee" in client.get("/rewards").text


def test_portal_two_members_see_only_their_own(site: tuple[Any, TestClient]) -> None:
    c, client = site
    with c.tx() as s:
        points.adjust(s, c.rules, "M1", 120, c.now, reason="t", ref="a")
        points.adjust(s, c.rules, "M2", 777, c.now, reason="t", ref="b")
    assert member_sign_in(client, "13800000001").headers["location"] == "/m"
    page = client.get("/m")
    assert 'data-balance="120"' in page.text and "王芳" in page.text
    assert "李强" not in page.text and "777" not in page.text
    assert client.get("/members/M2", follow_redirects=False).status_code == 303  # staff only
    assert client.get("/api/members/M2").status_code == 401
    # redeem: the member comes from the session, never from the form
    csrf = form_token(page.text, "csrf_token")
    key = form_token(page.text, "redemption_key")
    r = client.post("/m/redeem", data={"reward_id": "park-1h", "redemption_key": key,
                                       "member_id": "M2", "csrf_token": csrf},
                    follow_redirects=False)
    assert r.status_code == 303
    with c.tx() as s:
        assert members.get_member(s, "M1").balance == 60
        assert members.get_member(s, "M2").balance == 777
    r = client.post("/m/redeem", data={"reward_id": "park-1h", "redemption_key": key + "x"})
    assert r.status_code == 403  # no CSRF field
    client.cookies.clear()
    member_sign_in(client, "13800000002")
    page = client.get("/m")
    assert 'data-balance="777"' in page.text and "王芳" not in page.text


def test_portal_events_stream_the_balance(site: tuple[Any, TestClient]) -> None:
    _c, client = site
    member_sign_in(client, "13800000001")
    with client.stream("GET", "/m/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        got = []
        for line in lines:
            if line.startswith("data:"):
                got.append(line)
                break
    assert got and '"balance": 0' in got[0]
    client.cookies.clear()
    assert client.get("/m/events", follow_redirects=False).status_code == 303


CAMPAIGN = {"name": "tuesday_x2", "applies_to": "purchase", "days": ["tue"],
            "multiplier": "2", "budget": "3", "fc_start": "2026-01", "fc_end": "2026-02"}


def test_campaign_form_errors_beside_fields(site: tuple[Any, TestClient]) -> None:
    _c, client = site
    sign_in(client, "mkt")
    page = client.get("/campaigns")
    csrf = form_token(page.text, "csrf_token")
    bad = {**CAMPAIGN, "multiplier": "abc", "time_from": "10:00", "csrf_token": csrf,
           "date_from": "2026-13-01"}
    r = client.post("/campaigns/forecast", data=bad)
    assert r.status_code == 422
    for f in ("multiplier", "time_from", "date_from"):
        assert f'id="cf-{f}-err"' in r.text, f
    assert 'value="abc"' in r.text  # what was typed stays in the field
    r = client.post("/campaigns/forecast", data={**CAMPAIGN, "name": "weekend_x2",
                                                 "csrf_token": csrf})
    assert r.status_code == 422 and 'id="cf-name-err"' in r.text  # the bundle has it
    r = client.post("/campaigns/forecast", data={**CAMPAIGN, "group": "nope",
                                                 "csrf_token": csrf})
    assert r.status_code == 422 and 'id="cf-group-err"' in r.text  # the schema's check
    client.cookies.clear()
    sign_in(client, "aud")  # auditors read campaigns, do not make them
    page = client.get("/campaigns")
    assert page.status_code == 200 and 'id="campaign-form"' not in page.text
    r = client.post("/campaigns/forecast", data={**CAMPAIGN,
                                                 "csrf_token": form_token(page.text,
                                                                          "csrf_token")})
    assert r.status_code == 403


def test_a_long_forecast_does_not_stall_the_process(site: tuple[Any, TestClient],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A forecast replays the site's stays (about a minute for a big mall's year): while one
    runs, the same process still answers other requests (sign-in pages, tills, the portal).
    The forecast here is the real one, held until another request has been answered; the
    handlers that read a form used to be ``async`` and ran their work on the event loop, so
    the other request waited for the forecast, and the forecast for it: 20 s, then failed."""
    _c, client = site
    sign_in(client, "mkt")
    csrf = form_token(client.get("/campaigns").text, "csrf_token")
    started, answered = threading.Event(), threading.Event()
    held: list[bool] = []
    real = campaigns.forecast

    def long_forecast(*a: Any, **k: Any) -> Any:
        started.set()
        held.append(answered.wait(20))
        return real(*a, **k)

    monkeypatch.setattr(campaigns, "forecast", long_forecast)
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.update(r=client.post(
        "/campaigns/forecast", data={**CAMPAIGN, "csrf_token": csrf})))
    t.start()
    try:
        assert started.wait(20)
        other = client.get("/m/login")
        answered.set()
        assert other.status_code == 200
    finally:
        answered.set()
        t.join(30)
    assert held == [True], "the other request waited for the forecast"
    assert out["r"].status_code == 200 and 'id="fc-data"' in out["r"].text


def test_campaign_forecast_equals_the_engine_and_publish(site: tuple[Any, TestClient]) -> None:
    c, client = site
    with c.tx() as s:
        _buy(c, s, "a", "M1", "shoe-2", "60", "2026-01-06 12:00")   # Tuesday: x2 -> 100 cap
        _buy(c, s, "b", "M2", "shoe-2", "70", "2026-01-07 12:00")   # Wednesday: 70
        _buy(c, s, "c", "M1", "cafe-1", "80", "2026-02-03 12:00")   # Tue dining: 120 -> 100 cap
    sign_in(client, "mkt")
    csrf = form_token(client.get("/campaigns").text, "csrf_token")
    r = client.post("/campaigns/forecast", data={**CAMPAIGN, "csrf_token": csrf})
    assert r.status_code == 200, r.text
    m = re.search(r'<script type="application/json" id="fc-data">(.*?)</script>', r.text)
    assert m
    import json

    fc = json.loads(m.group(1))["fc"]
    # February's Tuesday dining: x1.5 = 120 -> capped at 100 a day with or without x2
    assert fc["base"] == [130, 100] and fc["with_campaign"] == [170, 100]
    assert fc["extra_points"] == 40 and fc["extra_cost"] == "2.00"
    assert fc["fired"] == 2 and fc["purchases"] == 3 and fc["over_budget"] is False
    r = client.post("/campaigns/forecast", data={**CAMPAIGN, "budget": "1.50",
                                                 "csrf_token": csrf})
    assert "超出预算" in r.text  # ¥2.00 of extra points against a ¥1.50 budget
    # publish without a signing key: nothing can go to the lanes, nothing is recorded
    r = client.post("/campaigns/publish", data={**CAMPAIGN, "csrf_token": csrf},
                    follow_redirects=False)
    assert r.status_code == 422 and "signing_key" in r.text
    # with one: the campaign, the signed bundle in the outbox and the audit line
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    client.app.state.signing_key = Ed25519PrivateKey.generate()  # type: ignore[attr-defined]
    r = client.post("/campaigns/publish", data={**CAMPAIGN, "csrf_token": csrf},
                    follow_redirects=False)
    assert r.status_code == 303
    page = client.get("/campaigns")
    assert "tuesday_x2" in page.text and "已下发" in page.text
    with c.tx() as s:
        e = audit.entries(s, 1)[0]
    assert e["action"] == "campaign.publish" and e["actor"] == "staff:mkt"
    assert e["after"]["campaign"]["multiplier"] == "2" and e["after"]["sent_to_lanes"] is True
