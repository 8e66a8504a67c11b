"""A lane process for the kill tests: writes entries, syncs them, exits when all are acked.

usage: lane_proc.py DB LANE PORT KEY N_TO_WRITE
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta

from edge.store import Store
from edge.sync.link import LinkSettings
from edge.sync.service import LaneSync


def main(argv: list[str]) -> int:
    db, lane, port, key, n = argv[0], argv[1], int(argv[2]), argv[3], int(argv[4])
    store = Store.open(db, lane)
    sync = LaneSync(store, site="mall",
                    settings=LinkSettings(host="127.0.0.1", port=port, client_id=lane,
                                          keepalive_s=5),
                    hmac_key=key.encode(), batch_max_entries=10, window=2, ack_timeout_s=1.0)
    sync.start()
    start = len(store.entries(0, 1_000_000))
    t0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    for i in range(start, start + n):
        store.record_lane_event("vehicle", t0 + timedelta(seconds=i), plate=f"粤A{i:05d}")
        sync.notify()
        time.sleep(0.002)
    print("written", flush=True)
    end = time.monotonic() + 60
    while sync.backlog() > 0 and time.monotonic() < end:
        time.sleep(0.05)
    ok = sync.backlog() == 0
    sync.stop()
    store.close()
    print("drained" if ok else "timeout", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
