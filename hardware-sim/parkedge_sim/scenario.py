"""Scenarios: a TOML file of cars and faults, played against a running simulator and its lanes.

Why: a technician's acceptance test and a regression test are the same thing, "these cars at
these times, this fault here, and this is what must happen"; written down once, replayed
against real daemons through the simulator's control API (``parkedge-sim serve``). The format
is documented in docs/scenarios.md. Parsing is pure (text in, ``Scenario`` or a
``ScenarioError`` naming the key path out); playing does the I/O.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from parkedge_sim.lane_sim import ALL_FAULTS, RESULTS

PAYERS = ("driver", "operator")
RELATIVE = re.compile(r"^\+(\d+(?:\.\d+)?)(s|m|h|d)$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ScenarioError(ValueError):
    """A malformed scenario; the message starts with the key path (``step[3].expect``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass(frozen=True)
class Payment:
    amount: Decimal
    by: str  # driver (QR at the pay station) | operator (cash at the booth)


@dataclass(frozen=True)
class Step:
    index: int  # 1-based, as people count steps
    lane: str
    name: str
    kind: str  # vehicle | fault | wait
    at: datetime | None = None
    plate: str | None = None
    dwell_s: float = 0.5
    reverse: bool = False
    tailgate: str | None = None
    read_plate: bool = True
    open_timeout_s: float = 5.0
    pay: Payment | None = None
    operator_open: str | None = None
    fault: str | None = None
    on: bool = True
    value: float = 0.0
    wait_s: float = 0.0
    expect: str | None = None
    expect_display: str | None = None
    expect_state: str | None = None
    within_s: float = 3.0


@dataclass(frozen=True)
class Scenario:
    name: str
    start: datetime | None  # the simulated time "+0m" of relative step times
    sockets: dict[str, str | None]  # lane -> the lane daemon's control socket, if known
    steps: tuple[Step, ...]


# ------------------------------------------------------------------------------ parsing
_TOP = {"scenario", "lanes", "step"}
_STEP_KEYS = {
    "lane", "name", "at", "vehicle", "dwell_s", "reverse", "tailgate", "read_plate",
    "open_timeout_s", "pay", "operator_open", "fault", "on", "value", "wait_s", "expect",
    "expect_display", "expect_state", "within_s",
}
_VEHICLE_ONLY = {"at", "dwell_s", "reverse", "tailgate", "read_plate", "open_timeout_s", "pay",
                 "operator_open", "expect"}


def load_scenario(path: Path) -> Scenario:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(str(path), f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ScenarioError(str(path), "not UTF-8 text") from None
    return parse_scenario(text)


def parse_scenario(text: str) -> Scenario:
    """TOML text → Scenario; every error names the key path it is about."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError("(file)", f"not valid TOML: {exc}") from None
    _no_unknown(doc, _TOP, "")
    head = _table(doc.get("scenario"), "scenario")
    _no_unknown(head, {"name", "start"}, "scenario.")
    name = _str(head.get("name", "scenario"), "scenario.name")
    start = _datetime(head["start"], "scenario.start", None) if "start" in head else None
    lanes_doc = _table(doc.get("lanes"), "lanes")
    if not lanes_doc:
        raise ScenarioError("lanes", "name at least one lane, e.g. [lanes.entry]")
    sockets: dict[str, str | None] = {}
    for lane, spec in lanes_doc.items():
        t = _table(spec, f"lanes.{lane}")
        _no_unknown(t, {"socket"}, f"lanes.{lane}.")
        sock = t.get("socket")
        sockets[lane] = None if sock is None else _str(sock, f"lanes.{lane}.socket")
    raw_steps = doc.get("step")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ScenarioError("step", "add at least one [[step]]")
    steps = tuple(_step(i, raw, start, sockets) for i, raw in enumerate(raw_steps, start=1))
    return Scenario(name, start, sockets, steps)


def _step(i: int, raw: Any, start: datetime | None, sockets: dict[str, str | None]) -> Step:
    p = f"step[{i}]"
    t = _table(raw, p)
    _no_unknown(t, _STEP_KEYS, f"{p}.")
    lane = _str(t.get("lane"), f"{p}.lane")
    if lane not in sockets:
        raise ScenarioError(f"{p}.lane", f"{lane!r} is not one of [lanes]: {', '.join(sockets)}")
    kinds = [k for k in ("vehicle", "fault") if k in t]
    if len(kinds) > 1:
        raise ScenarioError(p, "a step is a vehicle OR a fault, not both")
    kind = kinds[0] if kinds else ("wait" if "wait_s" in t else "")
    if not kind:
        raise ScenarioError(p, "needs one of vehicle = PLATE, fault = NAME, or wait_s = SECONDS")
    if kind != "vehicle":
        stray = sorted(_VEHICLE_ONLY & t.keys())
        if stray:
            raise ScenarioError(f"{p}.{stray[0]}", f"only a vehicle step takes {stray[0]}")
    kw: dict[str, Any] = {
        "index": i,
        "lane": lane,
        "kind": kind,
        "name": _str(t.get("name", f"{kind} {t.get(kind, '')}".strip()), f"{p}.name"),
        "wait_s": _num(t.get("wait_s", 0.0), f"{p}.wait_s", 0.0, 3600.0),
        "within_s": _num(t.get("within_s", 3.0), f"{p}.within_s", 0.0, 600.0),
        "expect_display": _opt_str(t.get("expect_display"), f"{p}.expect_display"),
        "expect_state": _opt_str(t.get("expect_state"), f"{p}.expect_state"),
    }
    if kind == "vehicle":
        kw["plate"] = _str(t["vehicle"], f"{p}.vehicle")
        kw["at"] = _datetime(t.get("at"), f"{p}.at", start) if "at" in t else None
        kw["dwell_s"] = _num(t.get("dwell_s", 0.5), f"{p}.dwell_s", 0.0, 600.0)
        kw["reverse"] = _bool(t.get("reverse", False), f"{p}.reverse")
        kw["tailgate"] = _opt_str(t.get("tailgate"), f"{p}.tailgate")
        kw["read_plate"] = _bool(t.get("read_plate", True), f"{p}.read_plate")
        kw["open_timeout_s"] = _num(t.get("open_timeout_s", 5.0), f"{p}.open_timeout_s", 0.1,
                                    600.0)
        kw["operator_open"] = _opt_str(t.get("operator_open"), f"{p}.operator_open")
        if "pay" in t:
            kw["pay"] = _payment(t["pay"], f"{p}.pay")
        if kw["reverse"] and kw["tailgate"]:
            raise ScenarioError(f"{p}.tailgate", "a car reversing away has no tailgater")
        expect = t.get("expect")
        if expect is not None and expect not in RESULTS:
            raise ScenarioError(f"{p}.expect", f"{expect!r} is not one of {', '.join(RESULTS)}")
        kw["expect"] = expect
    elif kind == "fault":
        fault = _str(t["fault"], f"{p}.fault")
        if fault not in ALL_FAULTS:
            raise ScenarioError(f"{p}.fault", f"unknown fault {fault!r}; known: "
                                f"{', '.join(ALL_FAULTS)}")
        kw["fault"] = fault
        kw["on"] = _bool(t.get("on", True), f"{p}.on")
        kw["value"] = _num(t.get("value", 0.0), f"{p}.value", 0.0, 600.0)
    return Step(**kw)


def with_sockets(sc: Scenario, overrides: dict[str, str]) -> Scenario:
    """Apply --lane-socket overrides, then check every step that talks to a daemon has one.

    A socket for a lane this scenario does not use is ignored: one command line serves every
    scenario of a site."""
    sockets = {**sc.sockets, **{k: v for k, v in overrides.items() if k in sc.sockets}}
    for step in sc.steps:
        used = [k for k, v in (("pay", step.pay), ("operator_open", step.operator_open),
                               ("expect_state", step.expect_state)) if v is not None]
        if used and sockets[step.lane] is None:
            raise ScenarioError(
                f"step[{step.index}].{used[0]}",
                f"needs the lane daemon's socket: set lanes.{step.lane}.socket or pass "
                f"--lane-socket {step.lane}=PATH",
            )
    return Scenario(sc.name, sc.start, sockets, sc.steps)


def _payment(raw: Any, p: str) -> Payment:
    t = _table(raw, p)
    _no_unknown(t, {"amount", "by"}, f"{p}.")
    amount_raw = t.get("amount")
    if not isinstance(amount_raw, str):
        raise ScenarioError(f"{p}.amount", "give the amount as a string, e.g. \"42.50\"")
    try:
        amount = Decimal(amount_raw)
    except InvalidOperation:
        raise ScenarioError(f"{p}.amount", f"{amount_raw!r} is not a decimal amount") from None
    if not amount.is_finite() or amount < 0:
        raise ScenarioError(f"{p}.amount", f"{amount_raw!r} must be >= 0")
    by = t.get("by", "driver")
    if by not in PAYERS:
        raise ScenarioError(f"{p}.by", f"{by!r} is not one of {', '.join(PAYERS)}")
    return Payment(amount, str(by))


def _no_unknown(t: dict[str, Any], known: set[str], prefix: str) -> None:
    for key in t:
        if key not in known:
            raise ScenarioError(f"{prefix}{key}", f"unknown key; known: {', '.join(sorted(known))}")


def _table(v: Any, p: str) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ScenarioError(p, f"must be a table, got {type(v).__name__}")
    return v


def _str(v: Any, p: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ScenarioError(p, "must be a non-empty string")
    return v.strip()


def _opt_str(v: Any, p: str) -> str | None:
    return None if v is None else _str(v, p)


def _bool(v: Any, p: str) -> bool:
    if not isinstance(v, bool):
        raise ScenarioError(p, f"must be true or false, got {v!r}")
    return v


def _num(v: Any, p: str, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ScenarioError(p, f"must be a number, got {v!r}")
    if not lo <= float(v) <= hi:
        raise ScenarioError(p, f"must be within {lo}..{hi}, got {v}")
    return float(v)


def _datetime(v: Any, p: str, start: datetime | None) -> datetime:
    """An offset date-time, or "+90m" / "+2h" / "+30s" / "+1d" after scenario.start."""
    if isinstance(v, datetime):
        if v.tzinfo is None:
            raise ScenarioError(p, "needs a UTC offset, e.g. 2026-11-17T10:00:00+08:00")
        return v
    if isinstance(v, str) and start is not None:
        m = RELATIVE.match(v.strip())
        if m:
            return start + timedelta(seconds=float(m.group(1)) * UNITS[m.group(2)])
    if isinstance(v, str):
        try:
            at = datetime.fromisoformat(v)
        except ValueError:
            at = None
        if at is not None and at.tzinfo is not None:
            return at
    want = "an offset date-time" + (
        ' or "+90m" after scenario.start' if start else " (set scenario.start to use \"+90m\")"
    )
    raise ScenarioError(p, f"must be {want}, got {v!r}")


# ------------------------------------------------------------------------------ playing
@dataclass
class StepOutcome:
    step: int
    name: str
    lane: str
    kind: str
    result: str  # the car's result, "on"/"off" for a fault, "waited", or "error"
    ok: bool
    expected: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    display: list[str] = field(default_factory=list)
    state: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


SocketCall = Callable[[str, dict[str, Any]], dict[str, Any]]


class ControlClient:
    """The simulator's JSON control API (blocking; the player calls it from threads)."""

    def __init__(self, base: str, timeout_s: float = 60.0) -> None:
        if not base.startswith(("http://127.0.0.1:", "http://localhost:", "http://[::1]:")):
            raise ValueError(f"--control {base!r}: the simulator is on loopback only")
        self.base = base.rstrip("/")
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body, ensure_ascii=False).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                why = json.loads(exc.read()).get("error", "")
            except (ValueError, AttributeError):
                why = ""
            raise RuntimeError(f"{method} {path}: HTTP {exc.code} {why}".strip()) from None


class Player:
    """Plays a scenario step by step; one outcome per step."""

    def __init__(self, scenario: Scenario, api: ControlClient, daemon: SocketCall) -> None:
        self.scenario = scenario
        self.api = api
        self.daemon = daemon  # (socket path, request) -> reply

    async def play(self, on_step: Callable[[StepOutcome], None] | None = None) -> list[StepOutcome]:
        lanes = await asyncio.to_thread(self.api.call, "GET", "/lanes")
        missing = [lane for lane in self.scenario.sockets if lane not in lanes]
        if missing:
            raise ScenarioError("lanes", f"the simulator has no lane {missing[0]!r}; it has "
                                f"{', '.join(lanes)}")
        out = []
        for step in self.scenario.steps:
            outcome = await self.play_step(step)
            out.append(outcome)
            if on_step:
                on_step(outcome)
        return out

    async def play_step(self, step: Step) -> StepOutcome:
        t0 = time.monotonic()
        o = StepOutcome(step.index, step.name, step.lane, step.kind, "error", False)
        try:
            if step.wait_s:
                await asyncio.sleep(step.wait_s)
            if step.kind == "vehicle":
                await self._vehicle(step, o)
            elif step.kind == "fault":
                reply = await asyncio.to_thread(
                    self.api.call, "POST", f"/lanes/{step.lane}/fault",
                    {"name": step.fault, "on": step.on, "value": step.value},
                )
                o.result = "on" if step.on else "off"
                o.detail["active_faults"] = reply.get("active", [])
            else:
                o.result = "waited"
            await self._check_after(step, o)
        except (RuntimeError, OSError, ValueError) as exc:
            o.failures.append(f"{type(exc).__name__}: {exc}")
        o.ok = not o.failures
        o.elapsed_s = round(time.monotonic() - t0, 3)
        return o

    async def _vehicle(self, step: Step, o: StepOutcome) -> None:
        assert step.plate is not None
        await self._lane_clear(step)
        body: dict[str, Any] = {
            "plate": step.plate,
            "dwell_s": step.dwell_s,
            "reverse": step.reverse,
            "tailgate_plate": step.tailgate,
            "read_plate": step.read_plate,
            "open_timeout_s": step.open_timeout_s,
        }
        if step.at is not None:
            body["at"] = step.at.isoformat()
        car = asyncio.create_task(
            asyncio.to_thread(self.api.call, "POST", f"/lanes/{step.lane}/vehicle", body)
        )
        if step.pay or step.operator_open:
            await self._attend(step, car, o)
        outcome = await car
        o.result = str(outcome.get("result"))
        o.detail.update({k: outcome.get(k) for k in ("wait_s", "camera_statuses")})
        if step.expect is not None:
            o.expected["result"] = step.expect
            if o.result != step.expect:
                o.failures.append(f"expected {step.expect}, the car was {o.result}")

    async def _attend(self, step: Step, car: asyncio.Task[Any], o: StepOutcome) -> None:
        """Act as the pay station or the booth operator once the lane asks for it."""
        sock = self.scenario.sockets[step.lane]
        assert sock is not None
        while not car.done():
            st = await asyncio.to_thread(self.daemon, sock, {"cmd": "status"})
            state = str(st.get("state"))
            if state == "wait_payment" and step.pay:
                method = "qr" if step.pay.by == "driver" else "cash"
                reply = await asyncio.to_thread(
                    self.daemon, sock,
                    {"cmd": "pay", "amount": str(step.pay.amount), "method": method,
                     "operator": "scenario"},
                )
                o.detail["paid"] = {"amount": str(step.pay.amount), "method": method,
                                    "ok": reply.get("ok"), "error": reply.get("error")}
                return
            if state == "hold" and step.operator_open:
                reply = await asyncio.to_thread(
                    self.daemon, sock,
                    {"cmd": "open", "reason": step.operator_open, "operator": "scenario"},
                )
                o.detail["operator_open"] = {"ok": reply.get("ok"), "error": reply.get("error")}
                return
            await asyncio.sleep(0.05)

    async def _lane_clear(self, step: Step) -> None:
        """Cars keep their distance: wait (a while) for the arm down and the daemon idle."""
        sock = self.scenario.sockets[step.lane]
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            snap = await asyncio.to_thread(self.api.call, "GET", f"/lanes/{step.lane}")
            down = snap["modbus"]["arm"]["motion"] == "down"
            idle = True
            if sock is not None:
                st = await asyncio.to_thread(self.daemon, sock, {"cmd": "status"})
                idle = str(st.get("state")) == "idle"
            if down and idle:
                return
            await asyncio.sleep(0.05)

    async def _check_after(self, step: Step, o: StepOutcome) -> None:
        """Display and daemon-state expectations may take a moment: poll up to within_s."""
        sock = self.scenario.sockets[step.lane]
        deadline = time.monotonic() + step.within_s
        if step.expect_display is not None:
            o.expected["display"] = step.expect_display
        if step.expect_state is not None:
            o.expected["state"] = step.expect_state
        while True:
            snap = await asyncio.to_thread(self.api.call, "GET", f"/lanes/{step.lane}")
            o.display = [x for x in (snap.get("display") or {}).get("screen", []) if x]
            if sock is not None:
                try:
                    o.state = str((await asyncio.to_thread(self.daemon, sock,
                                                           {"cmd": "status"})).get("state"))
                except (ConnectionError, OSError) as exc:
                    o.state = f"unreachable: {exc}"
            shown = step.expect_display is None or any(step.expect_display in x
                                                       for x in o.display)
            state_ok = step.expect_state is None or o.state == step.expect_state
            if (shown and state_ok) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.1)
        if not shown:
            o.failures.append(f"display never showed {step.expect_display!r} within "
                              f"{step.within_s} s (it shows {' | '.join(o.display)!r})")
        if not state_ok:
            o.failures.append(f"lane state {o.state!r}, expected {step.expect_state!r}")
