"""What the site operations page shows: the car park now, read from the lanes' ledgers as
ingested (``lane_entries``) and the lanes' last statuses (``lane_status``).

Everything is bounded by time (``lane_entries.at`` is indexed), never by a scan of the whole
ledger: the occupancy counts stays begun in the last ``OPEN_LOOKBACK_DAYS`` (a stay older
than that is a car abandoned, which the lane's own report lists), events come from the last
``EVENTS_DAYS``. ``at`` is the lanes' fixed-width UTC text, so a bound is a string compare.
Money is Decimal, counted per day of the site's time zone.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from central.db.models import Lane, LaneEntry, LaneStatus

OPEN_LOOKBACK_DAYS = 30
EVENTS_DAYS = 7
MONEY_DAYS = 14
#: a lane re-publishes its status every 60 s (edge.sync.service.STATUS_HEARTBEAT_S): an
#: "online" older than this means central no longer hears it (its will may be lost)
STATUS_STALE_S = 180.0
DEVICES = ("barrier", "loops", "display", "camera")
PLATE_EVENTS = ("unknown_plate", "blacklisted", "ambiguous_plate", "uncertain_read")
ALERT_EVENTS = ("device_down", "device_recovered", "barrier_fault", "tailgate",
                "decision_failed", "no_plate", "read_without_vehicle", "payment_timeout",
                "repeat_exit_refused")
ENDS = ("entry_cancelled", "superseded")  # corrections that end a stay
LIMIT = 20


def utc_text(v: datetime) -> str:
    """The lanes' ``at`` format: sorts as time."""
    return v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def _event_like(names: tuple[str, ...]) -> Any:
    # payloads are canonical JSON (sorted keys, no spaces): the event name is matched as text
    return or_(*[LaneEntry.payload.like(f'%"event":"{n}"%') for n in names])


@dataclass
class LaneView:
    site_id: str
    lane_id: str
    name: str
    kind: str
    state: str  # online | offline | unknown (no status yet)
    why: str  # "" | stale: online said, but not heard for STATUS_STALE_S
    backlog: int
    last_acked_seq: int
    last_acked_kind: str
    last_acked_at: str
    last_seen_at: str
    stalled: bool
    devices: dict[str, str] = field(default_factory=dict)  # device -> ok|down

    @property
    def red(self) -> bool:
        return self.state != "online" or self.stalled or "down" in self.devices.values()


def lanes(s: Session, now: datetime) -> list[LaneView]:
    """Every enabled lane (and any lane that reported a status) with its health."""
    roster = {(r.site_id, r.lane_id): r for r in s.scalars(select(Lane))}
    status = {(r.site_id, r.lane_id): r for r in s.scalars(select(LaneStatus))}
    keys = sorted({k for k, r in roster.items() if r.enabled} | set(status))
    devices = device_health(s, now)
    out = []
    for key in keys:
        lane, st = roster.get(key), status.get(key)
        state, why = "unknown", ""
        acked, kind, acked_at = 0, "", ""
        if st is not None:
            state = st.state
            if state == "online" and (now - st.last_seen_at).total_seconds() > STATUS_STALE_S:
                state, why = "offline", "stale"
            # the lane's own word, or what central committed (and so acked) if later: a
            # lane's last will carries the watermark of when it connected
            committed = s.scalar(select(func.max(LaneEntry.seq)).where(
                LaneEntry.lane_id == key[1])) or 0
            acked = max(st.last_acked_seq, int(committed))
            e = s.scalar(select(LaneEntry).where(LaneEntry.lane_id == key[1],
                                                 LaneEntry.seq == acked)) if acked else None
            if e is not None:
                kind, acked_at = e.kind, e.at
        out.append(LaneView(
            site_id=key[0], lane_id=key[1], name=lane.name if lane else "",
            kind=lane.kind if lane else "", state=state, why=why,
            backlog=st.backlog if st else 0, last_acked_seq=acked, last_acked_kind=kind,
            last_acked_at=acked_at, last_seen_at=st.last_seen_at.isoformat() if st else "",
            stalled=bool(st and st.stalled),
            devices={d: devices.get((key[1], d), "ok") for d in DEVICES}))
    return out


def device_health(s: Session, now: datetime) -> dict[tuple[str, str], str]:
    """(lane, device) -> "down" when its last device event says so, else "ok"."""
    lo = utc_text(now - timedelta(days=OPEN_LOOKBACK_DAYS))
    rows = s.execute(select(LaneEntry.lane_id, LaneEntry.payload).where(
        LaneEntry.kind == "lane_event", LaneEntry.at >= lo,
        _event_like(("device_down", "device_recovered")))
        .order_by(LaneEntry.at, LaneEntry.id)).all()
    out: dict[tuple[str, str], str] = {}
    for lane, payload in rows:
        p = json.loads(payload)
        dev = str((p.get("detail") or {}).get("device", ""))
        out[(lane, dev)] = "down" if p.get("event") == "device_down" else "ok"
    return out


def _site_of(s: Session) -> dict[str, str]:
    return {r.lane_id: r.site_id for r in s.scalars(select(Lane))}


def occupancy(s: Session, now: datetime, tz: ZoneInfo) -> dict[str, dict[str, Any]]:
    """Per site: stays open now, and at each full hour of today (site time) and now.

    A stay is open from its ``session_opened`` until a ``session_closed`` or a correction
    that ends it (reversed at the entry, superseded by a new entry); ``session_reopened``
    (a car that backed away from the exit) opens it again. Rows of every lane count once
    per stay: state is kept by session id, in time order. Only corrections' payloads are
    read (they are few); opens and closes are three short columns each."""
    sites = _site_of(s)
    lo = utc_text(now - timedelta(days=OPEN_LOOKBACK_DAYS))
    in_window = (LaneEntry.at >= lo, LaneEntry.session_id.is_not(None))
    events: list[tuple[str, int, str, str, str]] = []  # (at, order, kind, session, lane)
    for lane, kind, at, sid, rid in s.execute(select(
            LaneEntry.lane_id, LaneEntry.kind, LaneEntry.at, LaneEntry.session_id,
            LaneEntry.id).where(*in_window, LaneEntry.kind.in_(
                ("session_opened", "session_closed")))):
        events.append((at, rid, kind, sid, lane))
    for lane, at, sid, rid, payload in s.execute(select(
            LaneEntry.lane_id, LaneEntry.at, LaneEntry.session_id, LaneEntry.id,
            LaneEntry.payload).where(*in_window, LaneEntry.kind == "correction")):
        action = json.loads(payload).get("action")
        if action in ENDS:
            events.append((at, rid, "session_closed", sid, lane))
        elif action == "session_reopened":
            events.append((at, rid, "session_reopened", sid, lane))
    events.sort()
    spans: dict[str, list[Any]] = {}  # session -> [site, opened_at, ended_at | None]
    for at, _rid, kind, sid, lane in events:
        if kind == "session_opened":
            if sid not in spans:
                spans[sid] = [sites.get(lane, ""), at, None]
            continue
        span = spans.get(sid)
        if span is None:
            continue  # opened before the window
        if kind == "session_closed":
            span[2] = span[2] or at
        else:
            span[2] = None
    local = now.astimezone(tz)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    marks = [midnight + timedelta(hours=h) for h in range(local.hour + 1)]
    if marks[-1] < local:
        marks.append(local)  # and now, between two hours
    mark_text = [utc_text(m) for m in marks]
    now_text, first = utc_text(now), mark_text[0]
    out: dict[str, dict[str, Any]] = {}
    for site in sorted(set(sites.values()) | {sp[0] for sp in spans.values()}):
        out[site] = {"open_now": 0, "hours": [m.strftime("%H:%M") for m in marks],
                     "by_hour": [0] * len(marks)}
    for site, opened, ended in spans.values():
        if (ended is not None and ended <= first) or opened > now_text:
            continue  # over before today began, or not yet begun
        o = out[site]
        if ended is None or ended > now_text:
            o["open_now"] += 1
        for i, m in enumerate(mark_text):
            if opened <= m and (ended is None or ended > m):
                o["by_hour"][i] += 1
    return out


def _rows(s: Session, now: datetime, *cond: Any, limit: int = LIMIT) -> list[LaneEntry]:
    lo = utc_text(now - timedelta(days=EVENTS_DAYS))
    return list(s.scalars(select(LaneEntry).where(LaneEntry.at >= lo, *cond)
                          .order_by(LaneEntry.at.desc(), LaneEntry.id.desc()).limit(limit)))


def plates_read(s: Session, now: datetime) -> list[dict[str, Any]]:
    """The last plates the lanes acted on. Confidence is the camera's, as the entry lane
    recorded it; an exit's ledger rows do not carry it (None)."""
    out = []
    for e in _rows(s, now, LaneEntry.plate.is_not(None), or_(
            LaneEntry.kind.in_(("session_opened", "session_closed")),
            and_(LaneEntry.kind == "lane_event", _event_like(PLATE_EVENTS)))):
        p = json.loads(e.payload)
        conf = (p.get("detail") or {}).get("confidence") if e.kind == "session_opened" else None
        what = str(p.get("event")) if e.kind == "lane_event" else e.kind
        out.append({"at": e.at, "lane": e.lane_id, "plate": e.plate, "what": what,
                    "confidence": None if conf is None else str(conf)})
    return out


def manual_opens(s: Session, now: datetime) -> list[dict[str, Any]]:
    out = []
    for e in _rows(s, now, LaneEntry.kind == "manual_open"):
        p = json.loads(e.payload)
        out.append({"at": e.at, "lane": e.lane_id, "operator": str(p.get("operator", "")),
                    "reason": str(p.get("reason", "")), "session_id": e.session_id or ""})
    return out


def _events(s: Session, now: datetime, names: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for e in _rows(s, now, LaneEntry.kind == "lane_event", _event_like(names)):
        p = json.loads(e.payload)
        detail = p.get("detail") or {}
        out.append({"at": e.at, "lane": e.lane_id, "event": str(p.get("event")),
                    "plate": e.plate or "", "device": str(detail.get("device", "")),
                    "detail": ", ".join(f"{k}={v}" for k, v in sorted(detail.items())
                                        if k != "device")[:200]})
    return out


def plate_events(s: Session, now: datetime) -> list[dict[str, Any]]:
    """Unknown plates and blacklisted plates (and reads too doubtful to act on)."""
    return _events(s, now, PLATE_EVENTS)


def alerts(s: Session, now: datetime) -> list[dict[str, Any]]:
    return _events(s, now, ALERT_EVENTS)


def money_by_day(s: Session, now: datetime, tz: ZoneInfo,
                 days: int = MONEY_DAYS) -> dict[str, list[Any]]:
    """Money the lanes took (``payment_received``, prepayments settled at the exit
    included) per day of the site's zone, the last ``days`` days, today last."""
    today = now.astimezone(tz).date()
    first = today - timedelta(days=days - 1)
    start = datetime(first.year, first.month, first.day, tzinfo=tz)
    total: dict[date, Decimal] = defaultdict(Decimal)
    for at, payload in s.execute(select(LaneEntry.at, LaneEntry.payload).where(
            LaneEntry.kind == "payment_received", LaneEntry.at >= utc_text(start))):
        d = datetime.fromisoformat(at).astimezone(tz).date()
        total[d] += Decimal(str(json.loads(payload).get("amount", "0")))
    day_list = [first + timedelta(days=i) for i in range(days)]
    return {"days": [d.isoformat() for d in day_list],
            "amounts": [total[d].quantize(Decimal("0.01")) for d in day_list]}


def snapshot(s: Session, now: datetime, tz: ZoneInfo) -> dict[str, Any]:
    """Everything the page shows, JSON-ready (Decimal as text, times as the lanes' UTC text;
    the page turns them into site time)."""
    ls = lanes(s, now)
    money = money_by_day(s, now, tz)
    return {"at": now.isoformat(), "lanes": [{**asdict(v), "red": v.red} for v in ls],
            "occupancy": occupancy(s, now, tz), "plates": plates_read(s, now),
            "manual_opens": manual_opens(s, now), "plate_events": plate_events(s, now),
            "alerts": alerts(s, now), "stale_after_s": int(STATUS_STALE_S),
            "events_days": EVENTS_DAYS, "lookback_days": OPEN_LOOKBACK_DAYS,
            "money": {"days": money["days"], "amounts": [str(a) for a in money["amounts"]]}}
