"""One stay, one session, across lanes (#12 item 13): a real broker, central, three lanes.

Before: the exit lane wrote its own ``session_opened`` (another session id) when it heard of
an arrival, and the entry lane an ``entry_cancelled`` correction on every normal exit, so
central's history showed each arrival twice and a correction per stay.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select

from central.db.models import LaneEntry
from edge.store import EntryKind, ExitRecord, Store
from edge.sync import codec, topics
from tests.sync.conftest import (
    KEYS,
    SITE,
    T0,
    Broker,
    make_central,
    make_store,
    make_sync,
    roster,
    wait_until,
)

LANE_X = codec.lane_session_key(KEYS["lane-x"], "lane-x")

PLATE = "粤B12345"


def _exit(store: Store, session_id: str, event: str, at: Any, points: int) -> None:
    store.record_exit(ExitRecord(
        exit_event_id=event, session_id=session_id, plate=PLATE, exited_at=at,
        member_id="M1", rules_version="v1", fee=Decimal("10.00"), payable=Decimal("0.00"),
        points_deducted=points, lots_used=(("central", points),), coupons_used=(),
        points_earned=0, earned_expires_at=None, quote={}))


def _kinds(store: Store) -> list[str]:
    return [str(e.kind) for e in store.entries(0, 10_000)]


def _central_rows(central: Any) -> list[tuple[str, str, str | None, str]]:
    with central.tx() as s:
        return [(r.lane_id, r.kind, r.session_id, r.payload) for r in s.execute(
            select(LaneEntry.lane_id, LaneEntry.kind, LaneEntry.session_id,
                   LaneEntry.payload).order_by(LaneEntry.id))]


def _member_entries(central: Any, member_id: str) -> list[str]:
    """The kinds of the lane entries central holds for the member (its stays)."""
    with central.tx() as s:
        return list(s.scalars(select(LaneEntry.kind).where(LaneEntry.member_id == member_id)))


def test_a_stay_across_lanes_keeps_one_session_id_and_writes_no_correction(
        tmp_path: Path, own_broker: Broker) -> None:
    central = make_central(tmp_path, own_broker.port)
    central.start()
    entry, exit_, other = (make_store(tmp_path, n) for n in ("entry-1", "exit-1", "lane-x"))
    syncs = [make_sync(s, own_broker.port) for s in (entry, exit_, other)]
    for s in syncs:
        s.start()
    s_entry, s_exit, _ = syncs
    try:
        assert wait_until(lambda: central.connected.is_set()
                          and all(s.link.subscribed.is_set() for s in syncs), 10)
        central.add_member("M1", balance=100, plates=(PLATE,))
        assert wait_until(lambda: exit_.get_member("M1") is not None
                          and exit_.balance("M1", T0) == 100, 10)
        sids = []
        for i in range(2):  # two normal stays: every exit, not just the first
            t_in = T0 + timedelta(hours=3 * i)
            opened, _ = entry.record_entry(plate=PLATE, entered_at=t_in, event_id=f"ev-{i}",
                                           member_id="M1")
            s_entry.notify()
            assert wait_until(lambda: exit_.find_open_session(PLATE) is not None
                              and other.find_open_session(PLATE) is not None, 10)
            cached = exit_.find_open_session(PLATE)
            assert cached is not None and cached.session_id == opened.session_id
            assert cached.entry_lane == "entry-1" and cached.entered_at == t_in
            _exit(exit_, cached.session_id, f"x-{i}", t_in + timedelta(hours=2), 5)
            s_exit.notify()
            # the entry lane's and the bystander's copies close, with nothing written
            assert wait_until(lambda: entry.find_open_session(PLATE) is None
                              and other.find_open_session(PLATE) is None, 10)
            copy = entry.get_session(opened.session_id)
            assert copy is not None and copy.status == "closed" and copy.exit_lane == "exit-1"
            sids.append(opened.session_id)
        assert wait_until(lambda: all(s.backlog() == 0 for s in syncs), 10)
        # each lane wrote only what it saw happen
        assert Counter(_kinds(entry)) == {"session_opened": 2}
        assert "session_opened" not in _kinds(exit_) and "correction" not in _kinds(exit_)
        assert Counter(_kinds(exit_))["session_closed"] == 2
        assert _kinds(other) == []
        # central: per stay, one arrival and one departure under one id, no correction
        rows = _central_rows(central)
        assert wait_until(lambda: len(_central_rows(central)) == len(entry.entries(0, 100))
                          + len(exit_.entries(0, 100)), 10)
        rows = _central_rows(central)
        assert not [r for r in rows if r[1] == "correction"]
        for sid in sids:
            assert [(lane, kind) for lane, kind, s, _ in rows
                    if s == sid and kind in ("session_opened", "session_closed")] == [
                ("entry-1", "session_opened"), ("exit-1", "session_closed")]
        # the member's history: two arrivals, two departures, nothing cancelled
        kinds = Counter(_member_entries(central, "M1"))
        assert kinds["session_opened"] == 2 and kinds["session_closed"] == 2
        assert kinds["correction"] == 0
        assert central.db.balance("M1") == 90
        for st in (entry, exit_, other):
            assert st.verify().ok
    finally:
        for s in syncs:
            s.stop()
        central.stop()


class _Raw:
    """A plain paho client publishing what a lane that does not send session ids would
    (signed with that lane's key, as every session event must be)."""

    def __init__(self, port: int) -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"old-lane-{id(self)}")
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def pub(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_messages_without_a_session_id_from_an_older_lane_still_work(
        tmp_path: Path, own_broker: Broker) -> None:
    entry, exit_ = make_store(tmp_path, "entry-1"), make_store(tmp_path, "exit-1")
    s_entry, s_exit = make_sync(entry, own_broker.port), make_sync(exit_, own_broker.port)
    s_entry.start()
    s_exit.start()
    raw = _Raw(own_broker.port)
    try:
        assert wait_until(lambda: s_entry.link.subscribed.is_set()
                          and s_exit.link.subscribed.is_set(), 10)
        # an entry lane "lane-x" that does not send the id announces an arrival: the exit
        # lane keeps it the old way (its own row and entry), as before
        raw.pub(topics.lanes(SITE), roster(), retain=True)  # central's, signed
        old = codec.encode_session_opened(codec.SessionOpened(
            "lane-x", "ev-old", "粤B77777", T0, "small", None, None), SITE, LANE_X)
        assert b"session_id" not in old
        raw.pub(topics.sessions_opened(SITE), old)
        assert wait_until(lambda: exit_.find_open_session("粤B77777") is not None, 10)
        # an older exit lane closes a stay of ours without the id: closed, no correction
        opened, _ = entry.record_entry(plate=PLATE, entered_at=T0, event_id="ev-1")
        raw.pub(topics.sessions_closed(SITE), codec.encode_session_closed(codec.SessionClosed(
            "lane-x", "ev-1", PLATE, T0 + timedelta(hours=1), "x-old"), SITE, LANE_X))
        assert wait_until(lambda: entry.find_open_session(PLATE) is None, 10)
        closed = entry.get_session(opened.session_id)
        assert closed is not None and closed.status == "closed" and closed.exit_lane == "lane-x"
        assert "correction" not in _kinds(entry)
    finally:
        raw.close()
        s_entry.stop()
        s_exit.stop()


@pytest.mark.parametrize("sid", ["exit-1-abc", "entry-1", "entry-1-a/b", "x" * 200])
def test_an_arrival_names_only_a_stay_of_its_own_lane(sid: str) -> None:
    key = codec.lane_session_key(KEYS["entry-1"], "entry-1")
    keys = {"entry-1": key.public_key()}
    msg = json.loads(codec.encode_session_opened(codec.SessionOpened(
        "entry-1", "ev-1", PLATE, T0, "small", None, None, "entry-1-ok"), SITE, key))
    assert codec.parse_session(json.dumps(msg).encode(), SITE,
                               keys.get).session_id == "entry-1-ok"
    del msg["sig"]
    msg["session_id"] = sid
    forged = codec.canonical(codec.sign_ed25519(msg, key))  # validly signed, bad id
    with pytest.raises(codec.SyncMessageError) as err:
        codec.parse_session(forged, SITE, keys.get)
    assert err.value.reason == "schema"


def test_a_missed_exit_is_still_a_correction_once_by_the_lane_that_recorded_the_stay(
        tmp_path: Path) -> None:
    """Corrections stay for real ones: the entry lane that recorded the first stay documents
    its unseen end when the next arrival comes from another lane; a copy closes silently."""
    entry, exit_ = make_store(tmp_path, "entry-1"), make_store(tmp_path, "exit-1")
    first, _ = entry.record_entry(plate=PLATE, entered_at=T0, event_id="ev-1")
    exit_.cache_session(session_id=first.session_id, plate=PLATE, entered_at=T0,
                        event_id="ev-1", entry_lane="entry-1")
    later = T0 + timedelta(days=1)
    for store in (entry, exit_):  # lane-x saw the car come in again
        s, new = store.cache_session(session_id="lane-x-2", plate=PLATE, entered_at=later,
                                     event_id="ev-2", entry_lane="lane-x")
        assert new and s.status == "open"
        assert store.cache_session(session_id="lane-x-2", plate=PLATE, entered_at=later,
                                   event_id="ev-2", entry_lane="lane-x")[1] is False
    fixes = [e for e in entry.entries(0, 100) if e.kind == EntryKind.CORRECTION]
    assert len(fixes) == 1 and fixes[0].payload["action"] == "superseded"
    assert fixes[0].session_id == first.session_id
    assert exit_.entries(0, 100) == []
    # an arrival that comes in late (older than the stay held) does not close the newer one
    s, _ = exit_.cache_session(session_id="lane-x-0", plate=PLATE, entered_at=T0 - timedelta(
        hours=1), event_id="ev-0", entry_lane="lane-x")
    assert s.status == "closed"
    assert exit_.find_open_session(PLATE).session_id == "lane-x-2"  # type: ignore[union-attr]
