"""Reading systemd unit files in the unit tests (the lane's and central's)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """systemd's INI dialect: repeated keys accumulate, '#'/';' comments, '\\' continuation."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    pending = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"line {number}: bad section header {line!r}"
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"line {number}: key outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"line {number}: not key=value: {line!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def load(path: Path) -> Unit:
    return parse_unit(path.read_text(encoding="utf-8"))


def one(unit: Unit, key: str, section: str = "Service") -> str:
    values = unit[section].get(key)
    assert values, f"[{section}] {key}= missing"
    return values[-1]


def analyze(path: Path) -> tuple[float, str]:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip(
            "systemd-analyze is missing: install the Debian package 'systemd' "
            "(make test's sysdeps should install it)"
        )
    result = subprocess.run(
        [exe, "security", "--offline=true", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", out)
    assert match, out
    return float(match.group(1)), out
