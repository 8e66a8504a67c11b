"""``parkedge check-config``: OK/exit 0 for a good file, every error/exit 2 for a bad one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [ROOT / "config" / "entry.example.toml", ROOT / "config" / "exit.example.toml"]

# Runs the real CLI app in a child process with only this command registered, so a
# half-written command module elsewhere cannot fail these tests; get_group() keeps
# check-config a sub-command. The console script is tested at the end of this file.
RUNNER = (
    "import sys, typer; from edge.cli import app; import edge.cli.config; "
    "typer.main.get_group(app)(sys.argv[1:], prog_name='parkedge')"
)


def parkedge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RUNNER, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_both_examples_exist() -> None:
    assert all(p.is_file() for p in EXAMPLES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_check_config(path: Path) -> None:
    result = parkedge("check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "OK\n"


def test_bad_config_prints_every_error_and_exits_2(tmp_path: Path) -> None:
    text = (ROOT / "config" / "exit.example.toml").read_text(encoding="utf-8")
    text = text.replace("pulse_ms = 500", "pulse_ms = 5").replace('bus = "led"', 'bus = "nope"')
    text = text.replace('direction = "exit"', 'direction = "out"')
    bad = tmp_path / "lane.toml"
    bad.write_text(text, encoding="utf-8")
    result = parkedge("check-config", str(bad))
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert any(line.startswith("lane.direction: ") for line in lines), result.stdout
    assert any(line.startswith("devices.barrier.pulse_ms: ") for line in lines), result.stdout
    assert "OK" not in lines
    assert "Traceback" not in result.stderr


def test_syntax_error_and_missing_file_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "lane.toml"
    bad.write_text("[lane]\nid = = 'x'\n", encoding="utf-8")
    result = parkedge("check-config", str(bad))
    assert result.returncode == 2
    assert result.stdout.startswith("toml: syntax error at line 2, column 6")
    missing = parkedge("check-config", str(tmp_path / "absent.toml"))
    assert missing.returncode == 2
    assert "does not exist" in missing.stdout


def test_show_redacts_secrets(tmp_path: Path) -> None:
    text = (ROOT / "config" / "exit.example.toml").read_text(encoding="utf-8")
    text = text.replace(
        'password = { env = "PARKEDGE_MQTT_PASSWORD" }', 'password = "s3cr3t-literal"'
    )
    cfg = tmp_path / "lane.toml"
    cfg.write_text(text, encoding="utf-8")
    result = parkedge("check-config", "--show", str(cfg))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "s3cr3t-literal" not in result.stdout
    assert '"password": "***"' in result.stdout


def test_installed_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("parkedge")
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable} (pip install -e .)")
    good = subprocess.run(
        [str(script), "check-config", str(EXAMPLES[0])], capture_output=True, text=True, timeout=60
    )
    assert (good.returncode, good.stdout) == (0, "OK\n"), good.stderr
    bad = tmp_path / "lane.toml"
    bad.write_text("[lane]\nid = 'E1'\ndirection = 'entry'\n", encoding="utf-8")
    result = subprocess.run(
        [str(script), "check-config", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stdout == "devices: missing required section\n"


def test_environment_warnings_and_strict(tmp_path: Path) -> None:
    master, slave = os.openpty()  # a real tty standing in for the RS-485 adapter
    try:
        tty = os.ttyname(slave)
        text = (ROOT / "config" / "exit.example.toml").read_text(encoding="utf-8")
        text = text.replace('url = "serial:///dev/ttyUSB0"', f'url = "serial://{tty}"')
        text = text.replace('path = "/etc/parkedge/rules.toml"', 'path = "rules.toml"')
        text = text.replace('path = "/var/lib/parkedge/ledger.db"', 'path = "state/ledger.db"')
        cfg = tmp_path / "lane.toml"
        cfg.write_text(text, encoding="utf-8")
        warned = parkedge("check-config", str(cfg))
        assert warned.returncode == 0 and warned.stdout == "OK\n"
        assert "warning: rules.path: " in warned.stderr
        assert "warning: buses.led.url: /dev/ttyUSB1 does not exist" in warned.stderr
        assert "buses.relay.url" not in warned.stderr  # the pty exists
        strict = parkedge("check-config", "--strict", str(cfg))
        assert strict.returncode == 2
        assert {line.split(":")[0] for line in strict.stdout.splitlines()} == {
            "rules.path",
            "buses.led.url",
        }
        (tmp_path / "rules.toml").write_text("", encoding="utf-8")
        cfg.write_text(text.replace('url = "/dev/ttyUSB1"', f'url = "{tty}"'), encoding="utf-8")
        clean = parkedge("check-config", "--strict", str(cfg))
        assert (clean.returncode, clean.stdout, clean.stderr) == (0, "OK\n", "")
    finally:
        os.close(master)
        os.close(slave)
