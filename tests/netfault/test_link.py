"""The links themselves: what crosses between two namespaces is what the fault says, and
nothing reaches them from the machine's own namespace. Seconds, not minutes."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator

import pytest
from parkedge_sim.netns import (
    Fault,
    Link,
    Namespace,
    VethLink,
    make_link,
    netem_available,
    unavailable_reason,
)
from parkedge_sim.site_broker import BRIDGED, bridge_config

REASON = unavailable_reason()
needs_netns = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@pytest.fixture
def link() -> Iterator[Link]:
    import secrets

    tag = secrets.token_hex(3)
    a, b = Namespace(f"pe{tag}a").create(), Namespace(f"pe{tag}b").create()
    lk = make_link(a, b, subnet=secrets.randbelow(1000))
    try:
        yield lk
    finally:
        lk.close()
        a.destroy()
        b.destroy()


def _udp_pair(link: Link) -> tuple[socket.socket, socket.socket]:
    with link.b.entered():
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind((link.b_addr, 0))
    with link.a.entered():
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return tx, rx


def _received(rx: socket.socket, wait_s: float) -> list[bytes]:
    rx.settimeout(wait_s)
    got: list[bytes] = []
    try:
        while True:
            got.append(rx.recv(100))
    except TimeoutError:
        return got


@needs_netns
def test_loss_delay_and_cut_are_what_the_fault_says(link: Link) -> None:
    tx, rx = _udp_pair(link)
    dest = rx.getsockname()
    try:
        tx.sendto(b"x", dest)  # a clean link delivers at once
        assert _received(rx, 0.5) == [b"x"]
        link.set_fault(Fault(loss=0.3))
        for i in range(400):
            tx.sendto(str(i).encode(), dest)
        n = len(_received(rx, 0.5))
        assert 400 * 0.55 < n < 400 * 0.85, n  # ~280 expected
        link.set_fault(Fault(delay_s=0.4, jitter_s=0.1))
        t = time.monotonic()
        tx.sendto(b"late", dest)
        rx.settimeout(2)
        assert rx.recv(100) == b"late"
        assert 0.25 < time.monotonic() - t < 0.8
        link.clear()
        link.cut()
        tx.sendto(b"lost", dest)
        assert _received(rx, 0.5) == []
        link.restore()
        tx.sendto(b"back", dest)
        assert _received(rx, 0.5) == [b"back"]
    finally:
        tx.close()
        rx.close()


@needs_netns
def test_the_machine_cannot_reach_a_namespace(link: Link) -> None:
    with link.b.entered():
        srv = socket.socket()
        srv.bind((link.b_addr, 0))
        srv.listen()
    try:
        with pytest.raises(OSError):  # no route to 10.x from here: the address is not ours
            socket.create_connection(srv.getsockname(), 0.5).close()
        with link.a.entered():  # through the link (a userspace forwarder: slow on a busy box)
            deadline = time.monotonic() + 15
            while True:
                try:
                    socket.create_connection(srv.getsockname(), 3).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
    finally:
        srv.close()


@needs_netns
def test_a_veth_link_carries_and_cuts() -> None:
    """The kernel's link (netem faults only where the kernel has sch_netem)."""
    import secrets

    tag = secrets.token_hex(3)
    a, b = Namespace(f"pe{tag}a").create(), Namespace(f"pe{tag}b").create()
    try:
        link = VethLink(a, b, subnet=secrets.randbelow(1000)).create()
        tx, rx = _udp_pair(link)
        dest = rx.getsockname()
        tx.sendto(b"x", dest)
        assert _received(rx, 0.5) == [b"x"]
        link.cut()
        with contextlib.suppress(OSError):  # the device is down: no route
            tx.sendto(b"lost", dest)
        assert _received(rx, 0.5) == []
        link.restore()
        assert wait_for(lambda: _send_and_get(tx, rx, dest))
        if netem_available():
            link.set_fault(Fault(delay_s=0.4))
            t = time.monotonic()
            tx.sendto(b"late", dest)
            rx.settimeout(2)
            assert rx.recv(100) == b"late" and time.monotonic() - t > 0.3
        tx.close()
        rx.close()
    finally:
        a.destroy()
        b.destroy()


def _send_and_get(tx: socket.socket, rx: socket.socket, dest: tuple[str, int]) -> bool:
    tx.sendto(b"back", dest)
    return _received(rx, 0.3) == [b"back"]


def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
    return False


def test_the_bridge_forwards_the_sync_topics_each_way_they_need() -> None:
    conf = bridge_config("mall", "10.200.0.1:1883")
    assert "address 10.200.0.1:1883" in conf
    for topic, way in BRIDGED:
        assert f"topic parkedge/mall/{topic} {way} 1\n" in conf
    ups = {t for t, w in BRIDGED if w == "out"}
    downs = {t for t, w in BRIDGED if w == "in"}
    assert {"lane/+/ledger", "sessions/+"} <= ups and {"lane/+/ack", "members/+"} <= downs
    assert not ups & downs  # nothing both ways: no echo between the brokers
