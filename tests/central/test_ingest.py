"""Ingest's database side without MQTT, on SQLite and PostgreSQL: exactly once, duplicates,
seq conflicts, flagged entries, points through the lots, and the property that any
sequence of lane entries leaves balance = sum of entries = sum of lots."""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from central.db.models import Coupon, LaneEntry, LaneFlagged, PointsLot
from central.ingest.commit import Committer, export_lane
from central.jobs import run_expiry
from central.services import members, points
from edge.store.codec import ts
from edge.sync.codec import Batch, SyncMessageError
from tests.central.helpers import at

T0 = datetime(2026, 3, 3, 2, 0, tzinfo=UTC)


def entry(lane: str, seq: int, kind: str = "lane_event", member: str | None = None,
          payload: dict[str, Any] | None = None, when: datetime = T0,
          salt: str = "") -> dict[str, Any]:
    h = hashlib.sha256(f"{lane}:{seq}:{kind}:{payload}:{salt}".encode()).hexdigest()
    return {"entry_id": f"{lane}:{seq}", "lane_id": lane, "seq": seq, "kind": kind,
            "at": ts(when), "recorded": ts(when), "session_id": None, "member_id": member,
            "plate": None, "rules_version": "central-test-1",
            "payload": payload if payload is not None else {"event": "x"},
            "prev_hash": "0" * 64, "hash": h}


def batch(lane: str, es: list[dict[str, Any]], flagged: tuple[tuple[int, str], ...] = ()
          ) -> Batch:
    return Batch("mall-1", lane, f"{lane}:{es[0]['seq']}-{es[-1]['seq']}", es[0]["seq"],
                 es[-1]["seq"], tuple(es), flagged)


def committer(central: Any) -> Committer:
    return Committer(central.engine, central.sessions, central.rules, central.clock)


def count(central: Any) -> int:
    with central.tx() as s:
        return int(s.scalar(select(func.count()).select_from(LaneEntry)) or 0)


def test_group_commit_is_exactly_once_and_acks_duplicates(central: Any) -> None:
    c = committer(central)
    b1 = batch("entry-1", [entry("entry-1", i) for i in range(1, 11)])
    b2 = batch("exit-1", [entry("exit-1", i) for i in range(1, 6)])
    out = c.commit([b1, b2])
    assert out.path == "fresh"
    assert [r.inserted for r in out.results] == [10, 5]  # type: ignore[union-attr]
    # the same batch again, overlapping with a new one: duplicates skipped, new ones in
    b3 = batch("entry-1", [entry("entry-1", i) for i in range(6, 16)])
    out = c.commit([b1, b3])
    assert out.path == "exact"
    assert [(r.inserted, r.duplicates) for r in out.results] == [  # type: ignore[union-attr]
        (0, 10), (5, 5)]
    assert count(central) == 20
    with central.tx() as s:
        exported = export_lane(s, "entry-1")
    assert [e["seq"] for e in exported] == list(range(1, 16))
    assert exported[0] == b1.entries[0]  # exactly as the lane hashed it


def test_a_large_group_goes_in_whole_field_for_field_in_one_statement(central: Any) -> None:
    """A storm-sized group (5,000 rows over 4 lanes, past the 4,000-row chunk of the old
    VALUES form) is one INSERT on PostgreSQL (one executemany on SQLite), every field back
    as sent (NULLs, a plate in CJK, each column in its own place), and sent again over a
    new batch it is exactly once: duplicates skipped, the new rows in."""
    from sqlalchemy import event

    inserts: list[str] = []

    def seen(_c: Any, _cur: Any, sql: str, *_a: Any) -> None:
        if sql.startswith("INSERT INTO lane_entries"):
            inserts.append(sql)

    def rich(lane: str, seq: int) -> dict[str, Any]:
        e = entry(lane, seq, when=T0 + timedelta(seconds=seq))
        if seq % 3 == 0:
            e.update(session_id=f"s-{lane}-{seq}", plate=f"粤B{seq:05d}")
        if seq % 5 == 0:
            e["rules_version"] = None
        if seq % 7 == 0:  # what an array's text form must quote: the binary form needs not
            e.update(member_id="NULL", session_id='a "q" \\ {x,y}',
                     payload={"note": 'say "hi", {1,2} \\ NULL', "n": seq})
        return e

    lanes = [f"lane-{i}" for i in range(4)]
    bs = [batch(lane, [rich(lane, s) for s in range(1, 1251)]) for lane in lanes]
    event.listen(central.engine, "before_cursor_execute", seen)
    try:
        out = committer(central).commit(list(reversed(bs)))
    finally:
        event.remove(central.engine, "before_cursor_execute", seen)
    assert out.path == "fresh"
    assert [r.inserted for r in out.results] == [1250] * 4  # type: ignore[union-attr]
    assert len(inserts) == 1
    if central.engine.dialect.name == "postgresql":  # the arrays in binary (docs/scale.md)
        assert inserts[0].count("%b::") == 13, inserts[0]
    assert count(central) == 5000
    with central.tx() as s:
        for b in bs:
            assert export_lane(s, b.lane) == list(b.entries)
        got = s.scalar(select(LaneEntry.received_at).limit(1))
    assert got == central.now  # the group's one stamp, an aware time
    again = [batch("lane-2", [rich("lane-2", s) for s in range(1201, 1301)])]
    out = committer(central).commit(again)
    assert out.path == "exact"
    assert [(r.inserted, r.duplicates) for r in out.results] == [  # type: ignore[union-attr]
        (50, 50)]
    assert count(central) == 5050


def test_roster_keys_are_derived_once_and_follow_a_rotated_key() -> None:
    """The roster's session public keys are remembered per (lane key, lane): the same as
    derived afresh, and a rotated lane key gives the new key's, not the remembered one."""
    from central.ingest.state import session_public_keys
    from edge.sync.codec import lane_session_key, public_hex_of

    def derived(k: bytes, lane: str) -> str:
        return public_hex_of(lane_session_key(k, lane))

    keys = {"exit-1": b"k-exit", "entry-1": b"k-entry"}
    first = session_public_keys(keys)
    assert list(first) == ["entry-1", "exit-1"]
    assert first == {lane: derived(k, lane) for lane, k in keys.items()}
    assert session_public_keys(keys) == first
    rotated = session_public_keys({**keys, "exit-1": b"k-exit-2"})
    assert rotated["exit-1"] == derived(b"k-exit-2", "exit-1") != first["exit-1"]
    assert rotated["entry-1"] == first["entry-1"]
    # the same key under another lane's name is another key (the label is the lane)
    assert session_public_keys({"entry-2": b"k-entry"})["entry-2"] != first["entry-1"]


def test_export_lane_cli_feeds_ledger_recover(central: Any, cfg: Any, tmp_path: Any) -> None:
    """`parkedge-central export-lane` writes what `parkedge ledger recover` reads."""
    from typer.testing import CliRunner

    from central.cli import app
    from edge.store.recover import read_central_export
    from tests.central.helpers import RULES

    committer(central).commit([batch("exit-1", [entry("exit-1", i) for i in range(1, 4)])])
    conf = tmp_path / "c.toml"
    conf.write_text(f'[site]\nsite_id = "mall-1"\ntimezone = "Asia/Shanghai"\n'
                    f'[database]\nurl = "{cfg.database.url}"\n'
                    f'[rules]\nbundle = "{RULES}"\n', encoding="utf-8")
    r = CliRunner().invoke(app, ["export-lane", "exit-1", "-c", str(conf)])
    assert r.exit_code == 0, r.output
    rows = read_central_export(r.output.splitlines(), "export")
    assert [row["seq"] for row in rows] == [1, 2, 3]


def test_seq_conflict_is_refused_and_the_rest_of_the_group_commits(central: Any) -> None:
    c = committer(central)
    c.commit([batch("entry-1", [entry("entry-1", i) for i in range(1, 4)])])
    restored = batch("entry-1", [entry("entry-1", i, salt="other file") for i in range(1, 4)])
    fine = batch("exit-1", [entry("exit-1", 1)])
    out = c.commit([restored, fine])
    assert isinstance(out.results[0], SyncMessageError)
    assert out.results[0].reason == "seq_conflict"
    assert out.results[1].inserted == 1  # type: ignore[union-attr]
    assert count(central) == 4


def test_flagged_entry_is_recorded_applied_and_listed(central: Any) -> None:
    now = at("2026-03-01 10:00")
    with central.tx() as s:
        members.enrol(s, central.rules, member_id="M1", phone=None, name="", tier="member",
                      now=now)
    bad = entry("entry-1", 1, "points_earned", "M1", {"points": 7})
    bad["plate"] = "X" * 300
    out = committer(central).commit([batch("entry-1", [bad], ((1, "plate: too long"),))])
    assert out.results[0].flagged == 1  # type: ignore[union-attr]
    with central.tx() as s:
        row = s.scalar(select(LaneEntry))
        assert row is not None and row.plate is None
        fl = s.get(LaneFlagged, "entry-1:1")
        assert fl is not None and "X" * 300 in fl.raw
        assert points.ledger_sums(s, "M1") == (7, 7, 7)


def test_points_move_through_lots_and_coupons_are_used(central: Any) -> None:
    now = at("2026-03-01 10:00")
    with central.tx() as s:
        m = members.enrol(s, central.rules, member_id="M1", phone=None, name="",
                          tier="member", now=now)
        points.accrue(s, central.rules, m, 100, now, lot_id="old", source="test")
        s.add(Coupon(coupon_id="cp-1", member_id="M1", kind="hours", value="2",
                     valid_until=now + timedelta(days=90), source="redemption",
                     issued_at=now))
    es = [entry("exit-1", 1, "points_earned", "M1", {"points": 30}),
          entry("exit-1", 2, "points_deducted", "M1", {"points": 110}),
          entry("exit-1", 3, "coupon_used", "M1", {"coupon_id": "cp-1"}),
          entry("exit-1", 4, "points_deducted", "M1", {"points": 50}),  # overdrawn by 30
          entry("exit-1", 5, "correction", "M1", {"action": "points_returned",
                                                   "points": 10})]
    out = committer(central).commit([batch("exit-1", es)])
    assert out.results[0].members_changed == ("M1",)  # type: ignore[union-attr]
    with central.tx() as s:
        assert points.ledger_sums(s, "M1") == (-20, -20, -20)
        assert points.spendable(s, "M1", T0) == 0  # the returned 10 paid the debt
        c = s.get(Coupon, "cp-1")
        assert c is not None and c.used_at is not None
        debt = s.scalar(select(PointsLot).where(PointsLot.lot_id == "debt:M1"))
        assert debt is not None and debt.remaining == -20


_run = itertools.count()
lane_op = st.one_of(
    st.tuples(st.sampled_from(["points_earned", "points_deducted"]), st.integers(0, 1),
              st.integers(1, 120)),
    st.tuples(st.sampled_from(["points_returned", "earned_revoked"]), st.integers(0, 1),
              st.integers(1, 60)),
    st.tuples(st.just("replay"), st.integers(0, 1), st.integers(0, 5)),
    st.tuples(st.just("expire"), st.integers(0, 1), st.integers(1, 400)),  # days later
)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(lane_op, min_size=1, max_size=20))
def test_lane_entries_keep_balance_equal_to_entries_and_lots(
        central: Any, ops: list[tuple[Any, ...]]) -> None:
    """Any sequence of lane entries (earned, deducted beyond the balance, returned, revoked,
    batches replayed) with expiry runs between: balance = entries = lots for every member,
    only the debt lot below zero, and each entry committed once."""
    run = next(_run)
    ids = [f"i{run}m{i}" for i in range(2)]
    lane = f"l{run}"
    now = at("2026-01-05 10:00")
    with central.tx() as s:
        for mid in ids:
            members.enrol(s, central.rules, member_id=mid, phone=None, name="",
                          tier="member", now=now)
    c = committer(central)
    sent: list[Batch] = []
    seq = 0
    for kind, who, n in ops:
        now += timedelta(hours=5)
        if kind == "replay":
            if sent:
                c.commit([sent[min(n, len(sent) - 1)]])
            continue
        if kind == "expire":
            now += timedelta(days=n)
            run_expiry(central, now)
            continue
        seq += 1
        if kind in ("points_returned", "earned_revoked"):
            e = entry(lane, seq, "correction", ids[who], {"action": kind, "points": n}, now)
        else:
            e = entry(lane, seq, kind, ids[who], {"points": n}, now)
        sent.append(batch(lane, [e]))
        out = c.commit([sent[-1]])
        assert not isinstance(out.results[0], SyncMessageError)
    with central.tx() as s:
        assert s.scalar(select(func.count()).select_from(LaneEntry)
                        .where(LaneEntry.lane_id == lane)) == seq
        for mid in ids:
            bal, ent, lots = points.ledger_sums(s, mid)
            assert bal == ent == lots, (mid, ops)
            assert s.scalar(select(func.count()).select_from(PointsLot).where(
                PointsLot.member_id == mid, PointsLot.remaining < 0,
                PointsLot.lot_id != f"debt:{mid}")) == 0
            if bal < 0:
                assert points.spendable(s, mid, now) == 0


_HOLDER = r"""
import sys, time, json
from central.app import Central
from central.config import parse_config
from central.ingest import commit as cm
from tests.central.helpers import config_dict
from tests.central.test_ingest import batch, entry

c = Central.from_config(parse_config(config_dict(sys.argv[1])))
orig = cm.Committer._apply
def hold(self, s, new, now):
    out = orig(self, s, new, now)
    s.flush()
    print("inserted", flush=True)  # rows inserted and points moved, not committed
    time.sleep(600)
    return out
cm.Committer._apply = hold
es = [entry("exit-1", i, "points_deducted", "M1", {"points": 10}) for i in range(1, 6)]
cm.Committer(c.engine, c.sessions, c.rules, c.clock).commit([batch("exit-1", es)])
"""


def test_worker_killed_mid_commit_loses_nothing(central: Any, db_url: str) -> None:
    """A worker SIGKILLed inside its transaction (rows inserted, points moved, not yet
    committed) leaves nothing behind; the batch sent again (another worker, waiting on its
    locks meanwhile) is committed whole, once."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    from pathlib import Path

    now = at("2026-03-01 10:00")
    with central.tx() as s:
        m = members.enrol(s, central.rules, member_id="M1", phone=None, name="",
                          tier="member", now=now)
        points.accrue(s, central.rules, m, 100, now, lot_id="seed", source="test")
    repo = Path(__file__).resolve().parents[2]
    p = subprocess.Popen([sys.executable, "-c", _HOLDER, db_url], cwd=repo,
                         stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(repo)})
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == b"inserted"
        es = [entry("exit-1", i, "points_deducted", "M1", {"points": 10}) for i in range(1, 6)]
        results: list[Any] = []
        t = threading.Thread(target=lambda: results.append(
            committer(central).commit([batch("exit-1", es)])))
        t.start()  # blocks on the dying worker's locks (PostgreSQL) or the write lock (SQLite)
        t.join(0.5)
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        t.join(60)
        assert results and results[0].results[0].inserted == 5
        with central.tx() as s:
            assert points.ledger_sums(s, "M1") == (50, 50, 50)
            assert s.scalar(select(func.count()).select_from(LaneEntry)) == 5
    finally:
        if p.poll() is None:
            p.kill()


def test_ingest_config_errors_name_their_key() -> None:
    import pytest

    from central.config import ConfigError, parse_config
    from tests.central.helpers import config_dict

    with pytest.raises(ConfigError) as e:
        parse_config(config_dict(ingest={"enabled": True, "lanes": [
            {"id": "exit-1", "kind": "exit", "key": "inline-secret"}]}))
    paths = {p for p, _r in e.value.errors}
    assert "ingest.lanes[0].key" in paths
    with pytest.raises(ConfigError) as e:
        parse_config(config_dict(ingest={"enabled": True, "lanes": [
            {"id": "exit-1", "kind": "exit"}]}))
    assert any("signing_key" in r or "keys_dir" in r for _p, r in e.value.errors)
    with pytest.raises(ConfigError) as e:
        parse_config(config_dict(mqtt={"broker": "nohost"}))
    assert [p for p, _r in e.value.errors] == ["mqtt.broker"]


def test_ingest_imports_no_lane_and_no_simulator() -> None:
    """central.ingest may use edge.sync's codec, never the lane, its drivers or the
    simulator (the import arrows of the style guide)."""
    import subprocess
    import sys

    code = ("import sys, central.ingest.worker, central.ingest.commit; "
            "bad = [m for m in sys.modules if m == 'edge.lane' or m.startswith("
            "('edge.lane.', 'edge.barrier', 'edge.lpr', 'parkedge_sim'))]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_check_config_names_missing_or_open_key_files(tmp_path: Any) -> None:
    import os

    from central.config import check, parse_config
    from tests.central.helpers import config_dict

    (tmp_path / "keys").mkdir()
    open_key = tmp_path / "keys" / "exit-1.key"
    open_key.write_text("k")
    os.chmod(open_key, 0o644)
    cfg = parse_config(config_dict(ingest={
        "signing_key": {"file": str(tmp_path / "none.key")}, "keys_dir": str(tmp_path / "keys"),
        "lanes": [{"id": "entry-1", "kind": "entry"}, {"id": "exit-1", "kind": "exit"}]}))
    errs = dict(check(cfg))
    assert "does not exist" in errs["ingest.signing_key"]
    assert "does not exist" in errs["ingest.lanes[0].key"]
    assert "0600" in errs["ingest.lanes[1].key"]


def test_member_state_is_one_every_lane_accepts(central: Any) -> None:
    """A name central took (a newline pasted into it) must not make the lanes refuse the
    member's whole state: it goes out printable, signed, and parses as the lanes parse."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from central.ingest import state
    from edge.sync import codec

    with central.tx() as s:
        members.enrol(s, central.rules, member_id="M1", phone=None, name="Li\nNa",
                      tier="member", now=at("2026-03-01 10:00"))
    key = Ed25519PrivateKey.generate()
    with central.tx() as s:
        m = state.member_state(s, "M1", {"exit-1": 4}, 100)
    assert m is not None
    got = codec.parse_member(codec.encode_member(m, "mall-1", key), "mall-1", key.public_key())
    assert (got.name, got.applied, got.balance, got.flagged) == ("LiNa", {"exit-1": 4}, 0,
                                                                 False)
