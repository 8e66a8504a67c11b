"""Malformed rule bundles are rejected with the key path of every problem."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from edge.pricing import BundleError, load_bundle, parse_bundle

ROOT = Path(__file__).resolve().parents[2]
EXE = ROOT / ".venv" / "bin" / "parkedge"


def base() -> dict[str, Any]:
    return {
        "version": "t-1",
        "effective_from": "2026-01-01T00:00:00+08:00",
        "timezone": "Asia/Shanghai",
        "default_tier": "member",
        "tariffs": {"small": {"rate": "0.5"}},
        "tiers": {"member": {"redeem": "minutes", "minutes_per_point": 10}},
    }


def patched(path: str, value: Any) -> dict[str, Any]:
    """Set (or with value=DELETE, remove) a dotted key in a fresh base bundle."""
    data = base()
    node: Any = data
    parts = path.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    if value is DELETE:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return data


DELETE = object()

CASES: list[tuple[str, Any, str, str]] = [
    ("tariffs.small.unit_minutes", 20, "tariffs.small.unit_minutes",
     "must be one of 1, 15, 30, 60"),
    ("tariffs.small.rate", "-1", "tariffs.small.rate", "must be >= 0"),
    ("tariffs.small.rate", "abc", "tariffs.small.rate", "decimal"),
    ("tariffs.small.rounding", "sideways", "tariffs.small.rounding", "must be one of up, down"),
    ("tariffs.small.grace_minutes", -5, "tariffs.small.grace_minutes", "must be >= 0"),
    ("tariffs.small.colour", "red", "tariffs.small.colour", "unknown key"),
    ("tariffs.small.steps", [{"from_minute": 0, "rate": "1"}], "tariffs.small",
     "exactly one of rate or steps"),
    ("tariffs.small.night", {"start": "25:00", "end": "07:00", "rate": "1"},
     "tariffs.small.night.start", "HH:MM"),
    ("tariffs.small.night", {"start": "22:00", "end": "07:00"}, "tariffs.small.night",
     "exactly one of rate or flat"),
    ("tariffs.small.cap_period", "weekly", "tariffs.small.cap_period", "must be one of"),
    ("tariffs.small.fee_factor", "1.5", "tariffs.small.fee_factor", "must be <= 1"),
    ("version", DELETE, "version", "required"),
    ("effective_from", "2026-01-01T00:00:00", "effective_from", "UTC offset"),
    ("timezone", "Mars/Olympus", "timezone", "unknown time zone"),
    ("default_tier", "platinum", "default_tier", "not one of the tiers"),
    ("tiers.member.minutes_per_point", DELETE, "tiers.member", "needs minutes_per_point"),
    ("tiers.member.redeem", "cash", "tiers.member.redeem", "must be one of minutes, money"),
    ("calendar.weekend_days", ["sat", "caturday"], "calendar.weekend_days[1]", "must be one of"),
    ("calendar.holidays", ["2026-02-30"], "calendar.holidays[0]", "date"),
    ("campaigns", [{"name": "x", "applies_to": "parking", "multiplier": "2",
                    "tiers": ["diamond"]}], "campaigns[0].tiers", "unknown tier 'diamond'"),
    ("campaigns", [{"name": "x", "applies_to": "parking", "multiplier": "2", "days": ["funday"]}],
     "campaigns[0].days", "unknown day 'funday'"),
    ("campaigns", [{"name": "x", "applies_to": "parking", "multiplier": "2"},
                   {"name": "x", "applies_to": "purchase", "multiplier": "3"}],
     "campaigns[1].name", "duplicate campaign name"),
    ("campaigns", [{"name": "x", "applies_to": "parking"}], "campaigns[0]",
     "needs a multiplier other than 1 or bonus_points"),
    ("campaigns", [{"name": "x", "applies_to": "parking", "multiplier": "2",
                    "date_from": "2026-05-05", "date_to": "2026-05-01"}], "campaigns[0]",
     "date_to is before date_from"),
    ("campaigns", [{"name": "x", "applies_to": "parking", "multiplier": "2",
                    "vehicle_classes": ["bus"]}], "campaigns[0].vehicle_classes",
     "unknown vehicle class 'bus'"),
    ("earn.parking.points_per_hour", {"tank": 1}, "earn.parking.points_per_hour.tank",
     "no tariff for this vehicle class"),
    ("earn.daily_cap", 0, "earn.daily_cap", "must be >= 1"),
    ("redemption.monthly_cap_value", "-200", "redemption.monthly_cap_value", "must be >= 0"),
    ("redemption.order", "random", "redemption.order", "must be one of"),
    ("expiry.annual_month", 13, "expiry.annual_month", "must be <= 12"),
    ("tiers.member", {"redeem": "money", "yuan_per_point": "0"}, "tiers.member.yuan_per_point",
     "must be > 0"),
    ("lists.whitelist", [{"plate": "粤B1", "until": "2026-05-01T00:00:00"}],
     "lists.whitelist[0].until", "UTC offset"),
    ("billing.pay_grace_minutes", "soon", "billing.pay_grace_minutes", "integer"),
    ("lists.whitelist", [{"plate": "粤B1"}, {"plate": "粤B1"}], "lists.whitelist[1].plate",
     "duplicate plate"),
    ("tariffs", {}, "tariffs", "at least 1"),
    # multiplier groups (#13): a campaign's group must be declared with its stacking
    ("campaigns", [{"name": "x", "applies_to": "both", "multiplier": "2", "group": "day"}],
     "campaigns[0].group", "unknown multiplier group 'day'; declare it as [earn.groups.day]"),
    ("earn.groups", {"day": {"stacking": "highest"}}, "earn.groups.day.stacking",
     "must be one of max, multiply"),
    ("earn.groups", {"day": {}}, "earn.groups.day.stacking", "required"),
    ("earn.groups", {"day": {"stacking": "max", "cap": "3"}}, "earn.groups.day.cap",
     "unknown key"),
    ("earn.groups", {"day": {"stacking": "max"}}, "earn.groups.day", "no campaign has this group"),
    ("earn.stacking", "add", "earn.stacking", "must be one of multiply, max"),
]


@pytest.mark.parametrize(("key", "value", "path", "reason"), CASES,
                         ids=[f"{c[0]}={c[1]!r}"[:60] for c in CASES])
def test_rejected_with_key_path(key, value, path, reason):  # type: ignore[no-untyped-def]
    data = patched(key, value)
    with pytest.raises(BundleError) as exc:
        parse_bundle(data)
    errors = exc.value.errors
    assert any(p == path and reason.lower() in r.lower() for p, r in errors), errors


def test_every_error_reported_at_once() -> None:
    data = base()
    data["tariffs"]["small"]["unit_minutes"] = 7
    data["tiers"]["member"]["minutes_per_point"] = 0
    data["surprise"] = 1
    with pytest.raises(BundleError) as exc:
        parse_bundle(data)
    paths = {p for p, _ in exc.value.errors}
    assert {"tariffs.small.unit_minutes", "tiers.member.minutes_per_point", "surprise"} <= paths
    assert "tariffs.small.unit_minutes: must be one of 1, 15, 30, 60" in str(exc.value)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("version = \n", "utf-8")
    with pytest.raises(BundleError, match="not valid TOML"):
        load_bundle(bad)
    with pytest.raises(BundleError, match="cannot read"):
        load_bundle(tmp_path / "missing.toml")


def test_cli_check_exit_2_with_key_paths(tmp_path: Path) -> None:
    bad = tmp_path / "rules.toml"
    src = (ROOT / "config" / "rules.example.toml").read_text("utf-8")
    bad.write_text(src.replace("unit_minutes = 1", "unit_minutes = 20")
                   .replace('timezone = "Asia/Shanghai"', 'timezone = "Asia/Nowhere"'), "utf-8")
    p = subprocess.run([str(EXE), "rules", "check", str(bad)], capture_output=True, text=True,
                       timeout=60, check=False)
    assert p.returncode == 2
    assert "tariffs.small.unit_minutes: must be one of 1, 15, 30, 60" in p.stderr
    ok = subprocess.run([str(EXE), "rules", "check", str(ROOT / "config" / "rules.example.toml")],
                        capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0 and "OK" in ok.stdout


def test_group_on_a_bonus_only_campaign_is_an_error() -> None:
    data = base()
    data["earn"] = {"groups": {"day": {"stacking": "max"}}}
    data["campaigns"] = [{"name": "x", "applies_to": "both", "bonus_points": 2, "group": "day"}]
    with pytest.raises(BundleError) as exc:
        parse_bundle(data)
    assert ("campaigns[0].group", "a group combines multipliers; this campaign has none") in (
        exc.value.errors)
