"""Composition root: config -> rules, database, services' transactions, jobs, web.

Nothing imports this module but the CLI (and tests); everything below it gets what it
needs passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from central.config import CentralConfig, load_rules
from central.db import make_engine, session_factory, upgrade
from edge.pricing import RuleBundle

if TYPE_CHECKING:
    from central.ingest.worker import IngestWorker


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Central:
    cfg: CentralConfig
    rules: RuleBundle
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Callable[[], datetime] = field(default=utcnow)

    @classmethod
    def from_config(cls, cfg: CentralConfig, *, migrate: bool = False,
                    clock: Callable[[], datetime] = utcnow) -> Central:
        rules = load_rules(cfg)
        pw = cfg.database.password.get() if cfg.database.password is not None else None
        engine = make_engine(cfg.database.url, pw)
        if migrate or cfg.database.migrate_on_start:
            upgrade(engine)
        return cls(cfg, rules, engine, session_factory(engine), clock)

    @contextmanager
    def tx(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on any exception."""
        with self.sessions.begin() as s:
            yield s

    def ingest_worker(self, client_id: str | None = None) -> IngestWorker:
        """An MQTT ingest worker on this database (``parkedge-central ingest``, or inside
        ``serve`` with ``ingest.enabled``)."""
        from central.ingest.worker import Deps, IngestWorker
        return IngestWorker(Deps(self.cfg, self.engine, self.sessions, self.rules, self.clock),
                            client_id=client_id)

    def close(self) -> None:
        self.engine.dispose()
