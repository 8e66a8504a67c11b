"""Export and report figures against values computed by hand from a small scripted month."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

import edge.cli.ledger  # noqa: F401  (registers the commands)
from edge.cli import app
from edge.store import ExitRecord, Store, StoreError

TZ = ZoneInfo("Asia/Shanghai")
Make = Callable[..., ExitRecord]


def _visit(store: Store, make: Make, n: int, plate: str, member: str | None, entered: datetime,
           hours: int, fee: str, points: int, lot: str, payable: str, earned: int,
           entry: bool = True) -> str | None:
    sid = None
    if entry:
        s, _ = store.record_entry(plate=plate, entered_at=entered, event_id=f"e{n}",
                                  member_id=member)
        sid = s.session_id
    value = Decimal(points) / 100
    res = store.record_exit(make(
        exit_event_id=f"x{n}", session_id=sid, plate=plate, member_id=member,
        exited_at=entered + timedelta(hours=hours), fee=Decimal(fee), payable=Decimal(payable),
        points_deducted=points, lots_used=((lot, points),) if points else (), coupons_used=(),
        points_earned=earned, earned_expires_at=None,
        quote={"discounts": [{"kind": "points", "ref": lot, "points": points,
                              "amount": str(value)}] if points else []}))
    return res.session.session_id


@pytest.fixture
def month(store: Store, exit_rec: Make, db: Path) -> Path:
    store.upsert_member("M1", tier="gold")
    store.upsert_member("M2", tier="silver")
    store.set_lots("M1", [("BIG", 10_000, None, None)])
    store.set_lots("M2", [("S", 500, None, None)])
    nov = datetime(2026, 11, 10, 9, 0, tzinfo=TZ)
    s1 = _visit(store, exit_rec, 1, "沪A00001", "M1", nov, 3, "20.00", 400, "BIG", "16.00", 16)
    _visit(store, exit_rec, 2, "沪A00002", "M2", nov, 2, "10.00", 500, "S", "5.00", 0)
    _visit(store, exit_rec, 3, "粤B00003", None, nov, 1, "8.00", 0, "", "8.00", 0, entry=False)
    s4 = _visit(store, exit_rec, 4, "沪A00004", "M1", nov, 1, "6.00", 100, "BIG", "5.00", 5)
    assert s1 and s4
    store.reverse_exit(s4, nov + timedelta(hours=1, seconds=30), "reversed away")
    store.record_payment(s1, Decimal("16.00"), "qr", nov + timedelta(hours=3), "p1")
    # 30 November 23:00 local is still November here, although 1 December is near
    dec = datetime(2026, 11, 30, 23, 0, tzinfo=TZ)
    _visit(store, exit_rec, 5, "沪A00005", "M1", dec, 2, "12.00", 200, "BIG", "10.00", 10)
    return db


def test_report_november(store: Store, month: Path) -> None:
    r = store.report("2026-11", TZ)
    assert r["points_issued"] == 16 + 0 + 5 - 5
    assert r["points_redeemed"] == 400 + 500 + 100 - 100
    assert r["redeemed_per_issued"] == Decimal("56.2500")  # 900 / 16
    assert r["members"] == 2
    assert r["avg_points_per_member"] == Decimal("8.00")  # 16 issued / 2 members
    assert r["fees_charged"] == Decimal("38.00")  # 20 + 10 + 8 + 6 - 6
    assert r["payable_total"] == Decimal("29.00")  # 16 + 5 + 8 + 5 - 5
    assert r["paid_total"] == Decimal("16.00")
    assert r["sessions"] == 3


def test_report_december_and_all(store: Store, month: Path) -> None:
    dec = store.report("2026-12", TZ)
    assert (dec["points_issued"], dec["points_redeemed"], dec["sessions"], dec["members"]) == (
        10, 200, 1, 1)
    assert dec["fees_charged"] == Decimal("12.00") and dec["redeemed_per_issued"] == Decimal("20")
    every = store.report(None, TZ)
    assert every["points_issued"] == 26 and every["points_redeemed"] == 1100
    assert every["redeemed_per_issued"] == Decimal("42.3077")  # 1100 / 26
    assert every["avg_points_per_member"] == Decimal("13.00")
    assert every["fees_charged"] == Decimal("50.00") and every["sessions"] == 4
    empty = store.report("2026-10", TZ)
    assert empty["sessions"] == 0 and empty["redeemed_per_issued"] is None
    assert empty["avg_points_per_member"] is None
    with pytest.raises(StoreError, match="YYYY-MM"):
        store.report("11/2026", TZ)


def test_export_sessions_shape(store: Store, month: Path) -> None:
    rows = list(store.export("sessions"))
    assert [r["plate"] for r in rows] == ["粤B00003", "沪A00002", "沪A00001", "沪A00005"]
    one = next(r for r in rows if r["plate"] == "沪A00001")
    assert one == {
        "session_id": one["session_id"], "plate": "沪A00001", "member_id": "M1", "tier": "gold",
        "vehicle_class": "small", "entered": "2026-11-10T01:00:00+00:00",
        "exited": "2026-11-10T04:00:00+00:00", "points_before": 10_000, "fee": "20.00",
        "payable": "16.00", "points_deducted": 400, "points_earned": 16, "rules_version": "r1",
    }
    five = next(r for r in rows if r["plate"] == "沪A00005")
    assert five["points_before"] == 10_000 - 400 + 16  # s4 was reversed: its 100 came back
    walk_in = next(r for r in rows if r["plate"] == "粤B00003")
    assert walk_in["entered"] is None and walk_in["member_id"] is None
    assert walk_in["tier"] is None and walk_in["points_before"] is None


def test_cli_export_and_report(month: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "s.jsonl"
    res = runner.invoke(app, ["ledger", "export", "--format", "jsonl", "--what", "sessions",
                              "--out", str(out), "--db", str(month)])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 4 and lines[0]["plate"] == "粤B00003"

    res = runner.invoke(app, ["ledger", "export", "--format", "csv", "--db", str(month)])
    assert res.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    with Store.open(month, "X1") as s:
        assert len(rows) == s.verify().checked
    assert rows[0]["entry_id"] == "X1:1" and json.loads(rows[0]["payload"])["event_id"] == "e1"

    cfg = tmp_path / "lane.toml"
    cfg.write_text(f'[lane]\ntimezone = "Asia/Shanghai"\n[storage]\npath = "{month}"\n')
    res = runner.invoke(app, ["report", "--month", "2026-11", "--json", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    rep: dict[str, Any] = json.loads(res.stdout)
    assert rep["points_issued"] == 16 and rep["fees_charged"] == "38.00"
    res = runner.invoke(app, ["report", "--month", "2026-11", "--config", str(cfg)])
    assert "redeemed / issued    56.2500" in res.stdout

    res = runner.invoke(app, ["sessions", "list", "--open"], env={"PARKEDGE_DB": str(month)})
    assert res.exit_code == 0 and "沪A00004" in res.stdout  # reopened by the reversal
    assert "沪A00001" not in res.stdout


def test_cli_errors_are_clear(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["ledger", "verify"], env={"PARKEDGE_DB": ""})
    assert res.exit_code == 2 and "give --db PATH" in res.output
    res = runner.invoke(app, ["ledger", "verify", "--db", str(tmp_path / "none.db")])
    assert res.exit_code == 2 and "does not exist" in res.output
    assert not (tmp_path / "none.db").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text("[storage\n")
    res = runner.invoke(app, ["report", "--config", str(bad)])
    assert res.exit_code == 2 and "not valid TOML" in res.output
    res = runner.invoke(app, ["ledger", "export", "--format", "xml", "--db", str(bad)])
    assert res.exit_code == 2 and "csv or jsonl" in res.output


def test_export_refuses_unknown_kind_at_call_time(store: Store) -> None:
    with pytest.raises(StoreError, match="'sessionz'"):
        store.export("sessionz")
