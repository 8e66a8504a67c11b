"""Property test: any sequence of exits, replays, overspends and reversals keeps the store
equal to a simple model of the lots, never negative, never deducted twice, chain valid."""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from edge.store import ExitRecord, Store, StoreError

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=TZ)
LOTS = {"A": 50, "B": 80, "C": 30}

op = st.one_of(
    st.tuples(st.just("exit"), st.dictionaries(st.sampled_from(sorted(LOTS)),
                                               st.integers(1, 60), max_size=3),
              st.integers(0, 5)),
    st.tuples(st.just("replay"), st.integers(0, 50), st.just(0)),
    st.tuples(st.just("reverse"), st.integers(0, 50), st.just(0)),
)


def _lots(store: Store) -> dict[str, int]:
    with store._engine.connect() as c:
        rows = c.execute(text("SELECT lot_id, remaining FROM points_lots WHERE member_id='M1'"))
        return {r[0]: int(r[1]) for r in rows}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=14))
def test_store_matches_model(ops: list[tuple[str, object, int]]) -> None:
    with tempfile.TemporaryDirectory() as d, Store.open(Path(d) / "p.db", "X1") as store:
        store.upsert_member("M1", tier="gold")
        store.set_lots("M1", [(k, v, None, None) for k, v in LOTS.items()])
        model = dict(LOTS)
        done: list[tuple[ExitRecord, bool]] = []  # (record, still closed)
        for n, (kind, arg, earn) in enumerate(ops):
            at = T0 + timedelta(minutes=n)
            if kind == "exit":
                assert isinstance(arg, dict)
                plate = f"沪A{n:05d}"
                s, _ = store.record_entry(plate=plate, entered_at=at, event_id=f"e{n}",
                                          member_id="M1")
                used = tuple(sorted(arg.items()))
                rec = ExitRecord(f"x{n}", s.session_id, plate, at, "M1", "r1", Decimal(5),
                                 Decimal(0), sum(arg.values()), used, (), earn, None, {})
                if any(model[k] < v for k, v in used):
                    try:
                        store.record_exit(rec)
                        raise AssertionError("overspend accepted")
                    except StoreError:
                        pass
                else:
                    res = store.record_exit(rec)
                    assert not res.replayed
                    for k, v in used:
                        model[k] -= v
                    if earn:
                        model[f"earn:x{n}"] = earn
                    done.append((rec, True))
            elif done:
                assert isinstance(arg, int)
                i = arg % len(done)
                rec, closed = done[i]
                if kind == "replay":
                    res = store.record_exit(rec)
                    assert res.replayed  # never a second deduction
                elif closed:
                    assert rec.session_id is not None
                    store.reverse_exit(rec.session_id, at, "reversed")
                    for k, v in rec.lots_used:
                        model[k] += v
                    if rec.points_earned:
                        model[f"earn:{rec.exit_event_id}"] -= rec.points_earned
                    done[i] = (rec, False)
            assert _lots(store) == model
            assert all(v >= 0 for v in model.values())
        assert store.balance("M1", T0 + timedelta(days=1)) == sum(model.values())
        check = store.verify()
        assert check.ok, check.problems
