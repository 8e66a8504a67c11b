"""Operator commands to a running lane over a local Unix socket (one JSON object per line).

Why a socket and not the CLI writing to the ledger itself: the barrier belongs to the daemon
(one owner per bus), and a manual open must be recorded and pulsed by the same process so
the ledger entry and the pulse cannot drift apart. The socket file is created 0660 in the
service's runtime directory, so only the service user and its group can open a barrier.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from edge import metrics
from edge.config.errors import ConfigError

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_REQUEST = 4096


class ControlSocketInUse(ConfigError):
    """Another running lane owns this control socket: starting would take it over (two lanes
    with one socket, so ``parkedge lane open --config A.toml`` opened lane B). A config
    mistake, so the daemon exits with the config-error status systemd does not restart."""

    def __init__(self, path: Path, how: str) -> None:
        super().__init__([("lane.control_socket",
                           f"{path} is in use by another running lane daemon ({how}); give "
                           "each lane its own control_socket")])


class ControlServer:
    """The daemon's end of the socket; it owns ``path`` only after ``claim``.

    Claiming is a lock on ``<path>.lock`` (``flock``, released by the kernel when the process
    dies, so a SIGKILLed daemon leaves nothing to clean up) plus a connect probe of ``path``
    (a daemon that does not take the lock). A socket file nobody listens on is stale and
    replaced. Without the lock two daemons starting at once could both find no listener and
    the second would unlink the first's fresh socket.
    """

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._lock_fd: int | None = None

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def claim(self) -> None:
        """Take the socket for this daemon or raise ``ControlSocketInUse``; idempotent."""
        if self._lock_fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ControlSocketInUse(self.path, f"{self.lock_path} is locked") from None
        try:
            if _listening(self.path):
                raise ControlSocketInUse(self.path, "it answers a connection")
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # stale: left by a daemon that was killed
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd

    async def start(self) -> None:
        self.claim()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o660)

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._lock_fd is None:
            return  # never ours: another daemon's socket stays
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._lock_fd)
        self._lock_fd = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            if len(line) > MAX_REQUEST:
                metrics.BAD_INPUT.labels(source="control").inc()
                reply: dict[str, Any] = {"ok": False, "error": "request too large"}
            else:
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("a request is a JSON object")
                    reply = await self.handler(request)
                except (ValueError, KeyError, TypeError) as exc:
                    metrics.BAD_INPUT.labels(source="control").inc()
                    reply = {"ok": False, "error": str(exc)}
            writer.write(json.dumps(reply, ensure_ascii=False, default=str).encode() + b"\n")
            await writer.drain()
        except Exception:
            log.exception("control request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _listening(path: Path) -> bool:
    """True if a process accepts connections on the Unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except OSError as exc:  # not a socket, no permission, timeout: do not replace it
            raise ControlSocketInUse(path, f"cannot probe it: {exc}") from None
        return True


def request(path: Path, payload: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
    """Blocking client used by the CLI. Raises ConnectionError when no daemon listens."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ConnectionError(f"no lane daemon is listening on {path}") from exc
        s.sendall(json.dumps(payload, ensure_ascii=False).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data or b"{}")
    if not isinstance(reply, dict):
        raise ConnectionError("malformed reply from the lane daemon")
    return reply
