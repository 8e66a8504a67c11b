"""A full snapshot answer's roster and rules are signed once per change and cached
(central/ingest/answer.py): a second lane's answer is the same bytes without the publish
lock or a serial write, and the cache is dropped when the bundle's campaigns, the bundle
file, or another worker's recorded serial move. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import event

from central.app import Central
from central.ingest import state
from central.ingest.worker import IngestWorker
from central.services import campaign_publish as cp
from central.services import campaigns
from edge.sync import codec, topics
from tests.central.helpers import at
from tests.central.test_ingest_worker_cost import LANES, site

__all__ = ["site"]  # the fixture

NIGHT = {"name": "night_x2", "applies_to": "purchase", "time_window": ["18:00", "22:00"],
         "multiplier": "2"}


class Sent:
    """What the worker hands its (real, unconnected) MQTT client, per topic."""

    def __init__(self, w: IngestWorker) -> None:
        self.msgs: list[tuple[str, bytes]] = []
        real = w._client.publish

        def publish(topic: str, payload: bytes, *a: Any, **k: Any) -> Any:
            self.msgs.append((topic, payload))
            return real(topic, payload, *a, **k)

        w._client.publish = publish  # type: ignore[method-assign]

    def answer(self, w: IngestWorker, lane: str) -> tuple[codec.LaneRoster, codec.SignedRules,
                                                           bytes, bytes]:
        """Ask a full snapshot for ``lane``; its roster and rules as the lane verifies them."""
        self.msgs.clear()
        w._snapshot(lane, None)
        mine = [p for t, p in self.msgs if t == topics.snapshot(w.site, lane)]
        assert len(self.msgs) == len(mine) >= 3, self.msgs
        pub = w.signing_key.public_key()
        return (codec.parse_lanes(mine[0], w.site, pub), codec.parse_rules(mine[1], pub, w.site),
                mine[0], mine[1])


class Writes:
    """Statements that lock or record a serial."""

    def __init__(self, c: Central) -> None:
        self.seen: list[str] = []
        event.listen(c.engine, "before_cursor_execute", self._on)

    def _on(self, _conn: Any, _cur: Any, sql: str, *_a: Any) -> None:
        low = sql.lower()
        if "pg_advisory_xact_lock" in low or "for update" in low or low.startswith("insert"):
            self.seen.append(sql)


def test_the_common_answer_is_signed_once_and_follows_every_change(
        site: Central, tmp_path: Path) -> None:
    w = site.ingest_worker(client_id="answer-test")
    path = tmp_path / "rules.toml"  # a copy of the configured bundle, edited below
    path.write_bytes(Path(site.cfg.rules.bundle).read_bytes())
    w.answers.path = path
    sent = Sent(w)
    roster, rules, raw_roster, raw_rules = sent.answer(w, LANES[0])
    assert (w.answers.hits, w.answers.misses) == (0, 1)
    assert sorted(roster.keys) == sorted(LANES)
    _bundle, serial, roster_serial = w._site_rules()  # what the locked way says now
    assert (rules.serial, roster.serial) == (serial, roster_serial)

    # every other lane: the same bytes, no lock, no serial written
    writes = Writes(site)
    for lane in LANES[1:]:
        _r2, _s2, raw2, rules2 = sent.answer(w, lane)
        assert (raw2, rules2) == (raw_roster, raw_rules)
    assert writes.seen == []
    assert (w.answers.hits, w.answers.misses) == (len(LANES) - 1, 1)

    # a campaign published (the web, another process): the next answer carries it
    base = campaigns.bundle_data(path)
    with site.tx() as s:
        p = cp.publish(s, site=w.site, base=base, key=w.signing_key, campaign=NIGHT,
                       budget=None, actor="staff:mkt", now=at("2026-03-03 10:00"))
    _r, rules3, _raw, raw_rules3 = sent.answer(w, LANES[0])
    assert rules3.serial == p.serial > serial
    assert [c["name"] for c in rules3.bundle["campaigns"]][-1:] == ["night_x2"]
    assert raw_rules3 != raw_rules
    _r, _rules4, _raw, raw_rules4 = sent.answer(w, LANES[1])
    assert raw_rules4 == raw_rules3  # cached again

    # unpublished: back to the bundle without it, under a new serial
    with site.tx() as s:
        u = cp.unpublish(s, site=w.site, base=base, key=w.signing_key, name="night_x2",
                         actor="staff:mkt", now=at("2026-03-03 11:00"))
    _r, rules5, _raw, _ = sent.answer(w, LANES[2])
    assert rules5.serial == u.serial > rules3.serial
    assert "night_x2" not in [c["name"] for c in rules5.bundle.get("campaigns", [])]

    # the configured bundle file edited: rebuilt and recorded under the next serial
    text = path.read_text(encoding="utf-8")
    assert 'version = "' in text
    path.write_text(text.replace('version = "', 'version = "edited-', 1), encoding="utf-8")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    _r, rules6, _raw, _ = sent.answer(w, LANES[3])
    assert rules6.serial > rules5.serial
    assert str(rules6.bundle["version"]).startswith("edited-")


def test_another_workers_roster_serial_drops_the_cache(site: Central) -> None:
    """A worker that recorded another roster (a rotated lane key) moves the newest serial:
    this worker's cached roster is no longer what the locked way answers."""
    a = site.ingest_worker(client_id="answer-a")
    sent = Sent(a)
    roster1, _rules, raw1, _ = sent.answer(a, LANES[0])
    b = site.ingest_worker(client_id="answer-b")
    b.lane_keys[LANES[0]] = b"rotated-key"
    with site.tx() as s:
        rotated = state.roster_serial(s, b.site, b.lane_keys, site.clock())
    assert rotated > roster1.serial
    roster2, _rules, raw2, _ = sent.answer(a, LANES[1])
    assert a.answers.misses == 2
    # a's own roster again, recorded as the newest (as the locked way always did)
    assert roster2.serial > rotated and roster2.keys == roster1.keys and raw2 != raw1
