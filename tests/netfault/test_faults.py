"""Network faults, for real (#16): a site's lanes in their own network namespace behind a
faulty link to central (30 % loss; 2 s delay ± 0.5 s; a link flapping every 10 s; the site cut
off), cars coming all the while. After each: every lane entry at central exactly once, every
balance the sum of its entries, every car passed, offline deductions within the allowance,
and each stay's session crossed from the entry lane to the exit lane through the site's own
broker. Small versions (tens of seconds) here; full length (5 min flap, 10 min cut) ``slow``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, AsyncExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from parkedge_sim.netns import Fault, Link, unavailable_reason

from central.app import Central
from central.services import points
from tests.netfault.lanes import (
    MEMBER,
    T0,
    Car,
    SiteLanes,
    all_lane_entry_ids,
    cars_during,
    central_entry_ids,
    drive,
    enrol_member,
    net_spent,
    open_central,
    start_lanes,
    unconfirmed_deductions,
)
from tests.netfault.observer import SiteObserver
from tests.netfault.site import ALLOWANCE, SITE, Topology, topology, wait_until

OVERDRAFT = 0  # the lane's offline_overdraft default
BALANCE = 1000


def _skip_reason() -> str | None:
    reason = unavailable_reason()
    if reason:
        return reason
    try:
        import psycopg

        with psycopg.connect("host=/var/run/postgresql user=postgres dbname=postgres",
                             connect_timeout=3):
            return None
    except Exception as exc:  # no server: nothing to test against
        return f"no PostgreSQL on /var/run/postgresql: {exc.__class__.__name__}"


SKIP = _skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")



@contextmanager
def netem(link: Link, fault: Fault) -> Iterator[None]:
    link.set_fault(fault)
    try:
        yield
    finally:
        link.clear()


@contextmanager
def cut(link: Link) -> Iterator[None]:
    link.cut()
    try:
        yield
    finally:
        link.restore()


@contextmanager
def flapping(link: Link, period_s: float = 10.0) -> Iterator[None]:
    """Down for ``period_s``, up for ``period_s``, ... starting down; up at the end."""
    stop = threading.Event()

    def flap() -> None:
        up = False
        while not stop.is_set():
            link.set_up(up)
            up = not up
            stop.wait(period_s)

    t = threading.Thread(target=flap, name="flap", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(5)
        link.restore()


PLAYS: dict[str, Callable[[Link], AbstractContextManager[None]]] = {
    "loss30": lambda link: netem(link, Fault(loss=0.3)),
    "delay2s": lambda link: netem(link, Fault(delay_s=2.0, jitter_s=0.5)),
    "flap10s": flapping,
    "cut": cut,
}


@dataclass
class Outcome:
    cars: list[Car]
    deducted_during: int  # gross points_deducted
    spent_during: int  # net of points earned: what the lane's offline limit bounds
    lane_ids: set[str]
    central_ids: list[str]
    sums: tuple[int, int, int]
    crossed: dict[str, bool]
    backlog_drained: bool
    bridge_during: list[str]
    exit_status_during: list[tuple[str, int]]
    drain_report: str = ""  # what was missing at central, and the logs, when it did not drain


async def _scenario(topo: Topology, play: str, seconds: float, every_s: float) -> Outcome:
    c = open_central(topo)
    try:
        async with AsyncExitStack() as stack:
            site = await start_lanes(topo, stack)
            # before the fault: the roster, rules and the member reached both lanes (a session
            # notice before the roster is refused as from an unknown lane); one stay crosses
            # and reaches central
            assert await asyncio.to_thread(wait_until, lambda: _downlink_done(site), 60), (
                site.procs["exit-1"].log_tail())
            warm = Car("沪C00001", T0 - timedelta(hours=3), timedelta(minutes=5))
            await drive(site, warm)
            assert await asyncio.to_thread(wait_until, lambda: _synced(site, c), 90), (
                topo.ingest_log(), site.procs["exit-1"].log_tail())
            before, before_net = unconfirmed_deductions(site), net_spent(site)
            observer = SiteObserver(topo.site_broker.port, SITE)
            observer.start()
            stack.callback(observer.stop)
            with PLAYS[play](topo.link):
                observer.record(True)
                cars = await cars_during(site, seconds, every_s, first=1, member_every=3)
                during = unconfirmed_deductions(site) - before
                spent = net_spent(site) - before_net
                observer.record(False)
            # the lanes' resend back-off is capped at 60 s; a loaded box ingests slowly
            drained = await asyncio.to_thread(wait_until, lambda: _synced(site, c), 300)
            lane_ids = all_lane_entry_ids(site)
            report = "" if drained else _drain_report(topo, site, c, observer)
            crossed = {car.plate: site.crossed(car.plate) for car in [warm, *cars]}
        ids = central_entry_ids(c)
        with c.tx() as s:
            sums = points.ledger_sums(s, MEMBER)
        return Outcome([warm, *cars], during, spent, lane_ids, ids, sums, crossed, drained,
                       observer.bridge, observer.lanes.get("exit-1", []), report)
    finally:
        c.close()


def _drain_report(topo: Topology, site: SiteLanes, c: Central, observer: SiteObserver) -> str:
    """Why central did not get everything: the entries it lacks, per lane, the bridge and
    lane statuses seen on the site broker, and the tails of the lanes' and ingest's logs."""
    missing = sorted(all_lane_entry_ids(site) - set(central_entry_ids(c)))
    lines = [f"{len(missing)} lane entries missing at central, e.g. {missing[:5]}",
             f"bridge states {observer.bridge[-5:]}",
             f"lane statuses { {k: v[-3:] for k, v in observer.lanes.items()} }"]
    lines += [f"--- {name} log ---\n{proc.log_tail()}" for name, proc in site.procs.items()]
    lines.append(f"--- ingest log ---\n{topo.ingest_log()}")
    return "\n".join(lines)


def _downlink_done(site: SiteLanes) -> bool:
    return bool(site.procs["exit-1"].query(
        "SELECT 1 FROM members WHERE member_id = ?", MEMBER)) and all(
        "rule bundle" in p.log.read_text(errors="replace") for p in site.procs.values())


def _synced(site: SiteLanes, c: Central) -> bool:
    return all_lane_entry_ids(site) <= set(central_entry_ids(c))


def run(tmp_path: Path, play: str, seconds: float, every_s: float) -> Outcome:
    with topology(tmp_path) as topo:
        c = open_central(topo)
        try:
            enrol_member(c, BALANCE)
        finally:
            c.close()
        topo.start_ingest()
        with topo.site_ns.entered():
            out = asyncio.run(_scenario(topo, play, seconds, every_s))
        print(f"{play}: {len(out.cars)} cars, link {getattr(topo.link, 'counts', None)}, "
              f"deducted during the fault {out.deducted_during} (net of points earned "
              f"{out.spent_during}), bridge states during "
              f"{out.bridge_during}, exit-1 statuses during {out.exit_status_during[-3:]}")
    return out


def check_central(out: Outcome) -> None:
    """Central's side: every lane entry once, balances the sum of their entries."""
    assert out.backlog_drained, (
        f"central never got every lane entry after the fault\n{out.drain_report}")
    assert len(out.central_ids) == len(set(out.central_ids)), "an entry twice at central"
    assert set(out.central_ids) == out.lane_ids, "central holds entries no lane wrote"
    assert out.sums[0] == out.sums[1] == out.sums[2], out.sums


def lane_problems(out: Outcome, play: str) -> list[str]:
    """The lanes' side: every car passed, every session crossed, offline spending bounded
    (and, for a cut, known to be offline spending)."""
    problems = [f"{car.plate} {car.outcomes}" for car in out.cars
                if car.outcomes != ["passed", "passed"]]
    problems += [f"{plate}: session did not cross" for plate, ok in out.crossed.items() if not ok]
    # The lane bounds what it takes net of what it credits (edge.sync.allowance: deducted
    # minus earned since central's last balance); gross deductions may exceed the allowance
    # on a long fault (the full cut: 140 deducted, 66 earned, 74 net) and are printed.
    if out.spent_during > ALLOWANCE + OVERDRAFT:
        problems.append(f"{out.spent_during} points spent (net of {out.deducted_during} "
                        "deducted) during the fault")
    statuses = out.exit_status_during
    if play == "cut" and statuses and all(st == "online" for st, _ in statuses):
        problems.append("exit-1 believed it was online (spending the whole balance) while "
                        f"cut off: its statuses {statuses[-3:]}")
    return problems


def check(out: Outcome, play: str) -> None:
    check_central(out)
    problems = lane_problems(out, play)
    if problems and play in KNOWN:
        pytest.xfail(f"{KNOWN[play]}: {problems}")
    assert not problems, problems


#: Known failures of the lanes' side (central's side is checked strictly first; a known
#: failure that stops failing makes the test pass, so the entry here must then go).
#: (The cut's two, sessions not announced while central's acks did not come and a lane behind
#: a site broker believing it was online, are fixed: docs/network_faults.md.)
KNOWN: dict[str, str] = {}


@pytest.mark.timeout(540)  # set-up ~40 s, the play 25 s, the drain up to 300 s
@pytest.mark.parametrize("play", ["loss30", "delay2s", "flap10s", "cut"])
def test_small(tmp_path: Path, play: str) -> None:
    check(run(tmp_path, play, seconds=25.0, every_s=4.0), play)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize(("play", "seconds"), [
    ("loss30", 300.0), ("delay2s", 300.0), ("flap10s", 300.0), ("cut", 600.0)])
def test_full_length(tmp_path: Path, play: str, seconds: float) -> None:
    check(run(tmp_path, play, seconds=seconds, every_s=10.0), play)
