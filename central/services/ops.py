"""What the site operations page shows: the car park now, read from the lanes' ledgers as
ingested (``lane_entries``) and the lanes' last statuses (``lane_status``).

Lists are bounded by time (``lane_entries.at`` is indexed, and the lanes' fixed-width UTC
text sorts as time) and by count, never a scan of the whole ledger; occupancy, device states
and money per day come from a running tally (``central.services.ops_tally``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from central.db.models import Lane, LaneEntry, LaneStatus
from central.services import ops_tally
from central.services.ops_tally import event_like, utc_text

EVENTS_DAYS = 7
#: a lane re-publishes its status every 60 s (edge.sync.service.STATUS_HEARTBEAT_S): an
#: "online" older than this means central no longer hears it (its will may be lost)
STATUS_STALE_S = 180.0
DEVICES = ("barrier", "loops", "display", "camera")
PLATE_EVENTS = ("unknown_plate", "blacklisted", "ambiguous_plate", "uncertain_read")
ALERT_EVENTS = ("device_down", "device_recovered", "barrier_fault", "tailgate",
                "decision_failed", "no_plate", "read_without_vehicle", "payment_timeout",
                "repeat_exit_refused")
LIMIT = 20


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


def lanes(s: Session, now: datetime,
          devices: dict[tuple[str, str], str]) -> list[LaneView]:
    """Every enabled lane (and any lane that reported a status) with its health;
    ``devices``: (lane, device) -> ok|down, from the tally."""
    roster = {(r.site_id, r.lane_id): r for r in s.scalars(select(Lane))}
    status = {(r.site_id, r.lane_id): r for r in s.scalars(select(LaneStatus))}
    keys = sorted({k for k, r in roster.items() if r.enabled} | set(status))
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
            and_(LaneEntry.kind == "lane_event", event_like(PLATE_EVENTS)))):
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
    for e in _rows(s, now, LaneEntry.kind == "lane_event", event_like(names)):
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


def snapshot(s: Session, now: datetime, tz: ZoneInfo) -> dict[str, Any]:
    """Everything the page shows, JSON-ready (Decimal as text, times as the lanes' UTC text;
    the page turns them into site time)."""
    tally = ops_tally.answers(s, now, tz)
    money = tally["money"]
    return {"at": now.isoformat(),
            "lanes": [{**asdict(v), "red": v.red} for v in lanes(s, now, tally["devices"])],
            "occupancy": tally["occupancy"], "plates": plates_read(s, now),
            "manual_opens": manual_opens(s, now), "plate_events": plate_events(s, now),
            "alerts": alerts(s, now), "stale_after_s": int(STATUS_STALE_S),
            "events_days": EVENTS_DAYS, "lookback_days": ops_tally.OPEN_LOOKBACK_DAYS,
            "money": {"days": money["days"], "amounts": [str(a) for a in money["amounts"]]}}
