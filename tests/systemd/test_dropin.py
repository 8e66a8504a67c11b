"""``parkedge systemd-dropin``: the unit's DeviceAllow= follows the config's device paths."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.cli.systemd import device_classes, proc_devices, render_dropin
from edge.config import parse_config

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "parkedge.service"
PROC_DEVICES = """Character devices:
  4 tty
  4 ttyS
  5 /dev/tty
136 pts
188 ttyUSB
204 ttyAMA

Block devices:
  7 loop
"""


def config(relay: str, led: str) -> Any:
    with (REPO / "config" / "exit.example.toml").open("rb") as fh:
        data = tomllib.load(fh)
    data["buses"]["relay"]["url"] = relay
    data["buses"]["led"]["url"] = led
    return parse_config(data)


def allow_lines(text: str) -> list[str]:
    return [line.removeprefix("DeviceAllow=") for line in text.splitlines()
            if line.startswith("DeviceAllow=")]


@pytest.fixture
def pty() -> Iterator[str]:
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_proc_devices_lists_char_majors_only() -> None:
    majors = proc_devices(PROC_DEVICES)
    assert majors[4] == ["tty", "ttyS"] and majors[204] == ["ttyAMA"]
    assert 7 not in majors  # a block device
    assert 136 in proc_devices()  # this machine's own table: ptys are always there


def test_arm_uart_and_usb_by_id(tmp_path: Path) -> None:
    by_id = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K-if00-port0"
    text = render_dropin(config("/dev/ttyAMA0", by_id), tmp_path / "lane.toml",
                         proc_devices(PROC_DEVICES))
    lines = allow_lines(text)
    # The unit's list is reset first: only what this lane's devices need is allowed.
    assert lines[0] == ""
    assert set(lines[1:]) == {
        "char-ttyUSB rw", "char-ttyACM rw", f"{by_id} rw",  # an absent by-id: either class
        "char-ttyAMA rw", "/dev/ttyAMA0 rw",  # a class, and the node stat'ed at start
    }
    assert text.splitlines().index("[Service]") < text.splitlines().index("DeviceAllow=")
    # A hot-plugged USB adapter needs its driver loaded at boot for the class to resolve.
    assert re.search(r"cdc_acm usbserial > /etc/modules-load.d/parkedge.conf", text)


def test_present_node_is_classified_by_its_major(tmp_path: Path, pty: str) -> None:
    # A stable name (symlink) to a node whose name says nothing: the major decides.
    link = tmp_path / "lane-rs485"
    link.symlink_to(pty)
    assert device_classes(str(link), proc_devices(PROC_DEVICES)) == ("pts",)
    assert device_classes("/dev/ttyS3", {}) == ("ttyS",)
    assert device_classes("/dev/ttymxc1", {}) == ("ttymxc",)  # i.MX UARTs
    assert device_classes("/dev/lane-bus", {}) == ()  # unknown: the node line only
    text = render_dropin(config(pty, str(link)), tmp_path / "lane.toml")
    # Pty numbers change at each start: the class, never the node.
    assert allow_lines(text) == ["", "char-pts rw", f"{link} rw"]


def test_dropin_parses_and_resets_the_units_list(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is missing: install the Debian package 'systemd'")
    dropin = render_dropin(config("/dev/ttyAMA0", "/dev/ttyS1"), tmp_path / "lane.toml",
                           proc_devices(PROC_DEVICES))
    # A drop-in's [Service] is read after the unit's: the same as appending it to the file.
    merged = tmp_path / "parkedge.service"
    merged.write_text(UNIT.read_text(encoding="utf-8") + "\n" + dropin, encoding="utf-8")
    out = subprocess.run([exe, "security", "--offline=true", "--no-pager", str(merged)],
                         capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    assert "Unknown key" not in text and "Unknown section" not in text, text
    acl = next(line for line in text.splitlines() if "device ACL" in line)
    assert "char-ttyAMA:rw" in acl and "char-ttyS:rw" in acl
    assert "char-ttyUSB" not in acl and "char-pts" not in acl  # reset, not added to
    score = float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", text).group(1))
    assert score <= 1.5, text


def test_cli_prints_the_dropin_and_refuses_a_bad_config(tmp_path: Path) -> None:
    good = tmp_path / "lane.toml"
    text = (REPO / "config" / "exit.example.toml").read_text(encoding="utf-8")
    good.write_text(text.replace("serial:///dev/ttyUSB0", "/dev/ttySC0"), encoding="utf-8")
    cmd = [sys.executable, "-m", "edge", "systemd-dropin", "--config"]
    done = subprocess.run([*cmd, str(good)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "DeviceAllow=char-ttySC rw" in done.stdout
    assert "DeviceAllow=/dev/ttySC0 rw" in done.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('direction = "exit"', 'direction = "sideways"'),
                   encoding="utf-8")
    done = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "lane.direction" in done.stderr
