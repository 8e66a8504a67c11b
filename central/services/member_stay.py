"""A member's stay in progress, as the portal shows it: the last ``session_opened`` the lanes
sent for one of the member's plates that no ``session_closed`` or ending correction
followed, and the fee so far priced by ``edge.pricing`` with the site's bundle (gross: the
exit lane applies coupons and points itself, the prepayment only covers the fee).

Read from the ingested ledger (``lane_entries``), bounded by ``OPEN_LOOKBACK_DAYS`` and by
the member's plates, never a scan of the whole ledger."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from central.db.models import Lane, LaneEntry, Plate, Prepayment
from central.services.ops_tally import ENDS, OPEN_LOOKBACK_DAYS, Stay, utc_text
from edge.pricing import RuleBundle
from edge.pricing.quote import quote_exit
from edge.pricing.types import SessionInput


@dataclass(frozen=True)
class OpenStay:
    session_id: str
    plate: str
    entered: datetime
    lane_id: str
    lane_name: str
    vehicle_class: str
    entry_event_id: str | None
    fee: Decimal  # the fee so far, before coupons and points
    minutes: int
    prepaid: Decimal  # already prepaid for this stay (unexpired, not refunded)


def _ended(s: Session, sid: str, opened: tuple[str, int]) -> bool:
    st = Stay(opened=opened)
    for e in s.scalars(select(LaneEntry).where(
            LaneEntry.session_id == sid,
            LaneEntry.kind.in_(("session_closed", "correction")))):
        if e.kind == "session_closed":
            st.ends.append((e.at, e.id, True))
            continue
        action = json.loads(e.payload).get("action")
        if action in ENDS or action == "session_reopened":
            st.ends.append((e.at, e.id, action != "session_reopened"))
    st.settle()
    return st.ended is not None


def open_stays(s: Session, rules: RuleBundle, member_id: str, now: datetime) -> list[OpenStay]:
    """The member's stays in progress (one per plate at most), newest first."""
    plates = list(s.scalars(select(Plate.plate).where(Plate.member_id == member_id)))
    if not plates:
        return []
    lo = utc_text(now - timedelta(days=OPEN_LOOKBACK_DAYS))
    rows = s.scalars(select(LaneEntry).where(
        LaneEntry.plate.in_(plates), LaneEntry.kind == "session_opened",
        LaneEntry.at >= lo, LaneEntry.at <= utc_text(now))
        .order_by(LaneEntry.at.desc(), LaneEntry.id.desc()))
    out: list[OpenStay] = []
    seen: set[str] = set()
    for e in rows:
        if e.plate is None or e.session_id is None or e.plate in seen:
            continue
        seen.add(e.plate)  # an older open stay of the same car was superseded
        if _ended(s, e.session_id, (e.at, e.id)):
            continue
        p = json.loads(e.payload)
        entered = datetime.fromisoformat(e.at)
        cls = str(p.get("vehicle_class") or "small")
        q = quote_exit(SessionInput(entered=entered, exited=now, vehicle_class=cls,
                                    plate=e.plate, lane_id=e.lane_id), None, rules, now,
                       explain_lines=False)
        lane = s.scalar(select(Lane).where(Lane.lane_id == e.lane_id))
        ev = p.get("event_id")
        paid = sum((x.amount for x in s.scalars(select(Prepayment).where(
            Prepayment.plate == e.plate, Prepayment.paid_at >= entered,
            Prepayment.expires_at > now, Prepayment.refunded_at.is_(None)))), Decimal("0.00"))
        out.append(OpenStay(e.session_id, e.plate, entered, e.lane_id,
                            lane.name if lane else e.lane_id, cls,
                            str(ev) if ev else None, q.fee, q.duration_minutes, paid))
    return out
