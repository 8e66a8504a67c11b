"""Builds a lane's devices from its configuration: the one place config meets drivers.

Why: drivers take plain constructor arguments (so they are testable alone and do not follow
the config module's changes); this module maps ``[buses.*]`` and ``[devices.*]`` onto them,
gives each bus exactly one owner (a ModbusHub or a SerialBus shared by every device on it), and
names the config key when a reference is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from edge.barrier.display import SerialDisplay
from edge.barrier.eb_barrier import EbBarrier, EbStatusLoops
from edge.barrier.interfaces import Barrier, Display, Loops
from edge.barrier.loops import ModbusLoops
from edge.barrier.modbus_barrier import ModbusCoilBarrier, ModbusRegisterBarrier
from edge.barrier.modbus_hub import ModbusHub
from edge.barrier.serial_bus import SerialBus
from edge.config.models import BusConfig, Config


@dataclass
class LaneDevices:
    barrier: Barrier
    loops: Loops
    display: Display
    modbus_hubs: dict[str, ModbusHub] = field(default_factory=dict)
    serial_buses: dict[str, SerialBus] = field(default_factory=dict)

    async def start(self) -> None:
        """Start the loop poller (the buses connect on first use and reconnect by themselves)."""
        if isinstance(self.loops, ModbusLoops):
            await self.loops.start()

    async def close(self) -> None:
        if isinstance(self.loops, ModbusLoops):
            await self.loops.stop()
        drain = getattr(self.barrier, "drain", None)
        if drain is not None:  # let a pending relay release finish first
            with contextlib.suppress(Exception):
                await asyncio.wait_for(drain(), 3.0)
        for hub in self.modbus_hubs.values():
            await hub.close()
        for bus in self.serial_buses.values():
            await bus.close()


def modbus_framing(url: str) -> str:
    """Modbus TCP for tcp://, RTU for socket://, serial:// and device paths."""
    return "tcp" if url.startswith("tcp://") else "rtu"


class _Buses:
    """Creates each bus once, on first reference, and checks its protocol."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.hubs: dict[str, ModbusHub] = {}
        self.serial: dict[str, SerialBus] = {}

    def _get(self, name: str, key: str, protocol: str) -> BusConfig:
        bus = self.cfg.buses.get(name)
        if bus is None:
            known = ", ".join(sorted(self.cfg.buses)) or "none"
            raise ValueError(f"{key} = {name!r}: no [buses.{name}] (known: {known})")
        if bus.protocol != protocol:
            raise ValueError(
                f"{key} = {name!r}: [buses.{name}] has protocol {bus.protocol!r}, "
                f"this device needs {protocol!r}"
            )
        return bus

    def modbus(self, name: str, key: str) -> ModbusHub:
        if name not in self.hubs:
            bus = self._get(name, key, "modbus")
            self.hubs[name] = ModbusHub(
                bus.url,
                modbus_framing(bus.url),
                bus.timeout_s,
                bus.retries,
                bus.gap_ms,
                bus.reconnect_max_s,
                baudrate=bus.baudrate,
                parity=bus.parity,
                bytesize=bus.bytesize,
                stopbits=bus.stopbits,
                name=f"modbus:{name}",
            )
        return self.hubs[name]

    def raw(self, name: str, key: str) -> SerialBus:
        if name not in self.serial:
            bus = self._get(name, key, "raw")
            self.serial[name] = SerialBus(
                bus.url,
                baudrate=bus.baudrate,
                bytesize=bus.bytesize,
                parity=bus.parity,
                stopbits=bus.stopbits,
                timeout_s=bus.timeout_s,
                retries=bus.retries,
                gap_ms=bus.gap_ms,
                reconnect_max_s=bus.reconnect_max_s,
                name=f"serial:{name}",
            )
        return self.serial[name]


def build_devices(cfg: Config) -> LaneDevices:
    """Barrier, loops and display of one lane, on shared buses."""
    buses = _Buses(cfg)
    b = cfg.devices.barrier
    barrier: Barrier
    eb: EbBarrier | None = None
    if b.driver in ("modbus-coil", "modbus-register"):
        cls = ModbusCoilBarrier if b.driver == "modbus-coil" else ModbusRegisterBarrier
        barrier = cls(
            buses.modbus(b.bus, "devices.barrier.bus"),
            b.unit,
            b.open_channel,
            b.close_channel,
            b.pulse_ms,
            b.input_arm_up,
            b.input_arm_down,
            b.input_fault,
            name="barrier",
        )
    else:
        eb = EbBarrier(buses.raw(b.bus, "devices.barrier.bus"), b.unit, name="barrier")
        barrier = eb

    lp = cfg.devices.loops
    loops: Loops
    if lp.driver == "modbus-inputs":
        loops = ModbusLoops(
            buses.modbus(lp.bus, "devices.loops.bus"),
            lp.unit,
            lp.input_arming,
            lp.input_closing,
            lp.input_photocell,
            lp.mode,
            lp.debounce_ms,
            lp.poll_ms,
            name="loops",
            counter_closing=lp.counter_closing,
        )
    else:
        if eb is None:
            raise ValueError(
                'devices.loops.driver = "barrier-status" needs devices.barrier.driver = '
                '"eb-serial" (only that controller reports its loops)'
            )
        loops = EbStatusLoops(eb)

    d = cfg.devices.display
    display = SerialDisplay(
        buses.raw(d.bus, "devices.display.bus"),
        d.driver,
        d.address,
        d.lines,
        d.columns,
        d.voice,
        encoding=d.encoding,
        name="display",
    )
    return LaneDevices(barrier, loops, display, buses.hubs, buses.serial)

