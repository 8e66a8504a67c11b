"""build_devices from the shipped example config, pointed at a simulated lane."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any

import pytest
from parkedge_sim.lane_sim import LaneSim

from edge.barrier.factory import LaneDevices, build_devices
from edge.barrier.interfaces import ArmState, DisplayLine, LoopInputs
from edge.barrier.loops import ModbusLoops
from edge.barrier.modbus_barrier import ModbusCoilBarrier, ModbusRegisterBarrier
from edge.config.loader import parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "entry.example.toml"


def config_for(info: dict[str, Any], **barrier: Any) -> Any:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    data["buses"]["io"].update(url=info["modbus_url"], timeout_s=0.2, gap_ms=0)
    data["buses"]["display"].update(url=info["display_path"], timeout_s=0.3)
    data["devices"]["barrier"].update(pulse_ms=100, **barrier)
    data["devices"]["loops"].update(poll_ms=10, debounce_ms=10)
    data["camera"]["listen"] = "127.0.0.1:18081"
    data["lane"]["control_socket"] = "/tmp/parkedge-test.sock"
    return parse_config(data, base_dir=EXAMPLE.parent)


@pytest.mark.parametrize(
    ("framing", "driver"), [("tcp", "modbus-coil"), ("rtu", "modbus-register")]
)
def test_devices_built_from_config_drive_the_simulated_lane(framing: str, driver: str) -> None:
    async def main() -> None:
        sim = LaneSim("entry", modbus_framing=framing, rise_s=0.05, fall_s=0.05, hold_s=0.05)
        info = await sim.start()
        devices: LaneDevices = build_devices(config_for(info, driver=driver))
        try:
            expected = ModbusCoilBarrier if driver == "modbus-coil" else ModbusRegisterBarrier
            assert type(devices.barrier) is expected
            assert isinstance(devices.loops, ModbusLoops)
            assert list(devices.modbus_hubs) == ["io"]  # barrier and loops share one owner
            assert devices.loops.hub is devices.barrier.hub
            await devices.start()
            await devices.barrier.pulse_open()
            assert await sim.modbus.wait_for_arm("up", 1.0)
            assert await devices.barrier.read_state() is ArmState.UP
            sim.modbus.set_loop("closing", True)
            await asyncio.sleep(0.1)
            assert await devices.loops.read() == LoopInputs(closing=True)
            await devices.display.show([DisplayLine("沪A12345"), DisplayLine("欢迎光临")])
            assert sim.display is not None
            assert sim.display.screen[:2] == ["沪A12345", "欢迎光临"]
        finally:
            await devices.close()
            await sim.stop()

    asyncio.run(main())


def test_bus_references_are_checked_with_the_key_named() -> None:
    info = {"modbus_url": "tcp://127.0.0.1:1502", "display_path": "socket://127.0.0.1:1503"}
    with pytest.raises(ValueError, match=r"devices.display.bus = 'io'.*needs 'raw'"):
        data_cfg = config_for(info)
        patched = data_cfg.model_copy(
            update={
                "devices": data_cfg.devices.model_copy(
                    update={"display": data_cfg.devices.display.model_copy(update={"bus": "io"})}
                )
            }
        )
        build_devices(patched)

