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
