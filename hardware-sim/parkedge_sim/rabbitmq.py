"""A RabbitMQ node of the bench's own with the MQTT plugin, on free loopback ports.

Why: the lanes and central must run unchanged on a broker that clusters (issue #16), and the
tests must prove it the way they prove Mosquitto: on a real broker they start themselves.
The node is Debian's ``rabbitmq-server`` 3.10 (``make sysdeps`` installs it) with its own node
name, AMQP / distribution / MQTT ports, data folder (owned by the ``rabbitmq`` user, to which
the start switches when run as root), Erlang cookie and ``enabled_plugins``, so the
machine's own RabbitMQ service (127.0.0.1:5672, node ``rabbit@localhost``) is never touched.
Same interface as ``parkedge_sim.broker.MosquittoBroker``: ``port``, ``url``, ``start()``,
``kill()``, ``stop()``. Differences from Mosquitto that matter to parkedge: docs/brokers.md.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from parkedge_sim.broker import MAX_PACKET_SIZE, free_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
RABBITMQ_USER = "rabbitmq"
#: MQTT user of the test node (the plugin logs anonymous clients in as this user).
USER, PASSWORD = "parkedge", "parkedge-test"


def rabbitmq_installed() -> bool:
    return (RABBITMQ_BIN / "rabbitmq-server").exists() and shutil.which("erl") is not None


def _config(amqp: int, mqtt: int, max_packet: int) -> str:
    """rabbitmq.conf (sysctl format). Anonymous MQTT clients log in as ``USER`` (the lanes
    and the bench central connect without credentials, as on the tests' Mosquitto); the
    retained store is the DETS one (on disk, per node)."""
    return "\n".join([
        f"listeners.tcp.default = 127.0.0.1:{amqp}",
        f"mqtt.listeners.tcp.default = 127.0.0.1:{mqtt}",
        "mqtt.allow_anonymous = true",
        f"mqtt.default_user = {USER}",
        f"mqtt.default_pass = {PASSWORD}",
        "mqtt.vhost = /",
        "mqtt.exchange = amq.topic",
        "mqtt.retained_message_store = rabbit_mqtt_retained_msg_store_dets",
        "mqtt.retained_message_store_dets_sync_interval = 2000",
        "mqtt.tcp_listen_options.nodelay = true",
        f"default_user = {USER}",
        f"default_pass = {PASSWORD}",
        "default_permissions.configure = .*",
        "default_permissions.read = .*",
        "default_permissions.write = .*",
        "loopback_users = none",
        # The largest AMQP message (an MQTT PUBLISH becomes one); 3.10's MQTT plugin has no
        # packet size setting of its own: see docs/brokers.md.
        f"max_message_size = {max_packet}",
        "log.console = false",
        "log.file.level = info",
        "management_agent.disable_metrics_collector = true",
        "",
    ])


class RabbitMQBroker:
    """``start()`` / ``kill()`` / ``stop()`` one RabbitMQ node whose MQTT listener is on
    127.0.0.1:``port``. ``start()`` takes seconds (``startup_s``, ``startup_cpu_s``;
    figures in docs/brokers.md): share one node per test session."""

    def __init__(self, workdir: Path | None = None, port: int | None = None,
                 extra: str = "") -> None:
        self.port = port or free_port()
        self.amqp_port = free_port()
        self.dist_port = free_port()
        self.node = f"parkedge-test-{self.port}@localhost"
        # The data folder must be reachable by the rabbitmq user: pytest's tmp folders are
        # 0700 root, so it lives in /tmp (``workdir`` only receives a copy of the log).
        self.workdir = workdir
        self.data = Path(tempfile.mkdtemp(prefix=f"parkedge-rabbitmq-{self.port}-"))
        self.conf = self.data / "rabbitmq.conf"
        self.conf.write_text(_config(self.amqp_port, self.port, MAX_PACKET_SIZE) + extra,
                             encoding="utf-8")
        (self.data / "enabled_plugins").write_text("[rabbitmq_mqtt].\n", encoding="utf-8")
        (self.data / "rabbitmq-env.conf").write_text("# the test node's: none\n",
                                                     encoding="utf-8")
        self.cookie = self.data / ".erlang.cookie"
        self.cookie.write_text(secrets.token_hex(20), encoding="ascii")
        self.cookie.chmod(0o400)
        self._as_rabbitmq = os.geteuid() == 0
        if self._as_rabbitmq:
            pw = pwd.getpwnam(RABBITMQ_USER)
            for p in [self.data, *self.data.rglob("*")]:
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None  # wall seconds until MQTT listens
        self.startup_cpu_s: float | None = None  # CPU seconds the node used meanwhile

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Everything the node reads, pointed at its own folder (never /etc/rabbitmq)."""
        d = self.data
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RABBITMQ_", "ERL_")) and k != "HOME"}
        env.update({
            "HOME": str(d),  # where the node and rabbitmqctl find .erlang.cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.conf),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "node.pid"),
            "RABBITMQ_CTL_DIST_PORT_MIN": "35700",
            "RABBITMQ_CTL_DIST_PORT_MAX": "35799",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
                "-kernel inet_dist_use_interface {127,0,0,1}",
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        })
        return env

    def start(self, timeout_s: float = 60.0) -> None:
        if not rabbitmq_installed():
            raise FileNotFoundError("rabbitmq-server is not installed: run `make sysdeps` "
                                    "(Debian package rabbitmq-server)")
        t0 = time.monotonic()
        kw: dict[str, object] = {}
        if self._as_rabbitmq:
            kw = {"user": RABBITMQ_USER, "group": RABBITMQ_USER, "extra_groups": []}
        log = open(self.data / "startup.log", "ab")  # noqa: SIM115 - the node's lifetime
        self.proc = subprocess.Popen(  # type: ignore[call-overload]
            [str(RABBITMQ_BIN / "rabbitmq-server")], env=self.env(), cwd=self.data,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, **kw)
        log.close()
        deadline = t0 + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                self.startup_s = time.monotonic() - t0
                self.startup_cpu_s = self.cpu_s()
                return
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"RabbitMQ's MQTT listener not on 127.0.0.1:{self.port} after "
                           f"{timeout_s} s:\n{self.log_tail()}")

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the node's processes (its session: the start script,
        the Erlang VM and its helpers) have used so far."""
        if self.proc is None:
            return 0.0
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == self.proc.pid:
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def log_tail(self, n: int = 40) -> str:
        lines: list[str] = []
        for f in sorted(self.data.glob("*.log")) + sorted((self.data / "log").glob("*.log")):
            with contextlib.suppress(OSError):
                lines += f.read_text("utf-8", "replace").splitlines()[-n:]
        return "\n".join(lines[-n:])

    def ctl(self, *args: str, timeout_s: float = 30.0) -> str:
        """``rabbitmqctl -n <node> ...`` as the rabbitmq user (e.g. ``list_queues``)."""
        kw: dict[str, object] = {}
        if self._as_rabbitmq:
            kw = {"user": RABBITMQ_USER, "group": RABBITMQ_USER, "extra_groups": []}
        out = subprocess.run(  # type: ignore[call-overload]
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, *args], env=self.env(),
            cwd=self.data, capture_output=True, timeout=timeout_s, check=True, **kw)
        return str(out.stdout.decode("utf-8", "replace"))

    def kill(self) -> None:
        """SIGKILL the whole node (beam and its helpers): a power cut, no clean exit."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """Stop the node (SIGTERM: a clean shutdown, SIGKILL after 15 s) and remove its
        folder, keeping the log in ``workdir`` when one was given."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
            except ProcessLookupError:
                pass
        if self.proc is not None:  # helpers the node left in its own session
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self.workdir is not None:
            for f in (self.data / "log").glob("*.log"):
                shutil.copy(f, self.workdir / f.name)
        shutil.rmtree(self.data, ignore_errors=True)
