"""parkedge-central's systemd units: they parse, carry the keys central depends on, score
<= 1.5 with ``systemd-analyze security``, and the commands they run work as written; ``serve``
tells systemd READY=1 only once migrated and bound (Type=notify)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.systemd.units import Unit, analyze, load, one

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "systemd"
SINGLE = SYSTEMD / "parkedge-central.service"
TEMPLATE = SYSTEMD / "parkedge-central@.service"
MIGRATE = SYSTEMD / "parkedge-central-migrate.service"
UNITS = [SINGLE, TEMPLATE, MIGRATE]
MAX_EXPOSURE = 1.5
BIN = "/opt/parkedge/.venv/bin/parkedge-central"
CONF = "/etc/parkedge-central/central.toml"
RULES = ROOT / "config" / "rules.mall.example.toml"

SANDBOX = {
    "User": "parkedge-central",
    "Group": "parkedge-central",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "PrivateUsers": "yes",
    "DevicePolicy": "closed",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "MemoryDenyWriteExecute": "yes",
    "UMask": "0077",
    "StateDirectory": "parkedge-central",
    "ConfigurationDirectory": "parkedge-central",
    "ReadWritePaths": "/var/lib/parkedge-central",
}


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_sandbox_and_user(path: Path) -> None:
    unit = load(path)
    for key, value in SANDBOX.items():
        assert one(unit, key) == value, key
    # PostgreSQL over TCP or its unix socket, MQTT, HTTP: the network stays reachable.
    assert set(one(unit, "RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET",
                                                                  "AF_INET6"}
    assert "PrivateNetwork" not in unit["Service"]
    assert "postgresql.service" in one(unit, "After", "Unit").split()


def _commands(unit: Unit, key: str) -> list[list[str]]:
    return [v.split() for v in unit["Service"].get(key, [])]


def test_single_worker_migrates_then_serves_notifying() -> None:
    unit = load(SINGLE)
    assert one(unit, "Type") == "notify" and one(unit, "NotifyAccess") == "main"
    assert one(unit, "Restart") == "on-failure" and int(one(unit, "RestartSec")) > 0
    assert one(unit, "RestartPreventExitStatus") == "2"
    pre = _commands(unit, "ExecStartPre")
    assert [c[:2] for c in pre] == [[BIN, "check-config"], [BIN, "migrate"]]
    assert _commands(unit, "ExecStart") == [[BIN, "serve", "-c", CONF]]
    assert all(c[2:] == ["-c", CONF] for c in pre)
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_workers_share_one_migration() -> None:
    tpl, mig = load(TEMPLATE), load(MIGRATE)
    assert one(tpl, "Type") == "notify"
    assert _commands(tpl, "ExecStart") == [[BIN, "serve", "-c",
                                            "/etc/parkedge-central/%i.toml"]]
    # No worker migrates on its own (they would race): the oneshot does, before each start.
    assert not any("migrate" in c for c in _commands(tpl, "ExecStartPre"))
    assert one(tpl, "Requires", "Unit") == MIGRATE.name
    assert MIGRATE.name in one(tpl, "After", "Unit").split()
    assert one(tpl, "Conflicts", "Unit") == SINGLE.name
    assert one(mig, "Type") == "oneshot"
    assert [c[1] for c in _commands(mig, "ExecStart")] == ["check-config", "migrate"]
    assert all(c[2:] == ["-c", CONF] for c in _commands(mig, "ExecStart"))


def test_sysusers_and_tmpfiles() -> None:
    sysusers = (SYSTEMD / "parkedge-central.sysusers").read_text(encoding="utf-8")
    rows = [ln.split() for ln in sysusers.splitlines() if ln and not ln.startswith("#")]
    assert ["g", "parkedge-central", "-"] in rows
    user = next(r for r in rows if r[:2] == ["u", "parkedge-central"])
    assert user[-2:] == ["/var/lib/parkedge-central", "/usr/sbin/nologin"]
    assert not any(r[0] == "m" for r in rows), "central needs no device groups"
    tmpfiles = (SYSTEMD / "parkedge-central.tmpfiles").read_text(encoding="utf-8")
    entries = {r[1]: r for r in (ln.split() for ln in tmpfiles.splitlines()
                                 if ln and not ln.startswith("#"))}
    assert entries["/etc/parkedge-central"][2:5] == ["0750", "root", "parkedge-central"]
    assert entries["/var/lib/parkedge-central"][2:5] == ["0750", "parkedge-central",
                                                        "parkedge-central"]
    # Secrets: owner-only, as central.config.secret insists.
    assert entries["/etc/parkedge-central/db.pw"][2] in ("0400", "0600")
    assert entries["/etc/parkedge-central/*.key"][2] in ("0400", "0600")


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_security_exposure_at_most_1_5(path: Path, tmp_path: Path) -> None:
    if "@" in path.name:  # a template is analysed as an instance
        path = Path(shutil.copy(path, tmp_path / "parkedge-central@w1.service"))
    score, out = analyze(path)
    assert score <= MAX_EXPOSURE, out
    assert "Unknown key" not in out and "Unknown section" not in out, out


def test_exposure_check_can_fail(tmp_path: Path) -> None:
    # The same analysis on an unhardened unit must score badly, or the test above means nothing.
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nExecStart=/bin/true\n", encoding="utf-8")
    assert analyze(bare)[0] > 5.0


# --------------------------------------------------------- the commands, run as written
def _site(tmp_path: Path, port: int, db: str | None = None) -> Path:
    conf = tmp_path / "central.toml"
    url = db or f"sqlite:///{tmp_path / 'central.db'}"
    conf.write_text(f'[site]\nsite_id = "mall-1"\ntimezone = "Asia/Shanghai"\n'
                    f'[database]\nurl = "{url}"\n[rules]\nbundle = "{RULES}"\n'
                    f'[web]\nport = {port}\n[jobs]\nenabled = false\n'
                    f'[logging]\nlevel = "WARNING"\n', encoding="utf-8")
    return conf


def _as_run_here(cmd: list[str], conf: Path) -> list[str]:
    """A unit's command line with the installed paths replaced by this checkout's."""
    assert cmd[0] == BIN
    return [sys.executable, "-m", "central", *[str(conf) if a == CONF else a for a in cmd[1:]]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_single_units_commands_work(tmp_path: Path) -> None:
    conf = _site(tmp_path, free_port())
    unit = load(SINGLE)
    for cmd in _commands(unit, "ExecStartPre"):
        r = subprocess.run(_as_run_here(cmd, conf), capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
    assert "database at revision" in r.stdout
    # again: migrate is idempotent, a restart runs it once more
    again = subprocess.run(_as_run_here(_commands(unit, "ExecStartPre")[1], conf),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout == r.stdout


class Listener:
    """systemd's side of NOTIFY_SOCKET: a bound datagram socket; records (time, message)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def wait_for(self, prefix: str, timeout: float, proc: subprocess.Popen[str]) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.sock.recv(4096).decode()
            except TimeoutError:
                if proc.poll() is not None:
                    raise AssertionError(f"serve exited {proc.returncode} before {prefix}: "
                                         f"{proc.communicate()[1][-2000:]}") from None
                continue
            self.messages.append(msg)
            if msg.startswith(prefix):
                return msg
        raise AssertionError(f"no {prefix} within {timeout}s: {self.messages}")


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    path = tmp_path / "n.sock"
    if len(str(path)) > 100:
        pytest.skip(f"tmp_path too long for an AF_UNIX socket: {path}")
    lst = Listener(path)
    yield lst
    lst.sock.close()


def test_serve_is_ready_only_when_migrated_and_bound(tmp_path: Path,
                                                     listener: Listener) -> None:
    port = free_port()
    conf = _site(tmp_path, port)
    conf.write_text(conf.read_text().replace("[database]\n",
                                             "[database]\nmigrate_on_start = true\n"))
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "n.sock"))
    proc = subprocess.Popen([sys.executable, "-m", "central", "serve", "-c", str(conf)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        msg = listener.wait_for("READY=1", 60, proc)
        # At READY the port answers at once and the schema is there (no retry loop here).
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=5) as r:
            assert r.status == 200
        import sqlite3
        with sqlite3.connect(tmp_path / "central.db") as db:
            assert db.execute("SELECT version_num FROM alembic_version").fetchone()
        assert f"STATUS=serving on 127.0.0.1:{port}" in msg
        proc.send_signal(signal.SIGTERM)
        listener.wait_for("STOPPING=1", 30, proc)
        # uvicorn re-raises the SIGTERM it caught once drained: systemd counts that clean.
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert listener.messages[0].startswith("READY=1"), listener.messages


def test_serve_never_ready_when_the_port_is_taken(tmp_path: Path, listener: Listener) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        conf = _site(tmp_path, taken.getsockname()[1])
        subprocess.run([sys.executable, "-m", "central", "migrate", "-c", str(conf)],
                       check=True, capture_output=True, timeout=120)
        env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "n.sock"))
        r = subprocess.run([sys.executable, "-m", "central", "serve", "-c", str(conf)],
                           env=env, capture_output=True, text=True, timeout=60)
    # Not 2: the unit must restart (RestartPreventExitStatus=2 is for config errors only).
    assert r.returncode == 3, r.stderr[-2000:]
    time.sleep(0.2)
    try:
        while True:
            listener.messages.append(listener.sock.recv(4096).decode())
    except TimeoutError:
        pass
    assert not any(m.startswith("READY=1") for m in listener.messages), listener.messages


def test_systemd_verify_finds_nothing(tmp_path: Path) -> None:
    # `systemd-analyze verify` parses every key as systemd 252 would, and checks the
    # commands exist: run on copies pointing at this checkout's parkedge-central.
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is missing: install the Debian package 'systemd'")
    here = str(Path(sys.executable).parent / "parkedge-central")
    if not os.access(here, os.X_OK):
        pytest.skip(f"{here} missing: the package is not installed in this venv")
    names = [SINGLE.name, MIGRATE.name, "parkedge-central@w1.service"]
    for src, name in zip([SINGLE, MIGRATE, TEMPLATE], names, strict=True):
        (tmp_path / name).write_text(src.read_text(encoding="utf-8").replace(BIN, here))
    (tmp_path / "typo.service").write_text("[Service]\nExecStart=/bin/true\nTyp=notify\n")

    def verify(*units: str) -> str:
        r = subprocess.run([exe, "verify", "--man=no", *units], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
        return (r.stdout + r.stderr).strip()

    assert verify(*[f"./{n}" for n in names]) == ""
    assert "Unknown key" in verify("./typo.service")  # the check can fail
