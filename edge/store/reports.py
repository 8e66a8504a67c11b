"""Exports and the monthly report, computed from the local ledger on a read connection.

Figures come from ledger entries rather than the session table so that a reversed exit
(CORRECTION entries) is netted out in the period the reversal happened, the same way an
auditor reading the ledger would count it.
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from edge.store.codec import parse_ts, ts
from edge.store.engine import Db
from edge.store.ledger import COLUMNS
from edge.store.types import EntryKind, StoreError

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def _dicts(cur: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur]


def export_entries(c: Db) -> list[dict[str, Any]]:
    out = []
    for d in _dicts(c.execute(f"SELECT {COLUMNS} FROM ledger_entries ORDER BY pos")):
        d["payload"] = json.loads(d["payload"])
        out.append(d)
    return out


def export_sessions(c: Db) -> list[dict[str, Any]]:
    """One dict per exited session, in the shape ``rules simulate`` reads."""
    rows = _dicts(c.execute(
        "SELECT s.session_id, s.plate, s.member_id, COALESCE(s.tier, m.tier) AS tier, "
        "s.vehicle_class, s.entered_at, s.entry_lane, s.exited_at, s.points_before, s.fee, "
        "s.payable, s.points_deducted, s.points_earned, s.rules_version, s.status "
        "FROM sessions s LEFT JOIN members m ON m.member_id = s.member_id "
        "WHERE s.exited_at IS NOT NULL AND s.status IN ('closed', 'owed') "
        "ORDER BY s.exited_at, s.session_id"))
    out = []
    for m in rows:
        out.append({
            "session_id": m["session_id"],
            "plate": m["plate"],
            "member_id": m["member_id"],
            "tier": m["tier"] if m["member_id"] else None,
            "vehicle_class": m["vehicle_class"],
            # no entry record: the stay's start is unknown
            "entered": parse_ts(m["entered_at"]).isoformat() if m["entry_lane"] else None,
            "exited": parse_ts(m["exited_at"]).isoformat(),
            "points_before": m["points_before"],
            "fee": m["fee"],
            "payable": m["payable"],
            "points_deducted": int(m["points_deducted"]),
            "points_earned": int(m["points_earned"]),
            "rules_version": m["rules_version"],
        })
    return out


def month_bounds(month: str, tz: ZoneInfo) -> tuple[str, str]:
    """'YYYY-MM' -> [start, end) in UTC text, the month taken in the car park's zone."""
    mo = _MONTH.match(month)
    if mo is None:
        raise StoreError(f"month: {month!r} must look like YYYY-MM")
    y, m = int(mo.group(1)), int(mo.group(2))
    ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
    return ts(datetime(y, m, 1, tzinfo=tz)), ts(datetime(ny, nm, 1, tzinfo=tz))


def report(c: Db, month: str | None, tz: ZoneInfo) -> dict[str, Any]:
    """Points issued/redeemed and their ratio, average per member, fees, sessions."""
    lo, hi = month_bounds(month, tz) if month else ("", "\uffff")
    rows = c.execute(
        "SELECT kind, member_id, payload FROM ledger_entries WHERE at >= :lo AND at < :hi "
        "AND kind IN ('points_earned', 'points_deducted', 'fee_charged', "
        "'session_closed', 'payment_received', 'correction')",
        {"lo": lo, "hi": hi},
    )
    issued = redeemed = sessions = 0
    fees = payable = paid = Decimal(0)
    members: set[str] = set()
    for kind, member_id, payload in rows:
        p = json.loads(payload)
        if kind == EntryKind.POINTS_EARNED:
            issued += int(p["points"])
        elif kind == EntryKind.POINTS_DEDUCTED:
            redeemed += int(p["points"])
        elif kind == EntryKind.FEE_CHARGED:
            fees += Decimal(p["fee"])
            payable += Decimal(p["payable"])
        elif kind == EntryKind.SESSION_CLOSED:
            sessions += 1
        elif kind == EntryKind.PAYMENT_RECEIVED:
            paid += Decimal(p["amount"])
        elif kind == EntryKind.CORRECTION:
            action = p.get("action")
            if action == "points_returned":
                redeemed -= int(p["points"])
            elif action == "earned_revoked":
                issued -= int(p["points"])
            elif action == "session_reopened":
                sessions -= 1
                fees -= Decimal(p["fee"] or 0)
                payable -= Decimal(p["payable"] or 0)
            continue
        if member_id and kind in (EntryKind.POINTS_EARNED, EntryKind.POINTS_DEDUCTED,
                                  EntryKind.SESSION_CLOSED):
            members.add(member_id)
    q4, q2 = Decimal("0.0001"), Decimal("0.01")
    return {
        "month": month,
        "points_issued": issued,
        "points_redeemed": redeemed,
        # a flow ratio, not central's redemption rate: this lane's ledger sees the points
        # members spend here, not every point they hold, so it can exceed 1
        "redeemed_per_issued": (Decimal(redeemed) / Decimal(issued)).quantize(
            q4, ROUND_HALF_UP)
        if issued else None,
        "avg_points_per_member": (Decimal(issued) / Decimal(len(members))).quantize(
            q2, ROUND_HALF_UP) if members else None,
        "fees_charged": fees,
        "payable_total": payable,
        "paid_total": paid,
        "sessions": sessions,
        "members": len(members),
    }
