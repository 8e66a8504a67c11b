"""Who may push plates to a lane: the camera's address, and the camera's HTTP credentials.

Why (#12 item 1): the push listener accepted a plate from any host on the car-park LAN, so a
laptop could let a car out. A post is now believed only if it comes from an allowed address
(checked when the connection is accepted, before a byte is read) and, when ``camera.auth`` is
set, carries the credentials Hikvision/Dahua cameras send on their HTTP-host push: Basic, or
Digest (RFC 7616, qop=auth, MD5 or SHA-256). Pure logic, no sockets: the listener asks.

Digest nonces are stateless (a timestamp MACed with a per-process key), expire after
``nonce_ttl_s``, and each nonce's ``nc`` must grow, so a sniffed Authorization header cannot
be replayed. Basic sends the password in clear on the camera VLAN; prefer Digest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.request import parse_http_list, parse_keqv_list

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
AuthScheme = Literal["none", "basic", "digest"]


def parse_allow(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or networks (``192.168.10.64``, ``192.168.10.0/28``, ``fd00::/64``).

    Host names are refused: the allowlist must not depend on DNS."""
    nets = []
    for entry in entries:
        try:
            nets.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    return tuple(nets)


class Allowlist:
    """Source addresses allowed to push; empty = nobody."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)

    def allows(self, host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # a dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d
        return any(addr in net for net in self.networks)

    def __str__(self) -> str:
        return ", ".join(str(n) for n in self.networks) or "nobody"


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    reason: str = ""
    stale: bool = False  # the nonce expired: the client may retry at once with a new one


_DIGEST_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda b: hashlib.md5(b, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda b: hashlib.sha256(b).hexdigest(),
}


class PushAuth:
    """Checks an ``Authorization`` header against the camera's configured credentials."""

    def __init__(
        self,
        scheme: AuthScheme,
        username: str = "",
        password: str = "",
        *,
        realm: str = "parkedge",
        nonce_ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if scheme != "none" and (not username or not password):
            raise ValueError(f"camera auth {scheme!r} needs a username and a password")
        self.scheme = scheme
        self._user = username.encode()
        self._password = password
        self.realm = realm
        self.nonce_ttl_s = nonce_ttl_s
        self._clock = clock
        self._key = os.urandom(32)
        self._nc: OrderedDict[str, int] = OrderedDict()  # nonce -> highest nc seen

    @property
    def required(self) -> bool:
        return self.scheme != "none"

    def challenge(self, stale: bool = False) -> list[str]:
        """``WWW-Authenticate`` values for a 401 (strongest first for Digest)."""
        if self.scheme == "basic":
            return [f'Basic realm="{self.realm}", charset="UTF-8"']
        if self.scheme != "digest":
            return []
        nonce = self._nonce()
        extra = ", stale=true" if stale else ""
        return [
            f'Digest realm="{self.realm}", qop="auth", algorithm={alg}, nonce="{nonce}"{extra}'
            for alg in ("SHA-256", "MD5")
        ]

    def check(self, method: str, uri: str, header: str | None) -> AuthResult:
        if self.scheme == "none":
            return AuthResult(True)
        if not header:
            return AuthResult(False, "no credentials")
        kind, _, rest = header.strip().partition(" ")
        if kind.lower() != self.scheme:
            return AuthResult(False, f"{kind or 'empty'} authorization, {self.scheme} required")
        if self.scheme == "basic":
            return self._basic(rest.strip())
        return self._digest(method, uri, rest)

    # -- basic --------------------------------------------------------------------------------
    def _basic(self, token: str) -> AuthResult:
        try:
            user, sep, password = base64.b64decode(token, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return AuthResult(False, "malformed Basic credentials")
        good_user = hmac.compare_digest(user, self._user)
        good_password = hmac.compare_digest(password, self._password.encode())
        if sep and good_user and good_password:
            return AuthResult(True)
        return AuthResult(False, "wrong username or password")

    # -- digest -------------------------------------------------------------------------------
    def _nonce(self) -> str:
        """``<ms>-<random>.<mac>``: unique per challenge, so two cameras (or two connections)
        never share a nonce and its ``nc`` sequence."""
        stamp = f"{int(self._clock() * 1000)}-{os.urandom(6).hex()}"
        mac = hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{stamp}.{mac}"

    def _nonce_age(self, nonce: str) -> float | None:
        """Seconds since this listener issued ``nonce``; None if it did not issue it."""
        stamp, _, mac = nonce.partition(".")
        want = hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        millis = stamp.split("-", 1)[0]
        if not millis.isdigit() or not hmac.compare_digest(mac, want):
            return None
        return self._clock() - int(millis) / 1000

    def _digest(self, method: str, uri: str, rest: str) -> AuthResult:
        try:
            p = parse_keqv_list(parse_http_list(rest))
        except ValueError:
            return AuthResult(False, "malformed Digest credentials")
        needed = ("username", "realm", "nonce", "uri", "response")
        if any(k not in p for k in needed):
            return AuthResult(False, "Digest credentials lack a field")
        algorithm = p.get("algorithm", "MD5").upper()
        digest = _DIGEST_HASHES.get(algorithm)
        if digest is None:
            return AuthResult(False, f"Digest algorithm {algorithm} is not offered")
        if p["realm"] != self.realm:
            return AuthResult(False, "Digest realm does not match")
        if p["uri"] != uri:
            return AuthResult(False, "Digest uri is not the request's")
        age = self._nonce_age(p["nonce"])
        if age is None:
            return AuthResult(False, "Digest nonce was not issued here")
        qop = p.get("qop")
        if qop != "auth":
            return AuthResult(False, 'Digest without qop="auth" is not accepted')
        try:
            nc = int(p.get("nc", ""), 16)
        except ValueError:
            return AuthResult(False, "Digest nc is not a hex count")
        cnonce = p.get("cnonce", "")
        if not cnonce:
            return AuthResult(False, "Digest cnonce missing")
        ha1 = digest(f"{p['username']}:{self.realm}:{self._password}".encode())
        ha2 = digest(f"{method}:{p['uri']}".encode())
        want = digest(f"{ha1}:{p['nonce']}:{p['nc']}:{cnonce}:auth:{ha2}".encode())
        user_ok = hmac.compare_digest(p["username"].encode(), self._user)
        if not (hmac.compare_digest(p["response"].lower(), want) and user_ok):
            return AuthResult(False, "wrong username or password")
        if age > self.nonce_ttl_s:
            return AuthResult(False, "Digest nonce expired", stale=True)
        if nc <= self._nc.get(p["nonce"], 0):
            return AuthResult(False, "Digest nonce count replayed")
        self._nc[p["nonce"]] = nc
        self._nc.move_to_end(p["nonce"])
        while len(self._nc) > 1024:
            self._nc.popitem(last=False)
        return AuthResult(True)
