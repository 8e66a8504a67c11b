"""Address syntax used by the config: ``host:port`` listeners and bus URLs.

Pure parsing (no I/O, no DNS): a ValueError names what is wrong so the config loader can
report it under the key that held the text.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit


def parse_host_port(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); ValueError with the reason otherwise."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]\s]+):(\d{1,5})", text)
    if not m:
        raise ValueError(f"'{text}' is not host:port (IPv6 as [addr]:port)")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 1..65535")
    if m.group(1):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"'{host}' is not an IPv6 address") from None
    elif not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", host):
        raise ValueError(f"'{host}' is not a host name or address")
    return host, port


@dataclass(frozen=True)
class BusEndpoint:
    """A parsed bus URL: ``kind`` says which client to build."""

    kind: Literal["tcp", "socket", "serial"]
    host: str = ""
    port: int = 0
    device: str = ""

    @property
    def serial_url(self) -> str:
        """A pyserial / pymodbus serial port string (``socket://h:p`` or a device path)."""
        if self.kind == "serial":
            return self.device
        if self.kind == "socket":
            return f"socket://{self.host}:{self.port}"
        raise ValueError("a tcp:// bus is Modbus TCP, not a serial port")


def parse_bus_url(url: str) -> BusEndpoint:
    """Parse a ``[buses.*].url``; ValueError naming what is wrong."""
    if url.startswith(("tcp://", "socket://")):
        parts = urlsplit(url)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"'{url}' must be {parts.scheme}://host:port with nothing after")
        host, port = parse_host_port(parts.netloc)
        return BusEndpoint(kind="tcp" if parts.scheme == "tcp" else "socket", host=host, port=port)
    device = url.removeprefix("serial://")
    if device.startswith("/") and len(device) > 1 and not re.search(r"\s", device):
        return BusEndpoint(kind="serial", device=device)
    raise ValueError(
        f"'{url}' is not tcp://host:port, socket://host:port, serial:///dev/X or a device path"
    )
