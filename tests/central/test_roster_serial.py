"""The lane roster's serial comes from the database: every worker answers a lane's snapshot
request with the roster the leader publishes, under the same serial. Before, each worker
took the wall clock, and a non-leader's reply a second later made the lanes refuse the
leader's retained copy as "older"."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from central.app import Central
from central.config import parse_config
from central.ingest import state
from tests.central.helpers import at
from tests.central.test_ingest_mqtt import site_config


def test_same_roster_same_serial_a_changed_one_the_next(tmp_path: Path, db_url: str) -> None:
    d, _pub = site_config(tmp_path, db_url, 1883)  # never connects
    c = Central.from_config(parse_config(d))
    keys = c.ingest_worker(client_id="w-keys").lane_keys
    now = at("2026-03-01 10:00")
    with c.tx() as s:
        first = state.roster_serial(s, "mall-1", keys, now)
    with c.tx() as s:  # a second later, another worker: the same roster, the same serial
        assert state.roster_serial(s, "mall-1", keys, now + timedelta(seconds=1)) == first
    assert first >= int(now.timestamp())  # above any wall-clock serial a lane holds
    more = {**keys, "exit-9": b"k" * 32}
    with c.tx() as s:
        grown = state.roster_serial(s, "mall-1", more, now)  # the clock did not move on
    assert grown == first + 1
    with c.tx() as s:  # back to the old roster: newer than the grown one, never a lower serial
        assert state.roster_serial(s, "mall-1", keys, now) == grown + 1


def test_two_workers_send_the_roster_under_one_serial(tmp_path: Path, db_url: str) -> None:
    d, _pub = site_config(tmp_path, db_url, 1883)
    c = Central.from_config(parse_config(d))
    a = c.ingest_worker(client_id="w-a")
    b = c.ingest_worker(client_id="w-b")
    _, rules_a, roster_a = a._site_rules()
    _, rules_b, roster_b = b._site_rules()
    assert (rules_a, roster_a) == (rules_b, roster_b)
