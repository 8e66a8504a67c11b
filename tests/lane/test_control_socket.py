"""One control socket, one lane (#12 item 8).

Two lanes configured with the same ``control_socket``: the second daemon used to unlink the
first's socket and bind its own, so ``parkedge lane open --config A.toml`` opened lane B.
A socket someone listens on now refuses the start; a stale one is replaced.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from parkedge_sim.display_sim import DisplaySim
from parkedge_sim.modbus_lane import ModbusLaneSim
from test_crash import Daemon, config, free_port

from edge.config import ConfigError
from edge.control import ControlServer, ControlSocketInUse, request


def _handler(name: str) -> Any:
    async def handle(req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "lane": name}

    return handle


def test_a_second_server_on_a_socket_in_use_is_refused_and_leaves_it_alone(
        tmp_path: Path) -> None:
    sock = tmp_path / "run" / "control.sock"

    async def go() -> None:
        a = ControlServer(sock, _handler("A"))
        b = ControlServer(sock, _handler("B"))
        await a.start()
        try:
            with pytest.raises(ControlSocketInUse) as err:
                await b.start()
            assert isinstance(err.value, ConfigError)
            assert "lane.control_socket" in str(err.value) and str(sock) in str(err.value)
            await b.stop()  # the refused one's shutdown must not remove A's socket
            reply = await asyncio.to_thread(request, sock, {"cmd": "status"})
            assert reply == {"ok": True, "lane": "A"}
        finally:
            await a.stop()
        assert not sock.exists()
        # A is gone: B may have it now
        await b.start()
        try:
            assert (await asyncio.to_thread(request, sock, {}))["lane"] == "B"
        finally:
            await b.stop()

    asyncio.run(go())


def test_a_listener_that_takes_no_lock_is_found_by_connecting(tmp_path: Path) -> None:
    sock = tmp_path / "control.sock"
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(sock))
    other.listen(1)
    try:
        with pytest.raises(ControlSocketInUse, match="answers a connection"):
            ControlServer(sock, _handler("B")).claim()
        assert sock.exists()
    finally:
        other.close()


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    sock = tmp_path / "control.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sock))  # what a SIGKILLed daemon leaves: the file, nobody listening
    dead.close()
    assert sock.exists()

    async def go() -> None:
        s = ControlServer(sock, _handler("new"))
        await s.start()
        try:
            assert (await asyncio.to_thread(request, sock, {}))["lane"] == "new"
        finally:
            await s.stop()

    asyncio.run(go())


def test_a_second_daemon_on_the_same_socket_exits_with_the_config_status(
        tmp_path: Path) -> None:
    async def go() -> None:
        sim = ModbusLaneSim(rise_s=0.05, fall_s=0.05)
        url = await sim.start()
        board = DisplaySim("a0")
        path = await board.start()
        a_dir, b_dir = tmp_path / "a", tmp_path / "b"
        a_dir.mkdir()
        b_dir.mkdir()
        cfg_a = config(a_dir, url, path, free_port())
        cfg_b = config(b_dir, url, path, free_port())
        sock = a_dir / "x1.sock"
        # lane B: another lane (an entry) whose config names A's socket by mistake
        text = cfg_b.read_text(encoding="utf-8").replace('id = "X1"', 'id = "E1"')
        text = text.replace('direction = "exit"', 'direction = "entry"')
        text = text.replace(str(b_dir / "x1.sock"), str(sock))
        cfg_b.write_text(text, encoding="utf-8")
        a = Daemon(cfg_a, sock, a_dir / "a.log")
        try:
            a.start()
            await a.ready()
            b = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "edge", "run", "--config", str(cfg_b)],
                capture_output=True, text=True, timeout=60)
            assert b.returncode == 2, b.stderr[-2000:]
            assert "lane.control_socket" in b.stderr and "in use" in b.stderr
            # the operator's command for lane A still reaches lane A (an exit lane)
            status = await asyncio.to_thread(request, sock, {"cmd": "status"})
            assert status["ok"] and status["direction"] == "exit"
            assert a.proc is not None and a.proc.poll() is None
        finally:
            a.stop()
            await board.stop()
            await sim.stop()

    asyncio.run(go())
