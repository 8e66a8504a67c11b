"""Whatever a config contains, loading it ends in a Config or a ConfigError, nothing else."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.config import Config, ConfigError, parse_config, parse_toml

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "exit.example.toml"
with EXAMPLE.open("rb") as _fh:
    BASE: dict[str, Any] = tomllib.load(_fh)


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*prefix, key))
            out += _paths(value, (*prefix, key))
    return out


PATHS = _paths(BASE)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=40),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(PATHS), values), min_size=1, max_size=4))
def test_random_values_give_config_or_config_error(
    changes: list[tuple[tuple[str, ...], Any]],
) -> None:
    data = copy.deepcopy(BASE)
    for path, value in changes:
        try:
            _set(data, path, value)
        except (KeyError, TypeError):
            continue  # an earlier change replaced a parent table
    try:
        cfg = parse_config(data)
    except ConfigError as exc:
        assert exc.errors
        for key, reason in exc.errors:
            assert isinstance(key, str) and reason.strip()
        return
    assert isinstance(cfg, Config)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_text_gives_config_or_config_error(text: str) -> None:
    try:
        parse_toml(text)
    except ConfigError as exc:
        assert exc.errors
