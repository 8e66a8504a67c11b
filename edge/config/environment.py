"""Checks of a valid config against this machine: files and devices it names exist.

Kept apart from the models because it does I/O and its findings are *warnings*: a serial
adapter may be unplugged during a bench check and the daemon copes (it reconnects), but a
technician wants to know before walking away from the lane.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge.config.models import Config


def _writable_dir(path: Path) -> str | None:
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the daemon (or StateDirectory=) creates missing levels
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{parent} is not writable by this user"
    return None


def environment_warnings(cfg: Config) -> list[tuple[str, str]]:
    """(key path, reason) for everything that would stop the lane on this machine now."""
    out: list[tuple[str, str]] = []
    if not cfg.rules.path.is_file():
        out.append(("rules.path", f"{cfg.rules.path} does not exist"))
    problem = _writable_dir(cfg.storage.path.parent)
    if problem:
        out.append(("storage.path", problem))
    for name, bus in sorted(cfg.buses.items()):
        ep = bus.endpoint
        if ep.kind == "serial" and not Path(ep.device).exists():
            out.append((f"buses.{name}.url", f"{ep.device} does not exist (adapter unplugged?)"))
    url = cfg.camera.url
    if cfg.camera.source == "stream" and url.startswith("/") and not Path(url).exists():
        out.append(("camera.url", f"{url} does not exist"))
    problem = _writable_dir(cfg.lane.control_socket.parent)
    if problem:
        out.append(("lane.control_socket", problem))
    return out
