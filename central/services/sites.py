"""Sites and their lanes as operations sees them: the roster (``lanes``), each lane's last
status (``lane_status``: online, backlog, the seq it last had acked) and what central has
committed of its ledger. Registering and disabling a lane are staff acts (the web layer
writes the audit line in the same transaction).

A central serves one site (``[site] site_id``); the API still names the site in its
paths so that a chain of car parks (#16) can grow into it without changing the URLs.

A lane disabled here keeps ``disabled_by``: an ingest worker starting with the lane in its
config leaves it disabled. Disabling never stops the ingest of the lane's ledger (money
already taken must reach central); it marks the lane out of service for operations.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from central.db.models import Lane, LaneEntry, LaneStatus
from central.services.errors import Invalid, NotFound, Refused
from edge.fields import FieldError, check_id

KINDS = ("entry", "exit")


def check_site(site: str, site_id: str) -> None:
    if site_id != site:
        raise NotFound("site_id", f"unknown site {site_id!r} (this central serves {site!r})")


def _iso(v: datetime | None) -> str | None:
    return v.isoformat() if v else None


def _committed(s: Session, lane_ids: list[str]) -> dict[str, tuple[int, int]]:
    """lane -> (highest seq committed, entries committed)."""
    if not lane_ids:
        return {}
    rows = s.execute(select(LaneEntry.lane_id, func.max(LaneEntry.seq), func.count())
                     .where(LaneEntry.lane_id.in_(lane_ids)).group_by(LaneEntry.lane_id))
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def lane_json(row: Lane, st: LaneStatus | None, committed: tuple[int, int] | None,
              configured: bool) -> dict[str, Any]:
    seq, n = committed or (0, 0)
    return {
        "site_id": row.site_id, "lane_id": row.lane_id, "name": row.name, "kind": row.kind,
        "enabled": row.enabled, "disabled_by": row.disabled_by, "configured": configured,
        "created_at": _iso(row.created_at),
        "status": None if st is None else {
            "online": st.state == "online", "state": st.state, "backlog": st.backlog,
            "last_acked_seq": st.last_acked_seq, "stalled": st.stalled,
            "last_seen_at": _iso(st.last_seen_at)},
        "committed_seq": seq, "committed_entries": n,
    }


def lanes(s: Session, site: str, configured: frozenset[str]) -> list[dict[str, Any]]:
    rows = list(s.scalars(select(Lane).where(Lane.site_id == site).order_by(Lane.lane_id)))
    status = {r.lane_id: r for r in s.scalars(select(LaneStatus).where(
        LaneStatus.site_id == site))}
    done = _committed(s, [r.lane_id for r in rows])
    return [lane_json(r, status.get(r.lane_id), done.get(r.lane_id), r.lane_id in configured)
            for r in rows]


def _lane(s: Session, site: str, lane_id: str, *, lock: bool = False) -> Lane:
    row = s.get(Lane, (site, lane_id), with_for_update=lock)
    if row is None:
        raise NotFound("lane_id", f"unknown lane {lane_id!r} of site {site!r}")
    return row


def lane(s: Session, site: str, lane_id: str, configured: frozenset[str]) -> dict[str, Any]:
    row = _lane(s, site, lane_id)
    return lane_json(row, s.get(LaneStatus, (site, lane_id)),
                     _committed(s, [lane_id]).get(lane_id), lane_id in configured)


def site_json(s: Session, site: str, timezone: str,
              configured: frozenset[str]) -> dict[str, Any]:
    ls = lanes(s, site, configured)
    return {"site_id": site, "timezone": timezone, "lanes": len(ls),
            "lanes_enabled": sum(1 for x in ls if x["enabled"]),
            "lanes_online": sum(1 for x in ls if x["status"] and x["status"]["online"])}


def register_lane(s: Session, site: str, *, lane_id: str, kind: str, name: str,
                  now: datetime, configured: frozenset[str]) -> dict[str, Any]:
    """A new lane in the roster. It syncs once its key is in ``[[ingest.lanes]]``
    (``configured``); until then it is listed with ``configured: false``."""
    try:
        check_id(lane_id, "lane_id")
    except FieldError as exc:
        raise Invalid("lane_id", str(exc).removeprefix("lane_id: ")) from None
    if kind not in KINDS:
        raise Invalid("kind", "must be entry or exit")
    if s.get(Lane, (site, lane_id)) is not None:
        raise Refused("lane_id", f"lane {lane_id!r} exists")
    row = Lane(site_id=site, lane_id=lane_id, name=name, kind=kind, enabled=True,
               created_at=now, disabled_by=None)
    s.add(row)
    s.flush()
    return lane_json(row, None, None, lane_id in configured)


def set_enabled(s: Session, site: str, lane_id: str, enabled: bool, actor: str,
                configured: frozenset[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Enable or disable a lane (under its row lock); returns (before, after)."""
    row = _lane(s, site, lane_id, lock=True)
    before = {"enabled": row.enabled, "disabled_by": row.disabled_by}
    row.enabled = enabled
    row.disabled_by = None if enabled else actor
    s.flush()
    return before, lane(s, site, lane_id, configured)
