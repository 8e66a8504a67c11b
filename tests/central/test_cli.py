"""``parkedge-central`` commands against a real database on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from central.cli import app
from central.db import make_engine, session_factory
from central.db.models import AuditLog, Member, StaffUser
from central.services.passwords import verify_password
from tests.central.helpers import RULES

runner = CliRunner()


@pytest.fixture
def conf(tmp_path: Path, db_url: str) -> str:
    p = tmp_path / "central.toml"
    p.write_text(f'[site]\nsite_id = "mall-1"\ntimezone = "Asia/Shanghai"\n'
                 f'[database]\nurl = "{db_url}"\n[rules]\nbundle = "{RULES}"\n')
    return str(p)


def cli(conf: str, *args: str, input: str | None = None) -> tuple[int, str]:
    r = runner.invoke(app, [*args, "-c", conf], input=input)
    return r.exit_code, r.output


def test_migrate_is_repeatable(conf: str) -> None:
    code, out = cli(conf, "migrate")
    assert code == 0 and "revision 0003" in out  # head: 0003_prepay
    assert cli(conf, "migrate")[0] == 0


def test_users_members_shops_jobs_figures(conf: str, db_url: str, tmp_path: Path) -> None:
    assert cli(conf, "user", "add", "alice", "--role", "admin", "--password-stdin",
               input="correct horse battery\n")[0] == 0
    code, out = cli(conf, "user", "add", "bob", "--role", "chef", "--password-stdin",
                    input="correct horse battery\n")
    assert code == 1 and "role: must be one of" in out
    code, out = cli(conf, "user", "add", "bob", "--role", "auditor", "--password-stdin",
                    input="short\n")
    assert code == 1 and "password" in out
    assert cli(conf, "user", "passwd", "alice", "--password-stdin",
               input="another long password\n")[0] == 0
    assert cli(conf, "user", "disable", "alice")[0] == 0
    assert cli(conf, "user", "disable", "nobody")[0] == 1
    code, out = cli(conf, "member", "add", "--id", "m1", "--tier", "gold", "--phone",
                    "13800000001", "--plate", "粤B12345", "--plate", "AB123")
    assert code == 0, out
    assert cli(conf, "member", "add", "--id", "m2", "--tier", "diamond")[0] == 1
    csv = tmp_path / "m.csv"
    csv.write_text("member_id,phone,name,tier,plates\nm3,,C,member,CD1\n")
    assert cli(conf, "member", "import", str(csv))[0] == 0
    code, out = cli(conf, "member", "code", "m1")
    assert code == 0 and len(out.strip()) == 8
    code, key = cli(conf, "shop", "add", "cafe", "--category", "dining")
    assert code == 0 and key.startswith("pos_")
    code, out = cli(conf, "perks", "--month", "2026-03")
    assert code == 0 and "granted 2 coupons" in out
    code, out = cli(conf, "expire", "--dry-run", "--at", "2030-01-01T00:00")
    assert code == 0 and "would expire 0 points" in out
    code, out = cli(conf, "figures", "--json")
    assert code == 0 and json.loads(out)["members"] == 2
    eng = make_engine(db_url)
    with session_factory(eng).begin() as s:
        u = s.get(StaffUser, "alice")
        assert u is not None and u.disabled and verify_password(u.password_hash,
                                                                 "another long password")
        assert s.get(Member, "m1").tier == "gold"  # type: ignore[union-attr]
        actions = list(s.scalars(select(AuditLog.action).order_by(AuditLog.id)))
        actors = set(s.scalars(select(AuditLog.actor)))
    eng.dispose()
    assert actions == ["user.add", "user.passwd", "user.disable", "member.add",
                       "member.import", "member.code", "shop.add"]
    assert all(a.startswith("cli:") for a in actors)


def test_bad_config_exits_2(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[site]\nsite_id = "x"\n')
    code, out = cli(str(p), "figures")
    assert code == 2 and "site.timezone: required" in out and "rules: required" in out
