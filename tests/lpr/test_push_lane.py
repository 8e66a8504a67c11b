"""The real lane daemon behind its camera port (#12 items 1, 2, 6): a push from another host
does not let a car out, a typed plate that is not a plate is refused, and a flood of the
camera port leaves the camera, the control socket and the metrics answering, with the
daemon's memory back where it was. Real sockets, a real ``parkedge run`` child process.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from parkedge_sim.broker import free_port
from parkedge_sim.camera_push import CameraCredentials, CameraPushSim, digest_authorization
from parkedge_sim.lane_config import SeedMember, seed_members, write_lane_config
from parkedge_sim.lane_daemon import LaneProcess
from parkedge_sim.lane_sim import LaneSim

from edge.store import Store

TZ = ZoneInfo("Asia/Shanghai")
ROOT = Path(__file__).resolve().parents[2]
CAMERA, ROGUE = "127.0.0.1", "127.0.0.2"
USER, PASSWORD = "parkedge", "s3cret-cam"
PLATES = ("沪A12345", "苏E9B7K2", "皖A9H379", "粤AD12345")  # members with open sessions
MEMBERS = tuple(SeedMember(f"M-{i}", plate, "gold", 100_000) for i, plate in enumerate(PLATES))
MiB = 1024 * 1024


@dataclass
class Lane:
    daemon: LaneProcess
    sim: LaneSim
    loop: asyncio.AbstractEventLoop
    cam_port: int
    metrics_url: str
    config: Path

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def rss_kib(self) -> int:
        assert self.daemon.proc is not None
        status = Path(f"/proc/{self.daemon.proc.pid}/status").read_text()
        return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS")))

    def metric(self, name: str, labels: str = "") -> float:
        text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        want = f"{name}{{{labels}}}" if labels else name
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                   if ln.startswith(want + " "))

    def idle(self) -> None:
        self.daemon.wait_ready(30, lambda st: st.get("state") == "idle")


@pytest.fixture(scope="module")
def lane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lane]:
    """An exit lane X1 whose camera pushes with Digest from 127.0.0.1; members parked."""
    tmp = tmp_path_factory.mktemp("push-lane")
    loop = asyncio.new_event_loop()
    import threading

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    cam_port, metrics_port = free_port(), free_port()
    sim = LaneSim("exit", camera_target=f"http://127.0.0.1:{cam_port}/ISAPI/Event",
                  rise_s=0.05, fall_s=0.05, hold_s=0.05, tz=TZ)
    info = asyncio.run_coroutine_threadsafe(sim.start(), loop).result(30)
    assert sim.camera is not None
    sim.camera.credentials = CameraCredentials(USER, PASSWORD, "digest")
    db = tmp / "X1.db"
    seed_members(db, datetime(2026, 11, 17, tzinfo=TZ), MEMBERS)
    with Store.open(db, "E1") as store:
        for i, plate in enumerate(PLATES):
            store.record_entry(plate=plate, entered_at=datetime(2026, 11, 17, 9, i, tzinfo=TZ),
                               event_id=f"E1:seed-{i}", lane_id="E1", member_id=f"M-{i}")
    pw = tmp / "camera.pass"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    cfg = write_lane_config(tmp, "X1", "exit", info, listen=f"127.0.0.1:{cam_port}",
                            storage=db, camera_auth=("digest", USER, pw), log_level="INFO")
    with cfg.open("a", encoding="utf-8") as fh:
        fh.write(f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')
    daemon = LaneProcess("X1", cfg, tmp / "X1.log")
    daemon.start()
    lane = Lane(daemon, sim, loop, cam_port, f"http://127.0.0.1:{metrics_port}/metrics", cfg)
    try:
        lane.idle()
        yield lane
    finally:
        daemon.stop()
        asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def session_status(lane: Lane, plate: str) -> str:
    rows = lane.daemon.query("SELECT status FROM sessions WHERE plate = ?", plate)
    return str(rows[0][0]) if rows else ""


def exits(lane: Lane) -> int:
    rows = lane.daemon.query("SELECT count(*) FROM ledger_entries WHERE kind = 'session_closed'")
    return int(rows[0][0]) if rows else 0


async def car_with_rogue_push(sim: LaneSim, plate: str, at: datetime) -> Any:
    """The car waits on the exit loop, its plate unread; a laptop on the LAN pushes it."""
    rogue = CameraPushSim(f"http://127.0.0.1:{sim_port(sim)}/ISAPI/Event", source_address=ROGUE,
                          credentials=CameraCredentials(USER, PASSWORD, "digest"))
    car = asyncio.create_task(sim.vehicle_arrives(plate, at, read_plate=False,
                                                  open_timeout_s=3.0))
    await asyncio.sleep(0.3)
    statuses = await rogue.push_plate(plate, at, repeats=3)
    return await car, statuses


def sim_port(sim: LaneSim) -> int:
    assert sim.camera is not None
    return int(sim.camera.target_url.split(":")[2].split("/")[0])


def test_a_push_from_another_host_does_not_let_the_car_out(lane: Lane) -> None:
    """Even with the camera's own password: the address is checked first."""
    plate = PLATES[0]
    before_exits = exits(lane)
    refused = lane.metric("parkedge_camera_push_refused_total", 'reason="source"')
    outcome, statuses = lane.run(car_with_rogue_push(lane.sim, plate,
                                                     datetime(2026, 11, 17, 11, 0, tzinfo=TZ)))
    assert statuses == [0, 0, 0]  # the connection was dropped, nothing was read
    assert outcome.result == "blocked"
    assert lane.sim.modbus.snapshot()["arm"] != "up"
    assert session_status(lane, plate) == "open" and exits(lane) == before_exits
    assert lane.metric("parkedge_camera_push_refused_total", 'reason="source"') == refused + 3
    lane.idle()
    # the lane's own camera, from its own address, with its password, lets the car out
    out = lane.run(lane.sim.vehicle_arrives(plate, datetime(2026, 11, 17, 11, 2, tzinfo=TZ),
                                            open_timeout_s=8.0))
    assert out.result == "passed", lane.daemon.log_tail()
    assert out.camera_statuses and set(out.camera_statuses) == {200}
    assert session_status(lane, plate) != "open" and exits(lane) > before_exits
    log = lane.daemon.log.read_text(errors="replace")
    assert log.count(f"refused from {ROGUE}") == 1  # logged once per source
    lane.idle()


@pytest.mark.parametrize(("plate", "why"), [("沪A" + "1" * 298, "characters"),
                                            ("沪A1\x012345", "U+0001"),
                                            ("沪A1\u202e2345", "U+202E")])
def test_lane_plate_refuses_a_plate_that_is_not_a_plate(lane: Lane, plate: str, why: str) -> None:
    before = lane.metric("parkedge_bad_input_total", 'source="manual"')
    done = subprocess.run(
        [sys.executable, "-m", "edge", "lane", "plate", "--config", str(lane.config),
         "--plate", plate, "--operator", "tech"],
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "refused" in done.stderr and why in done.stderr
    assert lane.metric("parkedge_bad_input_total", 'source="manual"') == before + 1
    st = lane.daemon.control({"cmd": "status"})
    assert st["ok"] and st["state"] == "idle"  # the lane goes on


# -- floods -----------------------------------------------------------------------------------
async def hold_idle(port: int, n: int, source: str) -> list[asyncio.StreamWriter]:
    """Open ``n`` connections from ``source`` and send nothing."""
    writers = []
    for _ in range(n):
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        except OSError:
            continue
        writers.append(w)
    return writers


async def post_bodies(port: int, n: int, source: str, size: int = 2 * MiB,
                      at_once: int | None = None) -> dict[str, int]:
    """``n`` concurrent posts of ``size`` bytes each (a multipart with no XML part), each with
    the camera's own Digest credentials (the worst case: a stolen camera password), so the
    body is really read and the listener's streaming is what is measured. ``at_once`` bounds
    the posts in flight (None: all at once, most then find the listener busy)."""
    gate = asyncio.Semaphore(at_once or n)
    body = memoryview(b"\xff" * size)
    path = "/ISAPI/Event"
    tally: dict[str, int] = {}

    def head(length: int, auth: str = "") -> bytes:
        line = f"Authorization: {auth}\r\n" if auth else ""
        return (f"POST {path} HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                f"Content-Length: {length}\r\n{line}\r\n").encode()

    async def one() -> None:
        async with gate:
            await one_post()

    async def one_post() -> None:
        status = "dropped"
        w = None
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
            w.write(head(0))  # the first leg: get a challenge on this connection
            answer = (await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)).decode()
            challenge = next(ln.split(": ", 1)[1] for ln in answer.split("\r\n")
                             if ln.lower().startswith("www-authenticate: digest"))
            length = int(answer.lower().split("content-length: ")[1].split("\r\n")[0])
            await r.readexactly(length)
            auth = digest_authorization(CameraCredentials(USER, PASSWORD), "POST", path,
                                        challenge)
            w.write(head(size, auth))
            for off in range(0, size, 256 * 1024):
                w.write(body[off:off + 256 * 1024])
                await w.drain()
            line = await asyncio.wait_for(r.readline(), 30)
            status = line.split()[1].decode() if line else "dropped"
        except (OSError, EOFError, TimeoutError, IndexError, StopIteration):
            pass
        finally:
            if w is not None:
                w.close()
        tally[status] = tally.get(status, 0) + 1

    await asyncio.gather(*(one() for _ in range(n)))
    return tally


def answers_quickly(lane: Lane) -> float:
    """Seconds for a control-socket status and a metrics scrape together (both must work)."""
    t0 = time.monotonic()
    assert lane.daemon.control({"cmd": "status"})["ok"]
    assert "parkedge_lane_state" in urllib.request.urlopen(lane.metrics_url, timeout=5).read(
    ).decode()
    return time.monotonic() - t0


def flood(lane: Lane, idle_n: int, bodies_n: int, plate: str, minute: int) -> dict[str, Any]:
    """Idle connections from the camera's address and from another host, then 2 MiB bodies;
    a car is served in the middle; the daemon's RSS is taken before, at the peak, after."""
    port = lane.cam_port
    out: dict[str, Any] = {"rss_before": lane.rss_kib()}
    log_before = lane.daemon.log.stat().st_size
    idle_camera = lane.run(hold_idle(port, idle_n, CAMERA))
    idle_rogue = lane.run(hold_idle(port, idle_n, ROGUE))
    out["answer_s"] = answers_quickly(lane)
    car = lane.run(lane.sim.vehicle_arrives(plate, datetime(2026, 11, 17, 12, minute, tzinfo=TZ),
                                            open_timeout_s=8.0))
    out["car"] = car.result
    assert car.result == "passed", lane.daemon.log_tail()
    peak = [0]

    async def bodies() -> dict[str, dict[str, int]]:
        async def sample() -> None:
            while True:
                peak[0] = max(peak[0], lane.rss_kib())
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        try:
            rogue_t = asyncio.create_task(post_bodies(port, max(1, bodies_n // 4), ROGUE))
            burst = await post_bodies(port, bodies_n, CAMERA)  # all at once: most find it busy
            await rogue_t
            waves = await post_bodies(port, bodies_n, CAMERA, at_once=12)  # every one is read
            return {"burst": burst, "waves": waves}
        finally:
            sampler.cancel()

    out["bodies"] = lane.run(bodies(), timeout=600)
    out["answer_after_s"] = answers_quickly(lane)
    for w in idle_camera + idle_rogue:
        w.close()
    time.sleep(1.0)
    out["rss_peak"] = peak[0]
    out["rss_after"] = lane.rss_kib()
    out["log_bytes"] = lane.daemon.log.stat().st_size - log_before
    out["connections"] = lane.metric("parkedge_camera_push_connections")
    print("flood:", out)
    return out


def check_flood(out: dict[str, Any], bodies_n: int) -> None:
    assert out["car"] == "passed"  # the camera still got through
    assert out["answer_s"] < 2.0 and out["answer_after_s"] < 2.0
    burst, waves = out["bodies"]["burst"], out["bodies"]["waves"]
    assert sum(burst.values()) == bodies_n and set(burst) <= {"400", "503", "dropped"}, out
    assert waves == {"400": bodies_n}, out  # each read to its end, found without an XML part
    # at most max_connections (16) bodies in flight, each streamed: the peak stays small,
    # and what was taken is given back (it was 2.46 GB, never returned, for 950 bodies)
    assert out["rss_peak"] - out["rss_before"] < 48 * 1024, out
    assert out["rss_after"] - out["rss_before"] < 16 * 1024, out
    assert out["log_bytes"] < 64 * 1024, out  # rate-limited: was 29 MB of ERROR in 90 s
    assert out["connections"] <= 1


def test_camera_port_flood_leaves_camera_control_and_metrics_working(lane: Lane) -> None:
    lane.idle()
    out = flood(lane, idle_n=200, bodies_n=50, plate=PLATES[1], minute=0)
    check_flood(out, 50)
    lane.idle()


@pytest.mark.slow
def test_camera_port_flood_at_the_reported_size(lane: Lane) -> None:
    """The issue's numbers: 1,000 idle connections, then 950 posts of 2 MB."""
    lane.idle()
    out = flood(lane, idle_n=1000, bodies_n=950, plate=PLATES[2], minute=30)
    check_flood(out, 950)
    lane.idle()
