"""The wire codec: canonical batches, HMAC, schema and size limits, signed rules (pure)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.store import Store
from edge.sync import codec
from edge.sync.codec import SyncMessageError

KEY = b"lane-key"


def _k(d: dict[str, bytes]) -> Callable[[str], bytes | None]:
    return lambda lane: d.get(lane)
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _entries(tmp_path: Path, n: int = 3) -> list[Any]:
    s = Store.open(tmp_path / "l.db", "entry-1")
    for i in range(n):
        s.record_entry(plate=f"粤B{i:05d}", entered_at=NOW, event_id=f"e{i}")
    out = s.entries(0, 100)
    s.close()
    return out


def _batch(tmp_path: Path, n: int = 3) -> bytes:
    es = _entries(tmp_path, n)
    return codec.encode_batch("mall", "entry-1", [codec.encode_entry(e) for e in es],
                              es[0].seq, es[-1].seq, KEY, NOW)


def test_batch_round_trip_is_canonical_and_authenticated(tmp_path: Path) -> None:
    raw = _batch(tmp_path)
    d = json.loads(raw)
    sig = d.pop("hmac")
    assert codec.mac(KEY, codec.canonical(d)) == sig
    b = codec.parse_batch(raw, _k({"entry-1": KEY}))
    assert (b.lane, b.first_seq, b.last_seq, len(b.entries)) == ("entry-1", 1, 3, 3)
    assert [e["entry_id"] for e in b.entries] == ["entry-1:1", "entry-1:2", "entry-1:3"]
    assert b.entries[0]["plate"] == "粤B00000"


def test_tampered_entry_fails_hmac(tmp_path: Path) -> None:
    d = json.loads(_batch(tmp_path))
    d["entries"][1]["plate"] = "粤B99999"
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_batch(codec.canonical(d), _k({"entry-1": KEY}))
    assert ei.value.reason == "bad_hmac"


def test_wrong_key_and_unknown_lane(tmp_path: Path) -> None:
    raw = _batch(tmp_path)
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_batch(raw, _k({"entry-1": b"other"}))
    assert ei.value.reason == "bad_hmac"
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_batch(raw, _k({}))
    assert ei.value.reason == "unknown_lane"


def test_entry_of_another_lane_is_refused_even_when_signed(tmp_path: Path) -> None:
    d = json.loads(_batch(tmp_path))
    d["entries"][0]["lane_id"] = "exit-1"
    d["entries"][0]["entry_id"] = "exit-1:1"
    d.pop("hmac")
    d["hmac"] = codec.mac(KEY, codec.canonical(d))
    with pytest.raises(SyncMessageError, match="does not belong"):
        codec.parse_batch(codec.canonical(d), _k({"entry-1": KEY}))


def test_size_limit_and_not_json() -> None:
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_batch(b"{" + b" " * 2000 + b"}", _k({}), max_bytes=1000)
    assert ei.value.reason == "too_large"
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_ack(b"\xff\xfe")
    assert ei.value.reason == "not_json"


def test_canonical_money_is_a_string_and_floats_nan_refused() -> None:
    assert codec.canonical({"b": Decimal("12.50"), "a": 1}) == b'{"a":1,"b":"12.50"}'
    with pytest.raises(ValueError):
        codec.canonical({"x": float("nan")})


def test_ack_schema() -> None:
    a = codec.parse_ack(codec.encode_ack("entry-1", 10, [(12, 15)], "b"))
    assert (a.upto, a.ranges) == (10, ((12, 15),))
    for bad in ({"ranges": [[5, 6]]}, {"ranges": [[13, 12]]}, {"upto": -1}, {"upto": True}):
        d = json.loads(codec.encode_ack("entry-1", 10, [(12, 15)]))
        d.update(bad)
        with pytest.raises(SyncMessageError):
            codec.parse_ack(json.dumps(d).encode())


def test_member_round_trip_allows_negative_balance() -> None:
    m = codec.MemberState("M1", 3, 2, "member", "Li", False, True, True, -40, ("粤B1",), 100,
                          {"entry-1": 5})
    assert codec.parse_member(codec.encode_member(m)) == m
    d = json.loads(codec.encode_member(m))
    d["balance"] = "12"
    with pytest.raises(SyncMessageError, match="balance"):
        codec.parse_member(json.dumps(d).encode())


def test_rules_signature() -> None:
    key = Ed25519PrivateKey.generate()
    bundle = {"version": "v2", "x": "1.5"}
    raw = codec.sign_rules(bundle, 4, key)
    assert codec.parse_rules(raw, key.public_key()) == codec.SignedRules(4, bundle)
    d = json.loads(raw)
    d["bundle"]["x"] = "0.5"
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_rules(json.dumps(d).encode(), key.public_key())
    assert ei.value.reason == "bad_signature"
    d = json.loads(raw)
    d["sig"] = ""
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_rules(json.dumps(d).encode(), key.public_key())
    assert ei.value.reason == "unsigned"
    other = Ed25519PrivateKey.generate()
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_rules(raw, other.public_key())
    assert ei.value.reason == "bad_signature"


_PUB = Ed25519PrivateKey.generate().public_key()
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                        max_size=4),
                     max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), _json.map(lambda v: json.dumps(v).encode())),
       st.sampled_from(["batch", "ack", "member", "snapshot", "session", "rules", "status",
                        "request"]))
def test_any_input_gives_a_value_or_a_typed_error(raw: bytes, which: str) -> None:
    key = _PUB
    parsers = {"batch": lambda r: codec.parse_batch(r, _k({"lane": KEY})),
               "ack": codec.parse_ack, "member": codec.parse_member,
               "snapshot": codec.parse_snapshot, "session": codec.parse_session,
               "rules": lambda r: codec.parse_rules(r, key), "status": codec.parse_status,
               "request": codec.parse_snapshot_request}
    try:
        parsers[which](raw)
    except SyncMessageError as exc:
        assert exc.reason


def test_wire_entries_from_stored_text_are_canonical(tmp_path: Path) -> None:
    """The uplink splices the stored payload text in: it must equal a full re-encoding."""
    from edge.sync.state import SyncState

    s = Store.open(tmp_path / "w.db", "entry-1")
    s.record_entry(plate="粤B\"12\\345", entered_at=NOW, event_id="e-\u00e9",
                   detail={"conf": Decimal("0.97"), "z": [1, "二"], "a": None})
    s.record_lane_event("tail\nline", NOW, detail={"n": 2**40})
    st = SyncState(tmp_path / "w.db", "entry-1")
    try:
        wires = st.wire_page(0, 10)
        assert [w.seq for w in wires] == [1, 2]
        for w, e in zip(wires, s.entries(0, 10), strict=True):
            d = json.loads(w.wire)
            assert codec.canonical(d) == w.wire
            assert codec.encode_entry(e) == w.wire  # the same bytes, times as stored
            assert datetime.fromisoformat(d["at"]) == e.at
        assert st.wire_page(2, 10) == []
    finally:
        st.close()
        s.close()
