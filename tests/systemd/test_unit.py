"""The unit files parse and carry the keys the lane depends on (notify, watchdog, sandbox)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.systemd.units import Unit, analyze, one, parse_unit

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNITS = [SYSTEMD / "parkedge.service", SYSTEMD / "parkedge@.service"]
MAX_EXPOSURE = 1.5

@pytest.fixture(params=UNITS, ids=lambda p: p.name)
def unit(request: pytest.FixtureRequest) -> Unit:
    path: Path = request.param
    return parse_unit(path.read_text(encoding="utf-8"))


REQUIRED = {
    "Type": "notify",
    "NotifyAccess": "main",
    "WatchdogSec": "30",
    "Restart": "on-failure",
    "User": "parkedge",
    "Group": "parkedge",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "PrivateTmp": "yes",
    "DevicePolicy": "closed",
}


def test_required_service_keys(unit: Unit) -> None:
    for key, value in REQUIRED.items():
        assert one(unit, key) == value, key
    assert set(one(unit, "SupplementaryGroups").split()) >= {"dialout", "video"}
    assert int(one(unit, "RestartSec")) > 0
    assert one(unit, "ExecStart").split()[1:3] == ["run", "--config"]
    assert one(unit, "StateDirectory").startswith("parkedge")
    assert one(unit, "RuntimeDirectory").startswith("parkedge")
    assert one(unit, "ConfigurationDirectory") == "parkedge"
    # The ledger lives in the state dir, and that is the only writable path.
    assert one(unit, "ReadWritePaths") == "/var/lib/" + one(unit, "StateDirectory")
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_devices_and_network_still_reachable(unit: Unit) -> None:
    service = unit["Service"]
    assert service.get("PrivateDevices", ["no"])[-1] == "no"
    allowed = {v.split()[0]: v.split()[1] for v in service["DeviceAllow"]}
    # USB adapters, PC UARTs, and ARM boards' UARTs (PL011 ttyAMA, SC16IS7xx ttySC).
    for device in ("char-ttyUSB", "char-ttyACM", "char-ttyS", "char-ttyAMA", "char-ttySC",
                   "char-video4linux"):
        assert allowed.get(device) == "rw", device
    families = set(one(unit, "RestrictAddressFamilies").split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert "PrivateNetwork" not in service and "IPAddressDeny" not in service


def test_no_capabilities(unit: Unit) -> None:
    assert one(unit, "CapabilityBoundingSet") == ""
    assert one(unit, "AmbientCapabilities") == ""


def test_config_and_ledger_errors_are_not_restarted_in_a_loop(unit: Unit) -> None:
    # 2 = config error, 65 = damaged ledger: the lane exits with them and a restart cannot
    # help. RestartPreventExitStatus= only sees the main process: an ExecStartPre= failing
    # with 2 was restarted every RestartSec for ever (seen under systemd 252: restart
    # counter 3 after 20 s), so the config is checked by `parkedge run` itself.
    assert set(one(unit, "RestartPreventExitStatus").split()) >= {"2", "65"}
    assert "ExecStartPre" not in unit["Service"]
    assert one(unit, "Restart") == "on-failure"


def test_resource_limits(unit: Unit) -> None:
    # Descriptors: no fd >= FD_SETSIZE (below); memory for on-box recognition (~300 MB
    # peak) with a ceiling that stops a flood or a leak.
    assert int(one(unit, "LimitNOFILE")) <= 1024
    assert one(unit, "MemoryMax") == "768M"


def test_nofile_limit_keeps_serial_ports_usable_under_a_socket_flood(unit: Unit) -> None:
    # pyserial (the lane's RS-485 buses) and paho-mqtt wait with select(): on an fd >= 1024
    # every read fails with "filedescriptor out of range in select()". Under the unit's
    # LimitNOFILE no such fd exists: a socket flood ends in EMFILE, a port opened during it
    # fails to open (an OSError the bus's reconnect handles), and opens and works after it.
    limit = int(one(unit, "LimitNOFILE"))
    code = f"""
import errno, os, resource, socket, serial
resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))
master, slave = os.openpty()
name = os.ttyname(slave)
flood = []
try:
    while len(flood) < 1100:
        flood.append(socket.socket())
except OSError as exc:
    assert exc.errno == errno.EMFILE, exc
def use_port():
    port = serial.serial_for_url(name, timeout=1)
    os.write(master, b"A")
    assert port.read(1) == b"A"  # ValueError here if port.fd >= 1024
    port.close()
try:
    use_port()
except serial.SerialException as exc:
    assert exc.errno == errno.EMFILE, exc
for s in flood:
    s.close()
use_port()
print("ok", len(flood))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")


def test_configuration_directory_mode_matches_tmpfiles(unit: Unit) -> None:
    tmpfiles = (SYSTEMD / "parkedge.tmpfiles").read_text(encoding="utf-8")
    row = next(line.split() for line in tmpfiles.splitlines()
               if line.startswith("d /etc/parkedge "))
    assert one(unit, "ConfigurationDirectoryMode") == row[2]


def test_template_is_per_instance() -> None:
    tpl = parse_unit(UNITS[1].read_text(encoding="utf-8"))
    assert "%i" in one(tpl, "ExecStart")
    assert one(tpl, "StateDirectory") == "parkedge/%i"


def test_sysusers_and_tmpfiles() -> None:
    sysusers = (SYSTEMD / "parkedge.sysusers").read_text(encoding="utf-8")
    rows = [line.split() for line in sysusers.splitlines() if line and not line.startswith("#")]
    assert ["m", "parkedge", "dialout"] in rows and ["m", "parkedge", "video"] in rows
    assert any(r[:2] == ["u", "parkedge"] for r in rows)
    tmpfiles = (SYSTEMD / "parkedge.tmpfiles").read_text(encoding="utf-8")
    # Every *.key (hmac.key, the TLS private key) owner-only and owned by the service user,
    # as edge.config.secret requires.
    key_rows = [line.split() for line in tmpfiles.splitlines()
                if line.startswith("z /etc/parkedge/*.key ")]
    assert key_rows and key_rows[0][2] in ("0400", "0600")
    assert key_rows[0][3] == "parkedge"


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_security_exposure_at_most_1_5(path: Path, tmp_path: Path) -> None:
    if "@" in path.name:  # a template is analysed as an instance
        path = Path(shutil.copy(path, tmp_path / "parkedge@lane1.service"))
    score, out = analyze(path)
    assert score <= MAX_EXPOSURE, out
    assert "Unknown key" not in out and "Unknown section" not in out, out


def test_exposure_check_can_fail(tmp_path: Path) -> None:
    # The same analysis on an unhardened unit must score badly, or the test above means nothing.
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nExecStart=/bin/true\n", encoding="utf-8")
    score, _ = analyze(bare)
    assert score > 5.0
