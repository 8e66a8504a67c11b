"""Address parsing: listeners and bus URLs, including the forms the drivers rely on."""

from __future__ import annotations

import pytest

from edge.config import BusEndpoint, parse_bus_url, parse_host_port


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8081", ("127.0.0.1", 8081)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:9108", ("::1", 9108)),
    ],
)
def test_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize(
    "text", ["8081", "host:", ":80", "host:0", "host:70000", "[::g]:1", "a b:1", "::1:80"]
)
def test_host_port_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_host_port(text)


@pytest.mark.parametrize(
    ("url", "endpoint", "serial_url"),
    [
        (
            "socket://127.0.0.1:5020",
            BusEndpoint("socket", "127.0.0.1", 5020),
            "socket://127.0.0.1:5020",
        ),
        ("/dev/ttyUSB0", BusEndpoint("serial", device="/dev/ttyUSB0"), "/dev/ttyUSB0"),
        ("serial:///dev/ttyS1", BusEndpoint("serial", device="/dev/ttyS1"), "/dev/ttyS1"),
        ("/dev/pts/7", BusEndpoint("serial", device="/dev/pts/7"), "/dev/pts/7"),
    ],
)
def test_bus_urls(url: str, endpoint: BusEndpoint, serial_url: str) -> None:
    parsed = parse_bus_url(url)
    assert parsed == endpoint
    assert parsed.serial_url == serial_url


def test_tcp_bus_is_not_a_serial_port() -> None:
    ep = parse_bus_url("tcp://127.0.0.1:502")
    assert (ep.kind, ep.host, ep.port) == ("tcp", "127.0.0.1", 502)
    with pytest.raises(ValueError):
        _ = ep.serial_url


@pytest.mark.parametrize(
    "url",
    ["COM3", "ttyUSB0", "tcp://127.0.0.1", "tcp://h:1/path", "socket://:1", "serial://rel", ""],
)
def test_bus_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        parse_bus_url(url)
