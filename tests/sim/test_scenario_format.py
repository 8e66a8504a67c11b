"""The scenario format: every example parses; every malformed file names its key path."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from parkedge_sim.lane_sim import ALL_FAULTS
from parkedge_sim.scenario import ScenarioError, load_scenario, parse_scenario, with_sockets

ROOT = Path(__file__).resolve().parents[2]
HEAD = '[scenario]\nstart = 2026-11-17T10:00:00+08:00\n[lanes.exit]\n'


@pytest.mark.parametrize("path", sorted((ROOT / "config" / "scenarios").glob("*.toml")),
                         ids=lambda p: p.name)
def test_every_example_parses(path: Path) -> None:
    sc = load_scenario(path)
    assert sc.steps and all(s.lane in sc.sockets for s in sc.steps)


def test_relative_times_payment_and_kinds() -> None:
    sc = parse_scenario(
        HEAD
        + '[[step]]\nlane = "exit"\nvehicle = "浙B5T6Q8"\nat = "+85m"\n'
        'pay = { amount = "42.50", by = "operator" }\nexpect = "passed"\n'
        '[[step]]\nlane = "exit"\nfault = "slow_reply"\nvalue = 0.8\n'
        '[[step]]\nlane = "exit"\nwait_s = 0.5\n'
    )
    car, fault, wait = sc.steps
    assert sc.start is not None and car.at == sc.start + timedelta(minutes=85)
    assert car.pay is not None and car.pay.amount == Decimal("42.50") and car.pay.by == "operator"
    assert (fault.kind, fault.fault, fault.value, fault.on) == ("fault", "slow_reply", 0.8, True)
    assert (wait.kind, wait.wait_s) == ("wait", 0.5)


@pytest.mark.parametrize("name", ALL_FAULTS)
def test_every_fault_the_sims_know_is_accepted(name: str) -> None:
    sc = parse_scenario(HEAD + f'[[step]]\nlane = "exit"\nfault = "{name}"\n')
    assert sc.steps[0].fault == name


@pytest.mark.parametrize(
    ("body", "path", "words"),
    [
        ('[[step]]\nlane = "exit"\nvehicle = "沪A1"\nexpect = "flew"\n', "step[1].expect", "flew"),
        ('[[step]]\nlane = "side"\nvehicle = "沪A1"\n', "step[1].lane", "side"),
        ('[[step]]\nlane = "exit"\nfault = "meteor"\n', "step[1].fault", "meteor"),
        ('[[step]]\nlane = "exit"\n', "step[1]", "vehicle = PLATE"),
        ('[[step]]\nlane = "exit"\nvehicle = "沪A1"\ndwel_s = 1\n', "step[1].dwel_s", "unknown"),
        ('[[step]]\nlane = "exit"\nvehicle = "沪A1"\nat = "tomorrow"\n', "step[1].at", "tomorrow"),
        ('[[step]]\nlane = "exit"\nvehicle = "沪A1"\nat = 2026-11-17T10:00:00\n', "step[1].at",
         "offset"),
        ('[[step]]\nlane = "exit"\nvehicle = "沪A1"\npay = { amount = 42.5 }\n',
         "step[1].pay.amount", "string"),
        ('[[step]]\nlane = "exit"\nvehicle = "沪A1"\npay = { amount = "1", by = "dog" }\n',
         "step[1].pay.by", "dog"),
        ('[[step]]\nlane = "exit"\nvehicle = "沪A1"\ndwell_s = -1\n', "step[1].dwell_s",
         "within"),
        ('[[step]]\nlane = "exit"\nvehicle = "沪A1"\nreverse = "yes"\n', "step[1].reverse",
         "true or false"),
        ('[[step]]\nlane = "exit"\nfault = "stuck_arm"\nexpect = "passed"\n', "step[1].expect",
         "only a vehicle"),
        ('[[step]]\nlane = "exit"\nvehicle = "沪A1"\n[[step]]\nlane = "exit"\nvehicle = 7\n',
         "step[2].vehicle", "string"),
        ('', "step", "at least one"),
    ],
)
def test_malformed_names_the_key_path(body: str, path: str, words: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(HEAD + body)
    assert err.value.path == path
    assert words in str(err.value)


def test_not_toml_and_no_lanes() -> None:
    with pytest.raises(ScenarioError, match=r"^\(file\): not valid TOML"):
        parse_scenario("[[step]\n")
    with pytest.raises(ScenarioError, match=r"^lanes: "):
        parse_scenario('[[step]]\nlane = "exit"\nwait_s = 1\n')


def test_steps_talking_to_a_daemon_need_its_socket() -> None:
    sc = parse_scenario(HEAD + '[[step]]\nlane = "exit"\nvehicle = "沪A1"\nexpect_state = "idle"\n')
    with pytest.raises(ScenarioError) as err:
        with_sockets(sc, {})
    assert err.value.path == "step[1].expect_state"
    assert with_sockets(sc, {"exit": "/run/x.sock"}).sockets == {"exit": "/run/x.sock"}
    assert with_sockets(sc, {"exit": "/a", "side": "/b"}).sockets == {"exit": "/a"}
