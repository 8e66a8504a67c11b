"""``parkedge-central`` for a bench site: a config and its key files in a folder, the
migration, then ``ingest`` and ``serve`` as subprocesses, as ``broker.py`` runs Mosquitto.

Why here: the demo, the sync bench and the tests run a whole site on the real central
(#13: the simulator keeps no central of its own). Everything goes through central's own
command line and HTTP API; reading central's database back (what it holds of each lane,
a member's balance) opens it with ``central.app.Central``, read only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parkedge_sim.broker import free_port

if TYPE_CHECKING:
    from central.app import Central


def _secret(path: Path, data: str) -> Path:
    """A secret file as central and the lanes take them: created 0600, never rewritten."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(data)
    return path


@dataclass(frozen=True)
class NodeLane:
    lane_id: str
    kind: str  # "entry" | "exit"
    key: str  # the lane's sync.hmac_key, as written in its key file


@dataclass
class CentralNode:
    """``start()`` / ``stop()`` one central (one ingest worker and the web server)."""

    workdir: Path
    site: str
    broker_port: int
    lanes: tuple[NodeLane, ...]
    rules: Path
    timezone: str = "Asia/Shanghai"
    db_url: str | None = None  # default: SQLite in ``workdir``
    web_port: int = field(default_factory=free_port)
    publish_interval_s: float = 0.2
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    public_key: str = ""

    @property
    def config(self) -> Path:
        return self.workdir / "central.toml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def write_config(self) -> Path:
        """central.toml, the lanes' key files and the site's signing key (``keygen``)."""
        keys = self.workdir / "lane-keys"
        keys.mkdir(exist_ok=True)
        for ln in self.lanes:
            _secret(keys / f"{ln.lane_id}.key", ln.key)
        signing = self.workdir / "signing.pem"
        if not signing.exists():
            out = self.cli("keygen", "--out", str(signing), config=False)
            found = re.search(r"public key[^:]*: ([0-9a-f]{64})", out)
            if found is None:
                raise RuntimeError(f"keygen printed no public key: {out!r}")
            self.public_key = found.group(1)
        db = self.db_url or f"sqlite:///{self.workdir / 'central.db'}"
        lanes = ",\n".join(f'  {{ id = "{ln.lane_id}", kind = "{ln.kind}" }}'
                           for ln in self.lanes)
        self.config.write_text(f"""# written by parkedge_sim.central_node for a bench site
[site]
site_id = "{self.site}"
timezone = "{self.timezone}"

[database]
url = "{db}"
migrate_on_start = false

[rules]
bundle = "{self.rules}"

[web]
listen = "127.0.0.1"
port = {self.web_port}

[jobs]
enabled = false   # the bench runs `expire` and `perks` itself, on its own clock

[logging]
level = "WARNING"
json_lines = false

[mqtt]
broker = "127.0.0.1:{self.broker_port}"
keepalive_s = 5

[ingest]
enabled = false   # `ingest` runs as a process of its own
signing_key = {{ file = "{signing}" }}
keys_dir = "{keys}"
publish_interval_s = {self.publish_interval_s}
lanes = [
{lanes}
]
""", encoding="utf-8")
        return self.config

    # ---------------------------------------------------------------- the command line
    def cli(self, *args: str, stdin: str | None = None, config: bool = True) -> str:
        """One ``parkedge-central`` command; its stdout (RuntimeError on a non-zero exit)."""
        cmd = [sys.executable, "-m", "central", *args]
        if config:
            cmd += ["--config", str(self.config)]
        r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120,
                           env=self._env())
        if r.returncode != 0:
            raise RuntimeError(f"parkedge-central {' '.join(args)}: exit {r.returncode}: "
                               f"{r.stderr.strip()[-2000:]}")
        return r.stdout

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PARKEDGE_CENTRAL_CONFIG", None)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    # ---------------------------------------------------------------- lifecycle
    def start(self, timeout_s: float = 30.0, *, web: bool = True) -> None:
        """Migrate, then start the ingest worker and (``web``) the web server; returns once
        the web server answers ``/healthz`` (without it: once the worker runs)."""
        if not self.config.exists():
            self.write_config()
        self.cli("migrate")
        runs = [("ingest", ["ingest", "--client-id", f"central-{self.site}-1"])]
        if web:
            runs.append(("serve", ["serve"]))
        for name, args in runs:
            log = (self.workdir / f"central-{name}.log").open("ab")
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "central", *args, "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, env=self._env())
            log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"parkedge-central {name} exited with {p.returncode}: "
                                       f"{self.log_tail(name)}")
            if not web or self._healthy():
                return
            time.sleep(0.1)
        raise RuntimeError(f"parkedge-central serve did not answer on {self.url}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as r:
                return int(r.status) == 200
        except (OSError, urllib.error.URLError):
            return False

    def log_tail(self, name: str, chars: int = 2000) -> str:
        path = self.workdir / f"central-{name}.log"
        return path.read_text("utf-8", errors="replace")[-chars:] if path.exists() else ""

    def kill(self, name: str = "ingest") -> None:
        """SIGKILL one of central's processes (a crash)."""
        p = self.procs.get(name)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(5)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    # ---------------------------------------------------------------- reading it back
    @contextmanager
    def open(self) -> Iterator[Central]:
        """Central's database as the processes see it (for checks, not for changes)."""
        from central.app import Central
        from central.config import load_config

        c = Central.from_config(load_config(self.config))
        try:
            yield c
        finally:
            c.close()

    def entry_ids(self, lane_id: str) -> list[str]:
        """The ids of the lane's entries central holds (each once, if all is well)."""
        from sqlalchemy import select

        from central.db.models import LaneEntry

        with self.open() as c, c.tx() as s:
            return list(s.scalars(select(LaneEntry.entry_id)
                                  .where(LaneEntry.lane_id == lane_id)))

    def balances(self) -> dict[str, int]:
        from sqlalchemy import select

        from central.db.models import Member

        with self.open() as c, c.tx() as s:
            return {m: int(b) for m, b in s.execute(select(Member.member_id, Member.balance))}

    def figures(self) -> dict[str, Any]:
        return dict(json.loads(self.cli("figures", "--json")))


class Api:
    """Central's JSON API over HTTP, as a pay station or a shop's till would use it. A
    staff session is kept by hand: its cookie is ``Secure``, which a client holds back on
    plain http (the bench serves loopback http; production sits behind TLS)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookie = ""
        self.csrf = ""

    def call(self, method: str, path: str, body: Any = None,
             headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        h = {"Content-Type": "application/json", **(headers or {})}
        if self.cookie:
            h["Cookie"] = self.cookie
        if self.csrf:
            h["X-CSRF-Token"] = self.csrf
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                return int(r.status), self._json(r.read(), r.headers.get_all("Set-Cookie"))
        except urllib.error.HTTPError as exc:
            return int(exc.code), self._json(exc.read(), None)

    def _json(self, raw: bytes, cookies: list[str] | None) -> Any:
        for c in cookies or ():
            self.cookie = c.split(";", 1)[0]
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode("utf-8", errors="replace")

    def login(self, username: str, password: str) -> None:
        status, out = self.call("POST", "/api/staff/login",
                                {"username": username, "password": password})
        if status != 200:
            raise RuntimeError(f"staff login of {username}: {status} {out}")
        self.csrf = str(out["csrf_token"])

    def ok(self, method: str, path: str, body: Any = None,
           headers: Mapping[str, str] | None = None) -> Any:
        status, out = self.call(method, path, body, headers)
        if status not in (200, 201):
            raise RuntimeError(f"{method} {path}: {status} {out}")
        return out

