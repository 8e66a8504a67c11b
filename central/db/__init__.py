"""Central's storage: SQLAlchemy 2 models, engines for SQLite and PostgreSQL, Alembic."""

from central.db.engine import make_engine, session_factory
from central.db.migrate import current, upgrade

__all__ = ["current", "make_engine", "session_factory", "upgrade"]
