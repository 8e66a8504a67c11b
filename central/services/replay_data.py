"""A site's past as replayable records: the closed stays its lanes sent, and the shop
purchases, in the JSONL shape ``edge.pricing.simulate`` reads (``parkedge rules simulate``).

Stays are rebuilt from the ingested ledger (``lane_entries``), the same facts the lane's own
``ledger export --what sessions`` reads from its store, so a forecast at central and a
replay of a lane's export agree:

- a stay's exit is its last ``session_closed`` in the period, with the ``fee_charged`` the
  lane appended right after it (same lane, next seq), whose ``quote`` holds the balance the
  member had at the exit (``balance_before``), the points deducted and earned;
- a stay whose last exit was undone by a later ``session_reopened`` correction is left out
  (the car backed away: its exit is the later one, or none yet);
- the entry time is its ``session_opened`` (looked up over the 31 days before the period,
  then back to the earliest start the longer stays' quotes give); none means the stay's
  start is unknown, as at the lane;
- the tier is the member's tier now (central keeps no tier history; the lanes' export has
  the tier at exit).

Every read of the ledger is a range of its ``at`` index over the site's lanes (a year of
entries has no index by session id to look stays up one by one).

Purchases are every recorded till purchase of the period with the member's tier now and
the points recorded for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from central.db.models import Lane, LaneEntry, Member, Purchase
from central.services.ops_tally import utc_text

LOOKBACK_DAYS = 31
CHUNK = 500


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


def _iso(at: str) -> str:
    return datetime.fromisoformat(at).isoformat()


def _quote(fees: dict[tuple[str, int], dict[str, Any]], close: Any) -> dict[str, Any]:
    """The quote of the ``fee_charged`` the lane appended right after ``close``."""
    q = (fees.get((close.lane_id, close.seq + 1)) or {}).get("quote")
    return q if isinstance(q, dict) else {}


def _opened(s: Session, lanes: list[str], lo_t: str, hi_t: str, closes: dict[str, Any],
            opened: dict[str, tuple[str, dict[str, Any]]]) -> None:
    """The ``session_opened`` in [lo_t, hi_t) of the stays in ``closes`` (first wins)."""
    for ro in s.execute(select(LaneEntry.session_id, LaneEntry.at, LaneEntry.payload).where(
            LaneEntry.lane_id.in_(lanes), LaneEntry.kind == "session_opened",
            LaneEntry.at >= lo_t, LaneEntry.at < hi_t).order_by(LaneEntry.at, LaneEntry.id)):
        if ro.session_id in closes and ro.session_id not in opened:
            opened[ro.session_id] = (ro.at, json.loads(ro.payload))


def _stays(s: Session, site: str, lo: datetime, hi: datetime) -> list[dict[str, Any]]:
    lanes = list(s.scalars(select(Lane.lane_id).where(Lane.site_id == site)))
    if not lanes:
        return []
    lo_t, hi_t = utc_text(lo), utc_text(hi)
    cols = (LaneEntry.id, LaneEntry.lane_id, LaneEntry.seq, LaneEntry.kind, LaneEntry.at,
            LaneEntry.session_id, LaneEntry.member_id, LaneEntry.plate,
            LaneEntry.rules_version, LaneEntry.payload)
    closes: dict[str, Any] = {}  # session -> its last close in the period
    fees: dict[tuple[str, int], dict[str, Any]] = {}
    for r in s.execute(select(*cols).where(
            LaneEntry.lane_id.in_(lanes), LaneEntry.kind.in_(("session_closed", "fee_charged")),
            LaneEntry.at >= lo_t, LaneEntry.at < hi_t).order_by(LaneEntry.at, LaneEntry.id)):
        if r.kind == "fee_charged":
            fees[(r.lane_id, r.seq)] = json.loads(r.payload)
        elif r.session_id:
            closes[r.session_id] = r  # later rows replace earlier ones
    if not closes:
        return []
    # a reopening after the last close undoes it: the exit lane's corrections from the
    # period's start on (one range over the ``at`` index, not a scan by session)
    for rc in s.execute(select(LaneEntry.session_id, LaneEntry.at, LaneEntry.id,
                               LaneEntry.payload).where(
            LaneEntry.lane_id.in_(lanes), LaneEntry.kind == "correction",
            LaneEntry.at >= lo_t)):
        c = closes.get(rc.session_id or "")
        if (c is not None and (rc.at, rc.id) > (c.at, c.id)
                and json.loads(rc.payload).get("action") == "session_reopened"):
            del closes[c.session_id]
    opened: dict[str, tuple[str, dict[str, Any]]] = {}
    look_lo = lo - timedelta(days=LOOKBACK_DAYS)
    _opened(s, lanes, utc_text(look_lo), hi_t, closes, opened)
    # longer stays: from the earliest start their quotes give (``duration_minutes``); a
    # stay the lane priced without an entry record has none to find
    starts = []
    for sid, c in closes.items():
        if sid in opened:
            continue
        quote = _quote(fees, c)
        if "no_entry_record" in (quote.get("flags") or ()):
            continue
        try:
            minutes = int(quote.get("duration_minutes") or 0)
        except (TypeError, ValueError):
            continue
        starts.append(datetime.fromisoformat(c.at) - timedelta(minutes=minutes, days=1))
    if starts:
        _opened(s, lanes, utc_text(min(starts)), utc_text(look_lo), closes, opened)
    members = {c.member_id for c in closes.values() if c.member_id}
    tiers: dict[str, str] = {}
    for part in _chunks(sorted(members)):
        tiers.update((m, t) for m, t in s.execute(
            select(Member.member_id, Member.tier).where(Member.member_id.in_(part))))
    out = []
    for sid, c in closes.items():
        fee = fees.get((c.lane_id, c.seq + 1)) or {}
        quote = _quote(fees, c)
        op = opened.get(sid)
        mid = c.member_id
        out.append({
            "kind": "session",
            "session_id": sid,
            "plate": c.plate,
            "member_id": mid,
            "tier": tiers.get(mid) if mid else None,
            "vehicle_class": (op[1].get("vehicle_class") if op else None)
            or quote.get("vehicle_class") or "small",
            "lane_id": c.lane_id,
            "entered": _iso(op[0]) if op else None,
            "exited": _iso(c.at),
            "points_before": int(quote.get("balance_before") or 0) if mid else None,
            "fee": str(fee["fee"]) if "fee" in fee else None,
            "payable": str(fee["payable"]) if "payable" in fee else None,
            "points_deducted": int(quote.get("points_deducted") or 0),
            "points_earned": int(quote.get("points_earned") or 0),
            "rules_version": c.rules_version,
            "status": json.loads(c.payload).get("status") or "closed",
        })
    return out


def _purchases(s: Session, lo: datetime, hi: datetime) -> list[dict[str, Any]]:
    rows = s.execute(
        select(Purchase.id, Purchase.member_id, Member.tier, Purchase.at, Purchase.amount,
               Purchase.category, Purchase.brand, Purchase.points)
        .join(Member, Member.member_id == Purchase.member_id)
        .where(Purchase.at >= lo, Purchase.at < hi).order_by(Purchase.at, Purchase.id))
    return [{"kind": "purchase", "purchase_id": r.id, "member_id": r.member_id,
             "tier": r.tier, "at": r.at.isoformat(), "amount": str(r.amount),
             "category": r.category, "brand": r.brand, "points": int(r.points)}
            for r in rows]


def period_records(s: Session, site: str, lo: datetime, hi: datetime) -> list[dict[str, Any]]:
    """The site's stays that ended in [lo, hi) and the purchases of [lo, hi), in time
    order (a purchase before an exit at the same instant)."""
    recs = _stays(s, site, lo, hi) + _purchases(s, lo, hi)

    def key(r: dict[str, Any]) -> tuple[datetime, int]:
        purchase = r["kind"] == "purchase"
        return datetime.fromisoformat(r["at"] if purchase else r["exited"]), 0 if purchase else 1

    recs.sort(key=key)
    return recs


def as_jsonl(records: Iterable[dict[str, Any]]) -> str:
    """One JSON object per line, as ``rules simulate --sessions`` reads."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
