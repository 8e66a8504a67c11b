"""The real lane daemon with ``[sync] enabled``: its ledger reaches ``parkedge-central``
(its ingest worker) through a real Mosquitto, signed and acknowledged, while the lane keeps
working."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from parkedge_sim.display_sim import DisplaySim
from parkedge_sim.lane_config import SyncSettings, write_lane_config
from parkedge_sim.lane_daemon import LaneProcess
from parkedge_sim.lane_sim import LaneSim

from edge.store import Store
from tests.sync.conftest import Broker, free_port, make_central, wait_until

REPO = Path(__file__).resolve().parents[2]
TZ = ZoneInfo("Asia/Shanghai")


def test_daemon_ledger_reaches_central_and_survives_a_broker_outage(
    tmp_path: Path, own_broker: Broker
) -> None:
    central = make_central(tmp_path, own_broker.port)
    central.start()
    # central must be subscribed first: a batch published before that is dropped by the
    # broker and only arrives on the lane's resend (5 s, then 10 s, ... back-off)
    assert wait_until(central.connected.is_set, 15)
    camera_port = free_port()

    async def go() -> None:
        sim = LaneSim("entry", camera_target=f"http://127.0.0.1:{camera_port}/ISAPI",
                      rise_s=0.05, fall_s=0.05, hold_s=0.1, tz=TZ, display=False)
        info = await sim.start()
        board = DisplaySim("a0")
        display = await board.start()
        key = tmp_path / "hmac.key"
        key.write_text("k-entry-1", encoding="utf-8")
        os.chmod(key, 0o600)
        cfg = write_lane_config(
            tmp_path, "entry-1", "entry", {**info, "display_path": display},
            listen=f"127.0.0.1:{camera_port}", storage=tmp_path / "lane.db", site="mall",
            rules=REPO / "config" / "rules.example.toml", log_level="INFO",
            sync=SyncSettings(own_broker.port, key, keepalive_s=5))
        lane = LaneProcess("entry-1", cfg, tmp_path / "lane.log")
        lane.start()
        try:
            await asyncio.to_thread(lane.wait_ready, 30)
            for i, plate in enumerate(["沪A10001", "沪A10002"]):
                out = await sim.vehicle_arrives(plate, datetime(2026, 11, 23, 9, i, tzinfo=TZ),
                                                dwell_s=0.1)
                assert out.result == "passed"
                await sim.modbus.wait_for_arm("down", 5)
            assert await asyncio.to_thread(
                wait_until, lambda: central.db.count_entries() >= 2, 40
            ), (tmp_path / "lane.log").read_text()[-2000:]
            # the broker dies: the lane goes on, and the backlog drains when it is back
            own_broker.kill()
            for i, plate in enumerate(["沪A10003", "沪A10004", "沪A10005"]):
                out = await sim.vehicle_arrives(plate, datetime(2026, 11, 23, 10, i, tzinfo=TZ),
                                                dwell_s=0.1)
                assert out.result == "passed", "the lane stopped working without the network"
                await sim.modbus.wait_for_arm("down", 5)
            own_broker.start()
            with Store.open(tmp_path / "lane.db", "entry-1") as store:
                local = {e.entry_id for e in store.entries(0, 10_000)}
            assert await asyncio.to_thread(
                wait_until, lambda: set(central.db.entry_ids("entry-1")) >= local, 60
            ), (tmp_path / "lane.log").read_text()[-2000:]
        finally:
            lane.stop()
            await board.stop()
            await sim.stop()
            central.stop()
        ids = central.db.entry_ids("entry-1")
        assert len(ids) == len(set(ids)), "central holds an entry twice"
        with Store.open(tmp_path / "lane.db", "entry-1") as store:
            assert store.verify().ok
            assert sum(1 for s in store.list_sessions() if s.plate.startswith("沪A1000")) == 5

    asyncio.run(go())
