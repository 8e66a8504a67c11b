"""The shipped unit under a real systemd as PID 1: a Debian 12 container booted by systemd-nspawn.

Why: the unit's behaviour (Type=notify READY, the watchdog, DevicePolicy/DeviceAllow, the
restart rules) is systemd's, and the test suite only parses the file; this boots systemd 252
(Debian 12's) and runs the real daemon under ``systemd/parkedge.service`` unchanged, with a
simulated lane (an EB barrier and an LED board on ptys) next to it. It shows, with systemd's
own words (``systemctl show``, the journal):

1. READY: ``systemctl start parkedge`` returns once the daemon sent READY=1 (Type=notify).
2. Serial access: a car pushed by the simulated camera opens the barrier over the pty.
3. Watchdog: the daemon SIGSTOPped (a hung lane) is killed after WatchdogSec=30 and restarted.
4. Devices: a copy of the unit running a probe opens bind-mounted nodes: EPERM = the device
   cgroup refused, ENXIO = allowed (no hardware behind the node). Then with the drop-in
   ``parkedge systemd-dropin`` writes for a config naming /dev/.../ttyAMA0.
5. Exit 2 (config error) and 65 (damaged ledger) are not restarted; the limits are applied.

Needs root, ``systemd-nspawn`` (Debian package systemd-container) and ``debootstrap``; the
first run builds the tree with debootstrap and downloads packages (network, ~5 min); later
runs take ~2 min (the watchdog alone waits 30 s). Not part of the quick suite: run it by hand
(``sudo .venv/bin/python bench/systemd_boot.py``) or with PARKEDGE_SYSTEMD_BOOT=1 (see
tests/systemd/test_boot.py). docs/deploy.md shows a run.

The container gets ``--capability=all --system-call-filter=bpf`` and the unified cgroup
hierarchy (SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1): systemd enforces DeviceAllow= with a cgroup
BPF program, which nspawn's default seccomp filter forbids. Without those options the unit
still starts but no device rule is enforced (every probe gives ENXIO), which proves nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TREE = Path("/var/lib/machines/parkedge-bookworm")
MIRROR = "http://deb.debian.org/debian"
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv,procps"
# OpenCV's wheel (imported by the simulator and on-box recognition) needs these, as on a lane.
LIBS = ["libgl1", "libglib2.0-0"]
VENV = "/opt/parkedge/.venv"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PLATE = "沪A12345"

# Device nodes made on the host and bind-mounted at /dev/lanedev: (name, major, minor).
# 4:70 is a ttyS minor without a UART behind it; 204:64 is ttyAMA0 (PL011, not on x86);
# 10:130 is the misc watchdog minor, a class the unit never allows.
NODES = [("ttyS6", 4, 70), ("ttyAMA0", 204, 64), ("misc-watchdog", 10, 130)]

SIM_UNIT = """[Unit]
Description=simulated lane E1 (EB barrier + LED board on ptys, camera push) for the proof
[Service]
User=parkedge
Group=parkedge
RuntimeDirectory=parkedge-sim
ExecStart={venv}/bin/parkedge-sim serve --lanes E1 --barrier eb --control 127.0.0.1:8090 \\
    --lane-target E1=http://127.0.0.1:8081/ISAPI/Event --rise-s 0.3 --fall-s 0.3 --hold-s 0.3
StandardOutput=truncate:/run/parkedge-sim.json
"""

PROBE = r'''
import errno, json, os, sys, time
out = {}
args = sys.argv[1:]
if "--wait" in args:  # a node "plugged in" after the unit started: wait for it to appear
    late = args[args.index("--wait") + 1]
    args = [late]
    while not os.path.exists(late):
        time.sleep(0.1)
for path in args:
    try:
        os.close(os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK))
        out[path] = "opened"
    except OSError as exc:
        out[path] = errno.errorcode.get(exc.errno, str(exc.errno))
print(json.dumps(out))
'''

LANE_TOML = """# the proof's lane: an entry lane on the simulator's EB barrier and LED board (ptys)
[lane]
id = "E1"
site = "demo-mall"
direction = "entry"
timezone = "Asia/Shanghai"
plate_timeout_s = 6.0
clear_timeout_s = 20.0
arm_confirm_s = 3.0
idle_lines = ["欢迎光临", "Welcome"]
control_socket = "/run/parkedge/control.sock"

[buses.io]
url = "{barrier}"
protocol = "raw"
timeout_s = 0.5
retries = 2
gap_ms = 2

[devices.barrier]
driver = "eb-serial"
bus = "io"
unit = 1

[devices.loops]
driver = "barrier-status"
bus = "io"
poll_ms = 20
debounce_ms = 10

[buses.led]
url = "{display}"
protocol = "raw"
gap_ms = 2

[devices.display]
driver = "a0"
bus = "led"

[camera]
source = "push"
listen = "127.0.0.1:8081"

[rules]
path = "/etc/parkedge/rules.toml"

[storage]
path = "/var/lib/parkedge/ledger.db"

[logging]
level = "INFO"
format = "json"
"""


class Failed(Exception):
    """A step of the proof did not give what systemd should have given."""


def say(text: str) -> None:
    print(text, flush=True)


def sh(cmd: list[str], *, check: bool = True, timeout: float = 600,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        raise Failed(f"{' '.join(cmd)} still running after {timeout} s") from exc
    if check and res.returncode != 0:
        raise Failed(f"{' '.join(cmd)} exited {res.returncode}:\n{res.stdout}{res.stderr}")
    return res


# ----------------------------------------------------------------- the tree
def build_tree(tree: Path) -> None:
    """Debian 12 with systemd, python3 and a venv holding this checkout's wheel."""
    if not (tree / "usr/lib/systemd/systemd").exists():
        say(f"debootstrap bookworm -> {tree} (network, a few minutes)")
        sh(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm",
            str(tree), MIRROR], timeout=1800)
    chroot = ["chroot", str(tree), "/usr/bin/env", "-i", PATH_ENV]
    if sh([*chroot, "dpkg", "-s", *LIBS], check=False).returncode != 0:
        say(f"apt-get install {' '.join(LIBS)} in the tree")
        sh([*chroot, "apt-get", "update", "-qq"], timeout=900)
        sh([*chroot, "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq",
            "--no-install-recommends", *LIBS], timeout=1800)
    (tree / "etc/hostname").write_text("parkedge-proof\n")
    # Masked: firstboot (no console to ask on) and wait-online (the container has only lo,
    # so network-online.target, which the unit is After=, would wait 2 min and fail).
    for masked in ("systemd-firstboot.service", "systemd-networkd-wait-online.service"):
        link = tree / "etc/systemd/system" / masked
        if not link.is_symlink():
            link.symlink_to("/dev/null")
    wheels = tree / "var/cache/parkedge-wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for old in wheels.glob("parkedge-*.whl"):
        old.unlink()
    pip = [sys.executable, "-m", "pip"]
    sh([*pip, "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)])
    wheel = next(wheels.glob("parkedge-*.whl")).name
    if not (tree / VENV.lstrip("/") / "bin/python").exists():
        say("installing the dependencies' wheels into the tree's venv")
        sh([*pip, "download", "-q", "-d", str(wheels), "--only-binary=:all:",
            "--python-version", "3.11", "--platform", "manylinux2014_x86_64",
            "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
            str(wheels / wheel)], timeout=1800)
        sh([*chroot, "python3", "-m", "venv", VENV])
    sh([*chroot, f"{VENV}/bin/pip", "install", "-q", "--no-index", "--find-links",
        "/var/cache/parkedge-wheels", "--force-reinstall", "--no-deps",
        f"/var/cache/parkedge-wheels/{wheel}"])
    sh([*chroot, f"{VENV}/bin/pip", "install", "-q", "--no-index", "--find-links",
        "/var/cache/parkedge-wheels", f"/var/cache/parkedge-wheels/{wheel}"])


def install_units(tree: Path) -> None:
    """The repository's unit, sysusers and tmpfiles files, unchanged; and the proof's helpers."""
    etc = tree / "etc/systemd/system"
    for d in ("parkedge.service.d", "parkedge-probe.service.d"):
        shutil.rmtree(etc / d, ignore_errors=True)
    shutil.copy(REPO / "systemd/parkedge.service", etc / "parkedge.service")
    shutil.copy(REPO / "systemd/parkedge.sysusers", tree / "usr/lib/sysusers.d/parkedge.conf")
    shutil.copy(REPO / "systemd/parkedge.tmpfiles", tree / "usr/lib/tmpfiles.d/parkedge.conf")
    (etc / "parkedge-sim.service").write_text(SIM_UNIT.format(venv=VENV))
    # The probe: the lane's unit with its sandbox as is, running a device-open probe instead.
    unit = (REPO / "systemd/parkedge.service").read_text()
    keep = [ln for ln in unit.splitlines()
            if not ln.startswith(("Type=", "NotifyAccess=", "WatchdogSec=", "ExecStart=",
                                  "Restart=", "RuntimeDirectory"))]  # /run/parkedge is the lane's
    nodes = " ".join(f"/dev/lanedev/{n}" for n, _, _ in NODES)
    probe = "\n".join(keep).replace("[Service]", "[Service]\nType=oneshot\n"
                                    f"ExecStart={VENV}/bin/python /usr/local/lib/probe.py "
                                    f"{nodes} $PROBE_EXTRA\n"
                                    "StandardOutput=truncate:/run/parkedge-probe.json", 1)
    (etc / "parkedge-probe.service").write_text(probe + "\n")
    (tree / "usr/local/lib/probe.py").write_text(PROBE)
    (tree / "etc/parkedge").mkdir(exist_ok=True)
    shutil.copy(REPO / "config/rules.mall.example.toml", tree / "etc/parkedge/rules.toml")
    for stale in ("etc/parkedge/lane.toml", "etc/parkedge/arm.toml"):
        (tree / stale).unlink(missing_ok=True)
    shutil.rmtree(tree / "var/lib/parkedge", ignore_errors=True)


# ----------------------------------------------------------------- the container
class Container:
    """systemd-nspawn -b in the background; commands run in it through nsenter."""

    def __init__(self, tree: Path, devdir: Path) -> None:
        env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
        fd, name = tempfile.mkstemp(prefix="nspawn-", suffix=".log")
        os.close(fd)
        self.log = Path(name)  # the container's console, shown if it does not boot
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["systemd-nspawn", "-D", str(tree), "--register=no", "--keep-unit",
                 "--private-network", "--capability=all", "--system-call-filter=bpf",
                 f"--bind={devdir}:/dev/lanedev", "-b", "--console=pipe"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.pid = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            pids = kids.read_text().split() if kids.exists() else []
            if pids:
                self.pid = int(pids[0])
                break
            time.sleep(0.2)
        if not self.pid:
            raise Failed("systemd-nspawn did not start a container:\n"
                         + self.log.read_text(errors="replace"))
        state = ""

        def booted() -> bool:  # the bus socket appears a little after PID 1 starts
            nonlocal state
            res = self.run(["systemctl", "is-system-running", "--wait"], check=False)
            state = res.stdout.strip()
            return state in ("running", "degraded")

        if not wait_for(booted, 120, 1.0):
            raise Failed(f"the container's systemd did not finish booting: {state!r}")
        say(f"container booted: PID 1 = {self.run(['cat', '/proc/1/comm']).stdout.strip()}, "
            f"system {state}")

    def run(self, cmd: list[str], *, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return sh(["nsenter", "-t", str(self.pid), "-a", "/usr/bin/env", "-i", PATH_ENV,
                   "LANG=C.UTF-8", *cmd], check=check, timeout=timeout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run(["systemctl", "show", unit, "-p", ",".join(props)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str, since: str = "") -> str:
        cmd = ["journalctl", "-b", "0", "--no-pager", "-o", "short-precise", "-u", unit]
        return self.run(cmd + (["--since", since] if since else []), check=False).stdout

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to halt
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.unlink(missing_ok=True)


def wait_for(pred: Any, timeout: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


# ----------------------------------------------------------------- the proof
def mknod(path: Path, major: int, minor: int) -> None:
    """A character node root:dialout 0660, as udev makes a UART's (dialout is 20 on Debian)."""
    os.mknod(path, 0o660 | stat.S_IFCHR, os.makedev(major, minor))
    os.chown(path, 0, 20)
    os.chmod(path, 0o660)  # mknod applies the umask


def proof(c: Container, tree: Path, devdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    parkedge = f"{VENV}/bin/parkedge"
    c.run(["systemd-sysusers"])
    c.run(["systemd-tmpfiles", "--create", "/usr/lib/tmpfiles.d/parkedge.conf"])
    say(f"systemd: {c.run(['systemctl', '--version']).stdout.splitlines()[0]}")

    # The simulated lane, then the lane's config naming its ptys.
    c.run(["systemctl", "start", "parkedge-sim"])
    def sim_line() -> str:
        out = c.run(["cat", "/run/parkedge-sim.json"], check=False).stdout
        return next((ln for ln in out.splitlines() if ln.startswith('{"control"')), "")

    if not wait_for(lambda: bool(sim_line()), 30):
        raise Failed("simulator gave no ports:\n" + c.journal("parkedge-sim")
                     + c.run(["cat", "/run/parkedge-sim.json"], check=False).stdout)
    info = json.loads(sim_line())
    lane = info["lanes"]["E1"]
    say(f"simulator: barrier on {lane['barrier_path']}, display on {lane['display_path']}")
    (tree / "etc/parkedge/lane.toml").write_text(
        LANE_TOML.format(barrier=lane["barrier_path"], display=lane["display_path"]))
    c.run(["chown", "root:parkedge", "/etc/parkedge/lane.toml"])
    c.run(["chmod", "0640", "/etc/parkedge/lane.toml"])
    check = c.run(["runuser", "-u", "parkedge", "--", parkedge, "check-config",
                   "/etc/parkedge/lane.toml"], check=False)
    say(f"check-config (as parkedge): {check.stdout.strip()} {check.stderr.strip()}")
    dropin = c.run([parkedge, "systemd-dropin", "--config", "/etc/parkedge/lane.toml"]).stdout
    (tree / "etc/systemd/system/parkedge.service.d").mkdir(exist_ok=True)
    (tree / "etc/systemd/system/parkedge.service.d/50-devices.conf").write_text(dropin)
    say("drop-in from the config:\n  " + "\n  ".join(
        ln for ln in dropin.splitlines() if ln.startswith(("[", "DeviceAllow"))))
    c.run(["systemctl", "daemon-reload"])

    # 1. READY: `systemctl start` of a Type=notify unit returns when READY=1 arrived.
    t = time.monotonic()
    start = c.run(["systemctl", "start", "parkedge"], check=False, timeout=120)
    ready_s = time.monotonic() - t
    props = c.show("parkedge", "Type", "ActiveState", "SubState", "StatusText", "MainPID",
                   "NRestarts", "WatchdogUSec", "LimitNOFILE", "MemoryMax",
                   "RestartPreventExitStatus", "DevicePolicy")
    say(f"systemctl start parkedge: exit {start.returncode} after {ready_s:.1f} s; {props}")
    if start.returncode != 0 or props["ActiveState"] != "active" or props["Type"] != "notify":
        raise Failed("the lane did not become ready:\n" + c.journal("parkedge")[-4000:])
    limits = c.run(["grep", "-E", "Max open files", f"/proc/{props['MainPID']}/limits"]).stdout
    say(f"daemon's limits: {' '.join(limits.split())}")
    result["ready"] = {"seconds": round(ready_s, 1), "status": props["StatusText"],
                       "limit_nofile": props["LimitNOFILE"], "memory_max": props["MemoryMax"]}

    # 2. Serial access: a car at the entry; the barrier (EB controller on a pty) must open.
    car = c.run([f"{VENV}/bin/python", "-c",
                 "import json,sys,urllib.request as u;"
                 "r=u.Request('http://127.0.0.1:8090/lanes/E1/vehicle',method='POST',"
                 f"data=json.dumps({{'plate':'{PLATE}','dwell_s':0.5}}).encode());"
                 "print(u.urlopen(r,timeout=60).read().decode())"], timeout=90).stdout
    outcome = json.loads(car)
    say(f"car {PLATE} at the entry: {outcome['result']} (waited {outcome['wait_s']} s)")
    if outcome["result"] != "passed":
        raise Failed(f"the barrier did not open: {outcome}\n" + c.journal("parkedge")[-4000:])
    result["serial"] = {"barrier": lane["barrier_path"], "car": outcome["result"]}
    hwm = c.run(["grep", "VmHWM", f"/proc/{props['MainPID']}/status"]).stdout.split()
    fds = len(c.run(["ls", f"/proc/{props['MainPID']}/fd"]).stdout.split())
    say(f"daemon's peak RSS so far (push camera, no on-box recognition): {hwm[1]} {hwm[2]}; "
        f"open descriptors: {fds}")
    result["ready"]["peak_rss_kb"] = int(hwm[1])
    result["ready"]["open_fds"] = fds

    # 3. Watchdog: a hung lane (SIGSTOP) stops pinging; systemd aborts and restarts it.
    pid0, n0 = props["MainPID"], int(props["NRestarts"])
    stamp = c.run(["date", "+%Y-%m-%d %H:%M:%S"]).stdout.strip()
    c.run(["kill", "-STOP", pid0])
    t = time.monotonic()
    ok = wait_for(lambda: (lambda p: p["MainPID"] not in ("0", pid0)
                           and p["ActiveState"] == "active" and int(p["NRestarts"]) > n0)(
        c.show("parkedge", "MainPID", "ActiveState", "NRestarts")), 120, 1.0)
    back_s = time.monotonic() - t
    log = c.journal("parkedge", stamp)
    wanted = [ln for ln in log.splitlines()
              if re.search(r"[Ww]atchdog|ABRT|dumped|Scheduled restart|Started|Main process", ln)]
    say(f"SIGSTOP {pid0}: lane active again after {back_s:.0f} s:\n  " + "\n  ".join(wanted))
    if not ok or "Watchdog timeout" not in log:
        raise Failed("no watchdog restart:\n" + log[-4000:])
    props = c.show("parkedge", "MainPID", "NRestarts")
    result["watchdog"] = {"stopped_pid": pid0, "new_pid": props["MainPID"],
                          "restarts": int(props["NRestarts"]), "seconds": round(back_s)}

    # 4. Devices under the unit's own sandbox (the probe unit is a copy of it).
    def probe(extra: str = "") -> dict[str, str]:
        c.run(["systemctl", "set-environment", f"PROBE_EXTRA={extra}"])
        c.run(["systemctl", "start", "parkedge-probe"], check=False)
        return dict(json.loads(c.run(["cat", "/run/parkedge-probe.json"]).stdout))

    base = probe(lane["barrier_path"])
    say(f"devices, shipped unit: {base}")
    arm = (tree / "etc/parkedge/lane.toml").read_text().replace(
        lane["barrier_path"], "/dev/lanedev/ttyAMA0")
    (tree / "etc/parkedge/arm.toml").write_text(arm)
    arm_dropin = c.run([parkedge, "systemd-dropin", "--config", "/etc/parkedge/arm.toml"]).stdout
    (tree / "etc/systemd/system/parkedge-probe.service.d").mkdir(exist_ok=True)
    (tree / "etc/systemd/system/parkedge-probe.service.d/50-devices.conf").write_text(arm_dropin)
    c.run(["systemctl", "daemon-reload"])
    armed = probe(lane["barrier_path"])
    say("drop-in for a config with /dev/lanedev/ttyAMA0 (barrier) + the LED pty:\n  "
        + "\n  ".join(ln for ln in arm_dropin.splitlines() if ln.startswith("DeviceAllow"))
        + f"\ndevices, with it: {armed}")
    result["devices"] = {"shipped_unit": base, "ttyAMA0_dropin": armed}
    if (base["/dev/lanedev/ttyS6"] != "ENXIO" or base["/dev/lanedev/ttyAMA0"] != "EPERM"
            or base["/dev/lanedev/misc-watchdog"] != "EPERM"
            or base[lane["barrier_path"]] != "opened"):
        raise Failed(f"unexpected device access under the shipped unit: {base}")
    if armed["/dev/lanedev/ttyAMA0"] != "ENXIO" or armed["/dev/lanedev/ttyS6"] != "EPERM":
        raise Failed(f"unexpected device access with the drop-in: {armed}")

    # 4b. A node that appears after the unit started ("plugged in later"): DeviceAllow= was
    # resolved at start, so it is refused until the next start. 204:65 = ttyAMA1, a class this
    # kernel does not have, so only the node entry could allow it.
    late = devdir / "ttyAMA1"
    late.unlink(missing_ok=True)
    (tree / "etc/systemd/system/parkedge-probe.service.d/60-late.conf").write_text(
        "[Service]\nDeviceAllow=/dev/lanedev/ttyAMA1 rw\n")
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "set-environment", "PROBE_EXTRA=--wait /dev/lanedev/ttyAMA1"])
    c.run(["rm", "-f", "/run/parkedge-probe.json"])
    c.run(["systemctl", "start", "--no-block", "parkedge-probe"])
    wait_for(lambda: c.show("parkedge-probe", "ActiveState")["ActiveState"] == "activating", 10)
    time.sleep(1)
    mknod(late, 204, 65)
    wait_for(lambda: c.show("parkedge-probe", "ActiveState")["ActiveState"] != "activating", 20)
    plugged_late = json.loads(c.run(["cat", "/run/parkedge-probe.json"]).stdout)
    whole = c.run(["journalctl", "-b", "0", "--no-pager", "-o", "cat"], check=False).stdout
    skipped = [ln for ln in whole.splitlines()
               if "Couldn't stat device /dev/lanedev/ttyAMA1" in ln][-1:]
    after_restart = probe("/dev/lanedev/ttyAMA1")  # the node exists at this start now
    say(f"node created after the unit started: {plugged_late} ({'; '.join(skipped)}); "
        f"after a restart: ttyAMA1 {after_restart.get('/dev/lanedev/ttyAMA1', '?')}")
    result["devices"]["plugged_late"] = plugged_late["/dev/lanedev/ttyAMA1"]
    result["devices"]["plugged_late_after_restart"] = after_restart.get("/dev/lanedev/ttyAMA1")
    if plugged_late["/dev/lanedev/ttyAMA1"] != "EPERM":
        raise Failed(f"a node created after start was not refused: {plugged_late}")

    # 5. Exit statuses the unit must not restart in a loop: 2 (config) and 65 (ledger).
    good = (tree / "etc/parkedge/lane.toml").read_text()
    (tree / "etc/parkedge/lane.toml").write_text(good.replace('direction = "entry"',
                                                              'direction = "sideways"'))
    for status, how in ((2, "config error"), (65, "damaged ledger")):
        if status == 65:  # the daemon's own exit: a drop-in makes ExecStart exit 65 like it
            d = tree / "etc/systemd/system/parkedge.service.d/90-exit65.conf"
            d.write_text(f"[Service]\nExecStart=\nExecStart={VENV}/bin/python -c "
                         "\"raise SystemExit(65)\"\n")
            c.run(["systemctl", "daemon-reload"])
        c.run(["systemctl", "reset-failed", "parkedge"], check=False)
        c.run(["systemctl", "restart", "parkedge"], check=False)
        time.sleep(12)  # > RestartSec=5: a restart would have happened twice by now
        p = c.show("parkedge", "ActiveState", "Result", "ExecMainStatus", "NRestarts")
        say(f"exit {status} ({how}): {p}")
        result[f"exit_{status}"] = p
        if p["ActiveState"] != "failed" or p["ExecMainStatus"] != str(status) \
                or p["NRestarts"] != "0":
            raise Failed(f"exit {status} was restarted or not seen: {p}")
    err = [ln for ln in c.journal("parkedge").splitlines() if "lane.direction" in ln]
    say("journal of the config error: " + (err[-1] if err else "(none)"))
    (tree / "etc/systemd/system/parkedge.service.d/90-exit65.conf").unlink()
    (tree / "etc/parkedge/lane.toml").write_text(good)
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "reset-failed", "parkedge"], check=False)
    c.run(["systemctl", "start", "parkedge"])
    result["restarted_after_fix"] = c.show("parkedge", "ActiveState")["ActiveState"]
    say(f"config fixed, systemctl start: {result['restarted_after_fix']}")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", type=Path, default=DEFAULT_TREE,
                    help="Debian 12 tree (made with debootstrap if missing)")
    ap.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    a = ap.parse_args()
    missing = [t for t in ("systemd-nspawn", "debootstrap", "nsenter", "chroot")
               if shutil.which(t) is None]
    if os.geteuid() != 0 or missing:
        say(f"cannot run: {'not root; ' if os.geteuid() else ''}missing {missing} "
            "(apt-get install systemd-container debootstrap)")
        return 2
    build_tree(a.tree)
    install_units(a.tree)
    with tempfile.TemporaryDirectory(prefix="lanedev-") as devdir:
        os.chmod(devdir, 0o755)  # like /dev: the service user must traverse it
        for name, major, minor in NODES:
            mknod(Path(devdir) / name, major, minor)
        container = Container(a.tree, Path(devdir))
        try:
            result = proof(container, a.tree, Path(devdir))
        except Failed as exc:
            say(f"FAILED: {exc}")
            return 1
        finally:
            container.stop()
    if a.json:
        print(json.dumps(result, ensure_ascii=False))
    say("OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
