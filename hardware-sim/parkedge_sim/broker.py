"""A Mosquitto broker of the bench's own, on a free loopback port, that can be killed.

Why: the demo and the tests run a whole site (central, lanes) without touching the machine's
broker on 1883; killing it (SIGKILL) and starting it again on the same port is how a network
outage is played.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

CANDIDATES = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")
#: The largest MQTT packet the broker takes (Mosquitto's ``max_packet_size``): the sync's
#: 4 MiB message limit plus room for the topic and header. A bigger PUBLISH is refused at
#: the broker (the sender is disconnected), so it never reaches a lane's memory (#12 item 5:
#: a 60 MB message cost a lane 186 MB). config/mosquitto/mosquitto.example.conf: the same.
MAX_PACKET_SIZE = 4 * 1024 * 1024 + 64 * 1024


def mosquitto_binary() -> str:
    """Debian's ``mosquitto`` (``make sysdeps`` installs it)."""
    for path in CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("mosquitto")
    if found is None:
        raise FileNotFoundError("mosquitto is not installed: run `make sysdeps` "
                                "(Debian package mosquitto)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MosquittoBroker:
    """``start()`` / ``kill()`` / ``stop()`` one broker on 127.0.0.1:``port``."""

    def __init__(self, workdir: Path, port: int | None = None, extra: str = "") -> None:
        self.port = port or free_port()
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"max_queued_messages 100000\nset_tcp_nodelay true\n"
            f"max_packet_size {MAX_PACKET_SIZE}\n{extra}", encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode} "
                                   f"(port {self.port} taken?)")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{self.port}")

    def kill(self) -> None:
        """SIGKILL: the broker vanishes as on a power cut (no clean disconnects)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
