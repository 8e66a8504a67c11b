"""Two real processes appending to one file at once: seq stays gapless and the chain valid."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edge.store import Store

N = 120

WRITER = textwrap.dedent("""
    import sys, time
    from datetime import datetime, UTC
    from pathlib import Path
    from edge.store import Store
    db, lane, tag, go = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    store = Store.open(db, lane)
    while not go.exists():
        time.sleep(0.005)
    for i in range({n}):
        time.sleep(0.003)  # a lane's pace, so the other writer gets its turns
        if i % 3 == 0:
            store.record_entry(plate=f"{{tag}}{{i:05d}}", entered_at=datetime.now(UTC),
                               event_id=f"{{tag}}-{{i}}")
        else:
            store.record_lane_event("tick", datetime.now(UTC), detail={{"w": tag, "i": i}})
    store.close()
""").format(n=N)


def _run(db: Path, tmp: Path, lanes: list[tuple[str, str]]) -> None:
    go = tmp / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(db), lane, tag, str(go)],
                         cwd=Path(__file__).resolve().parents[2])
        for lane, tag in lanes
    ]
    time.sleep(0.3)
    go.touch()
    for p in procs:
        assert p.wait(timeout=120) == 0


@pytest.mark.parametrize("lanes", [[("X1", "A"), ("X1", "B")], [("X1", "A"), ("N1", "B")]],
                         ids=["same-lane", "two-lanes"])
def test_two_writers_keep_seq_gapless_and_chain_valid(db: Path, tmp_path: Path,
                                                      lanes: list[tuple[str, str]]) -> None:
    Store.open(db, "X1").close()  # schema exists before the race starts
    _run(db, tmp_path, lanes)
    with Store.open(db, "X1") as store:
        res = store.verify()
        assert res.ok, res.problems
        assert res.checked == 2 * N
        rows = list(store.export("entries"))
    by_lane: dict[str, list[int]] = {}
    for r in rows:
        by_lane.setdefault(r["lane_id"], []).append(r["seq"])
    for seqs in by_lane.values():
        assert seqs == list(range(1, len(seqs) + 1))
    assert sum(len(s) for s in by_lane.values()) == 2 * N
    assert [r["pos"] for r in rows] == list(range(1, 2 * N + 1))
    # both writers really interleaved (otherwise this test proves nothing about the race)
    tags = [r["payload"].get("detail", {}).get("w") or r["plate"][0] for r in rows]
    switches = sum(1 for a, b in itertools.pairwise(tags) if a != b)
    assert switches >= 2, "writers did not overlap"
