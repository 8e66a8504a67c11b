"""What central tells the lanes, read from the database: ack watermarks, member states,
the signed lane roster and rule bundle. Pure reads plus the small bookkeeping tables
(``member_published``, ``rules_published``); no MQTT here."""

from __future__ import annotations

import functools
import hashlib
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, func, select, text
from sqlalchemy.orm import Session

from central.db.models import (
    Coupon,
    Member,
    MemberPublished,
    Plate,
    RosterPublished,
    RulesPublished,
)
from edge.sync import codec

#: How many committed seqs above a lane's watermark an ack looks at (gaps are rare: a
#: batch in another worker's open transaction, or one refused).
_ABOVE_LIMIT = 20_000


def load_signing_key(pem: str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem.encode("utf-8"), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("ingest.signing_key: not an Ed25519 private key (use `keygen`)")
    return key


@dataclass
class Marks:
    """A lane's committed seqs as an ack states them: every seq 1..upto committed, and the
    committed runs above it. Read from the database, so it is true whichever worker
    committed them; ``upto`` only grows (entries are never deleted)."""

    upto: int = 0
    ranges: tuple[tuple[int, int], ...] = ()

    def refresh(self, c: Connection, lane: str) -> Marks:
        seqs = c.execute(text("SELECT seq FROM lane_entries WHERE lane_id = :l AND seq > :u "
                              "ORDER BY seq LIMIT :n"),
                         {"l": lane, "u": self.upto, "n": _ABOVE_LIMIT}).scalars().all()
        return self.advance([int(s) for s in seqs])

    def advance(self, seqs: list[int]) -> Marks:
        """Take the committed seqs above ``upto`` (ascending), as ``refresh`` reads them."""
        runs = codec.ranges_of(seqs)
        if runs and runs[0][0] == self.upto + 1:
            self.upto = runs.pop(0)[1]
        self.ranges = tuple(runs[: codec.MAX_ACK_RANGES])
        return self


#: Lanes per watermark query: one round trip for a group's lanes or a site's (200 lanes:
#: 400 parameters; SQLite allows 32,766, PostgreSQL 65,535).
_LANES_PER_QUERY = 200


def refresh_marks(c: Connection, marks: dict[str, Marks], lanes: Iterable[str]) -> None:
    """Refresh ``lanes``' marks (created if new) in one query per 200 lanes, not one per
    lane: a site's worth of per-lane queries for every snapshot request cost lanes² when a
    site reconnected. Each lane still reads at most ``_ABOVE_LIMIT`` seqs."""
    todo = sorted(set(lanes))
    for i in range(0, len(todo), _LANES_PER_QUERY):
        part = todo[i:i + _LANES_PER_QUERY]
        params: dict[str, Any] = {"n": _ABOVE_LIMIT}
        selects = []
        for j, lane in enumerate(part):
            params[f"l{j}"], params[f"u{j}"] = lane, marks.setdefault(lane, Marks()).upto
            # a subquery each: its own ORDER BY and LIMIT (SQLite and PostgreSQL both)
            selects.append(f"SELECT * FROM (SELECT lane_id, seq FROM lane_entries WHERE "
                           f"lane_id = :l{j} AND seq > :u{j} ORDER BY seq LIMIT :n) AS q{j}")
        seqs: dict[str, list[int]] = {lane: [] for lane in part}
        for lane, seq in c.execute(text(" UNION ALL ".join(selects)), params):
            seqs[str(lane)].append(int(seq))
        for lane in part:
            marks[lane].advance(sorted(seqs[lane]))


def member_state(s: Session, member_id: str, applied: Mapping[str, int], allowance: int,
                 prev_version: int | None = None) -> codec.MemberState | None:
    """The member's state for the lanes. Read the watermarks (``applied``) *before* this:
    a watermark older than the balance only makes a lane count its own recent deductions
    twice (it spends less), never the other way round."""
    m = s.get(Member, member_id)
    if m is None:
        return None
    plates = tuple(s.scalars(select(Plate.plate).where(Plate.member_id == member_id)
                             .order_by(Plate.plate)))
    coupons = tuple(
        codec.CouponState(c.coupon_id, c.kind, Decimal(c.value), c.valid_until)
        for c in s.scalars(select(Coupon).where(Coupon.member_id == member_id,
                                                Coupon.used_at.is_(None))
                           .order_by(Coupon.coupon_id).limit(500)))
    v = int(m.version)
    prev = v - 1 if prev_version is None or prev_version >= v else prev_version
    # lanes refuse a whole state whose name is not printable: send what they can show
    name = "".join(ch for ch in (m.name or "") if ch.isprintable())[:200] or None
    return codec.MemberState(m.member_id, v, max(prev, 0), m.tier, name,
                             bool(m.blocked), m.balance < 0, True, int(m.balance), plates,
                             allowance, dict(applied), coupons)


def members_to_publish(s: Session, limit: int = 500) -> list[tuple[str, int | None]]:
    """Members whose version moved since it was last published: (id, published version)."""
    q = (select(Member.member_id, MemberPublished.version)
         .join(MemberPublished, MemberPublished.member_id == Member.member_id, isouter=True)
         .where((MemberPublished.version.is_(None)) | (MemberPublished.version != Member.version))
         .order_by(Member.member_id).limit(limit))
    return [(str(mid), None if v is None else int(v)) for mid, v in s.execute(q)]


def mark_published(s: Session, member_id: str, version: int, now: datetime) -> None:
    row = s.get(MemberPublished, member_id)
    if row is None:
        s.add(MemberPublished(member_id=member_id, version=version, published_at=now))
    else:
        row.version, row.published_at = version, now


def member_ids(s: Session) -> list[str]:
    return list(s.scalars(select(Member.member_id).order_by(Member.member_id)))


# ---------------------------------------------------------------- roster and rules
@functools.lru_cache(maxsize=65_536)
def _session_public_hex(hmac_key: bytes, lane: str) -> str:
    return codec.public_hex_of(codec.lane_session_key(hmac_key, lane))


def session_public_keys(lane_keys: Mapping[str, bytes]) -> dict[str, str]:
    """Each lane's session-signing public key (hex), in lane order. Derived once per (lane
    key, lane) and remembered: a derivation (HKDF, then Ed25519's public half) is ~50 us,
    and every full snapshot request (each lane at each reconnect) sends the roster, twice
    derived for every lane: a site of L lanes reconnecting cost 2·L² derivations, 45 % of
    a worker's CPU in a 200-lane storm (docs/scale.md). A rotated key is a new entry."""
    return {lane: _session_public_hex(k, lane) for lane, k in sorted(lane_keys.items())}


def roster(site: str, lane_keys: Mapping[str, bytes], serial: int,
           key: Ed25519PrivateKey) -> bytes:
    """The signed list of the site's lanes and their session-signing public keys."""
    return codec.encode_lanes(site, serial, session_public_keys(lane_keys), key)


def jsonable(v: Any) -> Any:
    """A TOML bundle as JSON values (dates and times as ISO text, as the lanes parse them)."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    if isinstance(v, datetime | date | time):
        return v.isoformat()
    return v


def bundle_json(path: Path) -> dict[str, Any]:
    out = jsonable(tomllib.loads(path.read_text(encoding="utf-8")))
    assert isinstance(out, dict)
    return out


def rules_serial(s: Session, bundle: Mapping[str, Any], now: datetime) -> int:
    """The serial of ``bundle``: the last one if it is the same bundle, else the next
    (recorded; lanes refuse a lower serial and a changed bundle under the same one)."""
    digest = hashlib.sha256(codec.canonical(bundle)).hexdigest()
    last = s.scalar(select(RulesPublished).order_by(RulesPublished.serial.desc()).limit(1)
                    .with_for_update())
    if last is not None and last.digest == digest:
        return int(last.serial)
    serial = int(s.scalar(select(func.coalesce(func.max(RulesPublished.serial), 0))) or 0) + 1
    s.add(RulesPublished(serial=serial, version=str(bundle.get("version", ""))[:128],
                         digest=digest, published_at=now))
    return serial


def roster_serial(s: Session, site: str, lane_keys: Mapping[str, bytes], now: datetime) -> int:
    """The serial of the site's lane roster, as :func:`rules_serial` for bundles: every
    worker answers the same roster with the same serial, and a changed one (a lane added,
    a key rotated) gets the next, and never less than the Unix time (as serials were before).
    The caller serialises concurrent first calls (the publish lock) or retries on the key."""
    pub = session_public_keys(lane_keys)
    digest = hashlib.sha256(codec.canonical({"site": site, "keys": pub})).hexdigest()
    last = s.scalar(select(RosterPublished).order_by(RosterPublished.serial.desc()).limit(1)
                    .with_for_update())
    if last is not None and last.digest == digest:
        return int(last.serial)
    # never below the wall-clock serials the lanes may hold from before 0008
    serial = max(int(last.serial) + 1 if last is not None else 1, int(now.timestamp()))
    s.add(RosterPublished(serial=serial, digest=digest, published_at=now))
    return serial
