"""Helpers shared by central's tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RULES = HERE / "data" / "rules.central.toml"


def config_dict(db_url: str = "sqlite:///central.db", **sections: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"site": {"site_id": "mall-1", "timezone": "Asia/Shanghai"},
                         "database": {"url": db_url}, "rules": {"bundle": str(RULES)}}
    for k, v in sections.items():
        d[k] = {**d.get(k, {}), **v}
    return d


def at(s: str) -> datetime:
    """A site-local (+08:00) instant from 'YYYY-MM-DD HH:MM'."""
    return datetime.fromisoformat(s.replace(" ", "T") + "+08:00")
