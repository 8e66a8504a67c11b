"""#13 "Bad input", the command line: each case is exit 2 naming the option, or correct."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import edge.cli.pricing  # noqa: F401  (registers the commands)
from edge.cli import app

ROOT = Path(__file__).resolve().parents[2]
BASIC = str(ROOT / "config" / "rules.example.toml")
MALL = str(ROOT / "config" / "rules.mall.example.toml")
runner = CliRunner()
STAY = ["--entered", "2026-03-02T10:00:00+08:00", "--exited", "2026-03-02T20:00:00+08:00"]


def run(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, list(args))
    assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit), (
        f"traceback instead of a message: {r.exception!r}")
    return r.exit_code, r.stdout, r.stderr


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--entered", "0001-01-01", "--exited", "2026-03-02T10:00"], "--entered"),
        (["--entered", "0001-01-01", "--exited", "0001-01-01T05:00"], "--exited"),
        (["--entered", "2026-03-02T10:00", "--exited", "9999-12-31T23:59"], "--exited"),
        (["--exited", "9999-12-31T23:59"], "--exited"),
        (["--exited", "2026-03-02T10:00", "--at", "9999-12-31T23:59"], "--at"),
    ],
)
def test_quote_dates_at_the_ends_of_the_calendar(args: list[str], option: str) -> None:
    """Was an OverflowError traceback (or, with no entry, a quote dated year 9999)."""
    code, _, err = run("quote", "--rules", MALL, *args, "--points", "5")
    assert code == 2
    assert f"{option}: " in err and "outside the supported range 1970-01-01 .. 9000-01-01" in err


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ({"redeemed_this_month_value": "NaN"}, "redeemed_this_month_value: must be a finite"),
        ({"redeemed_this_month_value": "Infinity"}, "redeemed_this_month_value: must be a fin"),
        ({"redeemed_this_month_value": "-5"}, "redeemed_this_month_value: must be between 0"),
        ({"coupons": [{"kind": "amount", "value": "NaN"}]}, "coupons[0]: value: must be a fin"),
        ({"earned_today": -50}, "earned_today: must be a whole number >= 0"),
        ({"redeemed_today_points": 2.5}, "redeemed_today_points: must be a whole number"),
        ({"lots": [{"points": 1e300}]}, "lots[0]: points: must be a whole number"),
        ({"auto_deduct": "no"}, "auto_deduct: must be true or false"),
    ],
)
def test_quote_member_file_bad_numbers(tmp_path: Path, member: dict[str, object],
                                       message: str) -> None:
    """NaN was an InvalidOperation traceback; -50 or "no" were taken as given."""
    mf = tmp_path / "m.json"
    mf.write_text(json.dumps({"lots": [{"points": 100}], **member}), "utf-8")
    code, _, err = run("quote", "--rules", MALL, *STAY, "--member", str(mf))
    assert code == 2
    assert f"--member {mf}: {message}" in err


@pytest.mark.parametrize("command", ["quote", "earn"])
def test_negative_earned_today_is_refused(command: str) -> None:
    """--earned-today -50 got round the daily cap (room = 100 - (-50) = 150)."""
    args = ([*STAY, "--points", "10"] if command == "quote" else
            ["--amount", "300", "--category", "dining", "--at", "2026-03-02T12:00:00+08:00"])
    code, _, err = run(command, "--rules", MALL, *args, "--earned-today", "-50")
    assert code == 2
    assert "--earned-today: must be >= 0, got -50" in err


def test_member_file_with_earned_today_and_redeemed_month_options(tmp_path: Path) -> None:
    """--member silently ignored --redeemed-month and --earned-today; now they override it."""
    mf = tmp_path / "m.json"
    mf.write_text(json.dumps({"tier": "gold", "lots": [{"points": 100}]}), "utf-8")
    code, out, err = run("quote", "--rules", MALL, *STAY, "--member", str(mf), "--json")
    assert code == 0, err
    free = json.loads(out)
    assert free["points_earned"] > 0 and free["points_deducted"] > 0
    code, out, err = run("quote", "--rules", MALL, *STAY, "--member", str(mf),
                         "--earned-today", "100", "--redeemed-month", "200", "--json")
    assert code == 0, err
    q = json.loads(out)
    assert q["points_earned"] == 0 and "cap:daily_earn" in q["earned_rules"]
    assert q["points_deducted"] == 0 and "cap:monthly_redemption" in q["flags"]


def test_member_options_alone_make_a_member_quote() -> None:
    code, out, _ = run("quote", "--rules", MALL, *STAY, "--earned-today", "100", "--json")
    assert code == 0
    q = json.loads(out)
    assert q["points_earned"] == 0 and "cap:daily_earn" in q["earned_rules"]


def test_quote_unknown_tier_is_an_error_as_for_earn() -> None:
    """Was silently the default tier ("normal") for quote, an error for earn."""
    code, _, err = run("quote", "--rules", MALL, *STAY, "--tier", "diamond")
    assert code == 2
    assert "--tier: unknown tier 'diamond'; this bundle has normal, silver, gold" in err


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("earn", "--amount", "1e400"),
        ("earn", "--amount", "100000000.01"),
        ("quote", "--paid-amount", "1e400"),
        ("quote", "--redeemed-month", "1e400"),
    ],
)
def test_absurd_amounts_are_refused(command: str, option: str, value: str) -> None:
    """earn --amount 1e400 gave 1e400 points; --paid-amount 1e400 an InvalidOperation."""
    args = (["--amount", "300", "--category", "retail", "--at", "2026-03-02T12:00:00+08:00"]
            if command == "earn" else
            [*STAY, "--points", "5", "--paid-at", "2026-03-02T19:55:00+08:00"])
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    code, _, err = run(command, "--rules", BASIC, *args)
    assert code == 2
    assert f"{option}: must be at most 100000000, got {value!r}" in err
