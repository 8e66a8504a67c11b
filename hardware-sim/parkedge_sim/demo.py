"""``parkedge-sim demo``: a whole simulated site, end to end, on loopback.

It lives with the simulator, not in the product package: ``edge`` never imports
``parkedge_sim`` (tests/test_imports.py).

What runs, all real processes and protocols on 127.0.0.1:

- a Mosquitto broker of the demo's own (a free port), and ``parkedge-central`` on SQLite
  (``parkedge_sim.central_node``: migrated at start, one ingest worker and the web server as
  processes of their own);
- the hardware simulator for an entry and an exit lane: barrier + loops as real Modbus
  servers, LED boards on real ptys, and plain IP cameras streaming rendered 1080p frames
  as MJPEG over HTTP;
- two ``parkedge run`` daemons, entry lane E1 and exit lane X1, each with its own ledger
  file, reading plates from the video with the on-box pipeline (OpenCV + offline OCR), and
  syncing over MQTT: E1's sessions reach X1, both ledgers reach central exactly once, and
  balances, coupons and the signed rule bundle come down from central.

Central is set up as an operator would: members imported and one enrolled with
``parkedge-central member add``, opening balances as audited staff corrections through the
HTTP API, the gold tier's monthly coupons from the perks job, a shop's till posting a purchase
to ``POST /api/pos/purchases`` with the key ``parkedge-central shop add`` printed.
Scripted vehicles then drive through: members with points and coupons, a monthly pass,
a non-member, a member with too few points, a stay
crossing midnight, an unknown plate the operator lets out, a blacklisted car turned away. The
lanes run on a bench clock (``lane.clock = "event"``) that the demo sets before each car, so two
days of traffic play in about a minute. Then, today, a car paid at the pay station (central's
API) leaves within the grace with nothing to pay, and the expiry job runs on the bench clock
moved past 31 March: the lanes' balances follow central's.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from parkedge_sim.central_node import Api, CentralNode, NodeLane
from parkedge_sim.lane_config import BENCH_MEMBERS as MEMBERS
from parkedge_sim.lane_config import MALL_RULES as RULES
from parkedge_sim.lane_config import SeedMember
from parkedge_sim.lane_daemon import LaneProcess

TZ = ZoneInfo("Asia/Shanghai")
SITE = "demo-mall"


def at(day: int, hhmm: str) -> datetime:
    h, m = hhmm.split(":")
    return datetime(2026, 11, day, int(h), int(m), tzinfo=TZ)


@dataclass(frozen=True)
class Visit:
    plate: str
    entered: datetime | None  # None: no entry record (the car came in another way)
    exited: datetime | None  # None: turned away at the entry
    note: str


#: Enrolled with ``parkedge-central member add`` during the demo: buys lunch at a shop (POS)
#: and pays for parking at the pay station before leaving (a prepaid exit).
NEW = SeedMember("M-2001", "浙A8P2Q6", "silver", 0)
OPS_PASSWORD = "demo operations password"  # the pay station's staff account

VISITS = [
    Visit("沪A12345", at(17, "10:05"), at(17, "15:40"), "gold member: 3-hour coupon + points"),
    Visit("苏E9B7K2", at(17, "09:30"), at(17, "13:10"), "too few points: pays the rest"),
    Visit("浙B5T6Q8", at(17, "11:00"), at(17, "12:25"), "non-member: pays the fee"),
    Visit("皖A9H379", at(17, "20:10"), at(18, "09:20"), "long stay crossing midnight (night rate)"),
    Visit("粤AD12345", at(18, "13:00"), at(18, "16:30"), "new-energy car (green plate): half fee"),
    Visit("粤B12345", at(18, "08:00"), at(18, "18:00"), "monthly pass: free"),
    Visit("鲁Q08F99", at(18, "10:00"), at(18, "11:50"), "member: points pay part of the fee"),
    Visit("豫RM6396", at(18, "14:02"), at(18, "14:12"), "in and out within the free period"),
    Visit("闽D5K233", at(18, "14:00"), at(18, "14:50"), "member: points cover the fee"),
    Visit("京N8P5X3", None, at(18, "17:45"), "no entry record: operator lets it out"),
    Visit("粤B66666", at(18, "19:00"), None, "blacklisted: refused at the entry, backs away"),
]


# ---------------------------------------------------------------- central's side
def lane_key(tmp: Path, lane_id: str) -> str:
    """Each lane's HMAC key, shared with central only (mode 0600)."""
    key = secrets.token_hex(16)
    path = tmp / f"{lane_id}.hmac"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key


def seed_central(node: CentralNode) -> Api:
    """Central's side of the programme, through its own CLI and HTTP API: members imported
    and one enrolled, an operations account, a shop and its POS key, the members' points
    (staff corrections), the gold tier's monthly coupons (the perks job on the bench month).
    Returns the operations session (the pay station's)."""
    rows = ["member_id,phone,name,tier,plates"]
    rows += [f"{m.member_id},,,{m.tier},{m.plate}" for m in MEMBERS]
    csv = node.workdir / "members.csv"
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    print("central:", node.cli("member", "import", str(csv)).strip())
    print("central:", node.cli("member", "add", "--id", NEW.member_id, "--tier", NEW.tier,
                               "--phone", "13800000001", "--name", "Demo Walk-in",
                               "--plate", NEW.plate).strip(), f"(CLI, plate {NEW.plate})")
    node.cli("user", "add", "ops", "--role", "operations", "--password-stdin",
             stdin=OPS_PASSWORD + "\n")
    shop_key = node.cli("shop", "add", "S-DINE-01", "--category", "dining",
                        "--name", "Noodle House").strip().splitlines()[-1]
    api = Api(node.url)
    api.login("ops", OPS_PASSWORD)
    for m in MEMBERS:  # what each member had earned before the demo's two days
        api.ok("POST", f"/api/members/{m.member_id}/adjustments",
               {"points": m.points, "reason": "demo: opening balance",
                "ref": f"open-{m.member_id}"})
    print(f"central: {len(MEMBERS)} opening balances set through the API (operations, audited)")
    out = node.cli("perks", "--month", f"{at(17, '00:00'):%Y-%m}").strip()
    print(f"central: perks job for {at(17, '00:00'):%Y-%m} (bench month): {out}")
    # A till's retry sends the very same purchase again (a different body under the same
    # idempotency key is refused as a conflict, so the retry must not take a new clock reading).
    sale = {"shop_id": "S-DINE-01", "idempotency_key": "till-1-0001",
            "member_id": NEW.member_id, "amount": "300.00",
            "at": datetime.now(TZ).isoformat(timespec="seconds")}
    bought = api.ok("POST", "/api/pos/purchases", sale, headers={"X-API-Key": shop_key})
    again = api.call("POST", "/api/pos/purchases", sale, headers={"X-API-Key": shop_key})
    print(f"central: POS purchase ¥300 dining by {NEW.member_id} through POST /api/pos/purchases:"
          f" {bought['points']} points ({', '.join(bought['rules_fired']) or 'base'});"
          f" the till's retry answered {again[0]}, nothing more earned")
    return api

# ---------------------------------------------------------------- processes
async def until(pred: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(pred):
            return True
        await asyncio.sleep(step)
    return bool(await asyncio.to_thread(pred))


async def wait_state(lane: LaneProcess, states: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        st = await asyncio.to_thread(lane.control, {"cmd": "status"})
        state = str(st.get("state"))
        if state in states:
            return state
        await asyncio.sleep(0.05)
    return state


# ---------------------------------------------------------------- the run
async def drive_site(tmp: Path) -> int:
    from parkedge_sim.broker import MosquittoBroker
    from parkedge_sim.lane_config import SyncSettings, write_lane_config
    from parkedge_sim.lane_sim import LaneSim, SiteSim

    broker = MosquittoBroker(tmp)
    broker.start()
    keys = {"E1": lane_key(tmp, "E1"), "X1": lane_key(tmp, "X1")}
    (tmp / "central").mkdir()
    node = CentralNode(tmp / "central", SITE, broker.port,
                       (NodeLane("E1", "entry", keys["E1"]), NodeLane("X1", "exit", keys["X1"])),
                       RULES)
    site = SiteSim({
        name: LaneSim(name, video=True, rise_s=0.3, fall_s=0.3, hold_s=0.3, tz=TZ)
        for name in ("entry", "exit")
    })
    lanes: dict[str, LaneProcess] = {}
    try:
        node.write_config()
        await asyncio.to_thread(node.start)
        print(f"broker {broker.url}; parkedge-central (SQLite, migrated) ingesting, "
              f"serving {node.url}/")
        api = await asyncio.to_thread(seed_central, node)
        info = await site.start()
        for lane_id, direction in (("E1", "entry"), ("X1", "exit")):
            cfg = write_lane_config(tmp, lane_id, direction, info[direction], site=SITE,
                                    sync=SyncSettings(broker.port, tmp / f"{lane_id}.hmac",
                                                      node.public_key))
            lanes[direction] = LaneProcess(lane_id, cfg, tmp / f"{lane_id}.log")
        for lane in lanes.values():
            lane.start()
        for lane in lanes.values():
            await asyncio.to_thread(lane.wait_ready)
        for lane in lanes.values():  # the member cache comes down from central
            got = await until(lambda ln=lane: _count(ln, "SELECT count(*) FROM members")
                              >= len(MEMBERS) + 1, 30)
            if not got:
                raise RuntimeError(f"lane {lane.lane_id} did not receive the members")
        print("lanes E1 (entry) and X1 (exit) up, each with its own ledger; members, coupons "
              "and the signed rules received from central")
        print("plates are read by each lane from its camera's MJPEG stream (on-box LPR)\n")
        events = sorted(
            [(v.entered, "in", v) for v in VISITS if v.entered]
            + [(v.exited, "out", v) for v in VISITS if v.exited],
            key=lambda e: e[0],
        )
        for when, way, visit in events:
            assert when is not None
            if way == "in":
                await entry(site, lanes["entry"], visit, when)
            else:
                await leave(site, lanes["exit"], visit, when)
        prepaid_ok = await prepaid_exit(site, lanes, api)
        for way, lane in lanes.items():  # the last car's story ends (a reversal is recorded)
            await clear_lane(site.lanes[way], lane)
        synced = await settled(lanes, node, 30)
        balances = await asyncio.to_thread(node.balances)
        expired_ok = await expire_on_bench_clock(node, lanes)
        for lane in lanes.values():
            lane.stop()
        print_results(lanes["exit"], balances)
        return print_report(lanes, node, {"central caught up": synced,
                                          "prepaid exit": prepaid_ok,
                                          "expiry reached the lanes": expired_ok})
    finally:
        for lane in lanes.values():
            lane.stop()
        await site.stop()
        node.stop()
        broker.stop()


async def prepaid_exit(site: Any, lanes: dict[str, LaneProcess], api: Api) -> bool:
    """The walk-in member's car, today: in over two hours ago, paid at the pay station ten
    minutes ago (central's ``POST /api/prepayments``, sent to the exit lanes signed), out
    now, within the bundle's ``pay_grace_minutes``: the exit opens with nothing to pay. Why
    in the past: the lanes refuse session events from the future of their wall clock."""
    from edge.pricing import SessionInput, load_bundle, quote_exit

    rules = load_bundle(RULES)
    now = datetime.now(TZ).replace(microsecond=0)
    paid_at = now - timedelta(minutes=10)
    visit = Visit(NEW.plate, paid_at - timedelta(hours=2), now,
                  "paid at the pay station, leaves within the grace: nothing to pay")
    VISITS.append(visit)
    assert visit.entered is not None and visit.exited is not None
    await entry(site, lanes["entry"], visit, visit.entered)
    fee = quote_exit(SessionInput(visit.entered, paid_at, plate=NEW.plate), None, rules,
                     paid_at).fee
    paid = await asyncio.to_thread(api.ok, "POST", "/api/prepayments", {
        "payment_id": "paystation-1-0001", "plate": NEW.plate, "amount": str(fee),
        "paid_at": paid_at.isoformat(), "source": "paystation-1"})
    print(f"{paid_at:%m-%d %H:%M} pay station: {NEW.plate} paid ¥{paid['amount']} at central "
          f"(POST /api/prepayments); {rules.pay_grace_minutes} minutes to leave")
    arrived = await until(lambda: _count(lanes["exit"], "SELECT count(*) FROM prepayments "
                                         "WHERE payment_id = ?", "paystation-1-0001") > 0, 15)
    if not arrived:
        print("  (the signed prepayment did not reach X1)")
        return False
    action = await leave(site, lanes["exit"], visit, visit.exited)
    rows = lanes["exit"].query("SELECT payable FROM sessions WHERE plate = ? AND "
                               "status != 'open'", NEW.plate)
    ok = not action and bool(rows) and Decimal(str(rows[-1][0])) == 0
    print(f"  prepaid exit {'OK: opened, nothing to pay' if ok else 'WRONG'}")
    return ok


async def expire_on_bench_clock(node: CentralNode, lanes: dict[str, LaneProcess]) -> bool:
    """The expiry job on the bench clock moved to 1 April next year: every lot earned this
    year is past its 31 March, central writes it off, and the lanes' member caches follow."""
    when = datetime(at(17, "00:00").year + 1, 4, 1, 0, 10, tzinfo=TZ)
    out = (await asyncio.to_thread(node.cli, "expire", "--at", when.isoformat())).strip()
    print(f"\ncentral: expiry job at {when:%Y-%m-%d %H:%M} (bench clock): "
          f"{out.splitlines()[-1] if out else '-'}")
    want = await asyncio.to_thread(node.balances)

    def agree() -> bool:
        return all(dict(ln.query("SELECT member_id, balance FROM members")) == want
                   for ln in lanes.values())

    ok = await until(agree, 20)
    print(f"lanes' balances after the expiry {'equal central' if ok else 'DIFFER from central'}"
          f": {json.dumps(want)}")
    return ok

def _count(lane: LaneProcess, sql: str, *args: Any) -> int:
    rows = lane.query(sql, *args)
    return int(rows[0][0]) if rows else 0


async def settled(lanes: dict[str, LaneProcess], central: CentralNode, timeout: float) -> bool:
    """The site is at rest: no lane wrote an entry for a second, E1 knows every exit X1 made
    (it learns of them over MQTT and closes its copy of the stay; no entry of its own), and
    central holds every entry of both ledgers. Why the second of quiet: a
    lane may still record the tail of the last car (a late read, a reversal) after central
    caught up, and that entry would be missing at central when the lanes are stopped."""
    deadline = time.monotonic() + timeout
    last: dict[str, frozenset[str]] = {}
    since = time.monotonic()

    def caught_up(own: dict[str, frozenset[str]]) -> bool:
        return _exits_known_at_entry(lanes) and all(
            set(central.entry_ids(lane_id)) >= ids for lane_id, ids in own.items())

    while time.monotonic() < deadline:
        own = await asyncio.to_thread(
            lambda: {ln.lane_id: frozenset(_own_entry_ids(ln)) for ln in lanes.values()})
        if own != last:
            last, since = own, time.monotonic()
        elif time.monotonic() - since >= 1.0 and await asyncio.to_thread(caught_up, own):
            return True
        await asyncio.sleep(0.1)
    return False


def _exits_known_at_entry(lanes: dict[str, LaneProcess]) -> bool:
    """Every stay X1 closed is closed in E1's sessions too (matched by the entry event id)."""
    closed_at_exit = {r[0] for r in lanes["exit"].query(
        "SELECT entry_event_id FROM sessions WHERE status != 'open'")}
    open_at_entry = {r[0] for r in lanes["entry"].query(
        "SELECT entry_event_id FROM sessions WHERE status = 'open'")}
    return not closed_at_exit & open_at_entry


def _own_entry_ids(lane: LaneProcess) -> list[str]:
    return [r[0] for r in lane.query(
        "SELECT entry_id FROM ledger_entries WHERE lane_id = ?", lane.lane_id)]


async def clear_lane(sim: Any, lane: LaneProcess) -> None:
    """Cars keep their distance: the next one comes when the arm is down and the lane idle."""
    await sim.modbus.wait_for_arm("down", 10.0)
    await wait_state(lane, {"idle"}, 10.0)


async def set_clock(lane: LaneProcess, when: datetime) -> None:
    """The bench clock: what a push camera's event timestamp would do for the lane."""
    reply = await asyncio.to_thread(lane.control, {"cmd": "clock", "at": when.isoformat()})
    if not reply.get("ok"):
        raise RuntimeError(f"lane {lane.lane_id}: clock refused: {reply}")


async def watch_display(sim: Any, done: asyncio.Event) -> list[str]:
    """What the board showed while the car was at the lane (idle screens left out)."""
    shown: list[str] = []
    while not done.is_set():
        text = " / ".join(x for x in sim.display.screen if x)
        if text and not sim.display.showing_idle and (not shown or shown[-1] != text):
            shown.append(text)
        await asyncio.sleep(0.02)
    return shown


def fullest(shown: list[str]) -> str:
    """The board is written line by line: the first screen with the most lines filled."""
    if not shown:
        return "-"
    return max(enumerate(shown), key=lambda e: (e[1].count(" / "), -e[0]))[1]


async def entry(site: Any, lane: LaneProcess, v: Visit, when: datetime) -> None:
    sim = site.lanes["entry"]
    await clear_lane(sim, lane)
    await set_clock(lane, when)
    done = asyncio.Event()
    watcher = asyncio.create_task(watch_display(sim, done))
    outcome = await sim.vehicle_arrives(v.plate, when, dwell_s=0.2, open_timeout_s=8.0)
    done.set()
    shown = await watcher
    result = getattr(outcome, "result", str(outcome))
    verb = "in " if result == "passed" else "REFUSED"
    print(f"{when:%m-%d %H:%M} E1 {verb} {v.plate:<9} | {fullest(shown)}")


async def leave(site: Any, lane: LaneProcess, v: Visit, when: datetime) -> str:
    """One car out; what the pay station or the operator had to do ("" if nothing)."""
    sim = site.lanes["exit"]
    await clear_lane(sim, lane)
    if v.entered is not None:  # E1's session-opened event must have reached X1 over MQTT
        arrived = await until(lambda: _count(
            lane, "SELECT count(*) FROM sessions WHERE plate = ? AND status = 'open'",
            v.plate) > 0, 10)
        if not arrived:
            print(f"  ({v.plate}: E1's entry has not reached X1; the no-entry policy applies)")
    await set_clock(lane, when)
    done = asyncio.Event()
    watcher = asyncio.create_task(watch_display(sim, done))
    task = asyncio.create_task(
        sim.vehicle_arrives(v.plate, when, dwell_s=0.2, open_timeout_s=20.0)
    )
    action = ""
    while not task.done():  # act as the pay station / operator would, once asked
        st = await asyncio.to_thread(lane.control, {"cmd": "status"})
        state = str(st.get("state"))
        if state == "wait_payment":
            current = st.get("current") or {}
            sid, owed = current.get("session_id"), current.get("owed", "0")
            await asyncio.to_thread(
                lane.control,
                {"cmd": "pay", "amount": str(owed), "method": "qr", "session_id": sid},
            )
            action = f" [paid ¥{owed} by QR at the pay station]"
            break
        if state == "hold":
            await asyncio.to_thread(
                lane.control,
                {"cmd": "open", "reason": "no entry record; paid flat fee at the booth",
                 "operator": "demo-operator"},
            )
            action = " [operator opened: no entry record, flat fee at the booth]"
            break
        await asyncio.sleep(0.05)
    await task
    done.set()
    shown = await watcher
    print(f"{when:%m-%d %H:%M} X1 out {v.plate:<9} | {fullest(shown)}{action}")
    return action


def print_results(exit_lane: LaneProcess, balances: dict[str, int]) -> None:
    from edge.store import Store

    with Store.open(exit_lane.db, exit_lane.lane_id) as store:  # the daemon has stopped
        rows = list(store.export("sessions"))
        opens = [e for e in store.entries(0, 100_000) if str(e.kind) == "manual_open"]
    print()
    print(f"{'plate':<10}{'entered':<13}{'left':<13}{'stay':>7}{'fee':>9}{'points':>8}"
          f"{'payable':>9}{'central':>9}  note")
    notes = {v.plate: v.note for v in VISITS}
    owners = {m.plate: m.member_id for m in (*MEMBERS, NEW)}
    for r in sorted(rows, key=lambda r: str(r.get("exited"))):
        plate = str(r["plate"])
        bal = balances.get(owners[plate]) if plate in owners else None
        print(f"{plate:<10}{_hm(r.get('entered')):<13}{_hm(r.get('exited')):<13}"
              f"{_minutes(r.get('entered'), r.get('exited')):>7}{r['fee']:>9}"
              f"{r['points_deducted']:>8}{r['payable']:>9}"
              f"{'-' if bal is None else bal:>9}  {notes.get(plate, '')}")
    for v in VISITS:
        if v.entered is None and v.exited is not None:
            why = str(opens[-1].payload.get("reason")) if opens else "not released"

            print(f"{v.plate:<10}{'-':<13}{_hm(v.exited):<13}{'-':>7}{'-':>9}{'-':>8}"
                  f"{'-':>9}{'-':>9}  {v.note} (manual open: {why})")
        if v.exited is None:
            print(f"{v.plate:<10}{_hm(v.entered):<13}{'-':<13}{'-':>7}{'-':>9}{'-':>8}"
                  f"{'-':>9}{'-':>9}  {v.note}")
    print("(central = the member's balance at central after the lanes' ledgers arrived)")


def print_report(lanes: dict[str, LaneProcess], central: CentralNode,
                 checks: dict[str, bool]) -> int:
    from edge.store import Store
    ok = True
    with Store.open(lanes["exit"].db, "DEMO-READER") as store:
        rep = store.report("2026-11", TZ)
    print("\nreport 2026-11 (exit lane X1):", json.dumps(rep, ensure_ascii=False, default=str))
    for lane in lanes.values():
        with Store.open(lane.db, "DEMO-READER") as store:
            v = store.verify()
        own = _own_entry_ids(lane)
        at_central = central.entry_ids(lane.lane_id)
        exact = sorted(at_central) == sorted(set(own))
        ok = ok and v.ok and exact
        print(f"lane {lane.lane_id}: ledger verify {'OK' if v.ok else 'BROKEN'} "
              f"({v.checked} entries); central holds its {len(own)} entries "
              f"{'exactly once' if exact else f'WRONG ({len(at_central)})'}")
    fig = central.figures()
    shown = ("points_issued_per_month", "points_redeemed", "points_expired",
             "points_outstanding", "purchases_per_month", "redemption_rate_pct",
             "cost_of_points_issued")
    print("central figures:", json.dumps({k: fig.get(k) for k in shown}, ensure_ascii=False,
                                         default=str))
    failed = [name for name, good in checks.items() if not good]
    if failed:
        print("FAILED:", ", ".join(failed))
    return 0 if ok and not failed else 1


def _dt(v: Any) -> datetime | None:
    return datetime.fromisoformat(v) if v else None


def _hm(v: Any) -> str:
    d = _dt(v) if not isinstance(v, datetime) else v
    return d.astimezone(TZ).strftime("%m-%d %H:%M") if d else "-"


def _minutes(a: Any, b: Any) -> str:
    da, db_ = _dt(a), _dt(b)
    if not da or not db_:
        return "-"
    total = round((db_ - da).total_seconds() / 60)
    return f"{total // 60}h{total % 60:02d}"


def run_demo(keep: bool = False) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # the simulator's own chatter
    tmp = Path(tempfile.mkdtemp(prefix="parkedge-demo-"))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        return asyncio.run(drive_site(tmp))
    finally:
        if keep:
            print(f"site files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
