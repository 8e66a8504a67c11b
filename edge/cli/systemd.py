"""``parkedge systemd-dropin --config FILE``: the unit's ``DeviceAllow=`` lines for this lane.

Why: ``DevicePolicy=closed`` lets the daemon open only the device classes the unit lists, and
systemd resolves each ``DeviceAllow=char-<driver>`` against ``/proc/devices`` when the unit
*starts*. The shipped unit lists the usual classes (ttyUSB, ttyACM, ttyS, ttyAMA, ttySC); a
lane whose adapter is of another class (``ttymxc`` on i.MX, ``ttyO`` on TI boards...) or a
site that wants only the classes it uses writes a drop-in from its own config with this
command. The drop-in replaces the unit's list (``DeviceAllow=`` first), so the daemon can open
the classes its configured devices belong to and nothing else.

A class missing from ``/proc/devices`` when the unit starts (its driver not loaded yet, e.g.
``usbserial`` before the first USB adapter is plugged) allows nothing until the next restart:
the drop-in's comments name the kernel modules to load at boot (``/etc/modules-load.d``).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from edge.cli import app, config_or_exit
from edge.config.models import Config

# Kernel modules that register a class's major on load: a class allowed by name only gets a
# major once its driver is loaded, so hot-plugged adapters need the driver loaded at boot.
MODULES = {"ttyUSB": "usbserial", "ttyACM": "cdc_acm"}
# /dev/serial/by-id and by-path names are USB adapters: one of these two classes.
USB_SERIAL_CLASSES = ("ttyUSB", "ttyACM")


@dataclass(frozen=True)
class Allow:
    """One ``DeviceAllow=`` entry and the config key that needs it."""

    entry: str
    key: str
    note: str = ""


def proc_devices(text: str | None = None) -> dict[int, list[str]]:
    """Character device majors → driver names, from ``/proc/devices`` (or ``text``)."""
    if text is None:
        try:
            text = Path("/proc/devices").read_text(encoding="ascii")
        except OSError:
            return {}
    out: dict[int, list[str]] = {}
    for line in text.split("Block devices:")[0].splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0].isdigit():
            out.setdefault(int(parts[0]), []).append(parts[1].strip())
    return out


def _class_from_name(name: str) -> str | None:
    """``ttyAMA0`` → ``ttyAMA``; ``pts/3`` → ``pts``; ``video0`` → ``video4linux``."""
    base = name.rsplit("/", 1)[-1]
    if name.startswith("pts/") and base.isdigit():
        return "pts"
    if re.fullmatch(r"video\d+", base):
        return "video4linux"
    m = re.fullmatch(r"(tty[A-Za-z]+?)\d+", base)
    return m.group(1) if m else None


def device_classes(device: str, majors: dict[int, list[str]] | None = None) -> tuple[str, ...]:
    """The ``/proc/devices`` class(es) a configured device path belongs to.

    A present node is identified by its major number (following symlinks such as
    ``/dev/serial/by-id/...``); an absent one by its name. Unknown: empty tuple.
    """
    path = Path(device)
    try:
        real = path.resolve(strict=True)
        st = real.stat()
    except OSError:
        real, st = None, None
    if real is not None and st is not None and stat.S_ISCHR(st.st_mode):
        names = (majors if majors is not None else proc_devices()).get(os.major(st.st_rdev), [])
        guess = _class_from_name(str(real.relative_to("/dev")) if real.is_relative_to("/dev")
                                 else real.name)
        if guess in names:
            return (guess,)
        if names:
            return (names[0],)
    if device.startswith(("/dev/serial/by-id/", "/dev/serial/by-path/")):
        return USB_SERIAL_CLASSES
    rel = device.removeprefix("/dev/")
    guess = _class_from_name(rel)
    return (guess,) if guess else ()


def device_allows(cfg: Config, majors: dict[int, list[str]] | None = None) -> list[Allow]:
    """Every ``DeviceAllow=`` the config's devices need: each class once, and each node."""
    wanted: list[tuple[str, str]] = []
    for name, bus in sorted(cfg.buses.items()):
        ep = bus.endpoint
        if ep.kind == "serial":
            wanted.append((f"buses.{name}.url", ep.device))
    if cfg.camera.source == "stream" and cfg.camera.url.startswith("/dev/"):
        wanted.append(("camera.url", cfg.camera.url))
    out: list[Allow] = []
    seen: set[str] = set()
    for key, device in wanted:
        for cls in device_classes(device, majors):
            if cls not in seen:
                seen.add(cls)
                out.append(Allow(f"char-{cls} rw", key, f"{key} = {device}: its class"))
        # The node itself as well: systemd stat()s it at start and allows its major:minor even
        # when the class is not in /proc/devices (a driver registering under another name);
        # a node absent at start is skipped with "Couldn't stat device" (then only the class
        # entry can let it through). Pty numbers change at every start: class only.
        if not device.startswith("/dev/pts/") and device not in seen:
            seen.add(device)
            node = device.replace("%", "%%")  # '%' starts a unit-file specifier
            out.append(Allow(f"{node} rw", key, f"{key}: the node, if present at start"))
    return out


def render_dropin(cfg: Config, config_path: Path,
                  majors: dict[int, list[str]] | None = None) -> str:
    """The drop-in text: a reset of the unit's list, then this lane's classes."""
    allows = device_allows(cfg, majors)
    lines = [
        f"# Written by: parkedge systemd-dropin --config {config_path}",
        "# Install as /etc/systemd/system/parkedge.service.d/50-devices.conf (or",
        "# parkedge@NAME.service.d/), then: systemctl daemon-reload && systemctl restart ...",
        "# Re-run after changing a device path in the config.",
    ]
    classes = {a.entry.split()[0].removeprefix("char-") for a in allows}
    modules = sorted(MODULES[c] for c in classes if c in MODULES)
    if modules:
        lines += [
            "# A class is resolved against /proc/devices when the unit starts: for an adapter",
            "# plugged in later, load its driver at boot:",
            f"#   printf '%s\\n' {' '.join(modules)} > /etc/modules-load.d/parkedge.conf",
        ]
    lines += ["[Service]", "DeviceAllow="]
    for a in allows:
        lines += [f"# {a.note}", f"DeviceAllow={a.entry}"]
    return "\n".join(lines) + "\n"


@app.command("systemd-dropin")
def systemd_dropin(
    config: Annotated[Path, typer.Option("--config", "-c", help="The controller's TOML config.")],
) -> None:
    """Print a systemd drop-in allowing exactly the device classes the config's devices use."""
    cfg = config_or_exit(config)
    typer.echo(render_dropin(cfg, config), nl=False)
