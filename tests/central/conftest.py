"""Central's test fixtures: every test runs on SQLite and on the local PostgreSQL.

PostgreSQL: one fresh database per test run (random name, created on 127.0.0.1:5432 as
user postgres, dropped at the end), migrated once; each test starts from empty tables. The
PostgreSQL half skips only when no server answers (on the project's machines one does).
SQLite: the migrated file is made once and copied per test.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from central.config import parse_config
from central.config.models import CentralConfig
from central.db import make_engine, session_factory, upgrade
from central.db.models import Base
from edge.pricing import RuleBundle, load_bundle
from tests.central.helpers import RULES, at, config_dict, fresh_pg_database

BACKENDS = ["sqlite", "postgresql"]


def _pg_reachable() -> bool:
    import psycopg

    try:
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres",
                             connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str | None]:
    """A fresh migrated PostgreSQL database for this run, or None if no server answers."""
    if not _pg_reachable():
        yield None
        return
    with fresh_pg_database("central_test") as name:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("central-template") / "central.db"
    eng = make_engine(f"sqlite:///{path}")
    upgrade(eng)
    eng.dispose()
    return path


_TABLES = ", ".join(t.name for t in Base.metadata.sorted_tables)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated, empty database on each backend."""
    if request.param == "sqlite":
        dst = tmp_path / "central.db"
        shutil.copy(sqlite_template, dst)
        return f"sqlite:///{dst}"
    url = request.getfixturevalue("pg_url")
    if url is None:
        pytest.skip("no PostgreSQL server at 127.0.0.1:5432")
    eng = make_engine(url)
    with eng.begin() as c:
        c.execute(text(f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE"))
    eng.dispose()
    return str(url)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture(scope="session")
def rules() -> RuleBundle:
    return load_bundle(RULES)


@pytest.fixture
def cfg(db_url: str) -> CentralConfig:
    return parse_config(config_dict(db_url))


@pytest.fixture
def central(cfg: CentralConfig) -> Iterator[Any]:
    """The composition root on this backend, with a clock tests can set (``central.now``)."""
    from central.app import Central

    c = Central.from_config(cfg)
    c.now = at("2026-03-03 10:00")  # type: ignore[attr-defined]
    c.clock = lambda: c.now  # type: ignore[attr-defined]
    yield c
    c.close()


@pytest.fixture(autouse=True)
def _fast_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap argon2id parameters in tests (the defaults take ~0.5 s a hash on a busy box);
    test_passwords_use_argon2id_defaults checks what production uses."""
    from argon2 import PasswordHasher

    from central.services import passwords

    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(passwords, "_ph", cheap)
    monkeypatch.setattr(passwords, "_DUMMY", cheap.hash("not-a-real-password"))
