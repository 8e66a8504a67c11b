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
        codec.parse_ack(b"\xff\xfe", KEY)
    assert ei.value.reason == "not_json"


def test_canonical_money_is_a_string_and_floats_nan_refused() -> None:
    assert codec.canonical({"b": Decimal("12.50"), "a": 1}) == b'{"a":1,"b":"12.50"}'
    with pytest.raises(ValueError):
        codec.canonical({"x": float("nan")})


def _remac(d: dict[str, Any], key: bytes = KEY) -> bytes:
    d.pop("hmac", None)
    d["hmac"] = codec.mac(key, codec.canonical(d))
    return codec.canonical(d)


def test_ack_schema_and_mac() -> None:
    a = codec.parse_ack(codec.encode_ack("entry-1", 10, [(12, 15)], "b", KEY), KEY)
    assert (a.upto, a.ranges) == (10, ((12, 15),))
    for bad in ({"ranges": [[5, 6]]}, {"ranges": [[13, 12]]}, {"upto": -1}, {"upto": True},
                {"upto": 2**63}, {"lane": "a/b"}):
        d = json.loads(codec.encode_ack("entry-1", 10, [(12, 15)], None, KEY))
        d.update(bad)
        with pytest.raises(SyncMessageError) as ei:
            codec.parse_ack(_remac(d), KEY)
        assert ei.value.reason == "schema"


def test_forged_ack_is_refused_by_its_mac() -> None:
    """#12 item 5: an ack anyone could publish (upto = 10**6) is not believed."""
    raw = codec.canonical({"v": 1, "type": "ack", "lane": "entry-1", "upto": 10**6,
                           "ranges": [], "batch_id": None})
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_ack(raw, KEY)
    assert ei.value.reason == "unsigned"
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_ack(_remac(json.loads(raw), b"another-lane-key"), KEY)
    assert ei.value.reason == "bad_hmac"


CKEY = Ed25519PrivateKey.generate()


def _resign(d: dict[str, Any], key: Ed25519PrivateKey = CKEY) -> bytes:
    d.pop("sig", None)
    return codec.canonical(codec.sign_ed25519(d, key))


def test_member_round_trip_allows_negative_balance() -> None:
    m = codec.MemberState("M1", 3, 2, "member", "Li", False, True, True, -40, ("粤B1",), 100,
                          {"entry-1": 5})
    raw = codec.encode_member(m, "mall", CKEY)
    assert codec.parse_member(raw, "mall", CKEY.public_key()) == m
    d = json.loads(raw)
    d["balance"] = "12"
    with pytest.raises(SyncMessageError, match="balance"):
        codec.parse_member(_resign(d), "mall", CKEY.public_key())


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("balance", 10**30, "schema"), ("balance", -(10**13), "schema"),
    ("version", 2**63 - 1, "schema"), ("allowance", 10**12, "schema"),
    ("plates", ["X" * 300], "schema"), ("member_id", "M/1", "schema"),
    ("applied", {"entry-1": 2**63}, "schema"), ("site", "other-mall", "wrong_site"),
])
def test_member_out_of_range_is_refused_even_when_signed(field: str, value: Any,
                                                         reason: str) -> None:
    m = codec.MemberState("M1", 3, 2, "member", None, False, False, True, 5, (), 100, {})
    d = json.loads(codec.encode_member(m, "mall", CKEY))
    d[field] = value
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_member(_resign(d), "mall", CKEY.public_key())
    assert ei.value.reason == reason


def test_unsigned_or_foreign_signed_member_is_refused() -> None:
    m = codec.MemberState("M1", 3, 2, "member", None, False, False, True, 5, (), 100, {})
    d = json.loads(codec.encode_member(m, "mall", CKEY))
    d["balance"] = 10**6
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_member(codec.canonical(d), "mall", CKEY.public_key())
    assert ei.value.reason == "bad_signature"
    d.pop("sig")
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_member(codec.canonical(d), "mall", CKEY.public_key())
    assert ei.value.reason == "unsigned"
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_member(_resign(d, Ed25519PrivateKey.generate()), "mall",
                           CKEY.public_key())
    assert ei.value.reason == "bad_signature"


def test_rules_signature() -> None:
    key = Ed25519PrivateKey.generate()
    bundle = {"version": "v2", "x": "1.5"}
    raw = codec.sign_rules(bundle, 4, key, "mall")
    assert codec.parse_rules(raw, key.public_key(), "mall") == codec.SignedRules(4, bundle)
    d = json.loads(raw)
    d["bundle"]["x"] = "0.5"
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_rules(json.dumps(d).encode(), key.public_key(), "mall")
    assert ei.value.reason == "bad_signature"
    d = json.loads(raw)
    d["sig"] = ""
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_rules(json.dumps(d).encode(), key.public_key(), "mall")
    assert ei.value.reason == "unsigned"
    other = Ed25519PrivateKey.generate()
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_rules(raw, other.public_key(), "mall")
    assert ei.value.reason == "bad_signature"


def test_rules_signed_for_another_site_are_refused() -> None:
    """#12 item 5: a bundle central signed for another site is not this site's."""
    key = Ed25519PrivateKey.generate()
    raw = codec.sign_rules({"version": "v2"}, 4, key, "other-mall")
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_rules(raw, key.public_key(), "mall")
    assert ei.value.reason == "wrong_site"
    d = json.loads(raw)
    d["site"] = "mall"  # relabelled: the signature covers the site
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_rules(codec.canonical(d), key.public_key(), "mall")
    assert ei.value.reason == "bad_signature"


def test_session_event_signed_by_its_origin_lane() -> None:
    k1 = codec.lane_session_key(b"k-entry-1", "entry-1")
    keys = {"entry-1": k1.public_key()}
    s = codec.SessionOpened("entry-1", "ev-1", "粤B12345", NOW, "small", None, None)
    assert codec.parse_session(codec.encode_session_opened(s, "mall", k1), "mall",
                               keys.get) == s
    # signed by another lane's key, or by a lane not on the roster
    k2 = codec.lane_session_key(b"k-exit-1", "exit-1")
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_session(codec.encode_session_opened(s, "mall", k2), "mall", keys.get)
    assert ei.value.reason == "bad_signature"
    x = codec.SessionOpened("exit-1", "ev-1", "粤B12345", NOW, "small", None, None)
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_session(codec.encode_session_opened(x, "mall", k2), "mall", keys.get)
    assert ei.value.reason == "unknown_lane"
    long_plate = codec.SessionOpened("entry-1", "ev-1", "粤" * 300, NOW, "small", None, None)
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_session(codec.encode_session_opened(long_plate, "mall", k1), "mall",
                            keys.get)
    assert ei.value.reason == "schema"


def test_lane_roster_is_signed_by_central() -> None:
    pk = codec.public_hex_of(codec.lane_session_key(b"k", "entry-1"))
    raw = codec.encode_lanes("mall", 7, {"entry-1": pk}, CKEY)
    assert codec.parse_lanes(raw, "mall", CKEY.public_key()) == codec.LaneRoster(
        7, {"entry-1": pk})
    d = json.loads(raw)
    d["lanes"]["rogue"] = pk
    with pytest.raises(SyncMessageError) as ei:
        codec.parse_lanes(codec.canonical(d), "mall", CKEY.public_key())
    assert ei.value.reason == "bad_signature"


def test_batch_entry_beyond_field_limits_is_flagged_not_refused(tmp_path: Path) -> None:
    """#12 item 2: a 300-character plate used to refuse the whole batch (for ever)."""
    s = Store.open(tmp_path / "l.db", "entry-1")
    s.record_entry(plate="粤B00001", entered_at=NOW, event_id="e1")
    s.record_entry(plate="X" * 300, entered_at=NOW, event_id="e2")
    s.record_entry(plate="粤B00003", entered_at=NOW, event_id="e3")
    es = s.entries(0, 10)
    s.close()
    raw = codec.encode_batch("mall", "entry-1", [codec.encode_entry(e) for e in es], 1,
                             es[-1].seq, KEY, NOW)
    b = codec.parse_batch(raw, _k({"entry-1": KEY}))
    assert len(b.entries) == len(es)
    assert [seq for seq, _why in b.flagged] == [e.seq for e in es if e.plate == "X" * 300]
    assert "plate" in b.flagged[0][1]


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
               "ack": lambda r: codec.parse_ack(r, KEY),
               "member": lambda r: codec.parse_member(r, "mall", key),
               "snapshot": lambda r: codec.parse_snapshot(r, "mall", key),
               "session": lambda r: codec.parse_session(r, "mall", lambda _lane: key),
               "rules": lambda r: codec.parse_rules(r, key, "mall"),
               "status": codec.parse_status, "request": codec.parse_snapshot_request}
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


@pytest.mark.parametrize("change", [{"kind": []}, {"kind": "teleport"}, {"plate": {"a": 1}},
                                    {"member_id": "M" * 65}, {"payload": [1]}, {"at": 5}])
def test_any_entry_content_is_flagged_never_an_exception(tmp_path: Path,
                                                         change: dict[str, Any]) -> None:
    d = json.loads(_batch(tmp_path, 2))
    d["entries"][1].update(change)
    d.pop("hmac")
    d["hmac"] = codec.mac(KEY, codec.canonical(d))
    b = codec.parse_batch(codec.canonical(d), _k({"entry-1": KEY}))
    assert [seq for seq, _why in b.flagged] == [2]
