"""The pricing CLI end to end (subprocess for the real entry point, CliRunner for the rest)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

import edge.cli.pricing  # noqa: F401  (registers the commands)
from edge.cli import app

ROOT = Path(__file__).resolve().parents[2]
BASIC = str(ROOT / "config" / "rules.example.toml")
MALL = str(ROOT / "config" / "rules.mall.example.toml")
runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_quote_text_shows_both_languages() -> None:
    code, out, _ = run("quote", "--rules", BASIC, "--entered", "2026-03-02T10:00:00+08:00",
                       "--exited", "2026-03-02T12:35:00+08:00", "--points", "500")
    assert code == 0
    assert "停车 2小时35分  费用 ¥77.50  积分抵扣 16分  应付 ¥0.00  余额 484分" in out
    assert "parked 2 h 35 min  fee ¥77.50  points -16  payable ¥0.00  balance 484" in out


def test_quote_local_time_without_offset_is_site_time() -> None:
    code, out, _ = run("quote", "--rules", BASIC, "--entered", "2026-03-02T10:00",
                       "--exited", "2026-03-02T11:00", "--json")
    assert code == 0
    assert json.loads(out)["fee"] == "30.00"


def test_quote_member_file_and_coupon(tmp_path: Path) -> None:
    mf = tmp_path / "m.json"
    mf.write_text(json.dumps({
        "member_id": "M7", "tier": "gold",
        "lots": [{"lot_id": "old", "points": 5, "expires_at": "2026-03-31T00:00:00+08:00"},
                 {"lot_id": "new", "points": 100, "expires_at": "2027-04-01T00:00:00+08:00"}],
    }), "utf-8")
    code, out, _ = run("quote", "--rules", MALL, "--entered", "2026-03-03T09:00:00+08:00",
                       "--exited", "2026-03-03T17:00:00+08:00", "--member", str(mf),
                       "--coupon", "hours:3@G1", "--json")
    assert code == 0, out
    q = json.loads(out)
    assert q["coupons_used"] == ["G1"]
    assert q["lots_used"][0] == ["old", 5]
    assert q["payable"] == "0.00"
    assert q["points_earned"] > 0 and "gold_parking_x2" in q["earned_rules"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--exited", "yesterday"], "--exited: not an ISO 8601 date-time"),
        (["--exited", "2026-03-02T12:00:00+08:00", "--points", "-3"], "--points: must be >= 0"),
        (["--exited", "2026-03-02T12:00:00+08:00", "--coupon", "gold:3"], "kind must be"),
        (["--exited", "2026-03-02T12:00:00+08:00", "--paid-amount", "ten"],
         "--paid-amount: not a decimal amount"),
    ],
)
def test_quote_bad_input_exit_2(args: list[str], message: str) -> None:
    code, _, err = run("quote", "--rules", BASIC, *args)
    assert code == 2
    assert message in err


def test_quote_bad_member_file_exit_2(tmp_path: Path) -> None:
    mf = tmp_path / "m.json"
    mf.write_text(json.dumps({"lots": [{"points": "many"}]}), "utf-8")
    code, _, err = run("quote", "--rules", BASIC, "--exited", "2026-03-02T12:00:00+08:00",
                       "--member", str(mf))
    assert code == 2 and "lots[0]" in err


def test_earn_tier_and_unknown_tier() -> None:
    code, out, _ = run("earn", "--rules", MALL, "--amount", "300", "--category", "retail",
                       "--at", "2026-03-03T11:00:00+08:00", "--tier", "gold", "--json")
    assert code == 0 and json.loads(out)["points"] == 10
    code, _, err = run("earn", "--rules", MALL, "--amount", "300", "--category", "retail",
                       "--at", "2026-03-03T11:00:00+08:00", "--tier", "diamond")
    assert code == 2 and "unknown tier 'diamond'" in err


def test_bad_bundle_exit_2_lists_key_paths(tmp_path: Path) -> None:
    bad = tmp_path / "r.toml"
    bad.write_text(Path(BASIC).read_text("utf-8").replace('rate = "0.50"', 'rate = "-1"'),
                   "utf-8")
    code, _, err = run("quote", "--rules", str(bad), "--exited", "2026-03-02T12:00:00+08:00")
    assert code == 2 and "tariffs.small.rate: must be >= 0" in err


def test_real_entry_point_help() -> None:
    exe = ROOT / ".venv" / "bin" / "parkedge"
    p = subprocess.run([str(exe), "rules", "--help"], capture_output=True, text=True,
                       timeout=60, check=False)
    assert p.returncode == 0
    assert "simulate" in p.stdout and "check" in p.stdout
