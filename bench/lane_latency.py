"""Lane latency: plate event → barrier-open coil acked, and → display frame acked, on the simulator.

Why: a driver waits at the barrier; the budget from the plate read to the arm moving is what the
mall feels. Everything here is real: the Modbus lane simulator (pymodbus server on 127.0.0.1),
the LED board on a pty, the real drivers, the real lane runner, a real SQLite ledger file and
the real pricing bundle. The timestamps come from wrapping the real driver calls (the call
still goes to the device; only the time it returned is noted).

Usage: .venv/bin/python bench/lane_latency.py [--n 1000] [--json] [--profile FILE]
                                             [--sim-process [--sim-cpus 1]]

Every vehicle is a member with an open session and enough points, so every exit opens.
t0 is the moment the plate event is handed to the lane (the manual plate source: the same
queue a camera read lands in). Measured per vehicle:
  * barrier: t0 → ``write_coil(open channel, ON)`` acknowledged by the Modbus device;
  * display first frame: t0 → the first frame of the decision screen acknowledged by the board;
  * display screen: t0 → every line of the decision screen acknowledged.
``bare`` is the same ``write_coil`` (an unused relay channel, written OFF) as a raw pymodbus
client round trip to the same server, 1,000 calls in the same run, with the lane idle.

``--sim-process`` runs the Modbus lane simulator in a child process instead of the lane's own
event loop (a real relay module is another device; in-process, the server's request handling
and arm physics share the lane's interpreter, but the lane also never idles while it waits
for a reply). The child inherits the bench's CPU affinity unless ``--sim-cpus`` says
otherwise, is driven over a pipe (set a loop, read the arm) only outside the measured
windows, and both references are then measured against it (the bare ``write_coil`` goes to
the child too). Measured on the shared 2-core VM: the coil's tail is worse out of process
(decided -> coil acked p99 ~4-5 ms against ~0.9 ms in process, the bare p99 too at times:
the idle core's wake-up), decide is a little faster; the default stays in process so that
figures compare with earlier runs.

The issue's goal is p99 < 50 ms and p99 < 5x the bare ``write_coil`` p99; both are checked
literally. But the ledger must be committed durably (synchronous=FULL, one fsync) before the
barrier is commanded, so the decision can never be faster than one durable commit plus one
coil write. A second reference is therefore measured in the same run: ``bare_commit``, a
durable commit of one ledger-sized row (BEGIN IMMEDIATE, INSERT, COMMIT on the raw
connection of an engine with the store's pragmas, a file in the same directory, 1,000
commits with the lane idle). The ratio of the lane's p99 to (bare write_coil p99 + bare
commit p99) is reported next to the literal ratio; it is information, not the goal.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "hardware-sim"))

from parkedge_sim.display_sim import DisplaySim  # noqa: E402
from parkedge_sim.modbus_lane import ModbusLaneSim  # noqa: E402
from pymodbus.client import AsyncModbusTcpClient  # noqa: E402

from edge.barrier.display import SerialDisplay  # noqa: E402
from edge.barrier.loops import ModbusLoops  # noqa: E402
from edge.barrier.modbus_barrier import ModbusCoilBarrier  # noqa: E402
from edge.barrier.modbus_hub import ModbusHub  # noqa: E402
from edge.barrier.serial_bus import SerialBus  # noqa: E402
from edge.lane import machine as m  # noqa: E402
from edge.lane.decide import Decider, LanePolicy  # noqa: E402
from edge.lane.runner import EventClock, LaneRunner  # noqa: E402
from edge.lpr.manual import ManualPlateSource  # noqa: E402
from edge.pricing import load_bundle  # noqa: E402
from edge.rules_holder import RulesHolder  # noqa: E402
from edge.store import Store  # noqa: E402
from edge.store.engine import make_engine, raw  # noqa: E402

TZ = ZoneInfo("Asia/Shanghai")
T_IN = datetime(2026, 11, 17, 8, 0, tzinfo=TZ)
OPEN_CHANNEL = 1
BARE_CHANNEL = 8  # an unused relay; only ever written OFF


class SimProcess:
    """The Modbus lane simulator in a child process, with the few controls the bench needs.

    Commands go over a pipe and block for their reply (~0.1 ms); the bench sends them only
    between vehicles and while waiting for the arm, never inside a measured window.
    """

    def __init__(self, cpus: set[int] | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_sim_child, args=(child, cpus), daemon=True)

    async def start(self) -> str:
        self._proc.start()
        return str(await asyncio.to_thread(self._conn.recv))  # the url, once serving

    def _call(self, *cmd: Any) -> Any:
        self._conn.send(cmd)
        return self._conn.recv()

    def set_loop(self, name: str, on: bool) -> None:
        self._call("set_loop", name, on)

    @property
    def arm_up(self) -> bool:
        return bool(self._call("arm_up"))

    @property
    def arm_down(self) -> bool:
        return bool(self._call("arm_down"))

    def latched(self) -> int:
        return int(self._call("latched"))

    async def stop(self) -> None:
        if self._proc.is_alive():
            self._call("stop")
        await asyncio.to_thread(self._proc.join, 5.0)


class InProcessSim:
    """The simulator in the bench's own event loop (the default)."""

    def __init__(self) -> None:
        self.sim = ModbusLaneSim(rise_s=0.01, fall_s=0.01, hold_s=0.02)

    async def start(self) -> str:
        return await self.sim.start()

    def set_loop(self, name: str, on: bool) -> None:
        self.sim.set_loop(name, on)

    @property
    def arm_up(self) -> bool:
        return self.sim.arm_up

    @property
    def arm_down(self) -> bool:
        return self.sim.arm_down

    def latched(self) -> int:
        return len(self.sim.stats.latched)

    async def stop(self) -> None:
        await self.sim.stop()


def _sim_child(conn: Connection, cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    asyncio.run(_serve_sim(conn))


async def _serve_sim(conn: Connection) -> None:
    """Child process: serve the lane until told to stop, answering the bench's commands."""
    sim = ModbusLaneSim(rise_s=0.01, fall_s=0.01, hold_s=0.02)
    conn.send(await sim.start())
    done = asyncio.Event()

    def on_command() -> None:
        cmd, *args = conn.recv()
        if cmd == "set_loop":
            sim.set_loop(args[0], args[1])
            conn.send(None)
        elif cmd == "arm_up":
            conn.send(sim.arm_up)
        elif cmd == "arm_down":
            conn.send(sim.arm_down)
        elif cmd == "latched":
            conn.send(len(sim.stats.latched))
        elif cmd == "stop":
            conn.send(None)
            done.set()

    loop = asyncio.get_running_loop()
    loop.add_reader(conn.fileno(), on_command)
    try:
        await done.wait()
    finally:
        loop.remove_reader(conn.fileno())
        await sim.stop()


@dataclass
class Marks:
    """Timestamps (perf_counter seconds) noted by the wrapped driver calls."""

    coil_on_acked: list[float] = field(default_factory=list)
    frame_acked: list[float] = field(default_factory=list)
    screens: list[tuple[float, float, str]] = field(default_factory=list)  # start, end, text
    decisions: list[tuple[float, float]] = field(default_factory=list)  # decide() start, end
    exits: list[tuple[float, float]] = field(default_factory=list)  # record_exit() start, end


def wrap_async(fn: Callable[..., Any], after: Callable[[tuple[Any, ...], float], None]) -> Any:
    """The real call, then ``after(args, t)`` with the time it returned."""

    async def wrapped(*args: Any, **kw: Any) -> Any:
        result = await fn(*args, **kw)
        after(args, time.perf_counter())
        return result

    return wrapped


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile in ms (no interpolation: a reported p99 was really measured)."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return round(s[k] * 1000.0, 3)


def summary(xs: list[float]) -> dict[str, float]:
    return {
        "p50": pct(xs, 50),
        "p95": pct(xs, 95),
        "p99": pct(xs, 99),
        "max": round(max(xs) * 1000.0, 3),
        "mean": round(statistics.fmean(xs) * 1000.0, 3),
    }


async def bare_round_trips(url: str, n: int) -> list[float]:
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    client = AsyncModbusTcpClient(host, port=int(port), timeout=1.0)
    await client.connect()
    out = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            reply = await client.write_coil(BARE_CHANNEL, False, device_id=1)
            out.append(time.perf_counter() - t)
            if reply.isError():
                raise RuntimeError(f"bare write_coil refused: {reply}")
    finally:
        client.close()
    return out


def ledger_row_bytes(db: Path) -> int:
    """Mean stored size of the lane's exit entries (what one ledger row weighs)."""
    engine = make_engine(db)
    try:
        with engine.connect() as conn:
            n = raw(conn).execute(
                "SELECT AVG(LENGTH(CAST(entry_id AS BLOB)) + LENGTH(CAST(lane_id AS BLOB)) + "
                "LENGTH(CAST(kind AS BLOB)) + LENGTH(at) + LENGTH(recorded) + "
                "COALESCE(LENGTH(CAST(session_id AS BLOB)), 0) + "
                "COALESCE(LENGTH(CAST(member_id AS BLOB)), 0) + "
                "COALESCE(LENGTH(CAST(plate AS BLOB)), 0) + "
                "COALESCE(LENGTH(CAST(rules_version AS BLOB)), 0) + "
                "LENGTH(CAST(payload AS BLOB)) + LENGTH(prev_hash) + LENGTH(hash) + 16) "
                "FROM ledger_entries WHERE kind != 'session_opened'").fetchone()[0]
    finally:
        engine.dispose()
    return int(n or 512)


def bare_commits(db_dir: Path, row_bytes: int, n: int) -> list[float]:
    """``n`` durable commits of one ``row_bytes`` row: BEGIN IMMEDIATE, INSERT, COMMIT.

    The store's engine (same pragmas: WAL, synchronous=FULL) on a file in the same directory,
    statements on its raw connection: the floor under any ledger-first decision.
    """
    engine = make_engine(db_dir / "bare-commit.db")
    body = "x" * row_bytes
    out = []
    try:
        with engine.connect() as conn:
            c = raw(conn)
            c.execute("CREATE TABLE IF NOT EXISTS bare (id INTEGER PRIMARY KEY, body TEXT)")
            for _ in range(n):
                t = time.perf_counter()
                c.execute("BEGIN IMMEDIATE")
                c.execute("INSERT INTO bare (body) VALUES (?)", (body,))
                c.commit()
                out.append(time.perf_counter() - t)
    finally:
        engine.dispose()
    return out


def acted(marks: Marks, n_coil: int, n_screens: int) -> Callable[[], bool]:
    """True once a new open coil and a new screen have been acknowledged."""
    return lambda: len(marks.coil_on_acked) > n_coil and len(marks.screens) > n_screens


async def until(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.002)
    return pred()


async def run(n: int, db_dir: Path, sim_process: bool = False,
              sim_cpus: set[int] | None = None) -> dict[str, Any]:
    sim: SimProcess | InProcessSim = SimProcess(sim_cpus) if sim_process else InProcessSim()
    url = await sim.start()
    board = DisplaySim("a0")
    path = await board.start()
    hub = ModbusHub(url, "tcp", timeout_s=0.3, retries=1)
    barrier = ModbusCoilBarrier(hub, open_channel=OPEN_CHANNEL, pulse_ms=20)
    loops = ModbusLoops(hub, poll_ms=10, debounce_ms=5)
    bus = SerialBus(path, timeout_s=0.3, retries=1, gap_ms=1)
    display = SerialDisplay(bus, "a0", 1, lines=4, columns=16)
    store = Store.open(db_dir / "lane.db", "X1")
    bundle = load_bundle(ROOT / "config" / "rules.example.toml")
    clock = EventClock(TZ, use_events=True)
    holder = RulesHolder(bundle, clock.now)
    decider = Decider(store, holder.current, LanePolicy("X1", "exit", TZ))
    plates = ManualPlateSource("X1")
    runner = LaneRunner(
        lane=m.Lane(direction="exit", timeouts=m.Timeouts(arm_s=2.0)),
        decider=decider,
        store=store,
        barrier=barrier,
        loops=loops,
        display=display,
        plates=plates,
        clock=clock,
        idle_lines=["欢迎光临", "Welcome"],
    )

    marks = Marks()

    def on_coil(args: tuple[Any, ...], t: float) -> None:
        _unit, addr, value = args
        if addr == OPEN_CHANNEL and value:
            marks.coil_on_acked.append(t)

    def on_frame(_args: tuple[Any, ...], t: float) -> None:
        marks.frame_acked.append(t)

    real_show = display.show
    showing = [0]

    async def show(lines: list[Any]) -> None:
        start = time.perf_counter()
        showing[0] += 1
        try:
            await real_show(lines)
        finally:
            showing[0] -= 1
        marks.screens.append((start, time.perf_counter(), " ".join(x.text for x in lines)))

    def display_quiet() -> bool:
        return showing[0] == 0 and runner._screen.empty()

    real_decide = decider.decide

    def decide(*args: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        try:
            return real_decide(*args, **kw)
        finally:
            marks.decisions.append((start, time.perf_counter()))

    real_record_exit = store.record_exit

    def record_exit(*args: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        try:
            return real_record_exit(*args, **kw)
        finally:
            marks.exits.append((start, time.perf_counter()))

    decider.decide = decide  # type: ignore[method-assign]
    store.record_exit = record_exit  # type: ignore[method-assign]
    hub.write_coil = wrap_async(hub.write_coil, on_coil)  # type: ignore[method-assign]
    bus.exchange = wrap_async(bus.exchange, on_frame)  # type: ignore[method-assign]
    display.show = show  # type: ignore[method-assign]

    plate_of = [f"沪A{i:05d}" for i in range(n)]
    t_seed = time.perf_counter()
    for i, plate in enumerate(plate_of):
        mid = f"M{i}"
        store.upsert_member(mid, tier="member")
        store.set_lots(mid, [(f"{mid}-lot", 5000, None, T_IN - timedelta(days=9))])
        store.bind_plate(plate, mid)
        store.record_entry(plate=plate, entered_at=T_IN, event_id=f"in-{i}", member_id=mid,
                           lane_id="E1")
    seed_s = time.perf_counter() - t_seed

    await loops.start()
    await runner.start()
    bare: list[float] = []
    barrier_lat: list[float] = []
    first_frame: list[float] = []
    full_screen: list[float] = []
    to_decide: list[float] = []  # t0 -> decide() called (queue + event loop)
    deciding: list[float] = []  # inside decide(): ledger transaction + pricing
    recording: list[float] = []  # inside decide(): record_exit (write transaction + fsync)
    decided_to_coil: list[float] = []  # decide() returned -> coil ON acked
    failures: list[str] = []
    try:
        await until(lambda: bool(marks.screens), 2.0)  # the idle screen is up
        bare = await bare_round_trips(url, 1000)
        t_run = time.perf_counter()
        for i, plate in enumerate(plate_of):
            at = T_IN + timedelta(minutes=90, seconds=30 * i)
            sim.set_loop("arming", True)
            if not await until(lambda: runner.lane.arming, 2.0):
                failures.append(f"{plate}: lane never saw the arming loop")
                break
            # the screen for the arming loop is written first, so that the next screen
            # started is the decision's
            await until(display_quiet, 2.0)
            n_coil, n_screens = len(marks.coil_on_acked), len(marks.screens)
            n_dec, n_exits = len(marks.decisions), len(marks.exits)
            t0 = time.perf_counter()
            plates.submit(plate, at, "bench")
            ok = await until(acted(marks, n_coil, n_screens), 3.0)
            if not ok:
                failures.append(f"{plate}: no open/screen (state {runner.lane.state})")
                break
            barrier_lat.append(marks.coil_on_acked[n_coil] - t0)
            d_start, d_end = marks.decisions[n_dec]
            to_decide.append(d_start - t0)
            deciding.append(d_end - d_start)
            if len(marks.exits) > n_exits:
                recording.append(marks.exits[n_exits][1] - marks.exits[n_exits][0])
            decided_to_coil.append(marks.coil_on_acked[n_coil] - d_end)
            start, end, text = marks.screens[n_screens]
            if start < t0:
                failures.append(f"{plate}: a screen was still being written at t0 ({text})")
                break
            first_frame.append(next(t for t in marks.frame_acked if t > start) - t0)
            full_screen.append(end - t0)
            # drive through: wait for the up limit, cross the closing loop, leave
            if not await until(lambda: sim.arm_up, 2.0):
                failures.append(f"{plate}: arm never up")
                break
            sim.set_loop("closing", True)
            await asyncio.sleep(0.03)
            sim.set_loop("arming", False)
            await asyncio.sleep(0.03)
            sim.set_loop("closing", False)
            if not await until(
                lambda: runner.lane.state in (m.State.IDLE, m.State.WAIT_PLATE) and sim.arm_down,
                3.0,
            ):
                failures.append(f"{plate}: lane not idle after passing ({runner.lane.state})")
                break
        run_s = time.perf_counter() - t_run
    finally:
        await runner.stop()
        await loops.stop()
        await hub.close()
        await bus.close()
        await board.stop()
        latched = sim.latched()
        await sim.stop()
        closed = sum(1 for s in store.list_sessions(limit=n + 10) if s.status == "closed")
        store.close()
    # the second reference, with the lane stopped (as the bare write_coil ran with it idle)
    row_bytes = ledger_row_bytes(db_dir / "lane.db")
    commits = bare_commits(db_dir, row_bytes, 1000)

    if not barrier_lat:
        raise SystemExit(f"no vehicle measured: {failures}")
    b = summary(barrier_lat)
    bare_s = summary(bare)
    commit_s = summary(commits)
    return {
        "vehicles": len(barrier_lat),
        "sessions_closed": closed,
        "failures": failures,
        "p50_ms": b["p50"],
        "p95_ms": b["p95"],
        "p99_ms": b["p99"],
        "max_ms": b["max"],
        "bare_p50_ms": bare_s["p50"],
        "bare_p99_ms": bare_s["p99"],
        "bare_commit_p50_ms": commit_s["p50"],
        "bare_commit_p99_ms": commit_s["p99"],
        "bare_commit_row_bytes": row_bytes,
        # p99 over the literal reference (the goal: < 5) and over coil + durable commit
        "ratio_p99_to_bare": round(b["p99"] / bare_s["p99"], 2),
        "ratio_p99_to_bare_plus_commit": round(b["p99"] / (bare_s["p99"] + commit_s["p99"]), 2),
        "display_first_frame_ms": summary(first_frame),
        "display_screen_ms": summary(full_screen),
        "breakdown_ms": {
            "plate_to_decide": summary(to_decide),
            "decide_ledger_and_pricing": summary(deciding),
            "decide_record_exit": summary(recording) if recording else {},
            "decided_to_coil_acked": summary(decided_to_coil),
        },
        "goal_p99_under_50ms": b["p99"] < 50.0,
        "goal_p99_under_5x_bare": b["p99"] < 5 * bare_s["p99"],
        "relay_latched": latched,
        "sim": (f"child process (cpus {sorted(sim_cpus) if sim_cpus else 'inherited'})"
                if sim_process else "in process"),
        "seed_s": round(seed_s, 2),
        "run_s": round(run_s, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="vehicles (default 1000)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--profile", type=Path, help="write a cProfile of the run to this file")
    ap.add_argument("--sim-process", action="store_true",
                    help="run the Modbus simulator in a child process (default: in the loop)")
    ap.add_argument("--sim-cpus", type=lambda v: {int(x) for x in v.split(",")},
                    help="with --sim-process: the child's CPUs, e.g. 1 (default: inherited)")
    args = ap.parse_args()
    if args.n < 1:
        ap.error("--n must be >= 1")
    with tempfile.TemporaryDirectory(prefix="lane-latency-") as d:
        bench = run(args.n, Path(d), args.sim_process, args.sim_cpus)
        if args.profile:
            prof = cProfile.Profile()
            result = prof.runcall(asyncio.run, bench)
            prof.dump_stats(str(args.profile))
        else:
            result = asyncio.run(bench)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(f"{result['vehicles']} vehicles through an exit lane ({result['run_s']} s, "
              f"simulator {result['sim']})")
        print(f"  plate → open coil acked: p50 {result['p50_ms']} ms  p95 {result['p95_ms']} ms"
              f"  p99 {result['p99_ms']} ms  max {result['max_ms']} ms")
        f, s = result["display_first_frame_ms"], result["display_screen_ms"]
        print(f"  plate → first display frame acked: p50 {f['p50']}  p99 {f['p99']} ms")
        print(f"  plate → whole screen acked:        p50 {s['p50']}  p99 {s['p99']} ms")
        for k, v in result["breakdown_ms"].items():
            if v:
                print(f"    {k:<28} p50 {v['p50']}  p99 {v['p99']}  max {v['max']} ms")
        print(f"  bare write_coil round trip: p50 {result['bare_p50_ms']}  "
              f"p99 {result['bare_p99_ms']} ms")
        print(f"  bare durable commit ({result['bare_commit_row_bytes']} B row): "
              f"p50 {result['bare_commit_p50_ms']}  p99 {result['bare_commit_p99_ms']} ms")
        print(f"  p99 / bare write_coil p99 = {result['ratio_p99_to_bare']}  (goal < 5);  "
              f"p99 / (bare write_coil p99 + bare commit p99) = "
              f"{result['ratio_p99_to_bare_plus_commit']}")
        print(f"  goals: p99<50ms {result['goal_p99_under_50ms']}, "
              f"p99<5x bare {result['goal_p99_under_5x_bare']}; failures {result['failures']}")
    return 0 if not result["failures"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
