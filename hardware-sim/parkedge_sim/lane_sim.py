"""One simulated lane (relay module + barrier + loops, display, camera) and a site of lanes.

Why: a technician's bench, the demo and the integration tests all need the same thing: a lane
the daemon cannot tell from a real one, and a way to *play a car* through it (arrive on the
arming loop, get read by the camera, wait for the arm, drive over the closing loop, or
reverse away, or tailgate). The simulator decides nothing for the daemon: if the daemon never
opens, the car is "blocked".
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from parkedge_sim.camera_push import CameraPushSim
from parkedge_sim.display_sim import DisplaySim
from parkedge_sim.eb_lane import EbLaneSim
from parkedge_sim.mjpeg_stream import MjpegCamera
from parkedge_sim.modbus_lane import FAULTS as MODBUS_FAULTS
from parkedge_sim.modbus_lane import ModbusLaneSim
from parkedge_sim.render import Scene

DISPLAY_FAULTS = (
    "display_no_answer",
    "display_bad_checksum",
    "display_slow_reply",
    "display_power_loss",
)
CAMERA_FAULTS = ("camera_down",)
ALL_FAULTS = (*MODBUS_FAULTS, "power_return", *CAMERA_FAULTS, *DISPLAY_FAULTS)
RESULTS = ("passed", "blocked", "reversed", "tailgated")
TAILGATE_GAP_S = 0.15  # bumper to bumper: the closing loop is clear this long between cars


@dataclass
class VehicleOutcome:
    """What happened to one simulated car (JSON-able through ``asdict``)."""

    plate: str
    result: str  # passed | blocked | reversed | tailgated
    wait_s: float | None = None  # arming loop on -> arm up
    camera_statuses: list[int] = field(default_factory=list)
    tailgate_plate: str | None = None


class LaneSim:
    """Composes the Modbus lane, the display board and the push camera of one lane."""

    def __init__(
        self,
        lane_id: str,
        *,
        camera_target: str | None = None,
        modbus_framing: str = "tcp",
        modbus_port: int = 0,
        display: bool = True,
        display_codec: str = "a0",
        display_transport: str = "pty",
        rise_s: float = 1.0,
        fall_s: float = 1.0,
        hold_s: float = 1.0,
        open_timeout_s: float = 5.0,
        camera_repeats: int = 2,
        tz: tzinfo = UTC,
        direction: str | None = None,
        video: bool = False,
        video_fps: float = 10.0,
        video_scene: Scene | None = None,
        barrier: str = "modbus",
    ) -> None:
        self.lane_id = lane_id
        # entry / exit: only labels the bench page's buttons ("drive in" / "drive out")
        self.direction = direction or ("exit" if lane_id.lower().startswith(("exit", "x")) else
                                       "entry")
        self.current_plate: str | None = None  # the car now at the barrier (bench page frame)
        self.last_plate: str | None = None
        # the barrier side: a Modbus relay module + loop inputs, or an EB RS-485 controller
        # (its own loops, its own auto-close) on a pty; the same calls drive either
        self.modbus: ModbusLaneSim | EbLaneSim
        if barrier == "modbus":
            self.modbus = ModbusLaneSim(framing=modbus_framing, port=modbus_port, rise_s=rise_s,
                                        fall_s=fall_s, hold_s=hold_s)
        elif barrier == "eb":
            self.modbus = EbLaneSim(rise_s=rise_s, fall_s=fall_s)
        else:
            raise ValueError(f"barrier must be 'modbus' or 'eb', got {barrier!r}")
        self.display: DisplaySim | None = (
            DisplaySim(display_codec, transport=display_transport)  # type: ignore[arg-type]
            if display
            else None
        )
        self.camera = CameraPushSim(camera_target) if camera_target else None
        # a plain IP camera (MJPEG over HTTP) for on-box recognition: the car is in its view
        # from arrival on the arming loop until it has left
        self.video = (MjpegCamera(fps=video_fps, scene=video_scene, variants=3) if video
                      else None)
        self.open_timeout_s = open_timeout_s
        self.camera_repeats = camera_repeats
        self.tz = tz
        self.outcomes: list[VehicleOutcome] = []
        self._busy = asyncio.Lock()  # one car at a time at the barrier

    async def start(self) -> dict[str, Any]:
        await self.modbus.start()
        if self.display is not None:
            await self.display.start()
        if self.video is not None:
            self.video.start()
        return self.info()

    async def stop(self) -> None:
        if self.video is not None:
            await asyncio.to_thread(self.video.stop)
        if self.display is not None:
            await self.display.stop()
        await self.modbus.stop()

    def info(self) -> dict[str, Any]:
        """Where the daemon connects: Modbus URL, display path, camera target."""
        return {
            "lane": self.lane_id,
            "modbus_url": self.modbus.url if self.modbus.framing != "eb" else None,
            "modbus_framing": self.modbus.framing,
            "barrier_path": self.modbus.url if self.modbus.framing == "eb" else None,
            "display_path": self.display.slave_path if self.display else None,
            "camera_target": self.camera.target_url if self.camera else None,
            "video_url": self.video.url if self.video else None,
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.info(),
            "modbus": self.modbus.snapshot(),
            "display": self.display.snapshot() if self.display else None,
            "camera": {
                "down": self.camera.down,
                "sent": self.camera.sent,
                "failed": self.camera.failed,
                "last_plate": self.camera.last_plate,
            }
            if self.camera
            else None,
            "video": {"url": self.video.url, "down": self.video.down,
                      "plate": self.video.plate, "frames": self.video.frames_sent}
            if self.video
            else None,
            "outcomes": [asdict(o) for o in self.outcomes[-20:]],
            "direction": self.direction,
            "current_plate": self.current_plate,
            "last_plate": self.last_plate,
            "active_faults": self.active_faults(),
        }

    def active_faults(self) -> list[str]:
        """Every fault now on, whichever device it is in (sorted names)."""
        on = set(self.modbus.snapshot()["faults"])
        if self.display is not None:
            on.update(f"display_{k.removesuffix('_s')}"
                      for k, v in self.display.active_faults().items() if v)
        if (self.camera is not None and self.camera.down) or (
                self.video is not None and self.video.down):
            on.add("camera_down")
        return sorted(on)

    # -- faults -------------------------------------------------------------------------------
    def set_fault(self, name: str, on: bool = True, value: float = 0.0) -> None:
        """Any fault by name: Modbus side, ``camera_down``, or ``display_*``."""
        if name in MODBUS_FAULTS or name == "power_return":
            self.modbus.set_fault(name, on, value)
            if name in ("power_loss", "power_return") and self.display is not None:
                lost = name == "power_loss" and on
                self.display.power_loss() if lost else self.display.power_return()
        elif name in CAMERA_FAULTS:
            if self.camera is None and self.video is None:
                raise ValueError(f"lane {self.lane_id} has no camera")
            if self.camera is not None:
                self.camera.set_fault(name, on)
            if self.video is not None:
                self.video.set_down(on)
        elif name in DISPLAY_FAULTS:
            if self.display is None:
                raise ValueError(f"lane {self.lane_id} has no display")
            if name == "display_no_answer":
                self.display.no_answer(on)
            elif name == "display_bad_checksum":
                self.display.bad_checksum(on)
            elif name == "display_slow_reply":
                self.display.slow_reply(value if on else 0.0)
            else:
                self.display.power_loss() if on else self.display.power_return()
        else:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(ALL_FAULTS)}")

    # -- a car ----------------------------------------------------------------------------------
    async def vehicle_arrives(
        self,
        plate: str,
        at: datetime | None = None,
        *,
        dwell_s: float = 0.5,
        reverse: bool = False,
        tailgate_plate: str | None = None,
        read_plate: bool = True,
        open_timeout_s: float | None = None,
    ) -> VehicleOutcome:
        """Play one car through the lane and report what happened to it."""
        if at is not None and at.tzinfo is None:
            raise ValueError("vehicle_arrives: 'at' must be timezone-aware")
        if dwell_s < 0:
            raise ValueError(f"vehicle_arrives: dwell_s must be >= 0, got {dwell_s}")
        async with self._busy:
            self.current_plate = plate
            self.last_plate = plate
            try:
                if self.video is not None:  # the car drives into the camera's view
                    await asyncio.to_thread(self.video.set_car, plate if read_plate else None)
                outcome = await self._play(
                    plate,
                    at or datetime.now(self.tz),
                    dwell_s,
                    reverse,
                    tailgate_plate,
                    read_plate,
                    self.open_timeout_s if open_timeout_s is None else open_timeout_s,
                )
            finally:
                self.current_plate = None
                if self.video is not None:  # ... and out of it
                    await asyncio.to_thread(self.video.set_car, None)
        self.outcomes.append(outcome)
        return outcome

    async def _play(
        self,
        plate: str,
        at: datetime,
        dwell_s: float,
        reverse: bool,
        tailgate_plate: str | None,
        read_plate: bool,
        open_timeout_s: float,
    ) -> VehicleOutcome:
        lane = self.modbus
        outcome = VehicleOutcome(plate, "blocked", tailgate_plate=tailgate_plate)
        lane.set_loop("arming", True)
        t0 = time.monotonic()
        if read_plate and self.camera is not None:
            outcome.camera_statuses = await self.camera.push_plate(
                plate, at, repeats=self.camera_repeats
            )
        if reverse:
            await asyncio.sleep(dwell_s)
            lane.set_loop("arming", False)
            outcome.result = "reversed"
            return outcome
        remaining = max(0.0, open_timeout_s - (time.monotonic() - t0))
        if not await lane.wait_for_arm("up", remaining):
            lane.set_loop("arming", False)
            return outcome  # blocked: nobody opened for us
        outcome.wait_s = round(time.monotonic() - t0, 4)
        await self._drive_over(dwell_s)
        if tailgate_plate is not None:
            # the next car follows close behind, on the same opening, unread
            lane.set_loop("arming", True)
            await asyncio.sleep(TAILGATE_GAP_S)
            await self._drive_over(dwell_s)
            outcome.result = "tailgated"
        else:
            outcome.result = "passed"
        return outcome

    async def _drive_over(self, dwell_s: float) -> None:
        lane = self.modbus
        lane.set_loop("closing", True)  # nose over the closing loop, under the arm
        await asyncio.sleep(min(0.05, dwell_s / 2))
        lane.set_loop("arming", False)
        await asyncio.sleep(max(0.0, dwell_s - min(0.05, dwell_s / 2)))
        lane.set_loop("closing", False)


class SiteSim:
    """Several lanes (e.g. "entry" and "exit"), each with its own ports and camera target."""

    def __init__(self, lanes: dict[str, LaneSim]) -> None:
        if not lanes:
            raise ValueError("a site needs at least one lane")
        self.lanes = lanes

    async def start(self) -> dict[str, dict[str, Any]]:
        return {lane_id: await lane.start() for lane_id, lane in self.lanes.items()}

    async def stop(self) -> None:
        for lane in self.lanes.values():
            await lane.stop()

    def lane(self, lane_id: str) -> LaneSim:
        try:
            return self.lanes[lane_id]
        except KeyError:
            raise KeyError(f"no lane {lane_id!r}; lanes: {', '.join(self.lanes)}") from None
