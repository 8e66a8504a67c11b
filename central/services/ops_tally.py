"""The operations page's running tallies: stays (occupancy), device states and money per
day, kept per process and fed only the lane entries committed since the last look.

Why: counting the stays open now reads a month of entries (about 165,000 rows with two
million a year), seconds on every refresh of every open page. A tally reads that month
once, then only new rows by primary key, and the ids it has not seen yet below the last
one (up to ``MARGIN`` below): on PostgreSQL an id is taken when a row is inserted but seen
when its transaction commits, so a slower transaction can commit a lower id after a higher
one was read. The result is the same as counting afresh (a test feeds the rows in many
orders and compares).
"""

from __future__ import annotations

import json
import threading
import weakref
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, and_, case, func, literal, or_, select
from sqlalchemy.orm import Session

from central.db.models import Lane, LaneEntry

OPEN_LOOKBACK_DAYS = 30
MONEY_DAYS = 14
MARGIN = 10_000  # how far below the last id a late commit is still waited for
MAX_HOLES = 2_000
ENDS = ("entry_cancelled", "superseded")  # corrections that end a stay
DEVICE_EVENTS = ("device_down", "device_recovered")


def utc_text(v: datetime) -> str:
    """The lanes' ``at`` format: sorts as time."""
    return v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def event_like(names: tuple[str, ...]) -> Any:
    # payloads are canonical JSON (sorted keys, no spaces): the event name is matched as text
    return or_(*[LaneEntry.payload.like(f'%"event":"{n}"%') for n in names])


#: the rows a tally takes; a payload only where it is needed (not for opens and closes)
WANTED = or_(
    LaneEntry.kind.in_(("session_opened", "session_closed", "correction",
                        "payment_received")),
    and_(LaneEntry.kind == "lane_event", event_like(DEVICE_EVENTS)))
COLUMNS = (LaneEntry.id, LaneEntry.lane_id, LaneEntry.kind, LaneEntry.at,
           LaneEntry.session_id,
           case((LaneEntry.kind.in_(("session_opened", "session_closed")), literal("")),
                else_=LaneEntry.payload))


@dataclass
class Stay:
    site: str = ""
    opened: tuple[str, int] | None = None  # (at, id) of its session_opened
    ends: list[tuple[str, int, bool]] = field(default_factory=list)  # (at, id, ends?)
    ended: str | None = None  # kept by settle(): None while open

    def settle(self) -> None:
        """When it ended, the end and reopen events after its opening in time order."""
        out: str | None = None
        for at, rid, ends in sorted(self.ends):
            if self.opened is not None and (at, rid) < self.opened:
                continue
            out = (out or at) if ends else None
        self.ended = out


@dataclass
class Tally:
    """Fed lane entries (any order), answers occupancy, device states, money per day."""

    tz: ZoneInfo
    sites: dict[str, str] = field(default_factory=dict)  # lane -> site
    stays: dict[str, Stay] = field(default_factory=dict)
    devices: dict[tuple[str, str], tuple[str, int, str]] = field(default_factory=dict)
    money: dict[date, Decimal] = field(default_factory=dict)
    last_id: int = 0
    holes: set[int] = field(default_factory=set)  # ids not (yet) seen below last_id

    def feed(self, rid: int, lane: str, kind: str, at: str, sid: str | None,
             payload: str) -> None:
        if kind == "session_opened" and sid:
            st = self.stays.setdefault(sid, Stay())
            if st.opened is None or (at, rid) < st.opened:
                st.opened, st.site = (at, rid), self.sites.get(lane, "")
                st.settle()
        elif kind == "session_closed" and sid:
            st = self.stays.setdefault(sid, Stay())
            st.ends.append((at, rid, True))
            st.settle()
        elif kind == "correction" and sid:
            action = json.loads(payload).get("action")
            if action in ENDS or action == "session_reopened":
                st = self.stays.setdefault(sid, Stay())
                st.ends.append((at, rid, action != "session_reopened"))
                st.settle()
        elif kind == "payment_received":
            d = datetime.fromisoformat(at).astimezone(self.tz).date()
            amount = Decimal(str(json.loads(payload).get("amount", "0")))
            self.money[d] = self.money.get(d, Decimal(0)) + amount
        elif kind == "lane_event":
            p = json.loads(payload)
            if p.get("event") in DEVICE_EVENTS:
                dev = str((p.get("detail") or {}).get("device", ""))
                old = self.devices.get((lane, dev))
                if old is None or (old[0], old[1]) < (at, rid):
                    self.devices[(lane, dev)] = (at, rid, "down" if p.get("event")
                                                 == "device_down" else "ok")

    def refresh(self, s: Session, now: datetime) -> None:
        """Take the rows committed since the last call (the first: the last month's)."""
        self.sites = {r.lane_id: r.site_id for r in s.scalars(select(Lane))}
        top = int(s.scalar(select(func.max(LaneEntry.id))) or 0)
        if top < self.last_id:  # rows gone (a restore, a test emptying the table)
            self.stays, self.devices, self.money, self.holes = {}, {}, {}, set()
            self.last_id = 0
        if not self.last_id:
            lo = utc_text(now - timedelta(days=OPEN_LOOKBACK_DAYS))
            for row in s.execute(select(*COLUMNS).where(LaneEntry.at >= lo,
                                                        LaneEntry.id <= top, WANTED)):
                self.feed(*row)
            present = set(s.scalars(select(LaneEntry.id).where(
                LaneEntry.id > top - MARGIN, LaneEntry.id <= top)))
        else:
            cond = LaneEntry.id > self.last_id
            if self.holes:
                cond = or_(cond, LaneEntry.id.in_(sorted(self.holes)))
            present = set()
            for row in s.execute(select(*COLUMNS, WANTED).where(cond)):
                present.add(row[0])
                if row[-1]:
                    self.feed(*row[:-1])
            top = max(present | {top})
        start = max(self.last_id, top - MARGIN)
        self.holes = {i for i in self.holes | set(range(start + 1, top + 1))
                      if i > top - MARGIN} - present
        if len(self.holes) > MAX_HOLES:  # rolled-back inserts leave ids never used
            self.holes = set(sorted(self.holes)[-MAX_HOLES:])
        self.last_id = top
        self._prune(now)

    def _prune(self, now: datetime) -> None:
        lo = utc_text(now - timedelta(days=OPEN_LOOKBACK_DAYS + 1))
        for sid in [k for k, st in self.stays.items()
                    if st.opened is not None and st.opened[0] < lo and st.ended is not None]:
            del self.stays[sid]
        first = now.astimezone(self.tz).date() - timedelta(days=MONEY_DAYS + 1)
        for d in [d for d in self.money if d < first]:
            del self.money[d]

    # ------------------------------------------------------------------ answers
    def occupancy(self, now: datetime) -> dict[str, dict[str, Any]]:
        """Per site: stays open now, and at each full hour of today (site time) and now.

        A stay is open from its ``session_opened`` until a ``session_closed`` or a
        correction that ends it (reversed at the entry, superseded by a new entry);
        ``session_reopened`` (a car that backed away from the exit) opens it again. Only
        stays begun in the last ``OPEN_LOOKBACK_DAYS`` count."""
        local = now.astimezone(self.tz)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        marks = [midnight + timedelta(hours=h) for h in range(local.hour + 1)]
        if marks[-1] < local:
            marks.append(local)  # and now, between two hours
        mark_text = [utc_text(m) for m in marks]
        lo, now_text = utc_text(now - timedelta(days=OPEN_LOOKBACK_DAYS)), utc_text(now)
        out: dict[str, dict[str, Any]] = {}
        for site in sorted(set(self.sites.values()) | {st.site for st in self.stays.values()
                                                       if st.opened is not None}):
            out[site] = {"open_now": 0, "hours": [m.strftime("%H:%M") for m in marks],
                         "by_hour": [0] * len(marks)}
        for st in self.stays.values():
            if st.opened is None or st.opened[0] < lo or st.opened[0] > now_text:
                continue
            opened, ended = st.opened[0], st.ended
            if ended is not None and ended <= mark_text[0]:
                continue  # over before today began
            o = out[st.site]
            if ended is None or ended > now_text:
                o["open_now"] += 1
            for i, m in enumerate(mark_text):
                if opened <= m and (ended is None or ended > m):
                    o["by_hour"][i] += 1
        return out

    def device_states(self) -> dict[tuple[str, str], str]:
        return {k: v[2] for k, v in self.devices.items()}

    def money_by_day(self, now: datetime, days: int = MONEY_DAYS) -> dict[str, list[Any]]:
        """Money the lanes took (``payment_received``, prepayments settled at the exit
        included) per day of the site's zone, the last ``days`` days, today last."""
        today = now.astimezone(self.tz).date()
        day_list = [today - timedelta(days=days - 1 - i) for i in range(days)]
        return {"days": [d.isoformat() for d in day_list],
                "amounts": [self.money.get(d, Decimal(0)).quantize(Decimal("0.01"))
                            for d in day_list]}


_TALLIES: weakref.WeakKeyDictionary[Engine, Tally] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def answers(s: Session, now: datetime, tz: ZoneInfo) -> dict[str, Any]:
    """Occupancy, device states and money from this process's tally of the session's
    database, brought up to date first (under a lock: pages are served from threads)."""
    bind = s.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    with _LOCK:
        t = _TALLIES.get(engine)
        if t is None or t.tz != tz:
            t = _TALLIES[engine] = Tally(tz)
        t.refresh(s, now)
        return {"occupancy": t.occupancy(now), "devices": t.device_states(),
                "money": t.money_by_day(now)}
