"""The product package never imports the simulator (#13): a lane box installs ``edge`` alone,
and a product module that reached into ``parkedge_sim`` would break there, or worse, run
simulator code on a real lane. Walks every module's syntax tree, so lazy imports inside
functions and ``importlib.import_module("parkedge_sim...")`` count too."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = "parkedge_sim"


def _forbidden(name: str | None) -> bool:
    return name is not None and (name == FORBIDDEN or name.startswith(FORBIDDEN + "."))


def simulator_imports(source: str, filename: str) -> list[str]:
    """``file:line name`` for every import of the simulator in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str | None] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            callee = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if callee in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [f"{filename}:{getattr(node, 'lineno', 0)} {n}" for n in names if _forbidden(n)]
    return found


def test_edge_never_imports_the_simulator() -> None:
    files = sorted((ROOT / "edge").rglob("*.py"))
    assert len(files) > 20, "edge/ not found where expected"
    hits = [hit for f in files
            for hit in simulator_imports(f.read_text(encoding="utf-8"),
                                         str(f.relative_to(ROOT)))]
    assert hits == [], "edge/ imports the simulator:\n" + "\n".join(hits)


def test_the_check_sees_every_form_of_import() -> None:
    # Without this, a walker that missed a form would pass the test above vacuously.
    src = (
        "import parkedge_sim\n"
        "import os, parkedge_sim.broker as b\n"
        "from parkedge_sim.lane_config import X\n"
        "def f():\n"
        "    from parkedge_sim import demo\n"
        "    importlib.import_module('parkedge_sim.central_node')\n"
        "    __import__('parkedge_sim')\n"
        "from . import parkedge_sim_like\n"
        "import parkedge_simulator\n"
        "x = 'parkedge_sim.central_node in a string is no import'\n"
    )
    assert [h.split()[0] for h in simulator_imports(src, "t.py")] == [
        "t.py:1", "t.py:2", "t.py:3", "t.py:5", "t.py:6", "t.py:7"]


def test_the_demo_is_a_simulator_command_not_a_lane_command() -> None:
    lane = subprocess.run([sys.executable, "-m", "edge", "demo"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert lane.returncode == 2 and "No such command" in lane.stderr, lane.stderr
    sim = subprocess.run([sys.executable, "-m", "parkedge_sim.cli", "demo", "--help"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert sim.returncode == 0 and "--keep" in sim.stdout, sim.stdout + sim.stderr


def test_the_sync_codec_comes_without_the_lanes_sync_service() -> None:
    """Central imports ``edge.sync.codec``; the package must not pull in the lane's sync
    service (``LaneSync``: paho's client, the lane's metrics) with it."""
    import subprocess
    import sys

    code = ("import sys; from edge.sync import codec, topics; "
            "assert 'edge.sync.service' not in sys.modules, 'service loaded'; "
            "from edge.sync import LaneSync; assert LaneSync.__name__ == 'LaneSync'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_simulator_keeps_no_central_of_its_own() -> None:
    """#13: the demo, the lane sync tests and the drain bench run on ``parkedge-central``
    (through ``parkedge_sim.central_node`` / ``central_inproc``); the bench stand-in is gone."""
    assert not (ROOT / "hardware-sim" / "parkedge_sim" / "central").exists()
    stand_in = re.compile(r"parkedge_sim[./]central\b(?!_)")
    hits = [f"{f.relative_to(ROOT)}:{n}" for part in ("hardware-sim", "edge", "central", "tests")
            for f in sorted((ROOT / part).rglob("*.py")) if f != Path(__file__).resolve()
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
            if stand_in.search(line)]
    assert hits == [], hits
