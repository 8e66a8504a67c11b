"""The campaign forecast replays the site's real past: stays rebuilt from what real lane
stores sent (through the wire codec and the committer) and the till purchases.

- the stays central rebuilds equal the exit lane's own ``ledger export --what sessions``,
  field by field (a reversed and redone exit, a stay longer than the lookback, another
  site's lane left out);
- replaying them through the site's bundle gives what was recorded;
- the page's forecast equals ``parkedge rules simulate`` over the page's own downloads.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import edge.cli.pricing  # noqa: F401
from central.config import parse_config
from central.config.models import CentralConfig
from central.ingest.commit import Committer
from central.services import members, points, purchases, sites, staff
from central.services.campaigns import replay
from central.services.figures import month_bounds
from central.services.purchases import PurchaseIn
from central.services.replay_data import period_records
from central.web import create_app
from edge.cli import app as cli
from edge.pricing import RuleBundle, load_bundle
from edge.pricing.bundle import BundleError
from edge.pricing.quote import quote_exit
from edge.pricing.types import Coupon, CouponKind, MemberSnapshot, PointsLot, SessionInput
from edge.store import ExitRecord, Store
from edge.sync import codec
from tests.central.helpers import ROOT, at, config_dict
from tests.central.test_pages import PW, form_token, sign_in

MALL = ROOT / "config" / "rules.mall.example.toml"
KEY = b"k" * 32
EXPORT_KEYS = ("session_id", "plate", "member_id", "tier", "vehicle_class", "entered",
               "exited", "points_before", "fee", "payable", "points_deducted",
               "points_earned", "rules_version")


@pytest.fixture
def cfg(db_url: str, tmp_path: Path) -> CentralConfig:
    """The mall's full scheme (parking points, caps, campaigns) as this site's bundle."""
    p = tmp_path / "rules.toml"
    p.write_text(MALL.read_text("utf-8").replace('site_id = "seed-mall"',
                                                 'site_id = "mall-1"'), "utf-8")
    return parse_config(config_dict(db_url, rules={"bundle": str(p)}))


class Lanes:
    """Real lane stores: E1 (entry) and X1 (exit) at mall-1, Z1 at mall-2; each exit
    priced by edge.pricing as the lane's decider does, from the exit store's member view."""

    def __init__(self, tmp: Path, rules: RuleBundle) -> None:
        self.rules = rules
        self.e1 = Store.open(tmp / "e1.db", "E1")
        self.x1 = Store.open(tmp / "x1.db", "X1")
        self.z1 = Store.open(tmp / "z1.db", "Z1")
        self.sent = {"E1": 0, "X1": 0, "Z1": 0}
        self.last_exit: dict[str, datetime] = {}
        for st in (self.x1, self.z1):
            st.upsert_member("M1", tier="gold")
            st.set_lots("M1", [("L1", 600, None, None)])
            st.upsert_member("M2", tier="normal")
            st.set_lots("M2", [("L2", 40, None, None)])

    def close(self) -> None:
        for st in (self.e1, self.x1, self.z1):
            st.close()

    def _snap(self, st: Store, mid: str, when: datetime) -> MemberSnapshot:
        v = st.member_view(mid, when, self.rules.tz)
        return MemberSnapshot(
            mid, v.tier, tuple(PointsLot(x.lot_id, x.points, x.expires_at, x.earned_at)
                               for x in v.lots),
            tuple(Coupon(x.coupon_id, cast(CouponKind, x.kind), x.value, x.valid_until)
                  for x in v.coupons),
            redeemed_this_month_value=v.redeemed_this_month_value,
            redeemed_today_points=v.redeemed_today_points, earned_today=v.earned_today,
            auto_deduct=v.auto_deduct, blocked=v.blocked)

    def enter(self, plate: str, mid: str | None, when: datetime, cls: str = "small",
              lane: str = "E1") -> str:
        st = self.z1 if lane == "Z1" else self.e1
        ev = uuid.uuid4().hex
        s, _ = st.record_entry(plate=plate, entered_at=when, event_id=ev, vehicle_class=cls,
                               member_id=mid, rules_version=self.rules.version)
        if lane == "E1":  # what the lanes' sync does: the exit lane learns the open stay
            self.x1.cache_session(session_id=s.session_id, plate=plate, entered_at=when,
                                  event_id=ev, entry_lane="E1", vehicle_class=cls,
                                  member_id=mid, rules_version=self.rules.version)
        return s.session_id

    def leave(self, sid: str, plate: str, mid: str | None, entered: datetime,
              when: datetime, cls: str = "small", lane: str = "X1") -> None:
        st = self.z1 if lane == "Z1" else self.x1
        prev = self.last_exit.get(plate)  # as the decider: an exit before this stay began
        q = quote_exit(SessionInput(entered, when, cls, plate, lane,
                                    previous_exit=prev if prev and prev <= entered else None),
                       self._snap(st, mid, when) if mid else None, self.rules, at=when)
        self.last_exit[plate] = when
        st.record_exit(ExitRecord(
            exit_event_id=uuid.uuid4().hex, session_id=sid, plate=plate, exited_at=when,
            member_id=mid, rules_version=q.rules_version, fee=q.fee, payable=q.payable,
            points_deducted=q.points_deducted, lots_used=tuple(q.lots_used),
            coupons_used=tuple(q.coupons_used), points_earned=q.points_earned,
            earned_expires_at=q.earned_expires_at, quote=q.to_json(), flags=tuple(q.flags)))

    def stay(self, plate: str, mid: str | None, entered: datetime, exited: datetime,
             cls: str = "small") -> str:
        sid = self.enter(plate, mid, entered, cls)
        self.leave(sid, plate, mid, entered, exited, cls)
        return sid

    def sync(self, committer: Committer) -> None:
        """Every new entry of every lane, signed, parsed and committed as central does."""
        for lane, st in (("E1", self.e1), ("X1", self.x1), ("Z1", self.z1)):
            es = st.entries(self.sent[lane], 1000)
            if not es:
                continue
            site = "mall-2" if lane == "Z1" else "mall-1"
            raw = codec.encode_batch(site, lane, [codec.encode_entry(e) for e in es],
                                     es[0].seq, es[-1].seq, KEY, es[-1].at)
            committer.commit([codec.parse_batch(raw, lambda _lane: KEY)])
            self.sent[lane] = es[-1].seq


@pytest.fixture
def lanes(central: Any, tmp_path: Path) -> Iterator[Lanes]:
    c = central
    now = at("2026-02-20 09:00")
    with c.tx() as s:
        for mid, phone, tier in [("M1", "13800000001", "gold"), ("M2", "13800000002",
                                                                 "normal")]:
            members.enrol(s, c.rules, member_id=mid, phone=phone, name=mid, tier=tier,
                          now=now, plates=(f"粤B1000{mid[1]}",), password=PW)
        m1 = points.lock_member(s, "M1")
        points.accrue(s, c.rules, m1, 600, now, lot_id="L1", source="adjustment")
        m2 = points.lock_member(s, "M2")
        points.accrue(s, c.rules, m2, 40, now, lot_id="L2", source="adjustment")
        for lane, kind, site in [("E1", "entry", "mall-1"), ("X1", "exit", "mall-1"),
                                 ("Z1", "exit", "mall-2")]:
            sites.register_lane(s, site, lane_id=lane, kind=kind, name=lane, now=now,
                                configured=frozenset())
        purchases.add_shop(s, "cafe-1", "Cafe", "dining")
        purchases.add_shop(s, "shoe-2", "Shoes", "retail")
        staff.add_user(s, "mkt", "marketing", PW, now)
        staff.add_user(s, "aud", "auditor", PW, now)
    ln = Lanes(tmp_path, c.rules)
    cm = Committer(c.engine, c.sessions, c.rules, c.clock)
    # March: a gold member's afternoon, a visitor, a new-energy car, an exit reversed
    # (the car backed away) and done again ten minutes later, one reversed and not redone
    ln.stay("粤B10001", "M1", at("2026-03-10 10:00"), at("2026-03-10 13:10"))
    ln.stay("粤A99999", None, at("2026-03-10 11:00"), at("2026-03-10 14:35"))
    ln.stay("粤B10002", "M2", at("2026-03-14 09:00"), at("2026-03-14 12:30"), "new_energy")
    sid = ln.stay("粤B10001", "M1", at("2026-03-21 15:00"), at("2026-03-21 18:00"))
    ln.x1.reverse_exit(sid, at("2026-03-21 18:01"), "backed away")
    ln.leave(sid, "粤B10001", "M1", at("2026-03-21 15:00"), at("2026-03-21 18:11"))
    sid = ln.stay("粤A77777", None, at("2026-03-22 10:00"), at("2026-03-22 11:00"))
    ln.x1.reverse_exit(sid, at("2026-03-22 11:01"), "backed away")
    # a stay from March 20 to May 5 (46 days: past the 31-day lookback of a May period)
    ln.stay("粤A55555", None, at("2026-03-20 08:00"), at("2026-05-05 09:00"))
    ln.stay("粤B10002", "M2", at("2026-04-11 10:00"), at("2026-04-11 16:00"), "new_energy")
    # another site's lane: never in mall-1's forecast
    zs = ln.enter("粤B10001", "M1", at("2026-04-02 09:00"), lane="Z1")
    ln.leave(zs, "粤B10001", "M1", at("2026-04-02 09:00"), at("2026-04-02 12:00"),
             lane="Z1")
    ln.sync(cm)
    # purchases after the day's exits (the daily cap is shared with parking)
    with c.tx() as s:
        for key, mid, shop, amount, when, brand in [
                ("p1", "M1", "cafe-1", "120", "2026-03-10 19:30", None),
                ("p2", "M2", "shoe-2", "260", "2026-03-14 15:00", None),
                ("p3", "M1", "shoe-2", "80", "2026-04-07 12:00", "brand-a"),
                ("p4", "M2", "cafe-1", "55", "2026-05-06 12:00", None)]:
            purchases.record_purchase(s, c.rules, PurchaseIn(shop, key, mid, Decimal(amount),
                                                             at(when), brand), at(when))
    c.now = at("2026-06-02 10:00")
    yield ln
    ln.close()


def _records(c: Any, first: str, last: str) -> list[dict[str, Any]]:
    lo, hi = month_bounds(c.rules.tz, first, last)
    with c.tx() as s:
        return period_records(s, "mall-1", lo, hi)


def test_stays_rebuilt_at_central_equal_the_exit_lanes_own_export(central: Any,
                                                                  lanes: Lanes) -> None:
    recs = _records(central, "2026-03", "2026-05")
    stays = [r for r in recs if r["kind"] == "session"]
    exported = list(lanes.x1.export("sessions"))
    assert len(exported) == 6  # the reversed-only stay is open again at the lane
    assert [{k: r[k] for k in EXPORT_KEYS} for r in stays] == [
        {k: r[k] for k in EXPORT_KEYS} for r in exported]
    assert {r["lane_id"] for r in stays} == {"X1"}  # Z1 is another site's
    assert [r["purchase_id"] for r in recs if r["kind"] == "purchase"] == [1, 2, 3, 4]
    times = [r["at"] if r["kind"] == "purchase" else r["exited"] for r in recs]
    assert [datetime.fromisoformat(t) for t in times] == sorted(
        datetime.fromisoformat(t) for t in times)
    # May alone: the long stay's entry is found by id, beyond the lookback
    may = [r for r in _records(central, "2026-05", "2026-05") if r["kind"] == "session"]
    assert [(r["plate"], r["entered"]) for r in may] == [
        ("粤A55555", "2026-03-20T00:00:00+00:00")]  # 08:00 site time, as the lanes store it


def test_replaying_the_site_bundle_gives_what_was_recorded(central: Any,
                                                           lanes: Lanes) -> None:
    recs = _records(central, "2026-03", "2026-05")
    t = replay(recs, central.rules)
    rec_sessions = [r for r in recs if r["kind"] == "session"]
    assert t.sessions == len(rec_sessions) == 6 and t.purchases == 4
    assert t.points_issued == sum(r["points_earned"] for r in rec_sessions) + sum(
        r["points"] for r in recs if r["kind"] == "purchase")
    assert t.points_redeemed == sum(r["points_deducted"] for r in rec_sessions)
    assert t.points_redeemed > 0 and t.purchase_points > 0
    assert t.fees_collected == sum(Decimal(r["payable"]) for r in rec_sessions)
    assert t.fee_total == sum(Decimal(r["fee"]) for r in rec_sessions)


def _fc_data(html: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="fc-data">(.*?)</script>', html)
    assert m, html[:2000]
    return cast(dict[str, Any], json.loads(m.group(1))["fc"])


def test_page_forecast_equals_rules_simulate_over_its_downloads(
        central: Any, lanes: Lanes, tmp_path: Path) -> None:
    with TestClient(create_app(central), base_url="https://testserver") as client:
        sign_in(client, "mkt")
        csrf = form_token(client.get("/campaigns").text, "csrf_token")
        form = {"csrf_token": csrf, "name": "spring_x2", "applies_to": "both",
                "date_from": "2026-03-01", "date_to": "2026-04-30", "multiplier": "2",
                "fc_start": "2026-03", "fc_end": "2026-05"}
        r = client.post("/campaigns/forecast", data=form)
        assert r.status_code == 200, r.text
        fc = _fc_data(r.text)
        assert fc["sessions"] == 6 and fc["purchases"] == 4 and fc["extra_points"] > 0
        assert 'id="fc-cmd"' in r.text
        data = client.get("/campaigns/forecast/data.jsonl",
                          params={"first": "2026-03", "last": "2026-05"})
        assert data.status_code == 200
        assert data.headers["cache-control"] == "no-store"
        assert "attachment" in data.headers["content-disposition"]
        base = client.get("/campaigns/forecast/base.json")
        cand = client.post("/campaigns/forecast/candidate.json", data=form)
        assert base.status_code == cand.status_code == 200
        (tmp_path / "d.jsonl").write_bytes(data.content)
        (tmp_path / "base.json").write_bytes(base.content)
        (tmp_path / "candidate.json").write_bytes(cand.content)
        # an auditor sees the campaigns, not the members' data behind a forecast
        client.post("/logout", data={"csrf_token": form_token(
            client.get("/campaigns").text, "csrf_token")})
        sign_in(client, "aud")
        assert client.get("/campaigns/forecast/data.jsonl").status_code == 403
        assert client.get("/campaigns/forecast/base.json").status_code == 403
    for workers in ("1", "2"):
        out = CliRunner().invoke(cli, [
            "rules", "simulate", "--sessions", str(tmp_path / "d.jsonl"), "--rules",
            str(tmp_path / "candidate.json"), "--baseline", str(tmp_path / "base.json"),
            "--workers", workers, "--json"])
        assert out.exit_code == 0, out.stdout + out.stderr
        rep = json.loads(out.stdout)
        c, b = rep["candidate"], rep["baseline"]
        assert c["points_issued"] - b["points_issued"] == fc["extra_points"]
        assert [c["points_by_month"].get(m, 0) for m in fc["months"]] == fc["with_campaign"]
        assert [b["points_by_month"].get(m, 0) for m in fc["months"]] == fc["base"]
        assert c["campaigns"]["spring_x2"]["fired"] == fc["fired"] > 0
        assert c["sessions"] == fc["sessions"] and c["purchases"] == fc["purchases"]
        assert c["fees_collected"] == fc["fees_with"] and b["fees_collected"] == fc["fees_base"]
        # the site's own bundle over its own past: what was recorded
        assert b["points_issued"] == rep["recorded"]["points_issued"]
        assert b["points_redeemed"] == rep["recorded"]["points_redeemed"]
        assert b["fees_collected"] == rep["recorded"]["fees_collected"]


def test_a_bundle_download_is_json_load_bundle_reads(central: Any, lanes: Lanes,
                                                     tmp_path: Path) -> None:
    with TestClient(create_app(central), base_url="https://testserver") as client:
        sign_in(client, "mkt")
        r = client.get("/campaigns/forecast/base.json")
    p = tmp_path / "b.json"
    p.write_bytes(r.content)
    assert load_bundle(p).version == central.rules.version
    p.write_text("[1, 2]", "utf-8")
    with pytest.raises(BundleError, match="a bundle is a JSON object"):
        load_bundle(p)
