"""The site operations page without a browser, on SQLite and PostgreSQL: the snapshot as a
service (``central.services.ops``) over ledgers written by real lane stores and committed by
the real ingest committer; the page, its live part and its JSON by role (marketing refused);
a stalled or silent lane red and saying so; money per day in the site's zone."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from central.db.models import Lane, LaneEntry, LaneStatus
from central.ingest.commit import Committer
from central.services import ops, ops_tally, staff
from central.web import create_app
from edge.store import ExitRecord, Store
from edge.store.codec import ts
from edge.store.types import LedgerEntry
from edge.sync.codec import Batch
from tests.central.helpers import at
from tests.central.test_pages import PW, sign_in


def wire(e: LedgerEntry) -> dict[str, Any]:
    return {"entry_id": e.entry_id, "lane_id": e.lane_id, "seq": e.seq, "kind": str(e.kind),
            "at": ts(e.at), "recorded": ts(e.recorded), "session_id": e.session_id,
            "member_id": e.member_id, "plate": e.plate, "rules_version": e.rules_version,
            "payload": e.payload, "prev_hash": e.prev_hash, "hash": e.hash}


def ingest(c: Any, store: Store) -> int:
    """Commit the lane's whole ledger as the ingest worker would; the last seq."""
    es = [wire(e) for e in store.entries(0, 10_000)]
    Committer(c.engine, c.sessions, c.rules, c.clock).commit([Batch(
        "mall-1", store.lane_id, "b1", es[0]["seq"], es[-1]["seq"], tuple(es))])
    return int(es[-1]["seq"])


def exit_of(store: Store, plate: str, sid: str, when: Any, payable: str) -> None:
    store.record_exit(ExitRecord(
        exit_event_id=f"x-{plate}", session_id=sid, plate=plate, exited_at=when,
        member_id=None, rules_version="central-test-1", fee=Decimal(payable),
        payable=Decimal(payable), points_deducted=0, lots_used=(), coupons_used=(),
        points_earned=0, earned_expires_at=None, quote={}))


@pytest.fixture
def lanes(central: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Two lanes of mall-1 with a morning on them (site time +08:00; now 10:00)."""
    c = central
    entry, exit_ = Store.open(tmp_path / "entry-1.db", "entry-1"), \
        Store.open(tmp_path / "exit-1.db", "exit-1")
    sids = {}
    for plate, when, conf in [("粤B00001", at("2026-03-02 22:00"), 0.88),
                              ("粤B00002", at("2026-03-03 08:10"), 0.934),
                              ("粤B00003", at("2026-03-03 09:05"), 0.71),
                              ("粤B00004", at("2026-03-03 09:20"), 0.99)]:
        s, _ = entry.record_entry(plate=plate, entered_at=when, event_id=f"e-{plate}",
                                  detail={"confidence": conf, "source": "camera"})
        sids[plate] = s.session_id
        exit_.cache_session(session_id=s.session_id, plate=plate, entered_at=when,
                            event_id=f"e-{plate}", entry_lane="entry-1")
    entry.cancel_entry(sids["粤B00004"], at("2026-03-03 09:21"), "reversed away")
    entry.record_lane_event("blacklisted", at("2026-03-03 09:30"), plate="粤B66666",
                            detail={"direction": "entry"})
    entry.record_lane_event("device_down", at("2026-03-03 09:40"),
                            detail={"device": "camera"})
    entry.record_manual_open("fire drill", "guard-7", at("2026-03-03 09:45"))
    # yesterday's car leaves at 09:10 and pays 12.50; 粤B00002 leaves at 09:50 and pays 8
    exit_of(exit_, "粤B00001", sids["粤B00001"], at("2026-03-03 09:10"), "12.50")
    exit_.record_payment(sids["粤B00001"], Decimal("12.50"), "cash", at("2026-03-03 09:11"),
                         "p1")
    exit_of(exit_, "粤B00002", sids["粤B00002"], at("2026-03-03 09:50"), "8")
    exit_.record_payment(sids["粤B00002"], Decimal("8"), "wechat", at("2026-03-03 09:51"), "p2")
    exit_.record_lane_event("unknown_plate", at("2026-03-03 09:55"), plate="粤B77777")
    exit_.record_lane_event("device_down", at("2026-03-03 09:00"), detail={"device": "loops"})
    exit_.record_lane_event("device_recovered", at("2026-03-03 09:20"),
                            detail={"device": "loops"})
    last = {"entry-1": ingest(c, entry), "exit-1": ingest(c, exit_)}
    with c.tx() as s:
        for lane, kind in [("entry-1", "entry"), ("exit-1", "exit")]:
            s.add(Lane(site_id="mall-1", lane_id=lane, name=lane.upper(), kind=kind,
                       enabled=True, created_at=c.now))
            s.add(LaneStatus(site_id="mall-1", lane_id=lane, state="online", backlog=0,
                             last_acked_seq=last[lane], last_seen_at=c.now, stalled=False,
                             updated_at=c.now))
        for name, role in [("ops", "operations"), ("mkt", "marketing"), ("aud", "auditor"),
                           ("adm", "admin")]:
            staff.add_user(s, name, role, PW, c.now)
    yield {"sids": sids, "last": last, "entry": entry, "exit": exit_}
    entry.close()
    exit_.close()


def snap(c: Any) -> dict[str, Any]:
    with c.tx() as s:
        return ops.snapshot(s, c.now, c.cfg.site.tz)


def test_occupancy_now_and_by_hour(central: Any, lanes: dict[str, Any]) -> None:
    o = snap(central)["occupancy"]["mall-1"]
    # inside at 10:00: 粤B00003 only (B1 left 09:10, B2 09:50, B4 reversed away at entry)
    assert o["open_now"] == 1
    assert o["hours"] == [f"{h:02d}:00" for h in range(11)]  # 00:00 .. 10:00 (now)
    by = dict(zip(o["hours"], o["by_hour"], strict=True))
    assert by["00:00"] == 1 and by["08:00"] == 1  # yesterday's car, overnight
    assert by["09:00"] == 2  # B1 still in, B2 came 08:10
    assert by["10:00"] == 1
    central.now = at("2026-03-03 10:17")
    o = snap(central)["occupancy"]["mall-1"]
    assert o["hours"][-2:] == ["10:00", "10:17"] and o["by_hour"][-1] == 1


def test_lanes_devices_plates_manual_money(central: Any, lanes: dict[str, Any]) -> None:
    d = snap(central)
    by = {v["lane_id"]: v for v in d["lanes"]}
    assert by["entry-1"]["state"] == "online" and not by["entry-1"]["stalled"]
    assert by["entry-1"]["devices"] == {"barrier": "ok", "loops": "ok", "display": "ok",
                                        "camera": "down"}
    assert by["entry-1"]["red"]  # a camera down makes the lane red
    assert by["exit-1"]["devices"]["loops"] == "ok" and not by["exit-1"]["red"]
    assert by["exit-1"]["last_acked_seq"] == lanes["last"]["exit-1"]
    assert by["exit-1"]["last_acked_kind"] == "lane_event"
    assert by["entry-1"]["last_acked_kind"] == "manual_open"
    assert d["manual_opens"] == [{"at": ts(at("2026-03-03 09:45")), "lane": "entry-1",
                                  "operator": "guard-7", "reason": "fire drill",
                                  "session_id": ""}]
    assert [(e["event"], e["plate"]) for e in d["plate_events"]] == [
        ("unknown_plate", "粤B77777"), ("blacklisted", "粤B66666")]
    conf = {(p["plate"], p["what"]): p["confidence"] for p in d["plates"]}
    assert conf[("粤B00002", "session_opened")] == "0.934"
    assert conf[("粤B00002", "session_closed")] is None  # an exit row carries none
    assert conf[("粤B77777", "unknown_plate")] is None
    assert [a["event"] for a in d["alerts"]][:3] == ["device_down", "device_recovered",
                                                      "device_down"]
    money = dict(zip(d["money"]["days"], d["money"]["amounts"], strict=True))
    assert money["2026-03-03"] == "20.50" and money["2026-03-02"] == "0.00"
    assert d["money"]["days"][-1] == "2026-03-03" and len(d["money"]["days"]) == 14


def test_money_counts_the_site_day_not_the_utc_day(central: Any, lanes: dict[str, Any],
                                                   tmp_path: Path) -> None:
    """07:30 on the 3rd in Shanghai is 23:30 UTC on the 2nd: it is the 3rd's money."""
    st = Store.open(tmp_path / "exit-2.db", "exit-2")
    s, _ = st.record_entry(plate="粤B00009", entered_at=at("2026-03-03 07:00"), event_id="e9")
    exit_of(st, "粤B00009", s.session_id, at("2026-03-03 07:29"), "3.30")
    st.record_payment(s.session_id, Decimal("3.30"), "cash", at("2026-03-03 07:30"), "p9")
    s2, _ = st.record_entry(plate="粤B00008", entered_at=at("2026-03-02 23:00"), event_id="e8")
    exit_of(st, "粤B00008", s2.session_id, at("2026-03-02 23:58"), "1")
    st.record_payment(s2.session_id, Decimal("1"), "cash", at("2026-03-02 23:59"), "p8")
    ingest(central, st)
    st.close()
    money = dict(zip(*snap(central)["money"].values(), strict=True))
    assert money["2026-03-03"] == "23.80" and money["2026-03-02"] == "1.00"


@pytest.fixture
def client(central: Any, lanes: dict[str, Any]) -> Iterator[TestClient]:
    with TestClient(create_app(central), base_url="https://testserver") as cl:
        yield cl


@pytest.mark.parametrize("user,status", [("ops", 200), ("adm", 200), ("aud", 200),
                                         ("mkt", 403)])
def test_who_may_open_it(client: TestClient, user: str, status: int) -> None:
    assert sign_in(client, user).status_code == 303
    for path in ("/ops", "/ops/live", "/ops/data"):
        r = client.get(path)
        assert r.status_code == status, (user, path)
    nav = client.get("/members").text
    assert ('href="/ops"' in nav) == (status == 200)  # the nav offers it only to whom it may
    if status == 403:
        assert "您的角色无权访问此页面" in r.text
        assert "粤B00003" not in r.text


def test_signed_out_goes_to_sign_in(client: TestClient) -> None:
    r = client.get("/ops/data", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/ops/data"


def test_operations_lands_on_it(client: TestClient) -> None:
    assert sign_in(client, "ops").headers["location"] == "/ops"


def _lane_row(html: str, lane: str) -> str:
    start = html.index(f'data-lane="{lane}"')
    return html[start:html.index("</tr>", start)]


def test_page_in_site_time_both_languages(client: TestClient) -> None:
    sign_in(client, "ops")
    html = client.get("/ops").text
    assert "现场运营" in html and "2 条车道在线,0 条离线,0 条积压停滞" in html
    assert "2026-03-03 09:45:00" in html and "guard-7" in html and "fire drill" in html
    assert "01:45:00" not in html  # never UTC
    assert "¥20.50" in html and "0.934" in html and "粤B66666" in html and "黑名单车辆" in html
    row = _lane_row(html, "entry-1")
    assert 'class="red"' in row and "摄像机: 故障" in row  # red, and says which device
    assert "在线" in row and "积压停滞" not in row
    assert 'class="red"' not in _lane_row(html, "exit-1")
    assert "/static/vendor/chartjs/chart.umd.min.js" in html and "http" not in \
        html.split("<script src=")[1][:10]
    client.get("/lang/en")
    html = client.get("/ops").text
    assert "Site operations" in html and "2 lanes online, 0 offline" in html
    assert "Camera: Down" in _lane_row(html, "entry-1") and "Manual opens" in html


def test_a_stalled_or_silent_lane_is_red_and_says_so(central: Any, lanes: dict[str, Any],
                                                     client: TestClient) -> None:
    sign_in(client, "ops")
    with central.tx() as s:
        st = s.get(LaneStatus, ("mall-1", "exit-1"))
        st.backlog, st.stalled = 37, True
    row = _lane_row(client.get("/ops/live").text, "exit-1")
    assert 'class="red"' in row and 'data-stalled="true"' in row
    assert "积压停滞:条目未被确认" in row and ">37<" in row
    with central.tx() as s:
        st = s.get(LaneStatus, ("mall-1", "exit-1"))
        st.stalled, st.state = False, "offline"
    row = _lane_row(client.get("/ops/live").text, "exit-1")
    assert 'class="red"' in row and 'data-state="offline"' in row and "离线" in row
    # a last will carries the watermark of when the lane connected: central's commits win
    with central.tx() as s:
        s.get(LaneStatus, ("mall-1", "exit-1")).last_acked_seq = 0
    d = client.get("/ops/data").json()
    assert {v["lane_id"]: v["last_acked_seq"] for v in d["lanes"]}["exit-1"] == \
        lanes["last"]["exit-1"]
    # "online" but not heard for longer than the heartbeat allows: offline, and why
    with central.tx() as s:
        st = s.get(LaneStatus, ("mall-1", "exit-1"))
        st.state, st.last_seen_at = "online", central.now - timedelta(seconds=181)
    row = _lane_row(client.get("/ops/live").text, "exit-1")
    assert 'data-state="offline"' in row and "超过 180 秒未收到状态" in row
    d = client.get("/ops/data").json()
    assert {v["lane_id"]: v["why"] for v in d["lanes"]}["exit-1"] == "stale"


def test_live_part_and_json_agree(client: TestClient) -> None:
    sign_in(client, "aud")
    live = client.get("/ops/live")
    assert live.headers["cache-control"] == "no-store"
    assert "<html" not in live.text and 'id="ops-data"' in live.text
    d = client.get("/ops/data").json()
    assert d["occupancy"]["mall-1"]["open_now"] == 1
    assert f'id="occ-mall-1">{d["occupancy"]["mall-1"]["open_now"]}<' in live.text


def test_the_tally_takes_new_rows_and_equals_a_fresh_count(central: Any,
                                                           lanes: dict[str, Any]) -> None:
    """The page's running tally after more rows arrive = a tally made afresh = the same
    rows fed in any order."""
    assert snap(central)["occupancy"]["mall-1"]["open_now"] == 1
    entry, exit_ = lanes["entry"], lanes["exit"]
    entry.record_entry(plate="粤B00005", entered_at=at("2026-03-03 09:58"), event_id="e5")
    exit_.reverse_exit(lanes["sids"]["粤B00002"], at("2026-03-03 09:52"), "backed away")
    exit_.record_lane_event("device_down", at("2026-03-03 09:59"), detail={"device": "barrier"})
    ingest(central, entry)
    ingest(central, exit_)
    d = snap(central)
    # B3, B5 and B2 again (its exit reversed: the stay reopened)
    assert d["occupancy"]["mall-1"]["open_now"] == 3
    assert {v["lane_id"]: v["devices"]["barrier"] for v in d["lanes"]}["exit-1"] == "down"
    tz, now = central.cfg.site.tz, central.now
    with central.tx() as s:
        cached = ops_tally.answers(s, now, tz)
        fresh = ops_tally.Tally(tz)
        fresh.refresh(s, now)
        rows = list(s.execute(select(*ops_tally.COLUMNS).where(ops_tally.WANTED)))
        sites = {r.lane_id: r.site_id for r in s.scalars(select(Lane))}
    want = {"occupancy": fresh.occupancy(now), "devices": fresh.device_states(),
            "money": fresh.money_by_day(now)}
    assert cached == want
    for seed in range(5):
        random.Random(seed).shuffle(rows)
        t = ops_tally.Tally(tz, sites=sites)
        for r in rows:
            t.feed(*r)
        assert (t.occupancy(now), t.device_states(), t.money_by_day(now)) == (
            want["occupancy"], want["devices"], want["money"]), seed
    with central.tx() as s:  # an emptied table (a restore) starts the tally again
        s.query(LaneEntry).delete()
    assert snap(central)["occupancy"]["mall-1"]["open_now"] == 0


def test_a_lower_id_committed_late_is_still_counted(central: Any) -> None:
    """On PostgreSQL a transaction holding id 3 may commit after id 5 was read: the tally
    waits for the ids it has not seen below its last one."""
    tz, now = central.cfg.site.tz, central.now

    def row(i: int, plate: str) -> LaneEntry:
        when = ts(at("2026-03-03 09:00") + timedelta(minutes=i))
        return LaneEntry(id=i, lane_id="entry-1", seq=i, entry_id=f"entry-1:{i}",
                         kind="session_opened", at=when, recorded=when, session_id=f"s{i}",
                         plate=plate, payload="{}", prev_hash="", hash="", received_at=now)

    with central.tx() as s:
        s.add(Lane(site_id="mall-1", lane_id="entry-1", name="", kind="entry", enabled=True,
                   created_at=now))
        s.add_all([row(i, f"粤B0000{i}") for i in (1, 2, 4, 5)])
    t = ops_tally.Tally(tz)
    with central.tx() as s:
        t.refresh(s, now)
    assert t.occupancy(now)["mall-1"]["open_now"] == 4 and t.holes == {3}
    with central.tx() as s:
        s.add(row(3, "粤B00003"))
    with central.tx() as s:
        t.refresh(s, now)
    assert t.occupancy(now)["mall-1"]["open_now"] == 5 and t.holes == set()
