"""A lane whose barrier is an EB RS-485 controller: the real daemon (``eb-serial`` barrier,
``barrier-status`` loops) against ``LaneSim(barrier="eb")`` on a pty, a car driven through."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from parkedge_sim.broker import free_port
from parkedge_sim.lane_config import seed_members, write_lane_config
from parkedge_sim.lane_daemon import LaneProcess
from parkedge_sim.lane_sim import LaneSim

from edge.store import Store

TZ = ZoneInfo("Asia/Shanghai")


def test_a_member_enters_through_an_eb_barrier(tmp_path: Path) -> None:
    cam = free_port()

    async def go() -> None:
        sim = LaneSim("entry", barrier="eb", camera_target=f"http://127.0.0.1:{cam}/ISAPI",
                      rise_s=0.1, fall_s=0.1, tz=TZ)
        info = await sim.start()
        assert info["barrier_path"] and info["modbus_url"] is None
        seed_members(tmp_path / "E1.db", datetime(2026, 11, 17, tzinfo=TZ))
        cfg = write_lane_config(tmp_path, "E1", "entry", info, listen=f"127.0.0.1:{cam}")
        lane = LaneProcess("E1", cfg, tmp_path / "E1.log")
        lane.start()
        try:
            await asyncio.to_thread(lane.wait_ready, 30, lambda st: st.get("state") == "idle"
                                    and st["health"].get("barrier") == "ok")
            out = await sim.vehicle_arrives("沪A12345", datetime(2026, 11, 17, 10, 5, tzinfo=TZ),
                                            dwell_s=0.2, open_timeout_s=5.0)
            assert out.result == "passed", (tmp_path / "E1.log").read_text()[-2000:]
            assert sim.display is not None and "沪A12345" in sim.display.screen
            # the controller closes by itself once the car has crossed its closing loop
            assert await sim.modbus.wait_for_arm("down", 5.0)
            snap = sim.snapshot()["modbus"]
            assert snap["protocol"] == "eb" and snap["stats"]["frames_ok"] > 0
            assert snap["stats"]["frames_bad"] == 0
        finally:
            lane.stop()
            await sim.stop()
        with Store.open(tmp_path / "E1.db", "E1") as store:
            sessions = [s for s in store.list_sessions() if s.plate == "沪A12345"]
        assert len(sessions) == 1 and sessions[0].status == "open"

    asyncio.run(go())
