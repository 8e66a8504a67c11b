"""Campaign forecasting over generated sessions, with a baseline, through the CLI."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from typer.testing import CliRunner

import edge.cli.pricing  # noqa: F401
from edge.cli import app
from edge.pricing import load_bundle
from edge.pricing.simulate import generate_sessions, simulate_file, write_sessions

ROOT = Path(__file__).resolve().parents[2]
BASIC = ROOT / "config" / "rules.example.toml"
MALL = ROOT / "config" / "rules.mall.example.toml"
SH = ZoneInfo("Asia/Shanghai")

KEYS = {"session_id", "plate", "member_id", "tier", "vehicle_class", "entered", "exited",
        "points_before", "fee", "payable", "points_deducted", "points_earned", "rules_version"}


def test_generator_writes_the_export_format(tmp_path: Path) -> None:
    rb = load_bundle(MALL)
    rows = generate_sessions(2000, rb, datetime(2026, 3, 1, tzinfo=SH), days=7, seed=3)
    assert len(rows) == 2000
    assert set(rows[0]) >= KEYS
    exits = [datetime.fromisoformat(r["exited"]) for r in rows]
    assert exits == sorted(exits)
    members = [r for r in rows if r["member_id"]]
    assert 0.5 < len(members) / len(rows) < 0.7
    assert any((datetime.fromisoformat(r["exited"]) - datetime.fromisoformat(r["entered"]))
               .days >= 1 for r in rows if r["entered"])
    assert {r["tier"] for r in members} == {"normal", "silver", "gold"}


def test_replaying_with_the_same_bundle_matches_recorded(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    write_sessions(path, 3000, load_bundle(MALL), datetime(2026, 3, 1, tzinfo=SH), days=5)
    one = simulate_file(path, MALL, BASIC, workers=1)
    two = simulate_file(path, MALL, BASIC, workers=2)
    c, rec = one["candidate"], one["recorded"]
    for k in ("sessions", "member_sessions", "members", "fee_total", "fees_collected",
              "points_issued", "points_redeemed"):
        assert c[k] == rec[k], k
        assert two["candidate"][k] == c[k], k  # splitting by member changes nothing
    assert c["points_issued"] > 0 and c["points_redeemed"] > 0
    assert one["baseline"]["points_issued"] == 0  # the basic scheme earns no parking points
    assert one["baseline"]["fee_total"] != c["fee_total"]
    assert "first_visit_bonus" in c["campaigns"]
    assert c["redeemed_per_issued"] > 0


def test_cli_simulate_json_and_table(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    r = CliRunner().invoke(app, ["rules", "gen-sessions", "--rules", str(MALL), "--out",
                                 str(path), "--count", "500", "--days", "3"])
    assert r.exit_code == 0, r.stderr
    r = CliRunner().invoke(app, ["rules", "simulate", "--sessions", str(path), "--rules",
                                 str(MALL), "--baseline", str(BASIC), "--workers", "1",
                                 "--json"])
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["candidate"]["version"] == "mall-2026.03"
    assert out["baseline"]["version"] == "seed-basic-1"
    assert out["candidate"]["sessions"] == 500
    r = CliRunner().invoke(app, ["rules", "simulate", "--sessions", str(path), "--rules",
                                 str(MALL), "--workers", "1"])
    assert r.exit_code == 0 and "redeemed_per_issued" in r.stdout


def test_cli_simulate_bad_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"session_id": "a", "exited": "2026-03-01T10:00:00+08:00"}\n'
                    '{"session_id": "b", "exited": "noon"}\n', "utf-8")
    r = CliRunner().invoke(app, ["rules", "simulate", "--sessions", str(path), "--rules",
                                 str(MALL), "--workers", "1"])
    assert r.exit_code == 2
    assert "line 2: exited is not an ISO 8601 date-time" in r.stderr


def _write(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


STAY = {"session_id": "S1", "plate": "粤B00001", "member_id": "M1", "tier": "gold",
        "vehicle_class": "small", "entered": "2026-03-10T08:00:00+08:00",
        "exited": "2026-03-10T16:00:00+08:00", "points_before": 0, "fee": None,
        "payable": None, "points_deducted": 0, "points_earned": 0}
BUY = {"kind": "purchase", "purchase_id": 1, "member_id": "M1", "tier": "gold",
       "at": "2026-03-10T18:00:00+08:00", "amount": "3000.00", "category": "retail",
       "brand": None, "points": 0}


def test_purchases_share_the_daily_cap_with_parking(tmp_path: Path) -> None:
    """Parking points first, then a purchase worth more than the day's cap: the purchase
    earns only what the cap leaves (as at the lane and at central)."""
    alone, both = tmp_path / "alone.jsonl", tmp_path / "both.jsonl"
    _write(alone, [BUY])
    _write(both, [STAY, BUY, {**BUY, "purchase_id": 2, "at": "2026-04-02T12:00:00+08:00",
                              "amount": "90"}])
    a = simulate_file(alone, MALL, workers=1)["candidate"]
    assert a["purchase_points"] == a["points_issued"] == 100  # ¥3000 / ¥30 capped at 100
    r = simulate_file(both, MALL, workers=1)
    c = r["candidate"]
    parking = c["parking_points"]
    assert parking > 0 and c["purchases"] == 2 and c["sessions"] == 1
    assert c["purchase_points"] == 100 - parking + 3  # April: ¥90 / ¥30, a new day
    assert c["points_by_month"] == {"2026-03": 100, "2026-04": 3}
    assert c["points_issued"] == 103 and c["members"] == 1
    assert r["recorded"]["purchases"] == 2 and r["recorded"]["points_issued"] == 0
    assert simulate_file(both, MALL, workers=2)["candidate"] == c


def test_bad_purchase_lines_are_named(tmp_path: Path) -> None:
    cases = [({**BUY, "kind": "refund"}, "kind 'refund' is neither 'session' nor 'purchase'"),
             ({**BUY, "member_id": None}, "a purchase needs a member_id"),
             ({**BUY, "at": None}, "at is missing"),
             ({**BUY, "amount": "lots"}, "amount is not a number")]
    for row, msg in cases:
        path = tmp_path / "bad.jsonl"
        _write(path, [STAY, row])
        r = CliRunner().invoke(app, ["rules", "simulate", "--sessions", str(path), "--rules",
                                     str(MALL), "--workers", "1"])
        assert r.exit_code == 2, row
        assert f"line 2: {msg}" in r.stderr, r.stderr


def test_a_json_bundle_replays_as_its_toml(tmp_path: Path) -> None:
    import tomllib

    j = tmp_path / "mall.json"
    j.write_text(json.dumps(tomllib.loads(MALL.read_text("utf-8"))), "utf-8")
    path = tmp_path / "s.jsonl"
    write_sessions(path, 300, load_bundle(MALL), datetime(2026, 3, 1, tzinfo=SH), days=3)
    assert simulate_file(path, j, workers=1)["candidate"] == simulate_file(
        path, MALL, workers=1)["candidate"]
    j.write_text('"mall"', "utf-8")
    r = CliRunner().invoke(app, ["rules", "simulate", "--sessions", str(path), "--rules",
                                 str(j), "--workers", "1"])
    assert r.exit_code != 0 and "a bundle is a JSON object" in (r.stderr + r.stdout)


def test_previous_exit_is_one_before_the_stay_began(tmp_path: Path) -> None:
    """As the lane's decider: a plate's earlier exit counts for the next stay (first visit of
    the day, re-entry) only if it came before that stay's entry."""
    path = tmp_path / "s.jsonl"
    second = {**STAY, "session_id": "S2", "entered": "2026-03-10T17:00:00+08:00",
              "exited": "2026-03-10T19:00:00+08:00"}  # the first one left at 16:00
    overlapping = {**second, "entered": "2026-03-10T12:00:00+08:00"}
    _write(path, [STAY, second])
    fired = simulate_file(path, MALL, workers=1)["candidate"]["campaigns"]
    assert fired["first_visit_bonus"]["fired"] == 1  # the second stay is not the day's first
    _write(path, [STAY, overlapping])  # entered before the first one left: no previous exit
    fired = simulate_file(path, MALL, workers=1)["candidate"]["campaigns"]
    assert fired["first_visit_bonus"]["fired"] == 2
