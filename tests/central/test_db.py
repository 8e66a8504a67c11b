"""Storage: Alembic migrations on both backends match the models, the audit log is
append-only, money and times round-trip exactly."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from central.db import current
from central.db.migrate import downgrade, head, upgrade
from central.db.models import AuditLog, Base, Member, Purchase, Shop
from tests.central.helpers import at


def test_migrated_schema_matches_models(engine: Engine) -> None:
    assert current(engine) == head()
    with engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c, opts={"compare_type": False}),
                                Base.metadata)
    assert diff == []


def test_downgrade_and_upgrade_again(engine: Engine) -> None:
    downgrade(engine, "base")
    assert current(engine) is None
    upgrade(engine)
    assert current(engine) == head()


def test_audit_log_refuses_update_and_delete(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        s.add(AuditLog(at=datetime.now(UTC), actor="cli:test", action="x", target="t"))
    for stmt in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), sessions.begin() as s:
            s.execute(text(stmt))
    with sessions.begin() as s:
        assert s.query(AuditLog).one().actor == "cli:test"


def test_money_and_times_round_trip(sessions: sessionmaker[Session]) -> None:
    when = at("2026-03-07 12:00")
    with sessions.begin() as s:
        s.add(Member(member_id="m1", name="", tier="member", created_at=when))
        s.add(Shop(shop_id="s1", name="S", category="dining", api_key_hash="h"))
        s.flush()
        s.add(Purchase(shop_id="s1", idempotency_key="k", member_id="m1",
                       amount=Decimal("12345678.91"), category="dining", at=when, points=1,
                       request_hash="x"))
    with sessions.begin() as s:
        p = s.query(Purchase).one()
        assert p.amount == Decimal("12345678.91")
        assert p.at == when and p.at.tzinfo is not None
        with pytest.raises(Exception, match="naive"):
            s.add(Member(member_id="m2", name="", tier="member",
                         created_at=datetime(2026, 1, 1)))
            s.flush()


def test_passwords_use_argon2id_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    import argon2

    from central.services import passwords

    monkeypatch.undo()  # drop the tests' cheap hasher: this is what production runs
    real = argon2.PasswordHasher()
    assert (passwords._ph.time_cost, passwords._ph.memory_cost) == (real.time_cost,
                                                                   real.memory_cost)
    h = passwords.hash_password("correct horse battery")
    assert h.startswith("$argon2id$")
    assert passwords.verify_password(h, "correct horse battery")
    assert not passwords.verify_password(h, "wrong horse battery")
    assert not passwords.verify_password(None, "correct horse battery")
