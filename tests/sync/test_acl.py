"""The broker ACL example really confines a lane to its own topics."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.sync import codec, topics
from edge.sync.link import LinkSettings
from edge.sync.service import LaneSync
from tests.sync.conftest import (
    KEYS,
    SITE,
    Broker,
    make_central,
    make_store,
    wait_until,
    write_events,
)

ACL = Path(__file__).resolve().parents[2] / "config/mosquitto/acl.example"


def test_lane_may_publish_only_under_its_own_topics(tmp_path: Path) -> None:
    pw = tmp_path / "passwd"
    for i, user in enumerate(("central", "entry-1")):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(pw),
                        user, f"pw-{user}"], check=True, capture_output=True)
    broker = Broker(tmp_path)
    broker.conf.write_text(f"listener {broker.port} 127.0.0.1\nallow_anonymous false\n"
                           f"persistence false\npassword_file {pw}\nacl_file {ACL}\n"
                           "user root\n")  # read the test's 0700 temp files
    broker.start()
    central = make_central(tmp_path, broker.port, username="central", password="pw-central")
    central.start()
    store = make_store(tmp_path, "entry-1")
    write_events(store, 10)
    sync = LaneSync(store, site=SITE, hmac_key=KEYS["entry-1"], ack_timeout_s=1.0,
                    settings=LinkSettings(host="127.0.0.1", port=broker.port,
                                          client_id="entry-1", keepalive_s=5,
                                          username="entry-1", password="pw-entry-1"))
    rogue = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="entry-1-rogue")
    rogue.username_pw_set("entry-1", "pw-entry-1")
    rogue.connect("127.0.0.1", broker.port)
    rogue.loop_start()
    try:
        assert wait_until(central.connected.is_set, 10)
        # entry-1 (even holding exit-1's HMAC key) writes into exit-1's ledger: dropped
        forged = make_store(tmp_path, "exit-1")
        write_events(forged, 5)
        es = forged.entries(0, 10)
        raw = codec.encode_batch(SITE, "exit-1", [codec.encode_entry(e) for e in es], 1, 5,
                                 KEYS["exit-1"], datetime.now(UTC))
        rogue.publish(topics.ledger(SITE, "exit-1"), raw, qos=1).wait_for_publish(5)
        rogue.publish(topics.member(SITE, "M1"), b"{}", qos=1).wait_for_publish(5)
        # ... while its own ledger goes through
        sync.start()
        assert wait_until(lambda: sync.backlog() == 0, 15)
        assert len(central.db.entry_ids("entry-1")) == 10
        assert central.db.entry_ids("exit-1") == []
        assert central.stats["rejected_schema"] == 0  # never even reached central
    finally:
        rogue.loop_stop()
        rogue.disconnect()
        sync.stop()
        central.stop()
        broker.stop()
