"""The barrier and loops of a lane as one ``EB`` RS-485 barrier controller on a pty.

Why: ``LaneSim`` plays cars against "the lane's barrier side" through a handful of calls (set a
loop, wait for the arm, inject a fault, a snapshot for the bench page). A Modbus relay module
and an EB controller differ on the wire but not in those calls, so this adapter gives the EB
controller the same face as ``ModbusLaneSim``; the daemon on the other end runs the
``eb-serial`` barrier driver and the ``barrier-status`` loops driver.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from parkedge_sim.eb_barrier_sim import EbBarrierSim
from parkedge_sim.pty_device import Transport


class EbLaneSim:
    framing = "eb"

    def __init__(self, *, address: int = 1, rise_s: float = 1.0, fall_s: float = 1.0,
                 transport: Transport = "pty") -> None:
        self.device = EbBarrierSim(address, rise_s=rise_s, fall_s=fall_s, transport=transport)
        self.unit = address
        self._url = ""

    @property
    def url(self) -> str:
        """The pty (or socket://) the daemon's ``eb-serial`` bus opens."""
        return self._url

    async def start(self) -> str:
        self._url = await self.device.start()
        return self._url

    async def stop(self) -> None:
        await self.device.stop()

    # -- what a car does -------------------------------------------------------------------
    def set_loop(self, name: str, on: bool) -> None:
        self.device.set_loop(name, on)

    @property
    def arm_up(self) -> bool:
        return self.device.arm.value == "up"

    @property
    def arm_down(self) -> bool:
        return self.device.arm.value == "down"

    async def wait_for_arm(self, motion: str, timeout: float) -> bool:
        """Wait until the arm is ``motion`` ("up", "down", ...); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.device.arm.value != motion:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    # -- faults ----------------------------------------------------------------------------
    def set_fault(self, name: str, on: bool = True, value: float = 0.0) -> None:
        self.device.set_fault(name, on, value)

    def snapshot(self) -> dict[str, Any]:
        """The Modbus lane's snapshot shape, so the bench page shows either."""
        d = self.device
        return {
            "url": self._url,
            "unit": self.unit,
            "protocol": "eb",
            "arm": {"position": round(d.position, 3), "motion": d.arm.value},
            "relays": {},
            "loops": {"arming": d.arming, "closing": d.closing, "photocell": d.photocell},
            "faults": {k: v for k, v in d.active_faults().items() if v},
            "stats": {"frames_ok": d.frames_ok, "frames_bad": d.frames_bad,
                      "anti_crush": d.anti_crush_rises, "passages": d.passages,
                      "forbidden": d.forbidden, "latched": []},
        }
