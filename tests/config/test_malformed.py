"""Malformed configs: each must be rejected with the exact key path a technician edits."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from edge.config import ConfigError, load_config, parse_config

EXAMPLES = Path(__file__).resolve().parents[2] / "config"
DELETE = object()


def base() -> dict[str, Any]:
    with (EXAMPLES / "entry.example.toml").open("rb") as fh:
        return tomllib.load(fh)


def mutate(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return out


# (set this key, to this value) → the error must name this key path.
CASES: list[tuple[str, Any, str]] = [
    ("lane.id", "lane 1!", "lane.id"),
    ("lane.id", DELETE, "lane.id"),
    ("lane.direction", "both", "lane.direction"),
    ("lane.timezone", "Mars/Olympus", "lane.timezone"),
    ("lane.timezone", "Asia", "lane.timezone"),
    ("lane.clock", "ntp", "lane.clock"),
    ("lane.plate_timeout_s", 0, "lane.plate_timeout_s"),
    ("lane.clear_timeout_s", "sixty", "lane.clear_timeout_s"),
    ("lane.unknown_plate", "open", "lane.unknown_plate"),
    ("lane.uncertain_read", "deduct", "lane.uncertain_read"),
    ("lane.idle_lines", "Welcome", "lane.idle_lines"),
    ("lane.idle_line", ["typo"], "lane.idle_line"),
    ("lane.control_socket", "/run/" + "x" * 120 + ".sock", "lane.control_socket"),
    ("buses.io.url", "COM3", "buses.io.url"),
    ("buses.io.url", "tcp://127.0.0.1:99999", "buses.io.url"),
    ("buses.io.parity", "X", "buses.io.parity"),
    ("buses.io.bytesize", 9, "buses.io.bytesize"),
    ("buses.io.baud", 9600, "buses.io.baud"),
    ("buses.display.url", "tcp://127.0.0.1:5021", "buses.display.protocol"),
    ("devices.barrier.pulse_ms", 50, "devices.barrier.pulse_ms"),
    ("devices.barrier.pulse_ms", 5000, "devices.barrier.pulse_ms"),
    ("devices.barrier.driver", "gpio", "devices.barrier.driver"),
    ("devices.barrier.close_channel", 1, "devices.barrier.close_channel"),
    ("devices.barrier.input_arm_down", 1, "devices.barrier.input_arm_down"),
    ("devices.barrier.bus", "nosuch", "devices.barrier.bus"),
    ("devices.barrier.bus", "display", "devices.barrier.bus"),
    ("devices.barrier.unit", 0, "devices.barrier.unit"),
    ("devices.barrier", DELETE, "devices.barrier"),
    ("devices.loops.input_closing", 4, "devices.loops.input_closing"),
    ("devices.loops.input_photocell", 3, "devices.loops.input_photocell"),
    ("devices.loops.bus", "", "devices.loops.bus"),
    ("devices.loops.mode", "latched", "devices.loops.mode"),
    ("devices.display.bus", "io", "devices.display.bus"),
    ("devices.display.lines", 0, "devices.display.lines"),
    ("camera.source", "stream", "camera.url"),
    ("camera.listen", "8081", "camera.listen"),
    ("camera.listen", "[::zz]:8081", "camera.listen"),
    ("camera.min_confidence", 1.5, "camera.min_confidence"),
    ("lpr.grammar", "us", "lpr.grammar"),
    ("lpr.grammar", "latin:LLX", "lpr.grammar"),
    ("lpr.early_frames", -1, "lpr.early_frames"),
    ("lpr.early_confidence", 1.5, "lpr.early_confidence"),
    ("lpr.early_confidence", "sure", "lpr.early_confidence"),
    ("sync.broker_url", "http://central:80", "sync.broker_url"),
    ("sync.keepalive_s", 120, "sync.keepalive_s"),
    ("sync.password", {"env": "A", "file": "/b"}, "sync.password"),
    ("sync.password", 1234, "sync.password"),
    ("sync.cert_file", "/etc/ssl/c.pem", "sync.key_file"),
    ("sync.rules_public_key", "not-a-key", "sync.rules_public_key"),
    ("logging.level", "LOUD", "logging.level"),
    ("logging.format", "xml", "logging.format"),
    ("metrics.listen", "localhost", "metrics.listen"),
    ("tariff", {"path": "x"}, "tariff"),
]


@pytest.mark.parametrize(
    ("key", "value", "expected"), CASES, ids=[f"{c[0]}={c[1]!r}" for c in CASES]
)
def test_malformed_config_names_the_key(key: str, value: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(mutate(base(), key, value))
    paths = [p for p, _ in info.value.errors]
    assert expected in paths, str(info.value)
    # Every reason is a non-empty sentence and the str() lists one error per line.
    assert all(reason.strip() for _, reason in info.value.errors)
    assert str(info.value).splitlines()[paths.index(expected)].startswith(f"{expected}: ")


def test_base_is_valid() -> None:
    # Guards the table above: each case fails because of its mutation, not the base.
    cfg = parse_config(base())
    assert cfg.lane.id == "E1"


def test_all_errors_reported_at_once() -> None:
    data = mutate(base(), "devices.barrier.pulse_ms", 1)
    data = mutate(data, "lane.direction", "sideways")
    data = mutate(data, "logging.level", "LOUD")
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    paths = {p for p, _ in info.value.errors}
    assert {"devices.barrier.pulse_ms", "lane.direction", "logging.level"} <= paths


def test_eb_serial_barrier_needs_raw_bus() -> None:
    data = mutate(base(), "devices.barrier.driver", "eb-serial")
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert [p for p, _ in info.value.errors] == ["devices.barrier.bus"]
    assert '"raw"' in info.value.errors[0][1]
    ok = mutate(data, "devices.barrier.bus", "display")
    assert parse_config(ok).devices.barrier.driver == "eb-serial"


@pytest.mark.parametrize("grammar", ["cn", "latin", "latin:LLDDDLL,DLDDDDD"])
def test_plate_grammars_a_site_can_choose(grammar: str) -> None:
    assert parse_config(mutate(base(), "lpr.grammar", grammar)).lpr.grammar == grammar


def test_early_accept_defaults_and_off() -> None:
    """Two agreeing frames at 0.9 by default (bench/lpr_unsure.py); 0 turns it off."""
    from edge.config.models import LprConfig

    assert (LprConfig().early_frames, LprConfig().early_confidence) == (2, 0.9)
    lpr = parse_config(base()).lpr  # the example says the same
    assert (lpr.early_frames, lpr.early_confidence) == (2, 0.9)
    assert parse_config(mutate(base(), "lpr.early_frames", 0)).lpr.early_frames == 0


def test_barrier_status_loops_need_no_bus() -> None:
    data = mutate(base(), "devices.loops.driver", "barrier-status")
    data = mutate(data, "devices.loops.bus", "")
    assert parse_config(data).devices.loops.driver == "barrier-status"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[lane]\nid = \n", "line 2, column 6"),
        ("[lane\nid='x'\n", "line 1"),
        ("[lane]\nid = 'a'\nid = 'b'\n", "line 3"),
    ],
)
def test_toml_syntax_error_names_line_and_column(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "lane.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    ((key, reason),) = info.value.errors
    assert key == "toml"
    assert f"syntax error at {where}" in reason


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "gbk.toml"
    bad.write_bytes("[lane]\nid = '入口'\n".encode("gbk"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_relative_paths_resolve_against_config_dir(tmp_path: Path) -> None:
    text = (EXAMPLES / "entry.example.toml").read_text(encoding="utf-8")
    text = text.replace('path = "/var/lib/parkedge/ledger.db"', 'path = "state/ledger.db"')
    (tmp_path / "lane.toml").write_text(text, encoding="utf-8")
    cfg = load_config(tmp_path / "lane.toml")
    assert cfg.storage.path == tmp_path.resolve() / "state" / "ledger.db"


def test_models_are_frozen_and_typed() -> None:
    cfg = parse_config(base())
    with pytest.raises(ValueError):
        setattr(cfg.lane, "id", "other")  # noqa: B010 (a frozen model must refuse this)
    assert cfg.lane.tz.key == "Asia/Shanghai"
    assert cfg.buses["io"].endpoint.kind == "serial"
    assert cfg.buses["io"].endpoint.serial_url == "/dev/ttyUSB0"
    assert cfg.sync_client_id == "E1"


def test_missing_section_and_missing_key_are_told_apart() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(mutate(mutate(base(), "devices.barrier", DELETE), "lane.id", DELETE))
    errors = dict(info.value.errors)
    assert errors["devices.barrier"] == "missing required section"
    assert errors["lane.id"] == "missing required key"
