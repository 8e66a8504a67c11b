"""SIGKILL a process in the middle of a stream of exits: the file stays whole and consistent.

(The lane's own crash test kills the full daemon; this one isolates the store.)
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from edge.store import EntryKind, ExitRecord, Store

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
N = 150
START = 100_000

EXITER = textwrap.dedent("""
    import sys
    from datetime import datetime, timedelta
    from decimal import Decimal
    from zoneinfo import ZoneInfo
    from edge.store import ExitRecord, Store
    t0 = datetime(2026, 11, 23, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    store = Store.open(sys.argv[1], "X1")
    print("ready", flush=True)
    for s in store.list_sessions(open_only=True, limit=100000):
        i = int(s.plate[3:])
        store.record_exit(ExitRecord(
            exit_event_id=f"x{i}", session_id=s.session_id, plate=s.plate,
            exited_at=t0 + timedelta(hours=2), member_id="M1", rules_version="r1",
            fee=Decimal("5.00"), payable=Decimal("0.00"), points_deducted=3,
            lots_used=(("L", 3),), coupons_used=(), points_earned=1, earned_expires_at=None,
            quote={}))
""")


def _rec(i: int, sid: str) -> ExitRecord:
    return ExitRecord(
        exit_event_id=f"x{i}", session_id=sid, plate=f"沪A0{i:04d}",
        exited_at=T0 + timedelta(hours=2), member_id="M1", rules_version="r1",
        fee=Decimal("5.00"), payable=Decimal("0.00"), points_deducted=3, lots_used=(("L", 3),),
        coupons_used=(), points_earned=1, earned_expires_at=None, quote={})


def _check(db: Path) -> int:
    """Invariants after a kill; returns how many exits are committed."""
    with Store.open(db, "X1") as s:
        res = s.verify()
        assert res.ok, res.problems
        closed = [x for x in s.list_sessions(limit=10_000) if x.status == "closed"]
        deducted = [e for e in s.export("entries") if e["kind"] == EntryKind.POINTS_DEDUCTED]
        per_session: dict[str, int] = {}
        for e in deducted:
            per_session[e["session_id"]] = per_session.get(e["session_id"], 0) + 1
        assert all(n == 1 for n in per_session.values()), "a session was deducted twice"
        assert set(per_session) == {x.session_id for x in closed}, "half-written exit"
        assert s.balance("M1", T0 + timedelta(hours=3)) == START - 3 * len(closed) + len(closed)
        return len(closed)


def test_sigkill_mid_exits_leaves_a_consistent_file(db: Path) -> None:
    rnd = random.Random(4)
    with Store.open(db, "X1") as s:
        s.upsert_member("M1", tier="gold")
        s.set_lots("M1", [("L", START, None, None)])
        sids = {}
        for i in range(N):
            sess, _ = s.record_entry(plate=f"沪A0{i:04d}", entered_at=T0, event_id=f"e{i}",
                                     member_id="M1")
            sids[i] = sess.session_id
    root = Path(__file__).resolve().parents[2]
    done_before = 0
    kills = 0
    for _ in range(8):
        p = subprocess.Popen([sys.executable, "-c", EXITER, str(db)], cwd=root,
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        time.sleep(rnd.uniform(0.01, 0.12))
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        p.wait(timeout=30)
        p.stdout.close()
        done = _check(db)
        assert done >= done_before  # nothing committed was lost
        done_before = done
    assert kills >= 4, "the writer finished before it could be killed; slow it down"
    # after all the kills: replay every exit; committed ones must not deduct again
    with Store.open(db, "X1") as s:
        replays = [s.record_exit(_rec(i, sid)) for i, sid in sids.items()]
        assert sum(r.replayed for r in replays) == done_before
    assert _check(db) == N
