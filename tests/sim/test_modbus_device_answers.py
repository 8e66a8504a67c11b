"""The Modbus lane simulator answers like a device (#12 item 12), seen by a real pymodbus client.

Over Modbus TCP, RTU over ``socket://`` (how the sim serves RTU) and RTU over a real pty (a
serial client opening a tty, bridged to the sim's socket as ``socat`` would). A device checks
the whole request first, then applies all of it or nothing; a refused write leaves no state
behind for the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import tty
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from parkedge_sim.modbus_lane import REG_ALL_OFF, REG_OFF, REG_ON, ModbusLaneSim
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerType

ILLEGAL_ADDRESS = 2
ILLEGAL_VALUE = 3
UNIT = 1
TRANSPORTS = ["tcp", "rtu-socket", "rtu-pty"]
Client = AsyncModbusTcpClient | AsyncModbusSerialClient
Body = Callable[[ModbusLaneSim, Client], Awaitable[None]]


@contextlib.asynccontextmanager
async def pty_bridge(port: int) -> AsyncIterator[str]:
    """A pty whose slave a serial client opens; bytes go to and from the sim's RTU socket."""
    master, slave = pty.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    os.set_blocking(master, False)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()

    def from_tty() -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            data = os.read(master, 4096)
            if data:
                writer.write(data)

    async def to_tty() -> None:
        while data := await reader.read(4096):
            os.write(master, data)

    loop.add_reader(master, from_tty)
    pump = asyncio.create_task(to_tty())
    try:
        yield os.ttyname(slave)
    finally:
        loop.remove_reader(master)
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        writer.close()
        os.close(master)
        os.close(slave)


def run(transport: str, body: Body) -> None:
    async def main() -> None:
        sim = ModbusLaneSim(framing="tcp" if transport == "tcp" else "rtu")
        await sim.start()
        async with contextlib.AsyncExitStack() as stack:
            client: Client
            if transport == "tcp":
                client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=0.3, retries=0)
            elif transport == "rtu-socket":
                client = AsyncModbusSerialClient(f"socket://127.0.0.1:{sim.port}",
                                                 framer=FramerType.RTU, timeout=0.3, retries=0)
            else:
                path = await stack.enter_async_context(pty_bridge(sim.port))
                client = AsyncModbusSerialClient(path, framer=FramerType.RTU, baudrate=19200,
                                                 timeout=0.3, retries=0)
            try:
                assert await client.connect()
                await body(sim, client)
            finally:
                client.close()
                await sim.stop()
        assert sim.stats.latched == [], "a relay was left latched"

    asyncio.run(main())


def exception_code(r: Any) -> int | None:
    return r.exception_code if r.isError() else None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_fc16_refused_write_applies_nothing(transport: str) -> None:
    """FC16 to registers 8..9 (9 does not exist): was relay 8 ON after the exception."""

    async def body(sim: ModbusLaneSim, c: Client) -> None:
        r = await c.write_registers(8, [REG_ON, REG_ON], device_id=UNIT)
        assert exception_code(r) == ILLEGAL_ADDRESS
        # a good address with a bad value later in the request: nothing either
        r = await c.write_registers(1, [REG_ON, 0x1234], device_id=UNIT)
        assert exception_code(r) == ILLEGAL_VALUE
        assert not any(sim.relays), sim.relays
        coils = await c.read_coils(1, count=8, device_id=UNIT)
        assert coils.bits[:8] == [False] * 8
        # the whole of a good request is applied
        r = await c.write_registers(7, [REG_ON, REG_ON], device_id=UNIT)
        assert not r.isError()
        assert sim.relays[7] and sim.relays[8]
        r = await c.write_registers(7, [REG_OFF, REG_OFF], device_id=UNIT)
        assert not r.isError() and not any(sim.relays)

    run(transport, body)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("refused", ["fc06_value", "fc06_address", "fc05_address"])
def test_refused_single_write_leaves_no_pending_echo(transport: str, refused: str) -> None:
    """After a refused FC05/06 the next request skipped the device-id check, the fault
    injection and the request counter (a flag waiting for the read-back was never cleared)."""

    async def refuse(c: Client) -> None:
        if refused == "fc06_value":
            r = await c.write_register(1, 0x1234, device_id=UNIT)
        elif refused == "fc06_address":
            r = await c.write_register(20, REG_ON, device_id=UNIT)
        else:
            r = await c.write_coil(20, True, device_id=UNIT)
        assert r.isError()

    async def body(sim: ModbusLaneSim, c: Client) -> None:
        await refuse(c)
        before = (sim.stats.requests, sim.stats.silent)
        with pytest.raises(ModbusIOException):  # another device id: the bus stays silent
            await c.read_coils(1, count=8, device_id=7)
        assert (sim.stats.requests, sim.stats.silent) == (before[0] + 1, before[1] + 1)
        await refuse(c)
        sim.set_fault("no_answer")  # the injected fault applies to the very next request
        with pytest.raises(ModbusIOException):
            await c.read_coils(1, count=8, device_id=UNIT)
        sim.set_fault("no_answer", False)
        r = await c.read_coils(1, count=8, device_id=UNIT)
        assert not r.isError()

    run(transport, body)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("address", "value", "code"),
    [(20, REG_ON, ILLEGAL_ADDRESS), (9, REG_ON, ILLEGAL_ADDRESS), (0, REG_ON, ILLEGAL_VALUE),
     (1, REG_ALL_OFF, ILLEGAL_VALUE), (1, 0x1234, ILLEGAL_VALUE)],
)
def test_write_to_unknown_register_is_illegal_address(transport: str, address: int, value: int,
                                                      code: int) -> None:
    """Register 20 answered ILLEGAL DATA VALUE (3); a register the module lacks is 2."""

    async def body(sim: ModbusLaneSim, c: Client) -> None:
        r = await c.write_register(address, value, device_id=UNIT)
        assert exception_code(r) == code
        assert not any(sim.relays)

    run(transport, body)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_accepted_single_writes_echo_the_request(transport: str) -> None:
    """FC05/FC06 answers echo address and value (register 0 used to read back as 0)."""

    async def body(sim: ModbusLaneSim, c: Client) -> None:
        r = await c.write_coil(3, True, device_id=UNIT)
        assert not r.isError() and r.address == 3 and r.bits[0] is True
        assert sim.relays[3]
        r = await c.write_register(3, REG_OFF, device_id=UNIT)
        assert not r.isError() and (r.address, r.registers) == (3, [REG_OFF])
        r = await c.write_register(0, REG_ALL_OFF, device_id=UNIT)
        assert not r.isError() and (r.address, r.registers) == (0, [REG_ALL_OFF])
        assert not any(sim.relays)
        assert sim.stats.requests == 3  # one per request, the read-back is not another

    run(transport, body)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_discrete_inputs_1_to_16_answer(transport: str) -> None:
    """Inputs 1..6 are wired; 7..16 answer 0 (spare); 0 and 17 are illegal addresses."""

    async def body(sim: ModbusLaneSim, c: Client) -> None:
        r = await c.read_discrete_inputs(1, count=16, device_id=UNIT)
        assert not r.isError()
        assert r.bits[:16] == [False, True] + [False] * 14  # arm down at power-on
        assert exception_code(await c.read_discrete_inputs(0, count=1, device_id=UNIT)) == 2
        assert exception_code(await c.read_discrete_inputs(16, count=2, device_id=UNIT)) == 2

    run(transport, body)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_input_registers_count_the_loop_inputs_rising_edges(transport: str) -> None:
    """FC04 n = rising edges of discrete input n (the DI counter mode of IO modules): a pulse
    shorter than any poll is still counted; 0 again after a power loss; 17 does not exist."""

    async def body(sim: ModbusLaneSim, c: Client) -> None:
        for _ in range(2):
            sim.set_loop("closing", True)
            sim.set_loop("closing", False)  # no read in between: only the counter saw it
        sim.set_loop("arming", True)
        sim.set_loop("arming", True)  # still on: no new edge
        r = await c.read_input_registers(1, count=16, device_id=UNIT)
        assert r.registers[:16] == [0, 0, 0, 1, 2] + [0] * 11
        r = await c.read_input_registers(16, count=2, device_id=UNIT)
        assert exception_code(r) == ILLEGAL_ADDRESS
        sim.set_fault("power_loss")
        sim.set_fault("power_return")
        r = await c.read_input_registers(4, count=2, device_id=UNIT)
        assert r.registers[:2] == [0, 0]

    run(transport, body)
