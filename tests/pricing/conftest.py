"""Shared builders for pricing tests: a small valid bundle dict and deep-merge overrides."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge.pricing import RuleBundle, parse_bundle

SH = ZoneInfo("Asia/Shanghai")


def base_dict() -> dict[str, Any]:
    return {
        "version": "t-1",
        "effective_from": datetime(2026, 1, 1, tzinfo=SH),
        "timezone": "Asia/Shanghai",
        "default_tier": "member",
        "tariffs": {"small": {"rate": "0.5"}},
        "tiers": {"member": {"redeem": "minutes", "minutes_per_point": 10}},
    }


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def make(**patch: Any) -> RuleBundle:
    """A bundle from the base with ``patch`` merged in (tariffs/tiers are replaced whole)."""
    data = merge(base_dict(), {k: v for k, v in patch.items() if k not in ("tariffs", "tiers")})
    data.update({k: v for k, v in patch.items() if k in ("tariffs", "tiers")})
    return parse_bundle(data)


@pytest.fixture
def bundle() -> Callable[..., RuleBundle]:
    return make


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0,
       tz: ZoneInfo = SH) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=tz)
