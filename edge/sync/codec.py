"""Wire format of the site sync (docs/sync-protocol.md): pure, no I/O, never reads the clock.

Everything a peer sends passes through one of the ``parse_*`` functions, which either return
a plain value or raise ``SyncMessageError`` with a short ``reason`` (for the counters) and a
message naming the offending field. Nothing else can escape them, so a hostile or corrupt
message can be dropped by the caller with one ``except``.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import itertools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.fields import FieldError, check_id, check_plate
from edge.store.codec import ts
from edge.store.prepayments import Prepayment
from edge.store.types import EntryKind, LedgerEntry

VERSION = 1
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_BATCH_ENTRIES = 10_000
MAX_ACK_RANGES = 64
MAX_SNAPSHOT_MEMBERS = 10_000
_ID_MAX = 128
#: Range limits of what central may state (#12 item 5): a forged 10**30 balance or a
#: 2**63-1 version is refused by the schema before anything is applied. Points and
#: versions stay within JSON's exact integers and SQLite's INTEGER.
MAX_POINTS = 10**12
MAX_ALLOWANCE = 10**9
MAX_VERSION = 2**53 - 1
MAX_SEQ = 2**53 - 1
MAX_COUPON_VALUE = Decimal(1_000_000)
_KINDS = frozenset(str(k) for k in EntryKind)


class SyncMessageError(Exception):
    """A message that is not acceptable; ``reason`` is a short stable label for counters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------- canonical JSON
def _default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return str(o)
    if isinstance(o, datetime):
        if o.tzinfo is None:
            raise TypeError("naive datetime")
        return o.isoformat()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"cannot encode {type(o).__name__}")


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                            allow_nan=False, default=_default)


def canonical(obj: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8, Decimal as string; NaN/Infinity refused."""
    return _ENCODER.encode(obj).encode("utf-8")


def mac(key: bytes, body: bytes) -> str:
    return _hmac.new(key, body, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------- field checks
def _obj(raw: bytes | str, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    if len(raw) > max_bytes:
        raise SyncMessageError("too_large", f"{len(raw)} bytes > limit {max_bytes}")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise SyncMessageError("not_json", str(exc)[:120]) from None
    if not isinstance(data, dict):
        raise SyncMessageError("schema", "message must be a JSON object")
    return data


def _typed(data: Mapping[str, Any], type_: str) -> None:
    if data.get("v") != VERSION:
        raise SyncMessageError("schema", f"v: expected {VERSION}, got {data.get('v')!r}")
    if data.get("type") != type_:
        raise SyncMessageError("schema", f"type: expected {type_!r}, got {data.get('type')!r}")


def _str(d: Mapping[str, Any], k: str, *, opt: bool = False, max_len: int = _ID_MAX) -> Any:
    v = d.get(k)
    if v is None and opt:
        return None
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise SyncMessageError("schema", f"{k}: expected a non-empty string <= {max_len} "
                                         f"chars, got {str(v)[:40]!r}")
    return v


def _int(d: Mapping[str, Any], k: str, lo: int = 0, *, opt: bool = False,
         hi: int = MAX_SEQ) -> Any:
    v = d.get(k)
    if v is None and opt:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise SyncMessageError("schema", f"{k}: expected an integer {lo}..{hi}, "
                                         f"got {str(v)[:40]}")
    return v


def _id(d: Mapping[str, Any], k: str, *, opt: bool = False) -> Any:
    """An id field by the shared definition (``edge.fields.check_id``)."""
    v = d.get(k)
    if v is None and opt:
        return None
    try:
        return check_id(v, k)
    except FieldError as exc:
        raise SyncMessageError("schema", str(exc)) from None


def _plate(d: Mapping[str, Any], k: str) -> str:
    """A plate by the shared definition (``edge.fields.check_plate``)."""
    try:
        return check_plate(d.get(k))
    except FieldError as exc:
        raise SyncMessageError("schema", f"{k}: {exc}") from None


def _bool(d: Mapping[str, Any], k: str) -> bool:
    v = d.get(k)
    if not isinstance(v, bool):
        raise SyncMessageError("schema", f"{k}: expected true/false, got {v!r}")
    return v


def _when(d: Mapping[str, Any], k: str) -> datetime:
    v = _str(d, k, max_len=40)
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        raise SyncMessageError("schema", f"{k}: {v!r} is not an ISO 8601 time") from None
    if dt.tzinfo is None:
        raise SyncMessageError("schema", f"{k}: {v!r} has no UTC offset")
    return dt


# ---------------------------------------------------------------- batches (up)
_ENTRY_STR = ("entry_id", "lane_id", "kind", "at", "recorded", "prev_hash", "hash")
_ENTRY_OPT = ("session_id", "member_id", "plate", "rules_version")


def entry_to_wire(e: LedgerEntry) -> dict[str, Any]:
    """A ledger row as sent: the fields the lane hashed, times in the store's own text (the
    hash covers that text), payload as an object."""
    return {"entry_id": e.entry_id, "lane_id": e.lane_id, "seq": e.seq, "kind": str(e.kind),
            "at": ts(e.at), "recorded": ts(e.recorded),
            "session_id": e.session_id, "member_id": e.member_id, "plate": e.plate,
            "rules_version": e.rules_version, "payload": e.payload,
            "prev_hash": e.prev_hash, "hash": e.hash}


def encode_entry(e: LedgerEntry) -> bytes:
    return canonical(entry_to_wire(e))


_ENTRY_TEMPLATE = (
    '{"at":%s,"entry_id":%s,"hash":%s,"kind":%s,"lane_id":%s,"member_id":%s,"payload":%s,'
    '"plate":%s,"prev_hash":%s,"recorded":%s,"rules_version":%s,"seq":%d,"session_id":%s}')
_estr = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) uses


def _s(v: str | None) -> str:
    return "null" if v is None else _estr(v)


def wire_entry(at: str, entry_id: str, hash_: str, kind: str, lane_id: str,
               member_id: str | None, payload_text: str, plate: str | None, prev_hash: str,
               recorded: str, rules_version: str | None, seq: int,
               session_id: str | None) -> bytes:
    """The canonical wire form of a stored row, its payload column (already canonical JSON
    from the store) spliced in verbatim. Arguments in the keys' sorted order; the result is
    byte-identical to ``canonical`` of the same row (tested)."""
    return (_ENTRY_TEMPLATE % (
        _s(at), _s(entry_id), _s(hash_), _s(kind), _s(lane_id), _s(member_id), payload_text,
        _s(plate), _s(prev_hash), _s(recorded), _s(rules_version), int(seq), _s(session_id),
    )).encode("utf-8")


def batch_overhead(site: str, lane: str) -> int:
    """Upper bound of a batch's bytes besides its entries (for the byte limit)."""
    return 330 + 2 * len(site.encode()) + 3 * len(lane.encode())


def encode_batch(site: str, lane: str, encoded_entries: Sequence[bytes], first_seq: int,
                 last_seq: int, key: bytes, sent_at: datetime) -> bytes:
    """Assemble a signed batch from canonically pre-encoded entries (no re-encoding)."""
    head = {"batch_id": f"{lane}:{first_seq}-{last_seq}"}
    tail = {"first_seq": first_seq, "last_seq": last_seq, "lane": lane,
            "sent_at": sent_at.isoformat(), "site": site, "type": "batch", "v": VERSION}
    # Keys sorted: batch_id < entries < first_seq < hmac < last_seq < ...
    h = canonical(head)[:-1]
    t = canonical(tail)[1:]
    body = h + b',"entries":[' + b",".join(encoded_entries) + b"]," + t
    sig = mac(key, body)
    pre = canonical({"first_seq": first_seq})[1:-1]
    rest = canonical({k: v for k, v in tail.items() if k != "first_seq"})[1:]
    return (h + b',"entries":[' + b",".join(encoded_entries) + b"]," + pre
            + b',"hmac":"' + sig.encode() + b'",' + rest)


@dataclass(frozen=True)
class Batch:
    site: str
    lane: str
    batch_id: str
    first_seq: int
    last_seq: int
    entries: tuple[dict[str, Any], ...]
    #: ``(seq, reason)`` of entries whose content central cannot take as it is (a plate or
    #: an id outside the shared field limits, an unknown kind ...). They happened on the
    #: lane, so they are recorded and flagged, never refused: refusing them stalled the
    #: lane's whole backlog behind one bad row (#12 item 2).
    flagged: tuple[tuple[int, str], ...] = ()


_HASH_MAX = 64
_TIME_MAX = 40


def _check_entry(i: int, e: Any, lane: str) -> str | None:
    """Check one entry of an authenticated batch. What central needs to place the row
    (seq, entry id, lane, hash) must be right or the batch is refused (``schema``: the lane
    is not the one that wrote it). Anything else wrong is returned as the reason to flag it.
    Inlined checks: this runs for every entry central receives (the hot path)."""
    if type(e) is not dict:
        raise SyncMessageError("schema", f"entries[{i}]: expected an object")
    seq = e.get("seq")
    if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
        raise SyncMessageError("schema", f"entries[{i}].seq: expected an integer "
                                         f"1..{MAX_SEQ}, got {str(seq)[:40]}")
    if e.get("lane_id") != lane or e.get("entry_id") != f"{lane}:{seq}":
        raise SyncMessageError("schema", f"entries[{i}]: entry_id/lane_id "
                                         f"{str(e.get('entry_id'))[:80]!r} does not belong "
                                         f"to lane {lane!r}")
    for k in ("hash", "prev_hash"):
        v = e.get(k)
        if type(v) is not str or not v or len(v) > _HASH_MAX:
            raise SyncMessageError("schema", f"entries[{i}].{k}: expected a hash")
    kind = e.get("kind")
    if type(kind) is not str or kind not in _KINDS:
        return f"kind: {str(kind)[:40]!r} is not a ledger entry kind"
    for k in ("at", "recorded"):
        v = e.get(k)
        if type(v) is not str or not v or len(v) > _TIME_MAX:
            return f"{k}: expected a time, got {str(v)[:40]!r}"
    try:
        for k in ("session_id", "member_id", "rules_version"):
            v = e.get(k)
            if v is not None:
                check_id(v, k)
        plate = e.get("plate")
        if plate is not None:
            check_plate(plate)
    except FieldError as exc:
        return str(exc)
    if type(e.get("payload")) is not dict:
        return "payload: expected an object"
    return None


_HMAC_KEY = b',"hmac":"'


def _authentic(raw: bytes, d: dict[str, Any], key: bytes, sig: str) -> bool:
    """MAC check. Fast path: a canonical sender's bytes minus the top-level ``hmac`` member
    are exactly the canonical body (it is the last key that can hold a quote, so ``rfind``
    finds it). Otherwise re-encode canonically, as the protocol defines."""
    i = raw.rfind(_HMAC_KEY)
    j = i + len(_HMAC_KEY) + len(sig)
    if i > 0 and raw[j:j + 1] == b'"' and _hmac.compare_digest(
            mac(key, raw[:i] + raw[j + 1:]), sig):
        return True
    try:
        body = canonical({k: v for k, v in d.items() if k != "hmac"})
    except (TypeError, ValueError) as exc:
        raise SyncMessageError("schema", f"cannot re-encode: {exc}") from None
    return _hmac.compare_digest(mac(key, body), sig)


def parse_batch(raw: bytes, key_for_lane: Callable[[str], bytes | None],
                max_bytes: int = MAX_MESSAGE_BYTES) -> Batch:
    """Validate and authenticate a lane batch; ``bad_hmac`` when the MAC does not verify."""
    d = _obj(raw, max_bytes)
    _typed(d, "batch")
    lane = _id(d, "lane")
    site = _id(d, "site")
    sig = _str(d, "hmac", max_len=64)
    key = key_for_lane(lane)
    if key is None:
        raise SyncMessageError("unknown_lane", f"no HMAC key for lane {lane!r}")
    if not _authentic(raw if isinstance(raw, bytes) else raw.encode(), d, key, sig):
        raise SyncMessageError("bad_hmac", f"batch {d.get('batch_id')!r} from {lane!r}")
    entries = d.get("entries")
    if not isinstance(entries, list) or not entries or len(entries) > MAX_BATCH_ENTRIES:
        raise SyncMessageError("schema", f"entries: expected 1..{MAX_BATCH_ENTRIES} entries")
    flagged: list[tuple[int, str]] = []
    for i, e in enumerate(entries):
        why = _check_entry(i, e, lane)
        if why is not None:
            flagged.append((e["seq"], why))
    first, last = _int(d, "first_seq", 1), _int(d, "last_seq", 1)
    seqs = [e["seq"] for e in entries]
    if seqs[0] != first or seqs[-1] != last or any(
            b <= a for a, b in itertools.pairwise(seqs)):
        raise SyncMessageError("schema", "entries: seq must ascend from first_seq to last_seq")
    return Batch(site, lane, _str(d, "batch_id"), first, last, tuple(entries),
                 tuple(flagged))


def points_delta(kind: str, payload: dict[str, object]) -> int:
    """Signed effect of one ledger entry on an account's points (lane and central)."""
    pts = payload.get("points")
    n = pts if isinstance(pts, int) and not isinstance(pts, bool) else 0
    if kind == "points_earned":
        return n
    if kind == "points_deducted":
        return -n
    if kind == "correction":
        action = payload.get("action")
        if action == "points_returned":
            return n
        if action == "earned_revoked":
            return -n
    return 0


# ---------------------------------------------------------------- authentication (down)
# Everything central sends down, and every session event a lane sends across, is
# authenticated before it is parsed into anything (#12 item 5):
# - acks are per lane: HMAC-SHA256 with that lane's key (central holds it already; ~1 us);
# - member states, snapshots, rule bundles and the site's lane roster: Ed25519 by central
#   (one public key on every lane; a state is per site, so one signature serves all lanes);
# - session events: Ed25519 by the lane that sends them, under the key central lists for
#   that lane in its signed roster (a lane cannot sign as another lane).
# Every signed body names its ``site``: a message signed for another site is refused.
_SIG_MAX = 128


def _signed_body(d: Mapping[str, Any], field: str) -> bytes:
    try:
        return canonical({k: v for k, v in d.items() if k != field})
    except (TypeError, ValueError) as exc:
        raise SyncMessageError("schema", f"cannot re-encode: {exc}") from None


def sign_ed25519(obj: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """``obj`` plus ``sig`` = hex Ed25519 over its canonical encoding (without ``sig``)."""
    out = dict(obj)
    out["sig"] = key.sign(canonical(obj)).hex()
    return out


def verify_ed25519(d: Mapping[str, Any], public_key: Ed25519PublicKey | None, what: str) -> None:
    """``unsigned`` / ``bad_signature`` unless ``d['sig']`` verifies over the rest of ``d``."""
    sig = d.get("sig")
    if not sig:
        raise SyncMessageError("unsigned", f"{what} carries no signature")
    if public_key is None:
        raise SyncMessageError("no_public_key", f"{what}: no key to verify it with")
    if not isinstance(sig, str) or len(sig) != _SIG_MAX:
        raise SyncMessageError("bad_signature", f"{what}: sig is not 128 hex digits")
    try:
        public_key.verify(bytes.fromhex(sig), _signed_body(d, "sig"))
    except (ValueError, InvalidSignature):
        raise SyncMessageError("bad_signature", f"{what}: signature does not verify") from None


def _site(d: Mapping[str, Any], site: str, what: str) -> None:
    if d.get("site") != site:
        raise SyncMessageError("wrong_site", f"{what} is for site {str(d.get('site'))[:64]!r}, "
                                             f"not {site!r}")


def lane_session_key(hmac_key: bytes, lane: str) -> Ed25519PrivateKey:
    """The Ed25519 key a lane signs its session events with, derived from its HMAC key
    (HKDF-SHA256, its own label): no second secret to install per lane, central computes
    the public half from the lane key it already holds and lists it in the signed roster,
    and the other lanes only ever learn the public half."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"parkedge-sync-v1",
                info=b"session-signing:" + lane.encode("utf-8")).derive(hmac_key)
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_hex_of(key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


# ---------------------------------------------------------------- acks (down)
@dataclass(frozen=True)
class Ack:
    lane: str
    upto: int
    ranges: tuple[tuple[int, int], ...]
    batch_id: str | None


def ranges_of(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted seqs -> inclusive (lo, hi) runs: the ``ranges`` of an ack (both centrals)."""
    out: list[tuple[int, int]] = []
    for s in seqs:
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        elif not out or s > out[-1][1]:
            out.append((s, s))
    return out


def encode_ack(lane: str, upto: int, ranges: Sequence[tuple[int, int]],
               batch_id: str | None, key: bytes) -> bytes:
    """An ack MACed with the lane's own key (acks are per lane, central holds the key)."""
    body = {"v": VERSION, "type": "ack", "lane": lane, "upto": upto,
            "ranges": [list(r) for r in ranges[:MAX_ACK_RANGES]], "batch_id": batch_id}
    body["hmac"] = mac(key, canonical(body))
    return canonical(body)


def parse_ack(raw: bytes, key: bytes) -> Ack:
    """Authenticate (``unsigned`` / ``bad_hmac``) and range-check an ack."""
    d = _obj(raw, 64 * 1024)
    _typed(d, "ack")
    sig = d.get("hmac")
    if not sig:
        raise SyncMessageError("unsigned", "ack carries no hmac")
    if not isinstance(sig, str) or not _hmac.compare_digest(mac(key, _signed_body(d, "hmac")),
                                                            sig):
        raise SyncMessageError("bad_hmac", f"ack upto {str(d.get('upto'))[:24]}")
    rs = d.get("ranges")
    if not isinstance(rs, list) or len(rs) > MAX_ACK_RANGES:
        raise SyncMessageError("schema", f"ranges: expected a list of <= {MAX_ACK_RANGES}")
    upto = _int(d, "upto", 0)
    ranges: list[tuple[int, int]] = []
    for i, r in enumerate(rs):
        if (not isinstance(r, list) or len(r) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in r)
                or not upto < r[0] <= r[1] <= MAX_SEQ):
            raise SyncMessageError("schema", f"ranges[{i}]: expected [lo, hi] with "
                                             f"upto < lo <= hi, got {str(r)[:60]}")
        ranges.append((r[0], r[1]))
    return Ack(_id(d, "lane"), upto, tuple(ranges), _str(d, "batch_id", opt=True))


# ---------------------------------------------------------------- status
def encode_status(lane: str, state: str, backlog: int, last_acked_seq: int,
                  at: datetime, backlog_stalled: bool = False) -> bytes:
    return canonical({"v": VERSION, "type": "status", "lane": lane, "state": state,
                      "backlog": backlog, "last_acked_seq": last_acked_seq, "at": at,
                      "backlog_stalled": backlog_stalled})


def parse_status(raw: bytes) -> dict[str, Any]:
    d = _obj(raw, 4096)
    _typed(d, "status")
    if d.get("state") not in ("online", "offline"):
        raise SyncMessageError("schema", f"state: {str(d.get('state'))[:20]!r}")
    _id(d, "lane")
    _int(d, "backlog")
    _int(d, "last_acked_seq")
    if not isinstance(d.get("backlog_stalled", False), bool):
        raise SyncMessageError("schema", "backlog_stalled: expected true/false")
    return d


# ---------------------------------------------------------------- the site's lanes (down)
@dataclass(frozen=True)
class LaneRoster:
    """The site's lanes and the public keys of their session signatures, signed by central."""

    serial: int
    keys: Mapping[str, str]  # lane id -> 64 hex Ed25519 public key


def encode_lanes(site: str, serial: int, keys: Mapping[str, str],
                 key: Ed25519PrivateKey) -> bytes:
    return canonical(sign_ed25519({"v": VERSION, "type": "lanes", "site": site,
                                   "serial": serial, "lanes": dict(keys)}, key))


def parse_lanes(raw: bytes, site: str, public_key: Ed25519PublicKey | None) -> LaneRoster:
    d = _obj(raw, 256 * 1024)
    _typed(d, "lanes")
    verify_ed25519(d, public_key, "lane roster")
    _site(d, site, "lane roster")
    lanes = d.get("lanes")
    if not isinstance(lanes, dict) or len(lanes) > 1000:
        raise SyncMessageError("schema", "lanes: expected {lane: public key}, <= 1000")
    for k, v in lanes.items():
        check = {"lane": k}
        _id(check, "lane")
        if not isinstance(v, str) or len(v) != 64:
            raise SyncMessageError("schema", f"lanes[{k}]: expected 64 hex digits")
        public_key_from_hex(v)
    return LaneRoster(_int(d, "serial", 1), dict(lanes))


# ---------------------------------------------------------------- sessions between lanes
@dataclass(frozen=True)
class SessionOpened:
    origin: str
    event_id: str
    plate: str
    entered_at: datetime
    vehicle_class: str
    member_id: str | None
    rules_version: str | None
    # the stay's one id at every lane (optional: older lanes do not send it)
    session_id: str | None = None


@dataclass(frozen=True)
class SessionClosed:
    origin: str
    entry_event_id: str | None
    plate: str
    exited_at: datetime
    exit_event_id: str
    session_id: str | None = None  # the id the exit was recorded under


def _with_session(d: dict[str, Any], session_id: str | None) -> dict[str, Any]:
    """Add ``session_id`` only when known: a message without it is byte for byte what an
    older lane sends, and an older lane ignores the key."""
    if session_id is not None:
        d["session_id"] = session_id
    return d


def encode_session_opened(s: SessionOpened, site: str, key: Ed25519PrivateKey) -> bytes:
    return canonical(sign_ed25519(_with_session(
        {"v": VERSION, "type": "session_opened", "site": site, "origin": s.origin,
         "event_id": s.event_id, "plate": s.plate, "entered_at": s.entered_at,
         "vehicle_class": s.vehicle_class, "member_id": s.member_id,
         "rules_version": s.rules_version}, s.session_id), key))


def encode_session_closed(s: SessionClosed, site: str, key: Ed25519PrivateKey) -> bytes:
    return canonical(sign_ed25519(_with_session(
        {"v": VERSION, "type": "session_closed", "site": site, "origin": s.origin,
         "entry_event_id": s.entry_event_id, "plate": s.plate, "exited_at": s.exited_at,
         "exit_event_id": s.exit_event_id}, s.session_id), key))


_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}")


def _session_id(d: Mapping[str, Any]) -> str | None:
    """Optional (older lanes do not send it); when present, an id of printable ASCII words.
    On ``session_opened`` it must also be in the origin lane's namespace (``<lane>-...``): a
    lane announces only stays it opened. An exit names whichever stay it closed."""
    sid = _str(d, "session_id", opt=True)
    if sid is not None and not _SESSION_ID.fullmatch(sid):
        raise SyncMessageError("schema", f"session_id: {sid[:40]!r} is not a session id")
    return sid


def parse_session(raw: bytes, site: str,
                  key_for_lane: Callable[[str], Ed25519PublicKey | None]
                  ) -> SessionOpened | SessionClosed:
    """Authenticate a session event as signed by its ``origin`` lane (a lane of the site's
    signed roster: ``unknown_lane`` otherwise), then check its fields."""
    d = _obj(raw, 16 * 1024)
    t = d.get("type")
    _typed(d, "session_closed" if t == "session_closed" else "session_opened")
    origin = _id(d, "origin")
    pk = key_for_lane(origin)
    if pk is None:
        raise SyncMessageError("unknown_lane", f"session event from {origin!r}, not a lane "
                                               "of the site's signed roster")
    verify_ed25519(d, pk, f"session event from {origin!r}")
    _site(d, site, "session event")
    sid = _session_id(d)
    if t == "session_closed":
        return SessionClosed(origin, _id(d, "entry_event_id", opt=True), _plate(d, "plate"),
                             _when(d, "exited_at"), _id(d, "exit_event_id"), sid)
    if sid is not None and not sid.startswith(origin + "-"):
        raise SyncMessageError("schema", f"session_id: {sid[:40]!r} is not lane {origin}'s")
    return SessionOpened(origin, _id(d, "event_id"), _plate(d, "plate"),
                         _when(d, "entered_at"), _id(d, "vehicle_class"),
                         _id(d, "member_id", opt=True), _id(d, "rules_version", opt=True), sid)


# ---------------------------------------------------------------- members (down)
@dataclass(frozen=True)
class CouponState:
    """An unused parking coupon central issued (a redeemed reward): ``kind`` is the pricing
    engine's ``hours`` / ``amount`` / ``free``; ``value`` a Decimal."""

    coupon_id: str
    kind: str
    value: Decimal
    valid_until: datetime | None


@dataclass(frozen=True)
class MemberState:
    member_id: str
    version: int
    prev_version: int
    tier: str
    name: str | None
    blocked: bool
    flagged: bool
    auto_deduct: bool
    balance: int  # may be negative: an overdrawn account
    plates: tuple[str, ...]
    allowance: int
    applied: Mapping[str, int]
    coupons: tuple[CouponState, ...] = ()


def member_to_wire(m: MemberState, site: str) -> dict[str, Any]:
    return {"v": VERSION, "type": "member", "site": site, "member_id": m.member_id,
            "version": m.version, "prev_version": m.prev_version, "tier": m.tier,
            "name": m.name, "blocked": m.blocked, "flagged": m.flagged,
            "auto_deduct": m.auto_deduct, "balance": m.balance, "plates": list(m.plates),
            "allowance": m.allowance, "applied": dict(m.applied),
            "coupons": [{"coupon_id": c.coupon_id, "kind": c.kind, "value": c.value,
                         "valid_until": c.valid_until} for c in m.coupons]}


def _coupons(raw: Any) -> tuple[CouponState, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > 500:
        raise SyncMessageError("schema", "coupons: expected a list of <= 500")
    out = []
    for i, c in enumerate(raw):
        if not isinstance(c, dict) or c.get("kind") not in ("hours", "amount", "free"):
            raise SyncMessageError("schema", f"coupons[{i}]: expected an object with kind "
                                             "hours/amount/free")
        v = _str(c, "value", max_len=32)
        try:
            value = Decimal(v)
        except ArithmeticError:
            raise SyncMessageError("schema", f"coupons[{i}].value: {v!r}") from None
        if not value.is_finite() or not 0 <= value <= MAX_COUPON_VALUE:
            raise SyncMessageError("schema", f"coupons[{i}].value: {v!r} must be "
                                             f"0..{MAX_COUPON_VALUE}")
        out.append(CouponState(_id(c, "coupon_id"), c["kind"], value,
                               None if c.get("valid_until") is None
                               else _when(c, "valid_until")))
    return tuple(out)


def encode_member(m: MemberState, site: str, key: Ed25519PrivateKey) -> bytes:
    """The retained ``member`` message: central's state of an account, signed by central."""
    return canonical(signed_member(m, site, key))


def signed_member(m: MemberState, site: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    return sign_ed25519(member_to_wire(m, site), key)


def _member(d: Any, site: str, public_key: Ed25519PublicKey | None) -> MemberState:
    if not isinstance(d, dict):
        raise SyncMessageError("schema", "member: expected an object")
    _typed(d, "member")
    verify_ed25519(d, public_key, f"member {str(d.get('member_id'))[:64]!r}")
    _site(d, site, "member state")
    bal = _int(d, "balance", -MAX_POINTS, hi=MAX_POINTS)
    plates = d.get("plates")
    if not isinstance(plates, list) or len(plates) > 100:
        raise SyncMessageError("schema", "plates: expected <= 100 plates")
    for p in plates:
        _plate({"plate": p}, "plate")
    applied = d.get("applied")
    if not isinstance(applied, dict) or len(applied) > 1000:
        raise SyncMessageError("schema", "applied: expected {lane: seq}, <= 1000 lanes")
    for k in applied:
        _id({"lane": k}, "lane")
        _int(applied, k, 0)
    name = d.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 200
                             or not name.isprintable()):
        raise SyncMessageError("schema", "name: expected null or <= 200 printable characters")
    version = _int(d, "version", 1, hi=MAX_VERSION)
    return MemberState(_id(d, "member_id"), version, _int(d, "prev_version", 0, hi=version - 1),
                       _id(d, "tier"), name, _bool(d, "blocked"), _bool(d, "flagged"),
                       _bool(d, "auto_deduct"), bal, tuple(plates),
                       _int(d, "allowance", 0, hi=MAX_ALLOWANCE), applied,
                       _coupons(d.get("coupons")))


def parse_member(raw: bytes, site: str, public_key: Ed25519PublicKey | None) -> MemberState:
    """Authenticate (central's signature, this site) and range-check a member state."""
    return _member(_obj(raw, 64 * 1024), site, public_key)


def encode_snapshot(members: Sequence[Mapping[str, Any]]) -> bytes:
    """A snapshot of already signed member states (``signed_member``)."""
    return canonical({"v": VERSION, "type": "snapshot", "members": list(members)})


def parse_snapshot(raw: bytes, site: str,
                   public_key: Ed25519PublicKey | None) -> tuple[MemberState, ...]:
    """Every member state inside is verified on its own: one bad one refuses the whole."""
    d = _obj(raw)
    _typed(d, "snapshot")
    ms = d.get("members")
    if not isinstance(ms, list) or len(ms) > MAX_SNAPSHOT_MEMBERS:
        raise SyncMessageError("schema", f"members: expected <= {MAX_SNAPSHOT_MEMBERS}")
    return tuple(_member(m, site, public_key) for m in ms)


def encode_snapshot_request(lane: str, members: Sequence[str] | None, reason: str) -> bytes:
    return canonical({"v": VERSION, "type": "snapshot_request", "lane": lane,
                      "members": None if members is None else list(members), "reason": reason})


def parse_snapshot_request(raw: bytes) -> tuple[str, tuple[str, ...] | None, str]:
    d = _obj(raw, 256 * 1024)
    _typed(d, "snapshot_request")
    ms = d.get("members")
    if ms is not None and (not isinstance(ms, list) or len(ms) > MAX_SNAPSHOT_MEMBERS):
        raise SyncMessageError("schema", "members: expected null or a list of member ids")
    for m in ms or ():
        _id({"member": m}, "member")
    return (_id(d, "lane"), None if ms is None else tuple(ms), _str(d, "reason", max_len=64))


# ---------------------------------------------------------------- signed rule bundles (down)
@dataclass(frozen=True)
class SignedRules:
    serial: int
    bundle: dict[str, Any]


def _rules_body(bundle: Mapping[str, Any], serial: int, site: str) -> bytes:
    return canonical({"bundle": bundle, "serial": serial, "site": site})


def sign_rules(bundle: Mapping[str, Any], serial: int, key: Ed25519PrivateKey,
               site: str) -> bytes:
    """Central side: the retained ``rules`` message for ``bundle`` (JSON-ready values),
    signed for ``site``: a lane of another site refuses it."""
    sig = key.sign(_rules_body(bundle, serial, site)).hex()
    return canonical({"v": VERSION, "type": "rules", "site": site, "serial": serial,
                      "bundle": bundle, "alg": "ed25519", "sig": sig})


def public_key_from_hex(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    except ValueError as exc:
        raise ValueError(f"rules_public_key: not a 32-byte hex Ed25519 key: {exc}") from None


def parse_rules(raw: bytes, public_key: Ed25519PublicKey, site: str) -> SignedRules:
    """Verify the Ed25519 signature over bundle, serial and site; ``unsigned`` /
    ``bad_signature`` / ``wrong_site`` / ``schema`` otherwise.

    The bundle's own content is checked afterwards by ``edge.pricing.parse_bundle``.
    """
    d = _obj(raw, 1024 * 1024)
    _typed(d, "rules")
    serial = _int(d, "serial", 1)
    bundle = d.get("bundle")
    if not isinstance(bundle, dict):
        raise SyncMessageError("schema", "bundle: expected an object")
    sig = d.get("sig")
    if not sig:
        raise SyncMessageError("unsigned", f"rules serial {serial} carries no signature")
    if d.get("alg") != "ed25519" or not isinstance(sig, str):
        raise SyncMessageError("bad_signature", f"alg {str(d.get('alg'))[:20]!r} / sig not "
                                                "a string")
    claimed = d.get("site")
    if not isinstance(claimed, str):
        raise SyncMessageError("wrong_site", f"rules serial {serial} names no site")
    try:
        public_key.verify(bytes.fromhex(sig), _rules_body(bundle, serial, claimed))
    except (ValueError, InvalidSignature):
        raise SyncMessageError("bad_signature", f"rules serial {serial}: signature does "
                                                "not verify") from None
    _site(d, site, f"rules serial {serial}")
    return SignedRules(serial, bundle)


# ---------------------------------------------------------------- prepayments (down)
#: A prepayment larger than this is refused (a day's parking is far below it; a forged
#: 10**30 must not reach the pricing engine).
MAX_PREPAID_AMOUNT = Decimal(100_000)
#: How long after paying a prepayment may still be applied at the exit (central sets
#: ``expires_at``; a lane refuses a longer one as ``schema``).
MAX_PREPAID_TTL_S = 7 * 24 * 3600
PREPAID_MAX_BYTES = 4096


#: Money paid at central (pay station, member portal) for a stay still in the car park: the
#: message carries exactly the row the lane keeps (``entry_event_id`` names the stay when
#: central knows it; else the exit lane takes the plate's open stay that began before
#: ``paid_at``), so the wire and the store share one type.
Prepaid = Prepayment


def prepaid_to_wire(p: Prepaid, site: str) -> dict[str, Any]:
    return {"v": VERSION, "type": "prepaid", "site": site, "payment_id": p.payment_id,
            "plate": p.plate, "amount": p.amount, "paid_at": p.paid_at,
            "expires_at": p.expires_at, "member_id": p.member_id,
            "entry_event_id": p.entry_event_id, "source": p.source}


def encode_prepaid(p: Prepaid, site: str, key: Ed25519PrivateKey) -> bytes:
    """Central side: the retained ``prepaid`` message, signed by central for ``site``."""
    return canonical(sign_ed25519(prepaid_to_wire(p, site), key))


def parse_prepaid(raw: bytes, site: str, public_key: Ed25519PublicKey | None) -> Prepaid:
    """Authenticate (central's signature, this site) and range-check a prepayment. The
    clock checks (paid in the future, expired) are the caller's: the codec reads no clock."""
    d = _obj(raw, PREPAID_MAX_BYTES)
    _typed(d, "prepaid")
    return _prepaid(d, site, public_key)


def _payment_terms(d: Mapping[str, Any]) -> tuple[Decimal, datetime, datetime]:
    """The amount, paid_at and expires_at a ``prepaid`` and its ``prepaid_revoked`` share,
    checked the same way for both."""
    text = _str(d, "amount", max_len=24)
    try:
        amount = Decimal(text)
    except ArithmeticError:
        raise SyncMessageError("schema", f"amount: {text!r} is not a decimal") from None
    if (not amount.is_finite() or not 0 <= amount <= MAX_PREPAID_AMOUNT
            or amount != amount.quantize(Decimal("0.01"))):
        raise SyncMessageError("schema", f"amount: {text!r} must be 0..{MAX_PREPAID_AMOUNT} "
                                         "with at most 2 decimals")
    paid_at, expires_at = _when(d, "paid_at"), _when(d, "expires_at")
    if not 0 < (expires_at - paid_at).total_seconds() <= MAX_PREPAID_TTL_S:
        raise SyncMessageError("schema", "expires_at: must be after paid_at, by at most "
                                         f"{MAX_PREPAID_TTL_S // 86400} days")
    return amount, paid_at, expires_at


def _prepaid(d: Mapping[str, Any], site: str, public_key: Ed25519PublicKey | None) -> Prepaid:
    verify_ed25519(d, public_key, f"prepaid {str(d.get('payment_id'))[:64]!r}")
    _site(d, site, "prepayment")
    amount, paid_at, expires_at = _payment_terms(d)
    source = d.get("source")
    if source is not None and (not isinstance(source, str) or len(source) > 64
                               or not source.isprintable()):
        raise SyncMessageError("schema", "source: expected null or <= 64 printable characters")
    return Prepaid(_id(d, "payment_id"), _plate(d, "plate"), amount, paid_at, expires_at,
                   _id(d, "member_id", opt=True), _id(d, "entry_event_id", opt=True), source)


# ---------------------------------------------------------------- revocations (down)
@dataclass(frozen=True)
class PrepaidRevoked:
    """Central refunded a prepayment not yet used at central's knowledge: the lanes must
    drop it. It names the payment exactly as the ``prepaid`` message did (id, plate, amount,
    paid at, expiry), so a lane removes only the payment it holds, never one with another
    content under the same id."""

    payment_id: str
    plate: str
    amount: Decimal
    paid_at: datetime
    expires_at: datetime
    revoked_at: datetime


def prepaid_revoked_to_wire(r: PrepaidRevoked, site: str) -> dict[str, Any]:
    return {"v": VERSION, "type": "prepaid_revoked", "site": site,
            "payment_id": r.payment_id, "plate": r.plate, "amount": r.amount,
            "paid_at": r.paid_at, "expires_at": r.expires_at, "revoked_at": r.revoked_at}


def encode_prepaid_revoked(r: PrepaidRevoked, site: str, key: Ed25519PrivateKey) -> bytes:
    """Central side: the signed revocation (same key and canonical form as ``prepaid``).
    Ed25519 is deterministic: the same revocation encodes to the same bytes every time, so
    central re-sends it (reconnect snapshots) without storing it."""
    return canonical(sign_ed25519(prepaid_revoked_to_wire(r, site), key))


def _revoked(d: Mapping[str, Any], site: str,
             public_key: Ed25519PublicKey | None) -> PrepaidRevoked:
    verify_ed25519(d, public_key, f"prepaid_revoked {str(d.get('payment_id'))[:64]!r}")
    _site(d, site, "prepayment revocation")
    amount, paid_at, expires_at = _payment_terms(d)
    revoked_at = _when(d, "revoked_at")
    if revoked_at < paid_at:
        raise SyncMessageError("schema", "revoked_at: before paid_at")
    return PrepaidRevoked(_id(d, "payment_id"), _plate(d, "plate"), amount, paid_at,
                          expires_at, revoked_at)


def parse_prepaid_revoked(raw: bytes, site: str,
                          public_key: Ed25519PublicKey | None) -> PrepaidRevoked:
    """Authenticate and range-check a revocation: at most ``PREPAID_MAX_BYTES``
    (``too_large``), central's signature (``unsigned`` / ``bad_signature``), this site
    (``wrong_site``), the fields (``schema``). Whether the lane holds that payment is the
    caller's check."""
    d = _obj(raw, PREPAID_MAX_BYTES)
    _typed(d, "prepaid_revoked")
    return _revoked(d, site, public_key)


def parse_prepaid_topic(raw: bytes, site: str, public_key: Ed25519PublicKey | None
                        ) -> Prepaid | PrepaidRevoked:
    """What comes on a ``prepaid/{payment}`` topic: a ``prepaid`` or a ``prepaid_revoked``
    message (the revocation goes on the payment's own topic, so MQTT's per-topic order
    delivers it after the payment it revokes)."""
    d = _obj(raw, PREPAID_MAX_BYTES)
    if d.get("v") == VERSION and d.get("type") == "prepaid_revoked":
        return _revoked(d, site, public_key)
    _typed(d, "prepaid")
    return _prepaid(d, site, public_key)
