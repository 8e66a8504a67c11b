"""The site's two lanes (simulated devices + ``parkedge run`` daemons) and cars through them,
all inside the site's namespace; what each fault scenario checks afterwards."""

from __future__ import annotations

import asyncio
import json
import os
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from parkedge_sim.broker import free_port
from parkedge_sim.display_sim import DisplaySim
from parkedge_sim.lane_config import SyncSettings, write_lane_config
from parkedge_sim.lane_daemon import LaneProcess
from parkedge_sim.lane_sim import LaneSim
from sqlalchemy import select

from central.app import Central
from central.config import load_config
from central.db.models import LaneEntry
from central.services import members, points
from tests.netfault.site import LANES, RULES, SITE, Topology, secret_file

TZ = ZoneInfo("Asia/Shanghai")
# The cars' event time: 09:00 ten days ago, then one car every 3 h (a full cut's 61 cars take
# 7.6 days). Never in the future: a lane refuses another lane's session notice dated later
# than its own wall clock (edge.sync.downlink, "future"). A fixed T0 (2026-12-01) did that from
# the 36th car of the full cut when run on 2026-12-05: every later car blocked at the exit.
T0 = (datetime.now(TZ) - timedelta(days=10)).replace(hour=9, minute=0, second=0, microsecond=0)
MEMBER = "M-77"
MEMBER_PLATE = "沪A77777"


@dataclass
class Car:
    plate: str
    entered: datetime
    stay: timedelta
    outcomes: list[str] = field(default_factory=list)


@dataclass
class SiteLanes:
    sims: dict[str, LaneSim]
    procs: dict[str, LaneProcess]

    def ledger(self, lane: str) -> list[tuple[str, str, str | None, str | None, str]]:
        """(entry_id, kind, session_id, member_id, payload) of the lane's ledger file."""
        return [tuple(r) for r in self.procs[lane].query(
            "SELECT entry_id, kind, session_id, member_id, payload FROM ledger_entries "
            "ORDER BY seq")]

    def crossed(self, plate: str) -> bool:
        """The exit lane closed a session the entry lane opened (one id, both lanes)."""
        rows = self.procs["exit-1"].query(
            "SELECT entry_lane, exit_lane, status FROM sessions WHERE plate = ? "
            "ORDER BY entered_at DESC LIMIT 1", plate)
        return bool(rows) and rows[0] == ("entry-1", "exit-1", "closed")


def open_central(topo: Topology) -> Central:
    return Central.from_config(load_config(topo.central_config))


def enrol_member(c: Central, balance: int) -> None:
    now = T0 - timedelta(days=1)
    with c.tx() as s:
        m = members.enrol(s, c.rules, member_id=MEMBER, phone=None, name="Wang", tier="normal",
                          now=now, plates=(MEMBER_PLATE,))
        points.accrue(s, c.rules, m, balance, now, lot_id="seed", source="test")


def central_entry_ids(c: Central) -> list[str]:
    with c.tx() as s:
        return list(s.scalars(select(LaneEntry.entry_id)))


async def start_lanes(topo: Topology, stack: AsyncExitStack) -> SiteLanes:
    """Both lanes, started inside the site's namespace (the caller's thread is in it)."""
    sims: dict[str, LaneSim] = {}
    procs: dict[str, LaneProcess] = {}
    for lane, direction in LANES.items():
        camera_port = free_port()
        sim = LaneSim(direction, camera_target=f"http://127.0.0.1:{camera_port}/ISAPI",
                      rise_s=0.05, fall_s=0.05, hold_s=0.1, tz=TZ, display=False)
        info = await sim.start()
        stack.push_async_callback(sim.stop)
        board = DisplaySim("a0")
        display = await board.start()
        stack.push_async_callback(board.stop)
        key = secret_file(topo.tmp / f"{lane}.hmac", f"k-{lane}-secret".encode())
        os.chmod(key, 0o600)
        cfg = write_lane_config(
            topo.tmp, lane, direction, {**info, "display_path": display},
            listen=f"127.0.0.1:{camera_port}", storage=topo.tmp / f"{lane}.db", site=SITE,
            rules=RULES, log_level="INFO",
            sync=SyncSettings(topo.site_broker.port, key, rules_public_key=topo.central_pub,
                              keepalive_s=5))
        proc = LaneProcess(lane, cfg, topo.tmp / f"{lane}.log")
        proc.start()
        stack.callback(proc.stop)
        sims[lane], procs[lane] = sim, proc
    for proc in procs.values():
        await asyncio.to_thread(proc.wait_ready, 60)
    return SiteLanes(sims, procs)


async def drive(site: SiteLanes, car: Car) -> None:
    """In at the entry, out at the exit ``stay`` later (event time); both outcomes kept."""
    for lane, at in (("entry-1", car.entered), ("exit-1", car.entered + car.stay)):
        sim = site.sims[lane]
        out = await sim.vehicle_arrives(car.plate, at, dwell_s=0.1)
        car.outcomes.append(out.result)
        await sim.modbus.wait_for_arm("down", 10)


async def cars_during(site: SiteLanes, seconds: float, every_s: float, first: int,
                      member_every: int = 0) -> list[Car]:
    """A car every ``every_s`` seconds of wall time for ``seconds``; every ``member_every``th
    is the member staying two hours (points to deduct), the others leave in the free 15
    minutes."""
    cars: list[Car] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    k = first
    while loop.time() < end:
        started = loop.time()
        is_member = member_every and k % member_every == 0
        car = Car(MEMBER_PLATE if is_member else f"沪B{k:05d}", T0 + timedelta(hours=3 * k),
                  timedelta(hours=2) if is_member else timedelta(minutes=5))
        assert car.entered + car.stay < datetime.now(TZ), "the play's clock ran past the wall"
        await drive(site, car)
        cars.append(car)
        k += 1
        await asyncio.sleep(max(0.0, every_s - (loop.time() - started)))
    return cars


def unconfirmed_deductions(site: SiteLanes) -> int:
    """Points the exit lane deducted for the member, from its ledger (``points_deducted``)."""
    total = 0
    for _eid, kind, _sid, member, payload in site.ledger("exit-1"):
        if member == MEMBER and kind == "points_deducted":
            total += int(json.loads(payload)["points"])
    return total


def net_spent(site: SiteLanes) -> int:
    """Points the exit lane took from the member net of what it credited (deducted − earned
    ± corrections), the measure the lane's offline limit bounds (``edge.sync.allowance``:
    ``unconfirmed_spent`` = −``SyncState.pending_points``)."""
    from edge.sync.codec import points_delta

    net = 0
    for _eid, kind, _sid, member, payload in site.ledger("exit-1"):
        if member == MEMBER and kind in ("points_deducted", "points_earned", "correction"):
            net -= points_delta(kind, json.loads(payload))
    return net


def all_lane_entry_ids(site: SiteLanes) -> set[str]:
    return {r[0] for lane in LANES for r in site.ledger(lane)}
