"""Central's config: key paths in errors, unknown keys refused, secrets only from files or
the environment (owner-only files), exit 2 from check-config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from central.cli import app
from central.config import ConfigError, check, load_config, parse_config
from tests.central.helpers import RULES, config_dict

runner = CliRunner()


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "central.toml"
    p.write_text(text, encoding="utf-8")
    return p


GOOD = f"""
[site]
site_id = "mall-1"
timezone = "Asia/Shanghai"
[database]
url = "sqlite:///central.db"
[rules]
bundle = "{RULES}"
"""


def test_minimal_config_loads_and_resolves_paths(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD))
    assert cfg.database.url == f"sqlite:///{tmp_path}/central.db"
    assert cfg.web.listen == "127.0.0.1" and cfg.web.loopback
    assert check(cfg) == []


@pytest.mark.parametrize(("patch", "path", "reason"), [
    ({"site": {"colour": "red"}}, "site.colour", "unknown key"),
    ({"bogus": {}}, "bogus", "unknown key"),
    ({"site": {"timezone": "Mars/Olympus"}}, "site.timezone", "unknown time zone"),
    ({"web": {"port": 70000}}, "web.port", "less than or equal"),
    ({"web": {"listen": "example.org"}}, "web.listen", "IP address"),
    ({"database": {"url": "mysql://x"}}, "database.url", "must start with"),
    ({"database": {"url": "postgresql+psycopg://u:pw@h/db"}}, "database.url", "password"),
    ({"database": {"password": {"env": "PGPASS"}}}, "database", "SQLite has none"),
    ({"database": {"password": "hunter2hunter2"}}, "database.password", "not written inline"),
    ({"points": {"cost_per_point": "NaN"}}, "points.cost_per_point", ""),
    ({"jobs": {"expiry_at": "25:00"}}, "jobs.expiry_at", "pattern"),
    ({"web": {"tls_cert": "/x.pem"}}, "web", "go together"),
    ({"metrics": {"listen": "9110"}}, "metrics.listen", "host:port"),
    ({"metrics": {"listen": "example.org:9110"}}, "metrics.listen", "IP address"),
])
def test_bad_config_names_the_key(patch: dict[str, dict[str, object]], path: str,
                                  reason: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(config_dict(**patch))
    assert any(p == path and reason in r for p, r in ei.value.errors), ei.value.errors


def test_missing_section_is_required() -> None:
    d = config_dict()
    del d["rules"]
    with pytest.raises(ConfigError) as ei:
        parse_config(d)
    assert ("rules", "required") in ei.value.errors


PG_URL = "postgresql+psycopg://central@127.0.0.1/central"  # a password needs PostgreSQL


def test_secret_file_must_be_owner_only(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("s3cret\n")
    f.chmod(0o644)
    cfg = parse_config(config_dict(database={"password": {"file": str(f)}, "url": PG_URL}))
    errs = check(cfg)
    assert errs and errs[0][0] == "database.password" and "chmod 600" in errs[0][1]
    f.chmod(0o600)
    assert cfg.database.password is not None and cfg.database.password.get() == "s3cret"
    assert check(cfg) == []


def test_secret_file_owned_by_another_account_is_refused(tmp_path: Path) -> None:
    """The lane's one rule for every secret file holds at central too (#12 item 10)."""
    f = tmp_path / "pw"
    f.write_text("s3cret\n")
    f.chmod(0o600)
    if os.geteuid() != 0:
        pytest.skip("chown to another account needs root")
    os.chown(f, 65534, 65534)  # nobody
    cfg = parse_config(config_dict(database={"password": {"file": str(f)}, "url": PG_URL}))
    errs = check(cfg)
    assert errs and errs[0][0] == "database.password" and "owned by" in errs[0][1]


def test_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = parse_config(config_dict(database={"password": {"env": "CENTRAL_TEST_PW"},
                                             "url": PG_URL}))
    assert check(cfg)[0][0] == "database.password"
    monkeypatch.setenv("CENTRAL_TEST_PW", "pw")
    assert check(cfg) == []
    assert "pw" not in repr(cfg)


def test_bundle_time_zone_must_be_the_sites(tmp_path: Path) -> None:
    cfg = parse_config(config_dict(site={"timezone": "Europe/Berlin"}))
    assert [p for p, _ in check(cfg)] == ["site.timezone"]


def test_check_config_exit_codes(tmp_path: Path) -> None:
    good = _write(tmp_path, GOOD)
    r = runner.invoke(app, ["check-config", "-c", str(good)])
    assert r.exit_code == 0, r.output
    assert "OK, site mall-1" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace('site_id = "mall-1"', 'site_id = "mall-1"\nsite_name = 3'))
    r = runner.invoke(app, ["check-config", "-c", str(bad)])
    assert r.exit_code == 2
    assert "site.site_name: unknown key" in r.output
    r = runner.invoke(app, ["check-config", "-c", str(tmp_path / "nope.toml")])
    assert r.exit_code == 2 and "does not exist" in r.output
    broken = tmp_path / "broken.toml"
    broken.write_text("[site\n")
    r = runner.invoke(app, ["check-config", "-c", str(broken)])
    assert r.exit_code == 2 and "not valid TOML" in r.output


def test_keygen_writes_owner_only_key(tmp_path: Path) -> None:
    out = tmp_path / "site.key"
    r = runner.invoke(app, ["keygen", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" in out.read_bytes()
    r = runner.invoke(app, ["keygen", "--out", str(out)])
    assert r.exit_code == 1 and "not overwriting" in r.output
