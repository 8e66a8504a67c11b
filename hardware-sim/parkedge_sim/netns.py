"""Network namespaces joined by veth pairs, with ``tc netem`` faults on the links.

Why: a lane's sync must survive a real bad network (loss, delay with jitter, a flapping
link, a site cut off), not a broker killed on loopback.

Two kinds of link, one interface (``Link``): a veth pair shaped with the kernel's ``tc netem``
(``VethLink``) where the kernel has ``sch_netem``, and otherwise (this machine's kernel has
neither netem nor any tc classifier, nor iptables/nft) a pair of TUN devices with the same
faults applied by a forwarder thread in userspace (``TunLink``): every IP packet that crosses
is read from one namespace's TUN and written to the other's after the delay, or dropped.

Each site (its lanes and its broker) and central get a namespace of their own; the only
addresses used are inside namespaces made here (10.x.y.z on the link ends) or on their
loopbacks, never on the machine's interfaces.

A process joins a namespace by being started while the calling thread is inside it
(``Namespace.entered()``, ``setns(2)`` on the current thread only: children and sockets made
meanwhile stay there) or with ``Namespace.exec_prefix()`` (``ip netns exec``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import heapq
import os
import random
import secrets
import select
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"


class NetnsUnavailable(RuntimeError):
    """``ip netns`` cannot be used here (not root, no iproute2, no namespace support)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check,
                          timeout=10)


def _tc(*args: str) -> None:
    subprocess.run(["tc", *args], capture_output=True, text=True, check=True, timeout=10)


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None: a probe namespace is made and removed."""
    if os.geteuid() != 0:
        return "ip netns needs root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} (iproute2) is not installed"
    name = f"pe-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", name)
    except (subprocess.CalledProcessError, OSError) as exc:
        err = getattr(exc, "stderr", "") or str(exc)
        return f"ip netns add failed: {err.strip()}"
    try:
        _ip("-n", name, "link", "add", "pe-probe0", "type", "veth", "peer", "name", "pe-probe1")
    except (subprocess.CalledProcessError, OSError) as exc:
        err = getattr(exc, "stderr", "") or str(exc)
        return f"veth pairs unavailable: {err.strip()}"
    finally:
        _ip("netns", "del", name, check=False)
    if not netem_available() and not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        return "neither tc netem (sch_netem) nor /dev/net/tun for the userspace link"
    return None


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@dataclass
class Namespace:
    """One named network namespace (``/run/netns/<name>``) with its loopback up."""

    name: str

    def create(self) -> Namespace:
        _ip("netns", "add", self.name)
        _ip("-n", self.name, "link", "set", "lo", "up")
        return self

    def destroy(self) -> None:
        """Removes it; processes still inside keep it alive, so stop them first."""
        _ip("netns", "del", self.name, check=False)

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def run(self, *cmd: str) -> str:
        return subprocess.run([*self.exec_prefix(), *cmd], capture_output=True, text=True,
                              check=True, timeout=30).stdout

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """The calling thread is inside the namespace until the block ends: sockets it opens
        and processes it starts (and threads it starts) belong to the namespace."""
        back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"{NETNS_DIR}/{self.name}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(back)
        finally:
            os.close(target)
            os.close(back)


def netem_available() -> bool:
    """Whether the kernel has ``sch_netem`` (a probe namespace, removed again)."""
    name = f"pe-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", name)
    except (subprocess.CalledProcessError, OSError):
        return False
    try:
        _ip("-n", name, "link", "add", "pe-probe0", "type", "veth", "peer", "name", "pe-probe1")
        _tc("-n", name, "qdisc", "add", "dev", "pe-probe0", "root", "netem", "delay", "1ms")
        return True
    except (subprocess.CalledProcessError, OSError):
        return False
    finally:
        _ip("netns", "del", name, check=False)


def _addr(subnet: int, host: int) -> str:
    """10.<200 + subnet // 64>.<(subnet % 64) * 4>.<host>: a /30 per link."""
    return f"10.{200 + subnet // 64}.{(subnet % 64) * 4}.{host}"


@dataclass(frozen=True)
class Fault:
    """What a link does to every packet, each way: drop with ``loss`` (0..1), else deliver
    after ``delay_s`` ± ``jitter_s`` (uniform, so packets may be reordered, as netem does)."""

    loss: float = 0.0
    delay_s: float = 0.0
    jitter_s: float = 0.0

    def netem_args(self) -> list[str]:
        args: list[str] = []
        if self.delay_s:
            args += ["delay", f"{self.delay_s * 1000:.0f}ms"]
            if self.jitter_s:
                args += [f"{self.jitter_s * 1000:.0f}ms"]
        if self.loss:
            args += ["loss", f"{self.loss * 100:g}%"]
        return args or ["delay", "0ms"]


NO_FAULT = Fault()


class Link:
    """A point-to-point link between namespaces ``a`` (``a_addr``) and ``b`` (``b_addr``)."""

    def __init__(self, a: Namespace, b: Namespace, subnet: int) -> None:
        self.a, self.b = a, b
        self.a_addr, self.b_addr = _addr(subnet, 1), _addr(subnet, 2)
        tag = secrets.token_hex(3)
        self.a_dev, self.b_dev = f"pa{tag}", f"pb{tag}"
        self.fault = NO_FAULT
        self.up = True

    def create(self) -> Link:
        raise NotImplementedError

    def set_fault(self, fault: Fault) -> None:
        raise NotImplementedError

    def set_up(self, up: bool) -> None:
        """Down: nothing crosses, as a pulled cable; open sockets on both sides notice only
        by their own timeouts (keepalive, retransmission)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the link holds outside its namespaces (threads, descriptors)."""

    def clear(self) -> None:
        self.set_fault(NO_FAULT)

    def cut(self) -> None:
        self.set_up(False)

    def restore(self) -> None:
        self.set_up(True)


class VethLink(Link):
    """A veth pair; faults with ``tc netem`` on both ends (each end shapes what it sends)."""

    def create(self) -> VethLink:
        _ip("-n", self.a.name, "link", "add", self.a_dev, "type", "veth", "peer", "name",
            self.b_dev, "netns", self.b.name)
        for ns, dev, addr in ((self.a, self.a_dev, self.a_addr),
                              (self.b, self.b_dev, self.b_addr)):
            _ip("-n", ns.name, "addr", "add", f"{addr}/30", "dev", dev)
            _ip("-n", ns.name, "link", "set", dev, "up")
        return self

    def set_fault(self, fault: Fault) -> None:
        for ns, dev in ((self.a, self.a_dev), (self.b, self.b_dev)):
            _tc("-n", ns.name, "qdisc", "replace", "dev", dev, "root", "netem",
                *fault.netem_args())
        self.fault = fault

    def set_up(self, up: bool) -> None:
        for ns, dev in ((self.a, self.a_dev), (self.b, self.b_dev)):
            _ip("-n", ns.name, "link", "set", dev, "up" if up else "down")
        self.up = up


TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


class TunLink(Link):
    """Two TUN devices (one per namespace, point-to-point addresses) joined by a forwarder
    thread that applies the fault to each packet: netem in userspace. ``set_up(False)``
    drops everything (the devices stay up, as a cable cut somewhere upstream)."""

    def __init__(self, a: Namespace, b: Namespace, subnet: int) -> None:
        super().__init__(a, b, subnet)
        self._fds: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = random.Random(subnet)
        self.counts = {"forwarded": 0, "dropped": 0}

    def _open(self, ns: Namespace, dev: str, local: str, peer: str) -> int:
        with ns.entered():  # the device is made in the namespace of the calling thread
            fd = os.open("/dev/net/tun", os.O_RDWR)
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", dev.encode(), IFF_TUN | IFF_NO_PI))
        os.set_blocking(fd, False)
        _ip("-n", ns.name, "addr", "add", local, "peer", f"{peer}/32", "dev", dev)
        _ip("-n", ns.name, "link", "set", dev, "up")
        return fd

    def create(self) -> TunLink:
        self._fds = [self._open(self.a, self.a_dev, self.a_addr, self.b_addr),
                     self._open(self.b, self.b_dev, self.b_addr, self.a_addr)]
        self._thread = threading.Thread(target=self._forward, name=f"tunlink-{self.a_dev}",
                                        daemon=True)
        self._thread.start()
        return self

    def set_fault(self, fault: Fault) -> None:
        self.fault = fault

    def set_up(self, up: bool) -> None:
        self.up = up

    def _forward(self) -> None:
        a, b = self._fds
        other = {a: b, b: a}
        due: list[tuple[float, int, int, bytes]] = []  # (when, order, fd to write, packet)
        order = 0
        while not self._stop.is_set():
            wait = 0.05 if not due else max(0.0, min(0.05, due[0][0] - time.monotonic()))
            readable, _, _ = select.select([a, b], [], [], wait)
            now = time.monotonic()
            for fd in readable:
                for _ in range(64):
                    try:
                        packet = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    f = self.fault
                    if not self.up or (f.loss and self._rng.random() < f.loss):
                        self.counts["dropped"] += 1
                        continue
                    delay = max(0.0, f.delay_s + self._rng.uniform(-f.jitter_s, f.jitter_s))
                    order += 1
                    heapq.heappush(due, (now + delay, order, other[fd], packet))
            while due and due[0][0] <= time.monotonic():
                _, _, fd, packet = heapq.heappop(due)
                if not self.up:  # cut while in flight: lost with the cable
                    self.counts["dropped"] += 1
                    continue
                with contextlib.suppress(OSError):
                    os.write(fd, packet)
                    self.counts["forwarded"] += 1

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []


def make_link(a: Namespace, b: Namespace, subnet: int) -> Link:
    """The kernel's netem where it exists, the userspace one otherwise; created."""
    kind: type[Link] = VethLink if netem_available() else TunLink
    return kind(a, b, subnet).create()
